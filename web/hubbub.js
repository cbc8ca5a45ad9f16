// hubbub.js: the browser (and Node) client of hubbub, an ES module with no build step.
//
// It speaks hubbub's wire protocol (PROTOCOL.md) over WebSocket: JSON by default,
// msgpack when asked (the vendored @msgpack/msgpack, loaded on first use). It mirrors
// the Python client (hubbub/client/): commands with ids and promises, pings answered,
// reconnects with exponential backoff and full jitter (or the server's `after`),
// re-subscribes with `recover` + `since`, de-duplicates by offset and epoch, refreshes
// tokens through `getToken` before `exp` and on 3005. API and example: docs/browser.md.

const SUBPROTOCOL = { json: "hubbub.v1.json", msgpack: "hubbub.v1.msgpack" };
const MAX_ID = 2 ** 53;
// Reply codes after which a connect attempt is simply tried again later (§5).
const RETRY_CODES = new Set([429, 500, 503]);
// Disconnect codes after which the server says not to come back (§5).
const NO_RECONNECT = new Set([3004, 3005]);
const UNAUTHORIZED_CLOSE = 3005;

/** The server answered a command with an error (or an `error` push reported one). */
export class ReplyError extends Error {
  constructor(code, message, retryAfter = null, data = {}) {
    super(`${code} ${message}`);
    this.name = "ReplyError";
    this.code = code;
    this.message = message;
    this.retryAfter = retryAfter;
    this.data = data;
  }

  static fromWire(body) {
    if (!body || typeof body !== "object") return new ReplyError(0, `malformed error ${body}`);
    const retry = Number.isInteger(body.retry_after) ? body.retry_after : null;
    return new ReplyError(Number.isInteger(body.code) ? body.code : 0, String(body.message ?? ""), retry, body);
  }
}

/** No reply arrived within the client's timeout. */
export class ReplyTimeout extends Error {
  constructor(message) {
    super(message);
    this.name = "ReplyTimeout";
  }
}

/** The connection ended: `code` (3000-3007 or a WebSocket close code, else null), `reconnect`, `after` (ms). */
export class Disconnected extends Error {
  constructor(code, reason, reconnect = true, after = null) {
    super(code === null ? reason : `${code} ${reason}`);
    this.name = "Disconnected";
    this.code = code;
    this.reason = reason;
    this.reconnect = reconnect;
    this.after = after;
  }
}

/** Exponential backoff with full jitter: uniform in [0, min(cap, base * 2**attempt)] ms. */
export function backoffDelay(attempt, base = 100, cap = 10000, rand = Math.random) {
  return rand() * Math.min(cap, base * 2 ** Math.min(attempt, 32));
}

/** The `exp` claim (unix seconds) of a JWT, or null; the signature is the server's business. */
export function tokenExpiry(token) {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const exp = JSON.parse(atob(part.padEnd(part.length + ((4 - (part.length % 4)) % 4), "="))).exp;
    return typeof exp === "number" ? exp : null;
  } catch {
    return null;
  }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function withTimeout(promise, ms, error) {
  let timer;
  const limit = new Promise((_, reject) => {
    timer = setTimeout(() => reject(error()), ms);
  });
  return Promise.race([promise, limit]).finally(() => clearTimeout(timer));
}

function publication(message, channel) {
  return {
    channel: message.channel ?? channel,
    data: message.data,
    offset: Number.isInteger(message.offset) ? message.offset : null,
    epoch: typeof message.epoch === "string" ? message.epoch : null,
    sender: message.from && typeof message.from === "object" ? message.from : null,
  };
}

function position(offset, epoch) {
  return Number.isInteger(offset) && typeof epoch === "string" ? { offset, epoch } : null;
}

class Emitter {
  #handlers = new Map();

