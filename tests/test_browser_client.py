"""The JavaScript client's own logic, in Chromium, with a fake WebSocket and a fake clock.

No server and no Node: the module is served to the page from the source tree
and driven through the ``WebSocket``, ``timers``, ``now`` and ``random`` hooks
of its constructor, so backoff, catch-up, dedupe and heartbeats are checked
to the millisecond without waiting for any of it.
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest
from playwright.sync_api import Page, Route

from tests.support import browser as chromium
from tests.support.servers import ROOT

pytestmark = pytest.mark.browser
browser, context = chromium.browser, chromium.context  # the fixtures, one browser per module

ORIGIN = "http://client.test"
STATIC = ROOT / "tasks" / "static"

# window.harness(options): a client on a fake socket and a virtual clock.
HARNESS = """
window.harness = async (options = {}) => {
  const { TaskStatusClient } = await import("/static/tasks/taskstatus.js");
  let now = 1_000_000, nextId = 1;
  const queue = [];
  const timers = {
    setTimeout(fn, ms) { const id = nextId++; queue.push({ id, at: now + ms, fn }); return id; },
    clearTimeout(id) {
      const i = queue.findIndex((t) => t.id === id);
      if (i >= 0) queue.splice(i, 1);
    },
  };
  const settle = () => new Promise((resolve) => setTimeout(resolve, 0));
  const sockets = [], states = [], statuses = [], logs = [];
  class FakeSocket {
    constructor(url) { this.url = url; this.sent = []; this.closedWith = null; sockets.push(this); }
    send(data) { this.sent.push(JSON.parse(data)); }
    close(code) { this.closedWith = code; }
    open() { this.onopen && this.onopen({}); }
    receive(message) {
      const data = typeof message === "string" ? message : JSON.stringify(message);
      this.onmessage && this.onmessage({ data });
    }
    drop(code) { this.onclose && this.onclose({ code, reason: "" }); }
  }
  const log = (level) => (...args) => logs.push([level, args.map(String).join(" ")]);
  const client = new TaskStatusClient({
    url: "/ws/task-status",
    onStatus: (doc, prev) => statuses.push([doc.task_id, doc.version, prev?.version ?? null]),
    onConnectionChange: (state) => states.push(state),
    WebSocket: FakeSocket, timers, now: () => now, random: () => 0.5,
    logger: { warn: log("warn"), error: log("error") },
    ...options,
  });
  await settle();
  return {
    client, sockets, states, statuses, logs,
    last: () => sockets[sockets.length - 1],
    async advance(ms) {
      const end = now + ms;
      for (;;) {
        queue.sort((a, b) => a.at - b.at || a.id - b.id);
        if (!queue.length || queue[0].at > end) break;
        const timer = queue.shift();
        now = timer.at;
        timer.fn();
        await settle();
      }
      now = end;
    },
    doc: (id, version, updated_at, status = "processing") => ({
      type: "task_status",
      payload: { task_id: id, operation: "daily_sales", status, progress: null, result: null,
                 error: null, created_at: 100, updated_at, version },
    }),
  };
};
"""


def serve(route: Route) -> None:
    path = urlsplit(route.request.url).path
    if path.startswith("/static/"):
        route.fulfill(path=STATIC / path.removeprefix("/static/"), content_type="text/javascript")
    else:
        route.fulfill(body="<!doctype html><title>client</title>", content_type="text/html")


@pytest.fixture
def page(context) -> Page:
    page = context.new_page()
    page.route(f"{ORIGIN}/**", serve)
    page.goto(f"{ORIGIN}/")
    page.evaluate(HARNESS)
    return page


def query(url: str) -> dict[str, list[str]]:
    return parse_qs(urlsplit(url).query)


def test_backoff_grows_with_jitter_up_to_a_cap_resets_when_stable_and_catches_up(page):
    got = page.evaluate("""async () => {
      const h = await harness({ operations: ["daily_sales"], taskIds: ["t-1"],
                                getToken: () => "tok", stableAfter: 10000 });
      h.last().open();
      for (const [version, at] of [[1, 100], [2, 105], [2, 105], [1, 100], [3, 104]]) {
        h.last().receive(h.doc("t-1", version, at));
      }
      const delays = [];
      h.last().drop(1006);
      for (let i = 0; i < 7; i++) {
        const { delay } = h.states[h.states.length - 1];
        delays.push(delay);
        const before = h.sockets.length;
        await h.advance(delay - 1);
        if (h.sockets.length !== before) return { early: delay };
        await h.advance(1);
        h.last().drop([1006, 1011, 4001, 4013, 1001, 1000, 1006][i]);
      }
      const beforeStable = h.states[h.states.length - 1].delay;
      await h.advance(beforeStable);
      h.last().open();
      await h.advance(10000);  // stable: the backoff starts over
      h.last().drop(1006);
      return { delays, afterStable: h.states[h.states.length - 1].delay,
               urls: h.sockets.map((s) => s.url), statuses: h.statuses,
               kinds: [...new Set(h.states.map((s) => s.state))] };
    }""")
    assert "early" not in got
    # Equal jitter (random 0.5 -> 75% of the cap), doubling from 500 ms, capped at 15 s.
    assert got["delays"] == [375, 750, 1500, 3000, 6000, 11250, 11250]
    assert got["afterStable"] == 375
    first, second = query(got["urls"][0]), query(got["urls"][1])
    assert first == {"operation": ["daily_sales"], "task_id": ["t-1"], "access_token": ["tok"]}
    assert urlsplit(got["urls"][0]).scheme == "ws" and urlsplit(got["urls"][0]).path == (
        "/ws/task-status"
    )
    assert second["since"] == ["105"]  # the newest updated_at seen
    # Versions only rise: the repeat of 2 and the late 1 were dropped.
    assert got["statuses"] == [["t-1", 1, None], ["t-1", 2, 1], ["t-1", 3, 2]]
    assert got["kinds"] == ["connecting", "live", "reconnecting"]


def test_4401_fetches_a_new_token_4403_stops_and_close_is_final(page):
    got = page.evaluate("""async () => {
      const reasons = [];
      const h = await harness({ getToken: async (info) => { reasons.push(info.reason);
                                                           return `tok-${reasons.length}`; } });
      h.last().open();
      h.last().drop(4401);
      await h.advance(h.states[h.states.length - 1].delay);
      const renewed = h.last().url;
      h.last().open();
      h.last().drop(4403);
      await h.advance(60000);
      const forbidden = { sockets: h.sockets.length, state: h.states[h.states.length - 1] };

      const c = await harness({ since: 1234 });
      const first = c.last().url;
      c.last().open();
      const socket = c.last();
      c.client.close();
      socket.drop(1000);  // the close event after close() changes nothing
      await c.advance(60000);
      return { reasons, renewed, forbidden, first, closedWith: socket.closedWith,
               sockets: c.sockets.length, final: c.states[c.states.length - 1] };
    }""")
    assert got["reasons"] == ["initial", "unauthorized"]
    assert query(got["renewed"])["access_token"] == ["tok-2"]
    assert got["forbidden"]["sockets"] == 2
    assert got["forbidden"]["state"]["state"] == "offline"
    assert got["forbidden"]["state"]["code"] == 4403
    # No getToken (the staff pages' session cookie): no access_token in the URL.
    assert query(got["first"]) == {"since": ["1234"]}
    assert got["closedWith"] == 1000 and got["sockets"] == 1
    assert got["final"]["state"] == "offline"


def test_an_idle_connection_is_pinged_and_a_missing_pong_means_dead(page):
    got = page.evaluate("""async () => {
      const h = await harness({ heartbeat: { idle: 25000, timeout: 10000 } });
      const socket = h.last();
      socket.open();
      await h.advance(20000);
      socket.receive(h.doc("t-1", 1, 100));  // traffic counts as life: no ping yet
      await h.advance(20000);
      const quietPings = socket.sent.length;
      await h.advance(5000);
      const ping = socket.sent[0];
      await h.advance(9000);
      socket.receive({ type: "pong" });
      await h.advance(25000);  // second ping, never answered
      await h.advance(10000);
      return { quietPings, ping, pings: socket.sent.length, closedWith: socket.closedWith,
               state: h.states[h.states.length - 1].state, sockets: h.sockets.length };
    }""")
    assert got["quietPings"] == 0
    assert got["ping"] == {"action": "ping"}
    assert got["pings"] == 2
    assert got["closedWith"] == 4000
    assert got["state"] == "reconnecting"


def test_malformed_messages_are_logged_and_ignored_and_the_stream_goes_on(page):
    got = page.evaluate("""async () => {
      const h = await harness({ onStatus: () => { throw new Error("a broken page"); } });
      h.last().open();
      for (const message of ["{not json", "null", "[1, 2]", { type: "mystery" },
                             { type: "task_status", payload: { task_id: 7 } },
                             { type: "task_status" }, { type: "error", error: "bad frame" }]) {
        h.last().receive(message);
      }
      h.last().receive(h.doc("t-9", 1, 100));
      return { logs: h.logs, held: [...h.client.tasks.keys()], state: h.states.at(-1).state };
    }""")
    warnings = [text for level, text in got["logs"] if level == "warn"]
    assert len(warnings) == 7, got["logs"]
    assert any("not JSON" in text for text in warnings)
    assert any("bad frame" in text for text in warnings)
    # A handler that throws is logged; the client keeps the document and stays live.
    assert any(level == "error" and "onStatus threw" in text for level, text in got["logs"])
    assert got["held"] == ["t-9"] and got["state"] == "live"
