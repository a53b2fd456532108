// The staff pages: the live task table at "/" and one task's page at "/tasks/<id>".
//
// Everything a task carries (messages, errors, results) reaches the page as
// text through textContent, never as markup.
import { TaskStatusClient, TERMINAL } from "./taskstatus.js";

const config = readJson("page-config") || {};
const RELATIVE = new Intl.RelativeTimeFormat(undefined, { numeric: "auto", style: "short" });
const EXACT = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "medium" });

function readJson(id) {
  const node = document.getElementById(id);
  return node ? JSON.parse(node.textContent) : null;
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children) if (child) node.append(child);
  return node;
}

// -- formatting ---------------------------------------------------------------

export const statusWord = (status) => String(status).replaceAll("_", " ");
const shortId = (id) => id.slice(0, 8);
const operationLabel = (name) => (config.operations || {})[name] || name;

function relative(seconds) {
  const diff = seconds - Date.now() / 1000;
  const abs = Math.abs(diff);
  if (abs < 45) return abs < 5 ? "just now" : RELATIVE.format(Math.round(diff), "second");
  if (abs < 2700) return RELATIVE.format(Math.round(diff / 60), "minute");
  if (abs < 79200) return RELATIVE.format(Math.round(diff / 3600), "hour");
  return RELATIVE.format(Math.round(diff / 86400), "day");
}

function duration(doc) {
  const end = TERMINAL.has(doc.status) ? doc.updated_at : Date.now() / 1000;
  const total = Math.max(0, Math.round(end - doc.created_at));
  if (total < 60) return `${total} s`;
  const minutes = Math.floor(total / 60);
  if (minutes < 60) return `${minutes} min ${String(total % 60).padStart(2, "0")} s`;
  return `${Math.floor(minutes / 60)} h ${String(minutes % 60).padStart(2, "0")} min`;
}

function setTime(node, seconds) {
  const date = new Date(seconds * 1000);
  node.dateTime = date.toISOString();
  node.title = EXACT.format(date);
  node.textContent = relative(seconds);
}

// -- shared pieces ------------------------------------------------------------

function badge(node, status) {
  node.className = "badge";
  node.dataset.status = status;
  node.textContent = statusWord(status);
}

function progressParts() {
  const fill = el("span", { class: "progress-fill" });
  const bar = el("span", { class: "progress", role: "progressbar", "aria-valuemin": 0 }, fill);
  const count = el("span", { class: "progress-count" });
  const message = el("span", { class: "progress-msg" });
  const error = el("span", { class: "progress-error" });
  const node = el("div", { class: "progress-cell" }, bar,
    el("span", { class: "progress-meta" }, count, message), error);
  return { node, bar, fill, count, message, error };
}

function renderProgress(parts, doc) {
  const progress = doc.progress && typeof doc.progress === "object" ? doc.progress : null;
  const current = progress ? Number(progress.current) || 0 : 0;
  const total = progress ? Number(progress.total) || 0 : 0;
  let ratio = total > 0 ? Math.min(1, Math.max(0, current / total)) : 0;
  if (doc.status === "completed" && !progress) ratio = 1;
  parts.bar.dataset.status = doc.status;
  parts.bar.setAttribute("aria-valuemax", String(total || 1));
  parts.bar.setAttribute("aria-valuenow", String(total ? Math.min(current, total) : ratio));
  parts.bar.setAttribute("aria-label", `Progress of ${operationLabel(doc.operation)} ${shortId(doc.task_id)}`);
  parts.bar.setAttribute("aria-valuetext", progress ? `${current} of ${total}` : "no progress yet");
  parts.fill.style.width = `${(ratio * 100).toFixed(1)}%`;
  parts.count.textContent = progress ? `${current}/${total}` : "";
  const message = progress ? String(progress.message ?? "") : "";
  parts.message.textContent = message || (progress ? "" : TERMINAL.has(doc.status) ? "" : "waiting to start");
  parts.message.title = message;
  const error = doc.error ? String(doc.error) : "";
  parts.error.textContent = error;
  parts.error.title = error;
  parts.error.hidden = !error;
}