  /** Call `fn` on each `event`; returns this. */
  on(event, fn) {
    if (!this.#handlers.has(event)) this.#handlers.set(event, new Set());
    this.#handlers.get(event).add(fn);
    return this;
  }

  off(event, fn) {
    this.#handlers.get(event)?.delete(fn);
    return this;
  }

  emit(event, ...args) {
    for (const fn of this.#handlers.get(event) ?? []) {
      try {
        fn(...args);
      } catch (err) {
        setTimeout(() => {
          throw err;
        });
      }
    }
  }
}

/**
 * One subscribed channel. Events: "publication" (p: data, offset, epoch, sender),
 * "join" / "leave" ({client, user}), "lag" ({dropped}), "subscribed" ({recovered,
 * resubscribed, missed: publications
 * recovered}), "reset" (publications may be missing: reload), "unsubscribed" (error?).
 *
 * Live publications are held while a recovery runs and released after the recovered
 * ones. A publication at or below the position of the last subscribe reply or history
 * read (the overlap) is a duplicate and skipped; an offset going back beyond it, or a
 * new epoch, means the channel's stream restarted: delivered, and reported as "reset".
 */
export class Subscription extends Emitter {
  constructor(client, channel, { recover = false, since = null } = {}) {
    super();
    this.client = client;
    this.channel = channel;
    /** Ask for recovery on the first subscribe (re-subscribes always do). */
    this.recover = recover;
    /** Last position seen, {offset, epoch}; null on channels without history. */
    this.position = since;
    /** `recovered` of the last subscribe reply, if it had one: false means reload. */
    this.recovered = null;
    /** Publications the server skipped for this client (sum of `lag` pushes). */
    this.lagged = 0;
    /** "subscribing" until the first ok reply, then "subscribed"; "closed" at the end. */
    this.state = "subscribing";
    this._holding = false;
    this._held = [];
    this._recovering = false;
    this._overlapTop = null;
    this.ready = new Promise((resolve, reject) => {
      this._resolveReady = resolve;
      this._rejectReady = reject;
    });
    this.ready.catch(() => {}); // an app that never awaits it gets no unhandled rejection
  }

  /** Leave the channel. */
  unsubscribe() {
    return this.client.unsubscribe(this.channel);
  }

  _deliver(pub) {
    if (this._holding) this._held.push(pub);
    else this._feed(pub);
  }

  _feed(pub) {
    const pos = this.position;
    if (pub.offset !== null && pos !== null) {
      if (pub.epoch !== null && pub.epoch !== pos.epoch) {
        this._restarted(pub.offset, pub.epoch);
      } else if (pub.offset > pos.offset) {
        this.position = { offset: pub.offset, epoch: pos.epoch };
        if (this._overlapTop !== null && pub.offset > this._overlapTop) this._overlapTop = null;
      } else if (pub.epoch !== null || (this._overlapTop !== null && pub.offset <= this._overlapTop)) {
        return; // a duplicate
      } else {
        this._restarted(pub.offset, pos.epoch);
      }
    }
    this.emit("publication", pub);
  }

  _setPosition(offset, epoch) {
    const pos = position(offset, epoch);
    if (pos === null) return;
    const old = this.position;
    if (old === null || pos.epoch !== old.epoch || pos.offset > old.offset) this.position = pos;
    this._overlapTop = pos.offset;
  }

  _restarted(offset, epoch) {
    this.position = { offset, epoch };
    this._overlapTop = null;
    this.recovered = false;
    this.emit("reset");
  }

  _hold() {
    this._holding = true;
    this._held = [];
  }

  _release() {
    const held = this._held;
    this._held = [];
    this._holding = false;
    for (const pub of held) this._feed(pub);
  }

  _dropHeld() {
    this._held = [];
    this._holding = false;
    this._recovering = false;
  }

  _applySubscribe(ok, askedRecovery) {
    const resubscribed = this.state === "subscribed";
    let missed = 0;
    this.recovered = typeof ok.recovered === "boolean" ? ok.recovered : null;
    if (askedRecovery && ok.recovered === false) {
      // PROTOCOL.md §3: `since` is gone; the reply holds the current position.
      this._held = [];
      this.position = null;
      this._setPosition(ok.offset, ok.epoch);
    } else {
      if (!askedRecovery) this.position = null; // a fresh subscribe starts at the reply
      for (const entry of ok.publications ?? []) {
        if (entry && typeof entry === "object") this._feed(publication(entry, this.channel));
      }
      missed = (ok.publications ?? []).length;
      this._setPosition(ok.offset, ok.epoch);
    }
    this.state = "subscribed";
    this._release();
    this.emit("subscribed", { recovered: this.recovered, resubscribed, missed });
    if (askedRecovery && ok.recovered === false) this.emit("reset");
    this._resolveReady(this);
  }

