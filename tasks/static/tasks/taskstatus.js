// A browser client for the task status WebSocket (/ws/task-status).
//
// It keeps the newest document of every task it hears about, reconnects on
// its own, and after a reconnect asks the server for everything changed since
// the last `updated_at` it saw, so a final state is never lost. No build step:
//
//   import { TaskStatusClient } from "/static/tasks/taskstatus.js";
//
// Close codes: 4401 (credentials missing, bad or expired) gets a fresh token
// and reconnects; 4403 (not allowed) stops; anything else reconnects.

export const STATUSES = [
  "started", "processing", "error", "completed", "completed_with_errors", "failed",
];
export const TERMINAL = new Set(["completed", "completed_with_errors", "failed"]);

const CLOSE_UNAUTHORIZED = 4401;
const CLOSE_FORBIDDEN = 4403;
const CLOSE_DEAD = 4000; // our own close of a connection that stopped answering

function isDocument(value) {
  return value !== null && typeof value === "object"
    && typeof value.task_id === "string" && typeof value.operation === "string"
    && typeof value.status === "string" && Number.isInteger(value.version)
    && Number.isFinite(value.updated_at) && Number.isFinite(value.created_at);
}

export class TaskStatusClient {
  /**
   * @param {object} options
   * @param {string} options.url  "/ws/task-status" or an absolute ws(s):// URL
   * @param {(info: {reason: string}) => (string|null|Promise<string|null>)} [options.getToken]
   *   an access token for `?access_token=`; null or absent: the session cookie authenticates
   * @param {string[]} [options.operations]  watch only these operations
   * @param {string[]} [options.taskIds]  and/or only these tasks (neither: everything)
   * @param {(doc: object, previous: object|undefined) => void} [options.onStatus]
   * @param {(state: {state: string, retryAt?: number, delay?: number, code?: number}) => void}
   *   [options.onConnectionChange]  state is "connecting", "live", "reconnecting" or "offline"
   * @param {object[]} [options.documents]  documents the page already has (e.g. from REST)
   * @param {number} [options.since]  Unix seconds to catch up from on the first connection
   */
  constructor({
    url, getToken = null, operations = [], taskIds = [], onStatus = () => {},
    onConnectionChange = () => {}, documents = [], since = null,
    // Tuning, and hooks that let a test drive the client without a network or a clock.
    backoff = { initial: 500, max: 15000 }, stableAfter = 10000,
    heartbeat = { idle: 25000, timeout: 10000 },
    WebSocket = globalThis.WebSocket, timers = globalThis, now = () => Date.now(),
    random = Math.random, logger = console,
  }) {
    Object.assign(this, {
      url, getToken, operations, taskIds, onStatus, onConnectionChange, backoff,
      stableAfter, heartbeat, WebSocketClass: WebSocket, timers, now, random, logger,
    });
    this.tasks = new Map(); // task_id -> newest document
    this.lastUpdatedAt = null; // catch-up point for the next connection
    for (const doc of documents) this.ingest(doc);
    if (since !== null) this.lastUpdatedAt = since;
    this.attempt = 0;
    this.state = null;
    this.ws = null;
    this.closed = false;
    this.tokenReason = "initial";
    this._timers = {};
    this._connect();
  }

  /** Accepts a document if it is newer than the one held; returns whether it was. */
  ingest(doc) {
    if (!isDocument(doc)) {
      this.logger.warn("taskstatus: ignoring a malformed task document", doc);
      return false;
    }
    const previous = this.tasks.get(doc.task_id);
    if (this.lastUpdatedAt === null || doc.updated_at > this.lastUpdatedAt) {
      this.lastUpdatedAt = doc.updated_at;
    }
    if (previous && previous.version >= doc.version) return false;
    this.tasks.set(doc.task_id, doc);
    try {
      this.onStatus(doc, previous);
    } catch (error) {
      this.logger.error("taskstatus: onStatus threw", error);
    }
    return true;
  }

  /** Stops for good: no reconnect after this. */
  close() {
    this.closed = true;
    this._clearAll();
    const ws = this.ws;
    this.ws = null;
    if (ws) {
      this._detach(ws);
      ws.close(1000);
    }
    this._setState({ state: "offline", reason: "closed" });
  }

  // -- connection ----------------------------------------------------------

