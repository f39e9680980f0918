// Pulse browser client: dependency-free. Subscribes to one user's live decisions over WebSocket and
// reconnects with exponential backoff (with jitter). Decisions are deduplicated by decision_id.
//
//   const client = new PulseClient({url: "ws://host:8765/ws", userId: "u1", token: "v1....",
//                                   onDecision: (decision, {latest}) => render(decision)});
//   client.start();  ...  client.stop();
//
// `token` may be a string or a function returning one (or a Promise of one): it is called before each
// connection, so a page can fetch a fresh token from its backend when the old one expires.
"use strict";

class PulseClient {
  constructor({url, userId, token, onDecision, onStatus = () => {}, minDelayMs = 500, maxDelayMs = 30000}) {
    this.url = url; this.userId = userId; this.token = token;
    this.onDecision = onDecision; this.onStatus = onStatus;
    this.minDelayMs = minDelayMs; this.maxDelayMs = maxDelayMs;
    this.attempt = 0; this.ws = null; this.timer = null; this.stopped = true;
    this.seen = new Set(); this.seenOrder = [];
  }

  start() {
    this.stopped = false;
    this._connect();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    if (this.ws) this.ws.close(1000, "client stopped");
  }

  // Delay before reconnection attempt n (0-based): min * 2^n capped at max, times a jitter in [0.5, 1].
  backoffMs(attempt) {
    const base = Math.min(this.maxDelayMs, this.minDelayMs * Math.pow(2, attempt));
    return Math.round(base * (0.5 + Math.random() / 2));
  }

  async _connect() {
    let token;
    try {
      token = typeof this.token === "function" ? await this.token() : this.token;
    } catch (error) {
      this.onStatus("error", `cannot get a token: ${error}`);
      return this._retry();
    }
    if (this.stopped) return;
    this.onStatus("connecting", this.url);
    const ws = new WebSocket(this.url);
    this.ws = ws;
    ws.onopen = () => ws.send(JSON.stringify({subscribe: this.userId, token}));
    ws.onmessage = (event) => this._onFrame(JSON.parse(event.data));
    ws.onclose = (event) => {
      if (this.ws !== ws) return;
      this.ws = null;
      if (!this.stopped) this._retry(event.code);
    };
  }

  _retry(code) {
    const delay = this.backoffMs(this.attempt++);
    this.onStatus("reconnecting", `retry in ${(delay / 1000).toFixed(1)} s${code ? ` (closed ${code})` : ""}`);
    this.timer = setTimeout(() => this._connect(), delay);
  }

  _onFrame(frame) {
    if (frame.type === "subscribed") {
      this.attempt = 0;
      this.onStatus("connected", frame.user_id);
    } else if (frame.type === "decision") {
      const id = frame.decision.decision_id;
      if (this.seen.has(id)) return;
      this.seen.add(id); this.seenOrder.push(id);
      if (this.seenOrder.length > 256) this.seen.delete(this.seenOrder.shift());
      this.onDecision(frame.decision, {latest: frame.latest === true});
    } else if (frame.type === "error") {
      this.onStatus("error", frame.error);
    }
  }
}

if (typeof module !== "undefined") module.exports = {PulseClient};