  _finish(error = null) {
    if (this.state === "closed") return;
    this.state = "closed";
    this._dropHeld();
    if (error) this._rejectReady(error);
    else this._rejectReady(new Disconnected(null, "unsubscribed", false));
    this.emit("unsubscribed", error);
  }
}

/**
 * A hubbub client over WebSocket. `url` may be a list: the first that answers is used
 * and reconnects go round-robin through them. Events: "state" ("connecting" |
 * "connected" | "disconnected"), "connected" (the connect reply), "disconnected"
 * (a Disconnected), "error" (a ReplyError from an `error` push or a failed refresh).
 */
export class Client extends Emitter {
  constructor(url, options = {}) {
    super();
    this.urls = Array.isArray(url) ? [...url] : [url];
    if (this.urls.length === 0) throw new Error("at least one url is needed");
    const encoding = options.encoding ?? "json";
    if (!(encoding in SUBPROTOCOL)) throw new Error(`encoding must be "json" or "msgpack", not ${encoding}`);
    this.encoding = encoding;
    this.token = options.token ?? null;
    this.getToken = options.getToken ?? null;
    this.name = options.name ?? "hubbub-js";
    this.version = options.version ?? null;
    this.reconnect = options.reconnect ?? true;
    this.timeout = options.timeout ?? 10000;
    this.backoffBase = options.backoffBase ?? 100;
    this.backoffCap = options.backoffCap ?? 10000;
    /** Refresh the token this many ms before `exp` (at most half its remaining life); 0: only on 3005. */
    this.refreshAhead = options.refreshAhead ?? 30000;
    this.WebSocket = options.WebSocket ?? globalThis.WebSocket;
    this._codec = options.msgpack ?? null;
    /** "connecting" | "connected" | "disconnected". */
    this.state = "disconnected";
    /** The ok map of the last `connect` reply (client, node, ping, limits). */
    this.info = {};
    /** How the last connection ended. */
    this.lastDisconnect = null;
    /** Successful reconnects so far. */
    this.reconnects = 0;
    this.subscriptions = new Map();
    this._urlIndex = 0;
    this._ws = null;
    this._wsOpening = null;
    this._pending = new Map();
    this._lastId = 0;
    this._waiters = [];
    this._running = false; // connect() succeeded once and close() was not called
    this._final = null;
    this._watchdog = null;
    this._refreshTimer = null;
    this._lastRx = 0;
  }

  get connected() {
    return this.state === "connected";
  }

  get clientId() {
    return this.info.client ?? null;
  }

  // -- lifecycle ---------------------------------------------------------------

  /** Connect (each url once, in order); resolves with the connect reply. */
  async connect() {
    if (this._final) throw this._final;
    if (this._running) {
      await this._ready();
      return this.info;
    }
    this._setState("connecting");
    let error = null;
    let renewed = false;
    for (let i = 0; i < this.urls.length; i++) {
      try {
        await this._open(this.urls[this._urlIndex]);
        this._running = true;
        return this.info;
      } catch (err) {
        if (this._final) throw this._final; // closed meanwhile
        error = err;
        if (this._canRenew(err) && !renewed) {
          [this.token, renewed] = [null, true]; // getToken gives the next one
          i--;
          continue;
        }
        if (err instanceof ReplyError && !RETRY_CODES.has(err.code)) break;
        if (err instanceof Disconnected && !err.reconnect) break;
      }
      this._urlIndex = (this._urlIndex + 1) % this.urls.length;
    }
    this._setState("disconnected");
    throw error;
  }

  /** Close the connection and stop reconnecting. */
  close() {
    this._running = false;
    this._final = new Disconnected(null, "client closed", false);
    const ws = this._ws;
    this._lost(ws, this._final);
    if (ws) this._abandon(ws, 1000);
    this._wsOpening?.close(1000); // its handshake fails with the close event
    this._shutdown(this._final, true);
  }

  // -- commands ----------------------------------------------------------------