  async _connect() {
    if (this.closed) return;
    this._setState({ state: "connecting", attempt: this.attempt });
    let token = null;
    if (this.getToken) {
      try {
        token = await this.getToken({ reason: this.tokenReason });
      } catch (error) {
        this.logger.warn("taskstatus: getToken failed; retrying", error);
        this._retry({ reason: "token" });
        return;
      }
    }
    if (this.closed) return;
    let ws;
    try {
      ws = new this.WebSocketClass(this._socketUrl(token));
    } catch (error) {
      this.logger.warn("taskstatus: cannot open the WebSocket", error);
      this._retry({ reason: "error" });
      return;
    }
    this.ws = ws;
    this.openedAt = this.now();
    ws.onopen = () => {
      this.tokenReason = "initial";
      this._setState({ state: "live" });
      this._later("stable", this.stableAfter, () => { this.attempt = 0; });
      this._armHeartbeat();
    };
    ws.onmessage = (event) => this._receive(event.data);
    ws.onclose = (event) => this._closed(ws, event.code, event.reason);
    ws.onerror = () => {}; // a close event follows and decides
  }

  _socketUrl(token) {
    const base = globalThis.location ? globalThis.location.href : "http://localhost/";
    const url = new URL(this.url, base);
    if (url.protocol === "http:") url.protocol = "ws:";
    if (url.protocol === "https:") url.protocol = "wss:";
    for (const op of this.operations) url.searchParams.append("operation", op);
    for (const id of this.taskIds) url.searchParams.append("task_id", id);
    if (this.lastUpdatedAt !== null) url.searchParams.set("since", String(this.lastUpdatedAt));
    if (token) url.searchParams.set("access_token", token);
    return url.toString();
  }

  _closed(ws, code, reason) {
    if (ws !== this.ws) return;
    this._detach(ws);
    this.ws = null;
    this._clear("stable");
    this._clear("idle");
    this._clear("pong");
    if (this.closed) return;
    if (code === CLOSE_FORBIDDEN) {
      this.closed = true;
      this._setState({ state: "offline", code, reason: reason || "forbidden" });
      return;
    }
    if (code === CLOSE_UNAUTHORIZED) this.tokenReason = "unauthorized";
    this._retry({ code, reason });
  }

  _retry(details) {
    const cap = Math.min(this.backoff.max, this.backoff.initial * 2 ** this.attempt);
    const delay = Math.round(cap / 2 + this.random() * (cap / 2)); // "equal jitter"
    this.attempt += 1;
    const retryAt = this.now() + delay;
    this._setState({ state: "reconnecting", delay, retryAt, ...details });
    this._later("retry", delay, () => this._connect());
  }

  _detach(ws) {
    ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
  }

  // -- messages ------------------------------------------------------------

  _receive(data) {
    this._armHeartbeat();
    let message;
    try {
      message = JSON.parse(data);
    } catch {
      this.logger.warn("taskstatus: ignoring a message that is not JSON", String(data).slice(0, 200));
      return;
    }
    if (message === null || typeof message !== "object") {
      this.logger.warn("taskstatus: ignoring a message that is not an object", message);
      return;
    }
    switch (message.type) {
      case "task_status":
        this.ingest(message.payload);
        break;
      case "pong":
      case "subscribed":
      case "unsubscribed":
        break;
      case "error":
        this.logger.warn("taskstatus: the server refused a message:", message.error);
        break;
      default:
        this.logger.warn("taskstatus: ignoring a message of unknown type", message.type);
    }
  }

  // Any message proves the connection alive; after `idle` ms of silence we
  // ping, and a pong (or anything else) must come within `timeout` ms.
  _armHeartbeat() {
    this._clear("pong");
    this._later("idle", this.heartbeat.idle, () => {
      const ws = this.ws;
      if (!ws) return;
      try {
        ws.send(JSON.stringify({ action: "ping" }));
      } catch (error) {
        this.logger.warn("taskstatus: ping failed", error);
      }
      this._later("pong", this.heartbeat.timeout, () => {
        this.logger.warn("taskstatus: no pong; treating the connection as dead");
        try { ws.close(CLOSE_DEAD); } catch { /* already closing */ }
        this._closed(ws, CLOSE_DEAD, "no pong");
      });
    });
  }

  // -- state and timers ----------------------------------------------------

  _setState(state) {
    this.state = state;
    try {
      this.onConnectionChange(state);
    } catch (error) {
      this.logger.error("taskstatus: onConnectionChange threw", error);
    }
  }

  _later(name, ms, fn) {
    this._clear(name);
    this._timers[name] = this.timers.setTimeout(() => {
      delete this._timers[name];
      fn();
    }, ms);
  }

  _clear(name) {
    if (this._timers[name] !== undefined) {
      this.timers.clearTimeout(this._timers[name]);
      delete this._timers[name];
    }
  }

  _clearAll() {
    for (const name of Object.keys(this._timers)) this._clear(name);
  }
}