async function api(method, url, body) {
  let response;
  try {
    response = await fetch(url, {
      method,
      credentials: "same-origin",
      headers: {
        Accept: "application/json",
        "Content-Type": "application/json",
        "X-CSRFToken": config.csrfToken || "",
      },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch {
    return { status: 0, ok: false, data: { detail: "could not reach the server" } };
  }
  let data = null;
  try {
    data = await response.json();
  } catch { /* an empty or non-JSON body */ }
  return { status: response.status, ok: response.ok, data };
}

function refusal(result, action) {
  if (result.status === 403) return `You are not allowed to ${action}.`;
  if (result.status === 401) return "Your session has ended; sign in again.";
  const detail = result.data && typeof result.data.detail === "string" ? result.data.detail : "";
  return `Could not ${action}${detail ? `: ${detail}` : ` (HTTP ${result.status})`}.`;
}

function notice(text, { link = null, kind = "info" } = {}) {
  const node = document.getElementById("notice");
  if (!node) return;
  node.replaceChildren(el("span", { text }));
  if (link) node.append(" ", el("a", { href: link.href, text: link.text }));
  node.dataset.kind = kind;
  node.hidden = false;
  clearTimeout(notice.timer);
  notice.timer = setTimeout(() => { node.hidden = true; }, 8000);
}

// Screen readers hear status changes, a few at a time, not every progress step.
const announcements = [];
function announce(text) {
  announcements.push(text);
  if (announce.timer) return;
  announce.timer = setTimeout(() => {
    announce.timer = null;
    const node = document.getElementById("announcer");
    const shown = announcements.splice(0, announcements.length);
    const extra = shown.length > 3 ? `, and ${shown.length - 3} more changes` : "";
    if (node) node.textContent = shown.slice(0, 3).join(". ") + extra;
  }, 500);
}

function describe(doc) {
  return `${operationLabel(doc.operation)} task ${shortId(doc.task_id)}: ${statusWord(doc.status)}`;
}

// The connection indicator: live, reconnecting (with a countdown), offline.
function connectionIndicator() {
  const root = document.getElementById("connection");
  const label = root.querySelector(".conn-label");
  const detail = root.querySelector(".conn-detail");
  let countdown = null;
  return (info) => {
    clearInterval(countdown);
    detail.textContent = "";
    let state = info.state;
    if (state === "connecting" && info.attempt > 0) state = "reconnecting";
    root.dataset.state = state;
    const words = { connecting: "Connecting", live: "Live", reconnecting: "Reconnecting", offline: "Offline" };
    if (label.textContent !== words[state]) label.textContent = words[state];
    if (info.state === "reconnecting" && info.retryAt) {
      const tick = () => {
        const left = Math.max(0, Math.ceil((info.retryAt - Date.now()) / 1000));
        detail.textContent = left > 0 ? `in ${left} s` : "now";
      };
      tick();
      countdown = setInterval(tick, 250);
    } else if (state === "reconnecting") {
      detail.textContent = "now";
    } else if (state === "offline") {
      detail.textContent = info.code === 4403 ? "not allowed" : "stopped";
    }
    if (info.code === 4401 && state !== "live") {
      // The page's session ended: reloading it leads through the sign-in page.
      clearInterval(countdown);
      const again = document.createElement("a");
      again.href = window.location.href;
      again.textContent = "signed out: sign in again";
      detail.replaceChildren(again);
    }
    root.title = info.code ? `last close code ${info.code}` : "";
  };
}

async function cancelTask(button, taskId, onDone) {
  button.disabled = true;
  const result = await api("POST", `/task-status/${encodeURIComponent(taskId)}/cancel`);
  if (result.ok) {
    onDone();
    notice(TERMINAL.has(result.data?.status)
      ? `Task ${shortId(taskId)} was cancelled before it started.`
      : `Cancel requested for task ${shortId(taskId)}; it stops at its next step.`);
  } else {
    button.disabled = false;
    notice(result.status === 409 ? `Task ${shortId(taskId)} has already finished.`
      : refusal(result, "cancel this task"), { kind: "error" });
  }
}

// -- the monitor --------------------------------------------------------------

function initMonitor() {
  const tbody = document.querySelector("#tasks tbody");
  const empty = document.getElementById("empty");
  const count = document.getElementById("count");
  const filtersForm = document.getElementById("filters");
  const rows = new Map(); // task_id -> {tr, parts}
  const cancelling = new Set();
  const params = new URLSearchParams(location.search);
  const filters = {
    operation: params.get("operation") || "",
    statuses: new Set((params.get("status") || "").split(",").filter(Boolean)),
  };
  let ready = false;

  const matches = (doc) => (!filters.operation || doc.operation === filters.operation)
    && (filters.statuses.size === 0 || filters.statuses.has(doc.status));
  const newerFirst = (a, b) => (b.created_at - a.created_at) || (a.task_id < b.task_id ? 1 : -1);

  function buildRow(doc) {
    const tr = el("tr");
    tr.dataset.taskId = doc.task_id;
    const cells = {
      operation: el("td", { class: "col-operation", "data-label": "Operation" }),
      task: el("td", { class: "col-task", "data-label": "Task" }),
      status: el("td", { class: "col-status", "data-label": "Status" }),
      progress: el("td", { class: "col-progress", "data-label": "Progress" }),
      started: el("td", { class: "col-time", "data-label": "Started" }),
      updated: el("td", { class: "col-time", "data-label": "Updated" }),
      duration: el("td", { class: "col-duration", "data-label": "Duration" }),
    };
    cells.operation.append(
      el("span", { class: "op-label", text: operationLabel(doc.operation) }),
      el("code", { class: "op-name", text: doc.operation }));
    const link = el("a", {
      class: "mono", href: `/tasks/${encodeURIComponent(doc.task_id)}`, title: doc.task_id,
      "aria-label": `Task ${shortId(doc.task_id)}, details`, text: shortId(doc.task_id),
    });
    cells.task.append(link);
    const badgeNode = el("span");
    cells.status.append(badgeNode);
    const parts = progressParts();
    cells.progress.append(parts.node);
    const started = el("time");
    const updated = el("time");
    cells.started.append(started);
    cells.updated.append(updated);
    tr.append(...Object.values(cells));
    let actions = null;
    if (config.canRun) {
      actions = el("td", { class: "col-actions", "data-label": "" });
      tr.append(actions);
    }
    return { tr, parts, badgeNode, started, updated, durationCell: cells.duration, actions, doc };
  }

  function updateRow(row, doc) {
    row.doc = doc;
    row.tr.dataset.status = doc.status;
    badge(row.badgeNode, doc.status);
    renderProgress(row.parts, doc);
    setTime(row.started, doc.created_at);
    setTime(row.updated, doc.updated_at);
    row.durationCell.textContent = duration(doc);
    if (row.actions) {
      row.actions.replaceChildren();
      if (!TERMINAL.has(doc.status)) {
        const pending = cancelling.has(doc.task_id);
        const button = el("button", {
          type: "button", class: "btn btn-danger btn-small", disabled: pending,
          "aria-label": `Cancel ${operationLabel(doc.operation)} task ${shortId(doc.task_id)}`,
          text: pending ? "Cancelling…" : "Cancel",
        });
        button.addEventListener("click", () => cancelTask(button, doc.task_id, () => {
          cancelling.add(doc.task_id);
          updateRow(row, row.doc);
        }));
        row.actions.append(button);
      }
    }
  }

  function place(row) {
    let before = null;
    for (const other of tbody.rows) {
      const otherRow = rows.get(other.dataset.taskId);
      if (otherRow && otherRow !== row && newerFirst(row.doc, otherRow.doc) < 0) {
        before = other;
        break;
      }
    }
    if (row.tr.parentNode !== tbody || row.tr.nextSibling !== before) tbody.insertBefore(row.tr, before);
  }

  function show(doc) {
    let row = rows.get(doc.task_id);
    if (!matches(doc)) {
      if (row) {
        row.tr.remove();
        rows.delete(doc.task_id);
      }
      return;
    }
    const isNew = !row;
    if (isNew) {
      row = buildRow(doc);
      rows.set(doc.task_id, row);
    }
    updateRow(row, doc);
    if (isNew) place(row);
  }

  function summarize() {
    const shown = rows.size;
    const held = client.tasks.size;
    empty.hidden = shown > 0;
    const noun = (n) => `${n} task${n === 1 ? "" : "s"}`;
    count.textContent = shown === held ? noun(shown) : `${noun(shown)} of ${held}`;
  }

  function rerender() {
    rows.clear();
    tbody.replaceChildren();
    [...client.tasks.values()].sort(newerFirst).forEach(show);
    summarize();
  }

  const client = new TaskStatusClient({
    url: config.wsUrl,
    documents: readJson("initial-tasks") || [],
    since: config.since ?? null,
    onStatus(doc, previous) {
      if (!ready) return;
      show(doc);
      summarize();
      if (matches(doc) && (!previous || previous.status !== doc.status)) announce(describe(doc));
    },
    onConnectionChange: connectionIndicator(),
  });
  ready = true;
  rerender();

  // Filters live in the URL, so a filtered view can be bookmarked and shared.
  async function applyFilters() {
    filters.operation = filtersForm.operation.value;
    filters.statuses = new Set([...filtersForm.querySelectorAll("input[name=status]:checked")]
      .map((input) => input.value));
    const query = new URLSearchParams();
    if (filters.operation) query.set("operation", filters.operation);
    if (filters.statuses.size) query.set("status", [...filters.statuses].join(","));
    const search = query.toString();
    history.replaceState(null, "", search ? `?${search}` : location.pathname);
    rerender();
    // Older tasks that match but were not among the newest loaded.
    query.set("limit", "200");
    const result = await api("GET", `/task-status?${query}`);
    if (result.ok && Array.isArray(result.data)) {
      for (const doc of result.data) client.ingest(doc);
    }
  }
  filtersForm.addEventListener("change", applyFilters);
  filtersForm.addEventListener("submit", (event) => event.preventDefault());
  document.getElementById("clear-filters").addEventListener("click", () => {
    filtersForm.operation.value = "";
    for (const input of filtersForm.querySelectorAll("input[name=status]")) input.checked = false;
    applyFilters();
  });

  setInterval(() => {
    for (const row of rows.values()) {
      setTime(row.started, row.doc.created_at);
      setTime(row.updated, row.doc.updated_at);
      row.durationCell.textContent = duration(row.doc);
    }
  }, 5000);

  initRunDialogs(client);
  if (config.rerun) openRerun(config.rerun);
  else if (config.run) document.getElementById(`run-${config.run}`)?.showModal();
  window.taskMonitor = { client };
}

// -- launching ----------------------------------------------------------------

function collectParams(form) {
  const params = {};
  for (const input of form.querySelectorAll("[data-kind]")) {
    const kind = input.dataset.kind;
    if (kind === "checkbox") {
      params[input.name] = input.checked;
      continue;
    }
    const value = input.value.trim();
    if (!value) continue; // the serializer's default applies
    if (kind === "list") params[input.name] = value.split(",").map((v) => v.trim()).filter(Boolean);
    else if (kind === "number") params[input.name] = Number(value);
    else params[input.name] = value;
  }
  return params;
}

function showErrors(form, data, fallback) {
  const formError = form.querySelector(".form-error");
  for (const node of form.querySelectorAll("[data-error-for]")) {
    node.hidden = true;
    node.textContent = "";
  }
  const fieldErrors = (data && (data.errors || data.params)) || {};
  let placed = false;
  if (fieldErrors && typeof fieldErrors === "object" && !Array.isArray(fieldErrors)) {
    for (const [name, messages] of Object.entries(fieldErrors)) {
      const node = form.querySelector(`[data-error-for="${CSS.escape(name)}"]`);
      if (!node) continue;
      node.textContent = [].concat(messages).join(" ");
      node.hidden = false;
      placed = true;
    }
  }
  formError.textContent = placed ? "Check the highlighted fields." : fallback;
  formError.hidden = !formError.textContent;
}

function initRunDialogs(client) {
  for (const button of document.querySelectorAll("[data-run]")) {
    const dialog = document.getElementById(`run-${button.dataset.run}`);
    button.addEventListener("click", () => dialog.showModal());
    dialog.querySelector("[data-close]").addEventListener("click", () => dialog.close());
    dialog.addEventListener("close", () => button.focus());
    const form = dialog.querySelector("form");
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const submit = form.querySelector("[type=submit]");
      submit.disabled = true;
      const operation = form.dataset.operation;
      const body = { operation, params: collectParams(form) };
      if (form.dataset.rerunOf) body.rerun_of = form.dataset.rerunOf;
      const result = await api("POST", "/task-status", body);
      submit.disabled = false;
      if (result.ok && result.data) {
        showErrors(form, null, "");
        delete form.dataset.rerunOf;
        dialog.close();
        client.ingest(result.data);
        const id = result.data.task_id;
        notice(`Started ${operationLabel(operation)}, task ${shortId(id)}.`,
          { link: { href: `/tasks/${encodeURIComponent(id)}`, text: "Details" } });
      } else {
        showErrors(form, result.data, refusal(result, `run ${operationLabel(operation)}`));
      }
    });
  }
}

// "Run again": the Run form of the run's operation, filled with its parameters.
function openRerun(rerun) {
  const dialog = document.getElementById(`run-${rerun.operation}`);
  if (!dialog) return;
  const form = dialog.querySelector("form");
  for (const input of form.querySelectorAll("[data-kind]")) {
    if (!(input.name in rerun.params)) continue;
    const value = rerun.params[input.name];
    if (input.dataset.kind === "checkbox") input.checked = Boolean(value);
    else if (Array.isArray(value)) input.value = value.join(", ");
    else if (value !== null && value !== undefined) input.value = String(value);
  }
  form.dataset.rerunOf = rerun.taskId;
  dialog.showModal();
}

// -- food handler links (get_food_handler_links' result) -----------------------

// Only our own download paths become links; anything else in a result stays text.
const DOCUMENT_PATH = /^\/documents\/[A-Za-z0-9_:.-]+$/;
// A card status borrows the colour of the task status that means the same to a reader.
const CARD_BADGE = {
  valid: "completed", expiring: "error", expired: "failed", overdue: "failed",
  missing: "completed_with_errors",
};

function isLinksResult(doc) {
  const result = doc.result;
  return doc.operation === "get_food_handler_links" && result !== null
    && typeof result === "object" && Array.isArray(result.locations);
}

function documentLink(url, text, label) {
  if (typeof url !== "string" || !DOCUMENT_PATH.test(url)) return null;
  return el("a", { href: url, text, "aria-label": label || null });
}

function cardBadge(status) {
  const word = String(status ?? "");
  const node = el("span", { class: "badge", text: word });
  node.dataset.status = CARD_BADGE[word] || "started";
  node.dataset.cardStatus = word;
  return node;
}

function locationLinks(location) {
  const id = String(location.location_id ?? "");
  const section = el("section", { class: "links-location" });
  section.dataset.location = id;
  section.append(el("h3", { text: `Location ${id}` }));
  const packet = location.packet && typeof location.packet === "object" ? location.packet : null;
  const packetLink = packet && documentLink(packet.url,
    `Compliance packet (${String(packet.filename ?? "")})`, `Compliance packet of location ${id}`);
  section.append(el("p", { class: "links-packet" },
    packetLink || el("span", { class: "muted", text: "No compliance packet on file." })));
  const table = el("table", { class: "tasks links-table" });
  const head = el("tr");
  for (const label of ["Employee", "Job", "Status", "Card expires", "Certificate"]) {
    head.append(el("th", { scope: "col", text: label }));
  }
  table.append(el("thead", {}, head));
  const body = el("tbody");
  for (const person of Array.isArray(location.employees) ? location.employees : []) {
    if (!person || typeof person !== "object") continue;
    const name = String(person.name ?? "");
    const employeeId = String(person.employee_id ?? "");
    const tr = el("tr");
    tr.dataset.employeeId = employeeId;
    tr.append(
      el("td", { "data-label": "Employee" }, el("span", { text: name }), " ",
        el("code", { class: "muted", text: employeeId })),
      el("td", { "data-label": "Job", text: String(person.job ?? "") }),
      el("td", { "data-label": "Status" }, cardBadge(person.status)),
      el("td", { "data-label": "Card expires", text: person.expires_on ? String(person.expires_on) : "—" }),
      el("td", { "data-label": "Certificate" },
        documentLink(person.url, "Certificate (PDF)", `Certificate of ${name}`)
          || el("span", { class: "muted", text: "none on file" })),
    );
    body.append(tr);
  }
  table.append(body);
  section.append(table);
  return section;
}

function renderLinks(container, result) {
  const parts = [];
  const expires = Number(result.expires_at);
  if (Number.isFinite(expires) && expires > 0) {
    parts.push(el("p", { class: "muted links-expiry",
      text: `These links expire ${EXACT.format(new Date(expires * 1000))}; run the task again for new ones.` }));
  }
  for (const location of result.locations) {
    if (location && typeof location === "object") parts.push(locationLinks(location));
  }
  container.replaceChildren(...parts);
}

// -- one task's timeline -------------------------------------------------------

// Every status change the task went through, errors included (GET .../events).
// Entries are added, never redrawn: a page asks only for versions after the last it shows.
function appendTimeline(list, events) {
  const items = events.map((event) => {
    const when = el("time", { datetime: new Date(event.at * 1000).toISOString(),
                              text: EXACT.format(new Date(event.at * 1000)) });
    const head = el("div", { class: "timeline-head" }, when, " ");
    if (event.kind === "cancel_requested") {
      head.append(el("span", { class: "timeline-cancel", text: `cancel requested by ${event.by || "someone"}` }));
    } else {
      const mark = el("span");
      badge(mark, event.status);
      head.append(mark);
    }
    head.append(el("span", { class: "muted", text: ` v${event.version}` }));
    const item = el("li", { "data-status": event.status, "data-kind": event.kind }, head);
    if (event.progress) {
      const { current, total, message } = event.progress;
      item.append(el("div", { class: "timeline-progress muted",
                              text: `${current}/${total}${message ? ` · ${message}` : ""}` }));
    }
    if (event.error && (event.status === "error" || event.status === "failed"
                        || event.status === "completed_with_errors")) {
      item.append(el("div", { class: "timeline-error", text: String(event.error) }));
    }
    return item;
  });
  list.append(...items);
}

// -- one task's page ----------------------------------------------------------

// A browser notification when a task the user asked about ends (only on its page, only
// when they asked and allowed it: the server decides the first, the browser the second).
function notifyEnded(doc) {
  if (!config.notifyWanted || !("Notification" in window)) return;
  if (Notification.permission !== "granted") return;
  new Notification(`${operationLabel(doc.operation)}: ${statusWord(doc.status)}`, {
    body: `Task ${shortId(doc.task_id)} has ended.`,
    tag: doc.task_id,
  });
}

function initDetail(root) {
  const field = (name) => root.ownerDocument.querySelector(`[data-field="${name}"]`);
  const parts = progressParts();
  field("progress").append(parts.node);
  const created = el("time");
  const updated = el("time");
  const createdExact = el("span", { class: "muted" });
  const updatedExact = el("span", { class: "muted" });
  // On a page about one task the exact times are worth showing, not only on hover.
  field("created").append(created, " · ", createdExact);
  field("updated").append(updated, " · ", updatedExact);
  const cancel = document.querySelector("[data-cancel]");
  const runAgain = document.querySelector("[data-run-again]");
  let current = null;
  let linksVersion = null;
  const timeline = field("timeline");
  const initialEvents = readJson("initial-events") || [];
  appendTimeline(timeline, initialEvents);
  let shownVersion = Math.max(0, ...initialEvents.map((event) => event.version));
  // One request at a time; a change that comes meanwhile asks again when it is done.
  let timelineBusy = false;
  let timelineAgain = false;
  let timelineTimer = null;
  async function refreshTimeline() {
    if (timelineBusy) {
      timelineAgain = true;
      return;
    }
    timelineBusy = true;
    try {
      do {
        timelineAgain = false;
        const path = `/task-status/${encodeURIComponent(config.taskId)}/events`;
        const result = await api("GET", `${path}?after_version=${shownVersion}`);
        if (result.ok && Array.isArray(result.data)) {
          const fresh = result.data.filter((event) => event.version > shownVersion);
          appendTimeline(timeline, fresh);
          shownVersion = Math.max(shownVersion, ...fresh.map((event) => event.version));
        }
      } while (timelineAgain);
    } finally {
      timelineBusy = false;
    }
  }

  function render(doc) {
    current = doc;
    badge(field("badge"), doc.status);
    renderProgress(parts, doc);
    setTime(created, doc.created_at);
    createdExact.textContent = EXACT.format(new Date(doc.created_at * 1000));
    setTime(updated, doc.updated_at);
    updatedExact.textContent = EXACT.format(new Date(doc.updated_at * 1000));
    field("duration").textContent = duration(doc);
    field("version").textContent = String(doc.version);
    field("error").textContent = doc.error ? String(doc.error) : "";
    field("error-section").hidden = !doc.error;
    const hasResult = doc.result !== null && doc.result !== undefined;
    const asLinks = hasResult && isLinksResult(doc);
    if (asLinks && linksVersion !== doc.version) {
      renderLinks(field("links"), doc.result);  // once per version, not every tick
      linksVersion = doc.version;
    }
    field("links").hidden = !asLinks;
    field("result").textContent = hasResult && !asLinks ? JSON.stringify(doc.result, null, 2) : "";
    field("result").hidden = !hasResult || asLinks;
    field("no-result").hidden = hasResult;
    if (cancel) cancel.hidden = TERMINAL.has(doc.status);
    if (runAgain) runAgain.hidden = !TERMINAL.has(doc.status);
    document.title = `${statusWord(doc.status)} · ${operationLabel(doc.operation)} ${shortId(doc.task_id)}`;
  }

  const initial = readJson("initial-task");
  render(initial);
  const client = new TaskStatusClient({
    url: config.wsUrl,
    taskIds: [config.taskId],
    documents: [initial],
    since: config.since ?? null,
    onStatus(doc, previous) {
      if (doc.task_id !== config.taskId) return;
      render(doc);
      if (previous && previous.status !== doc.status) announce(describe(doc));
      if (previous && !TERMINAL.has(previous.status) && TERMINAL.has(doc.status)) notifyEnded(doc);
      // A status change or a new error text is an entry: read at once. Any other new
      // version may be one too (the same error again, a cancel request), so it is
      // asked for at most once a second; plain progress then finds nothing new.
      const moved = !previous || previous.status !== doc.status || previous.error !== doc.error;
      if (moved) refreshTimeline();
      else if (!timelineTimer) {
        timelineTimer = setTimeout(() => { timelineTimer = null; refreshTimeline(); }, 1000);
      }
    },
    onConnectionChange: connectionIndicator(),
  });
  // "Notify me when it ends": the mail is the server's; while this page is open the
  // browser says it too, once the user allowed it (asked when they press the button).
  const notifyMe = document.querySelector("[data-notify-me]");
  if (notifyMe && "Notification" in window && Notification.permission === "default") {
    notifyMe.closest("form").addEventListener("submit", () => { Notification.requestPermission(); });
  }
  if (cancel) {
    cancel.addEventListener("click", () => cancelTask(cancel, config.taskId, () => {
      cancel.textContent = "Cancelling…";
    }));
  }
  setInterval(() => current && render(current), 5000);
  window.taskMonitor = { client };
}

const detail = document.getElementById("task-detail");
if (detail) initDetail(detail);
else if (document.getElementById("tasks")) initMonitor();