  /** Subscribe to `channel`; listen on the returned Subscription, await `sub.ready`. */
  subscribe(channel, { recover = false, since = null } = {}) {
    if (this.subscriptions.has(channel)) throw new ReplyError(409, "already subscribed", null, { local: true });
    const sub = new Subscription(this, channel, { recover, since });
    this.subscriptions.set(channel, sub);
    if (this.connected) this._subscribe(sub, this._ws); // else sent on connect
    return sub;
  }

  /** Leave `channel` (a no-op on the server while disconnected). */
  async unsubscribe(channel) {
    const sub = this.subscriptions.get(channel);
    if (!sub) throw new ReplyError(409, "not subscribed", null, { local: true });
    this.subscriptions.delete(channel);
    sub._finish();
    if (!this.connected) return;
    try {
      await this._call({ op: "unsubscribe", channel });
    } catch (err) {
      if (!(err instanceof Disconnected)) throw err;
    }
  }

  /** Publish and wait for the reply: the offset on channels with history, else null. */
  async publish(channel, data) {
    const ok = await this._call({ op: "publish", channel, data });
    return Number.isInteger(ok.offset) ? ok.offset : null;
  }

  /** Who is subscribed: client id -> {user, info}. */
  async presence(channel) {
    const ok = await this._call({ op: "presence", channel });
    return ok.clients && typeof ok.clients === "object" ? ok.clients : {};
  }

  /** History: with `since` the first `limit` after it, else the last `limit`; {publications, position}. */
  async history(channel, { since = null, limit = null } = {}) {
    return this._history(channel, since, limit);
  }

  /** Round trip to the server. */
  async ping() {
    await this._call({ op: "ping" });
  }

  /** Replace the connection token (also used for later reconnects); resolves with `expires`. */
  async refresh(token) {
    const ok = await this._call({ op: "refresh", token });
    this.token = token;
    this._scheduleRefresh();
    return Number.isFinite(ok.expires) ? ok.expires : null;
  }

  // -- requests ----------------------------------------------------------------

  _ready() {
    if (this.connected) return Promise.resolve();
    if (this._final) return Promise.reject(this._final);
    if (!this._running && this.state === "disconnected") {
      return Promise.reject(new Disconnected(null, "not connected: call connect() first", false));
    }
    return new Promise((resolve, reject) => this._waiters.push({ resolve, reject }));
  }

  /** Send a command with a new id; resolves with its ok map. Without `ws` it waits for the connection. */
  async _call(message, ws = null, what = message.op) {
    const deadline = Date.now() + this.timeout;
    const late = () => new ReplyTimeout(`no reply to ${JSON.stringify(what)} in time`);
    if (ws === null) {
      await withTimeout(this._ready(), this.timeout, late);
      ws = this._ws;
    }
    this._lastId = (this._lastId % (MAX_ID - 1)) + 1;
    const id = this._lastId;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this._pending.delete(id);
        reject(late());
      }, Math.max(0, deadline - Date.now()));
      const settle = (fn) => (value) => {
        clearTimeout(timer);
        this._pending.delete(id);
        fn(value);
      };
      this._pending.set(id, { resolve: settle(resolve), reject: settle(reject), ws });
      try {
        this._sendOn(ws, { ...message, id });
      } catch (err) {
        this._pending.get(id)?.reject(err);
      }
    });
  }

  _sendOn(ws, message) {
    if (!ws || ws !== this._wsOpening && ws !== this._ws) throw new Disconnected(null, "not connected");
    if (ws.readyState !== 1) throw new Disconnected(null, "connection closed");
    ws.send(this.encoding === "json" ? JSON.stringify(message) : this._codec.encode(message));
  }

  async _history(channel, since, limit, ws = null) {
    const message = { op: "history", channel };
    if (since) message.since = { offset: since.offset, epoch: since.epoch };
    if (limit !== null && limit !== undefined) message.limit = limit;
    const ok = await this._call(message, ws);
    const publications = (ok.publications ?? []).filter((e) => e && typeof e === "object").map((e) => publication(e, channel));
    return { publications, position: position(ok.offset, ok.epoch) };
  }

  async _subscribe(sub, ws) {
    const message = { op: "subscribe", channel: sub.channel };
    const asked = sub.recover || sub.state === "subscribed";
    if (asked) {
      message.recover = true;
      if (sub.position) message.since = { offset: sub.position.offset, epoch: sub.position.epoch };
    }
    const askedRecovery = asked && sub.position !== null;
    for (;;) {
      try {
        const ok = await this._call(message, ws, `subscribe ${sub.channel}`);
        if (this.subscriptions.get(sub.channel) === sub) sub._applySubscribe(ok, askedRecovery);
        return;
      } catch (err) {
        if (this.subscriptions.get(sub.channel) !== sub || this._ws !== ws) return;
        if (err instanceof ReplyError && RETRY_CODES.has(err.code)) {
          await sleep(err.retryAfter ?? backoffDelay(1, this.backoffBase, this.backoffCap));
          continue;
        }
        if (err instanceof Disconnected) return; // the next connection re-subscribes
        if (err instanceof ReplyTimeout) {
          this._abort(ws, "no reply to subscribe"); // the next connection re-subscribes
          return;
        }
        this.subscriptions.delete(sub.channel);
        sub._finish(err);
        return;
      }
    }
  }

  // -- connections -------------------------------------------------------------

  async _codecReady() {
    if (this.encoding === "msgpack" && this._codec === null) {
      this._codec = await import("./vendor/msgpack.mjs");
    }
  }

  /** Open a WebSocket to `url`, send `connect`, then (re-)subscribe every subscription. */
  async _open(url) {
    await this._codecReady();
    if (this.getToken && this._tokenStale()) this.token = await this.getToken();
    const ws = new this.WebSocket(url, [SUBPROTOCOL[this.encoding]]);
    ws.binaryType = "arraybuffer";
    this._wsOpening = ws;
    let info;
    try {
      info = await withTimeout(this._handshake(ws), this.timeout, () => new ReplyTimeout("no connect reply in time"));
    } catch (err) {
      this._abandon(ws);
      if (this._wsOpening === ws) this._wsOpening = null;
      throw err;
    }
    if (this._wsOpening === ws) this._wsOpening = null;
    if (this._final) {
      this._abandon(ws);
      throw this._final;
    }
    this.info = info;
    this._ws = ws;
    this._setState("connected");
    this._armWatchdog(ws);
    this._scheduleRefresh();
    for (const { resolve } of this._waiters.splice(0)) resolve();
    this.emit("connected", info);
    for (const sub of this.subscriptions.values()) {
      if (sub.state === "subscribed") sub._hold();
      this._subscribe(sub, ws);
    }
  }

  _handshake(ws) {
    return new Promise((resolve, reject) => {
      let ended = null;
      ws.onopen = () => {
        const message = { op: "connect", client: { name: this.name } };
        if (this.version) message.client.version = this.version;
        if (this.token) message.token = this.token;
        this._call(message, ws, "connect").then(resolve, reject);
      };
      ws.onmessage = (event) => {
        const end = this._receive(ws, event.data);
        if (end) ended = end;
      };
      ws.onerror = () => {}; // the close event follows and says more
      ws.onclose = (event) => {
        const info = ended ?? this._fromClose(event);
        if (this._ws === ws) this._connectionEnded(ws, info);
        else reject(info);
      };
    });
  }

  _fromClose(event) {
    const code = event.code;
    const hubbub = code >= 3000 && code <= 3999;
    return new Disconnected(hubbub ? code : null, event.reason || "connection closed", !NO_RECONNECT.has(code));
  }

  _receive(ws, data) {
    let message;
    try {
      message = typeof data === "string" ? JSON.parse(data) : this._codec.decode(new Uint8Array(data));
    } catch (err) {
      this._abort(ws, `bad message from the server: ${err}`);
      return null;
    }
    this._lastRx = Date.now();
    if (!message || typeof message !== "object") return null;
    return this._dispatch(ws, message);
  }

  /** Handle one received map; a `disconnect` push is returned (the close follows). */
  _dispatch(ws, message) {
    if (message.id !== undefined) {
      const pending = this._pending.get(message.id);
      if (pending && pending.ws === ws) {
        this._pending.delete(message.id);
        if (message.error !== undefined) pending.reject(ReplyError.fromWire(message.error));
        else pending.resolve(message.ok && typeof message.ok === "object" ? message.ok : {});
      }
      return null;
    }
    const sub = typeof message.channel === "string" ? this.subscriptions.get(message.channel) : undefined;
    switch (message.push) {
      case "pub":
        sub?._deliver(publication(message, message.channel));
        break;
      case "ping":
        try {
          this._sendOn(ws, { op: "pong" });
        } catch {
          // the close event follows
        }
        break;
      case "join":
      case "leave":
        sub?.emit(message.push, { client: message.client, user: message.user });
        break;
      case "lag":
        if (sub) this._onLag(sub, Number.isInteger(message.dropped) ? message.dropped : 0);
        break;
      case "unsubscribe": // the server ended it (a refresh whose token no longer allows it)
        if (sub) {
          this.subscriptions.delete(sub.channel);
          const code = Number.isInteger(message.code) ? message.code : 0;
          sub._finish(new ReplyError(code, String(message.reason ?? ""), null, message));
        }
        break;
      case "error":
        this.emit("error", ReplyError.fromWire(message));
        break;
      case "disconnect": {
        const after = Number.isInteger(message.after) && message.after >= 0 ? message.after : null;
        const reconnect = typeof message.reconnect === "boolean" ? message.reconnect : true;
        const code = Number.isInteger(message.code) ? message.code : null;
        return new Disconnected(code, String(message.reason ?? ""), reconnect, after);
      }
      default: // unknown pushes are ignored: the protocol may add some
    }
    return null;
  }

  _onLag(sub, dropped) {
    sub.lagged += dropped;
    sub.emit("lag", { dropped });
    if (sub.position && sub.state === "subscribed" && !sub._recovering && !sub._holding) {
      sub._recovering = true;
      sub._hold();
      this._recoverGap(sub, this._ws);
    }
  }

  /** After a `lag`: read history from the last position (paging), then release live ones. */
  async _recoverGap(sub, ws) {
    const pubs = [];
    let reset = false;
    let top = null;
    try {
      let pos = sub.position;
      while (pos) {
        const page = await this._history(sub.channel, pos, null, ws);
        pubs.push(...page.publications);
        top = page.position;
        const last = page.publications.length ? page.publications.at(-1).offset : null;
        if (!top || last === null || last >= top.offset) break;
        pos = { offset: last, epoch: top.epoch };
      }
    } catch (err) {
      if (err instanceof Disconnected) return; // the next connection's re-subscribe recovers
      if (err instanceof ReplyTimeout) return this._abort(ws, "no reply to history");
      reset = err instanceof ReplyError && err.code === 410;
    } finally {
      sub._recovering = false;
    }
    if (this._ws !== ws || this.subscriptions.get(sub.channel) !== sub) return;
    for (const pub of pubs) sub._feed(pub);
    if (top) sub._setPosition(top.offset, top.epoch);
    if (reset) {
      sub.recovered = false;
      sub.emit("reset");
    }
    sub._release();
  }

  /** A live connection ended: fail its commands, pause subscriptions, maybe reconnect. */
  _connectionEnded(ws, info) {
    this.lastDisconnect = info;
    this._lost(ws, info);
    this.emit("disconnected", info);
    if (this._final) return;
    if (this._canRenew(info)) {
      this.token = null; // expired or refused: getToken gives the next one
    } else if (!(this.reconnect && info.reconnect)) {
      this._running = false;
      this._final = info;
      this._shutdown(info, false);
      return;
    }
    this._reconnectLoop(info);
  }

  /** A 3005 (or a 401 reply) can be cured with a new token when there is getToken. */
  _canRenew(info) {
    if (!this.getToken) return false;
    return info.code === UNAUTHORIZED_CLOSE || info.code === 401;
  }

  async _reconnectLoop(info) {
    this._setState("connecting");
    let delay = info.after ?? backoffDelay(0, this.backoffBase, this.backoffCap);
    for (let attempt = 1; ; attempt++) {
      await sleep(delay);
      if (this._final) return;
      delay = backoffDelay(attempt, this.backoffBase, this.backoffCap);
      this._urlIndex = (this._urlIndex + 1) % this.urls.length;
      try {
        await this._open(this.urls[this._urlIndex]);
        this.reconnects += 1;
        return;
      } catch (err) {
        if (this._final) return;
        if (err instanceof ReplyError || err instanceof Disconnected) {
          if (this._canRenew(err)) {
            this.token = null;
          } else if (err instanceof ReplyError ? !RETRY_CODES.has(err.code) : !err.reconnect) {
            const final = err instanceof Disconnected ? err : new Disconnected(null, `connect refused: ${err.message}`, false);
            this._running = false;
            this._final = final;
            this._shutdown(final, false);
            return;
          }
          const after = err instanceof ReplyError ? err.retryAfter : err.after;
          if (after !== null) delay = after;
        }
      }
    }
  }

  _lost(ws, info) {
    if (ws !== this._ws) return;
    this._ws = null;
    clearTimeout(this._watchdog);
    clearTimeout(this._refreshTimer);
    for (const [id, pending] of this._pending) {
      if (pending.ws === ws) {
        this._pending.delete(id);
        pending.reject(info);
      }
    }
    for (const sub of this.subscriptions.values()) sub._dropHeld();
    if (this.state === "connected") this._setState("disconnected");
  }

  _shutdown(final, clean) {
    this._setState("disconnected");
    for (const { reject } of this._waiters.splice(0)) reject(final);
    const subs = [...this.subscriptions.values()];
    this.subscriptions.clear();
    for (const sub of subs) sub._finish(clean ? null : final);
  }

  /** Stop listening to `ws` and close it; its close event no longer matters. */
  _abandon(ws, code = 1000) {
    ws.onopen = ws.onmessage = ws.onclose = null;
    ws.onerror = () => {};
    try {
      ws.close(code);
    } catch {
      // already closing
    }
  }

  /** Give up on a live connection at once (a browser may take long to report a dead one). */
  _abort(ws, reason) {
    if (ws !== this._ws) return;
    this._abandon(ws, 4000);
    this._connectionEnded(ws, new Disconnected(null, reason));
  }

  _setState(state) {
    if (this.state === state) return;
    this.state = state;
    this.emit("state", state);
  }

  /** Nothing received for ping + timeout: the connection is dead (§3 keepalive). */
  _armWatchdog(ws) {
    const ping = this.info.ping;
    if (!(typeof ping === "number" && ping > 0)) return;
    const limit = ping * 1000 + this.timeout;
    this._lastRx = Date.now();
    const check = () => {
      if (this._ws !== ws) return;
      const idle = Date.now() - this._lastRx;
      if (idle >= limit) this._abort(ws, "no traffic from the server");
      else this._watchdog = setTimeout(check, limit - idle);
    };
    this._watchdog = setTimeout(check, limit);
  }

  // -- tokens ------------------------------------------------------------------

  _tokenStale() {
    if (!this.token) return true;
    const exp = tokenExpiry(this.token);
    return exp !== null && exp * 1000 <= Date.now() + 1000;
  }

  /** Refresh through getToken ahead of `exp` (at most half the remaining life ahead). */
  _scheduleRefresh() {
    clearTimeout(this._refreshTimer);
    const exp = this.token ? tokenExpiry(this.token) : null;
    if (!this.getToken || !this.refreshAhead || exp === null) return;
    const remaining = exp * 1000 - Date.now();
    const ws = this._ws;
    const delay = remaining - Math.min(this.refreshAhead, remaining / 2);
    this._refreshTimer = setTimeout(() => this._refreshNow(ws), Math.min(Math.max(delay, 0), 2 ** 31 - 1));
  }

  async _refreshNow(ws, attempt = 0) {
    if (this._ws !== ws) return;
    try {
      const token = await this.getToken();
      if (this._ws === ws) await this.refresh(token);
    } catch (err) {
      if (this._ws !== ws) return;
      this.emit("error", err instanceof ReplyError ? err : new ReplyError(0, `token refresh failed: ${err}`));
      // The server disconnects (3005) at exp if no refresh succeeds: then a new token is fetched.
      this._refreshTimer = setTimeout(() => this._refreshNow(ws, attempt + 1), backoffDelay(attempt + 3, this.backoffBase, this.backoffCap));
    }
  }
}
