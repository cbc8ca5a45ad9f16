// hubbub.js against real `hubbub serve` nodes: commands, both encodings, reconnect with
// recovery across nodes, recovered: false, tokens (refresh ahead of exp, and on 3005),
// pings. Run by tests/web/test_js_client.py (`node --test`).

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import { Client, Disconnected, ReplyError, Subscription, backoffDelay, tokenExpiry } from "../../../web/hubbub.js";
import { REDIS, SECRET, makeToken, startNode, until } from "./servers.mjs";

const CHAT = "[namespaces.chat]\nhistory_size = 100\npresence = true\njoin_leave = true\n";
const nodes = [];
const clients = [];

async function node(config = CHAT, opts = {}) {
  const n = await startNode(config, opts);
  nodes.push(n);
  return n;
}

// Nodes that no test stops or pauses are shared: fewer processes, a shorter run.
const SHARED = CHAT + "[namespaces.news]\nclient_publish = false\n[namespaces.slow]\npublish_rate = 1\n";
const AUTH = `[auth]\nanonymous = false\nhmac_secret = "${SECRET}"\n` + CHAT;
const shared = new Map();
function sharedNode(config = SHARED) {
  if (!shared.has(config)) shared.set(config, node(config));
  return shared.get(config);
}

function client(url, options = {}) {
  const c = new Client(url, { timeout: 5000, ...options });
  clients.push(c);
  return c;
}

/** Collect a subscription's publications' data. */
function collect(sub) {
  const got = [];
  sub.on("publication", (p) => got.push(p));
  return got;
}

after(async () => {
  for (const c of clients) c.close();
  await Promise.all(nodes.map((n) => n.stop()));
});

describe("pure logic", () => {
  test("backoff is full jitter under an exponential cap", () => {
    assert.equal(backoffDelay(0, 100, 10000, () => 1), 100);
    assert.equal(backoffDelay(3, 100, 10000, () => 1), 800);
    assert.equal(backoffDelay(20, 100, 10000, () => 1), 10000);
    assert.equal(backoffDelay(5, 100, 10000, () => 0), 0);
  });

  test("tokenExpiry reads exp from a JWT", () => {
    const token = makeToken("ann", 60);
    assert.ok(Math.abs(tokenExpiry(token) - (Date.now() / 1000 + 60)) < 5);
    assert.equal(tokenExpiry("not-a-jwt"), null);
  });

  test("a subscription skips duplicates by offset and epoch, reports a restart", () => {
    const sub = new Subscription(null, "chat:x");
    const seen = collect(sub);
    let resets = 0;
    sub.on("reset", () => resets++);
    sub._applySubscribe({ offset: 2, epoch: "e1" }, false);
    const pub = (offset, epoch = "e1") => sub._deliver({ channel: "chat:x", data: offset, offset, epoch, sender: null });
    pub(2); // the overlap: already counted in the reply's position
    pub(3);
    pub(3);
    pub(4);
    pub(1, "e2"); // a new epoch: the stream restarted
    assert.deepEqual(seen.map((p) => [p.offset, p.epoch]), [[3, "e1"], [4, "e1"], [1, "e2"]]);
    assert.equal(resets, 1);
    assert.equal(sub.recovered, false);
    assert.deepEqual(sub.position, { offset: 1, epoch: "e2" });
  });

  test("after a lag the gap is read from history (paged) before the live ones", async () => {
    const client = new Client("ws://unused/ws");
    const sub = new Subscription(client, "chat:x");
    client.subscriptions.set("chat:x", sub);
    const seen = collect(sub);
    sub._applySubscribe({ offset: 3, epoch: "e" }, false);
    const ws = { readyState: 1 };
    client._ws = ws;
    const entry = (offset) => ({ channel: "chat:x", data: offset, offset, epoch: "e", sender: null });
    const pages = [[entry(4), entry(5)], [entry(6), entry(7)]];
    const asked = [];
    let release;
    const gate = new Promise((r) => (release = r));
    client._history = async (channel, since) => {
      asked.push(since.offset);
      await gate;
      return { publications: pages.shift() ?? [], position: { offset: 7, epoch: "e" } };
    };
    client._dispatch(ws, { push: "lag", channel: "chat:x", dropped: 4 });
    client._dispatch(ws, { push: "pub", channel: "chat:x", data: 8, offset: 8, epoch: "e" });
    client._dispatch(ws, { push: "pub", channel: "chat:x", data: 7, offset: 7, epoch: "e" });
    assert.deepEqual(seen, []); // held while the history is read
    release();
    await until(() => seen.length === 5, "the gap and the live one");
    assert.deepEqual(seen.map((p) => p.offset), [4, 5, 6, 7, 8]);
    assert.deepEqual(asked, [3, 5]);
    assert.equal(sub.lagged, 4);
  });

  test("held publications are released after the recovered ones, once", () => {
    const sub = new Subscription(null, "chat:x", { since: { offset: 5, epoch: "e" } });
    sub.state = "subscribed";
    const seen = collect(sub);
    sub._hold();
    sub._deliver({ channel: "chat:x", data: 8, offset: 8, epoch: "e", sender: null });
    const entry = (offset) => ({ channel: "chat:x", data: offset, offset, epoch: "e" });
    sub._applySubscribe({ offset: 8, epoch: "e", recovered: true, publications: [entry(6), entry(7), entry(8)] }, true);
    assert.deepEqual(seen.map((p) => p.offset), [6, 7, 8]);
    assert.equal(sub.recovered, true);
  });
});

for (const encoding of ["json", "msgpack"]) {
  describe(`commands over ${encoding}`, () => {
    let n;
    before(async () => {
      n = await sharedNode();
    });

    test("subscribe, publish, presence, history, join/leave", async () => {
      const a = client(n.url, { encoding, name: "a" });
      const states = [];
      a.on("state", (s) => states.push(s));
      const info = await a.connect();
      assert.equal(typeof info.client, "string");
      assert.deepEqual(states, ["connecting", "connected"]);
      const sub = a.subscribe(`chat:room-${encoding}`, { recover: true });
      const got = collect(sub);
      const joins = [];
      sub.on("join", (e) => joins.push(e.client));
      await sub.ready;
      const b = client(n.url, { encoding, name: "b" });
      await b.connect();
      const bsub = b.subscribe(`chat:room-${encoding}`);
      await bsub.ready;
      await until(() => joins.includes(b.clientId), "the join");
      const offset = await b.publish(`chat:room-${encoding}`, { text: "héllo ✓", n: 1.5, list: [1, null, true] });
      assert.equal(offset, 1);
      await until(() => got.length === 1, "the publication");
      assert.deepEqual(got[0].data, { text: "héllo ✓", n: 1.5, list: [1, null, true] });
      assert.equal(got[0].sender.client, b.clientId);
      assert.equal(got[0].offset, 1);
      const present = await a.presence(`chat:room-${encoding}`);
      assert.deepEqual(Object.keys(present).sort(), [a.clientId, b.clientId].sort());
      const history = await a.history(`chat:room-${encoding}`, { limit: 10 });
      assert.deepEqual(history.publications.map((p) => p.data.text), ["héllo ✓"]);
      assert.equal(history.position.offset, 1);
      await bsub.unsubscribe();
      assert.equal(bsub.state, "closed");
    });

    test("errors reject with a ReplyError carrying code, message and retryAfter", async () => {
      const c = client(n.url, { encoding });
      await c.connect();
      await assert.rejects(c.publish("bad name!", 1), (e) => e instanceof ReplyError && e.code === 400);
      await assert.rejects(c.publish("news:x", 1), (e) => e instanceof ReplyError && e.code === 403);
      await c.publish(`slow:${encoding}`, 1);
      await assert.rejects(c.publish(`slow:${encoding}`, 2), (e) => e.code === 429 && e.retryAfter > 0 && e.message.length > 0);
      const sub = c.subscribe(`chat:dup-${encoding}`);
      await sub.ready;
      assert.throws(() => c.subscribe(`chat:dup-${encoding}`), (e) => e.code === 409);
      const refused = c.subscribe("bad name!");
      await assert.rejects(refused.ready, (e) => e.code === 400);
      assert.equal(refused.state, "closed");
      assert.equal(c.subscriptions.has("bad name!"), false);
    });
  });
}

describe("reconnects", { concurrency: true }, () => {
  test("close() during connect() rejects it at once", async () => {
    const n = await sharedNode();
    const c = client(n.url);
    const connecting = c.connect();
    c.close();
    await assert.rejects(connecting, (e) => e instanceof Disconnected && e.reason === "client closed");
    assert.equal(c.state, "disconnected");
  });

  test("a drained node's client moves to the other node and recovers every publication, once", { skip: !REDIS && "needs HUBBUB_TEST_REDIS" }, async () => {
    const config = CHAT + "[limits]\ndrain_timeout = 1.0\n";
    const a = await node(config, { redis: [REDIS] });
    const b = await node(config, { redis: [REDIS] });
    const reader = client([a.url, b.url], { encoding: "msgpack", backoffBase: 50 });
    await reader.connect();
    const first = reader.info.node;
    const channel = `chat:moves-${process.pid}-${Date.now()}`; // fresh in a reused Redis too
    const sub = reader.subscribe(channel, { recover: true });
    const got = collect(sub);
    const resubscribed = [];
    sub.on("subscribed", (e) => e.resubscribed && resubscribed.push(e));
    await sub.ready;
    const writer = client(b.url);
    await writer.connect();
    for (let i = 1; i <= 5; i++) await writer.publish(channel, i);
    await until(() => got.length === 5, "the first five");
    const disconnects = [];
    reader.on("disconnected", (d) => disconnects.push(d));
    a.term();
    await until(() => disconnects.length === 1, "the drain's disconnect");
    assert.equal(disconnects[0].code, 3001);
    assert.equal(disconnects[0].reconnect, true);
    for (let i = 6; i <= 15; i++) await writer.publish(channel, i);
    await until(() => resubscribed.length === 1 && got.length >= 15, "recovery on the other node");
    await writer.publish(channel, 16);
    await until(() => got.length >= 16, "a live one after recovery");
    assert.deepEqual(got.map((p) => p.data), Array.from({ length: 16 }, (_, i) => i + 1));
    assert.deepEqual(got.map((p) => p.offset), Array.from({ length: 16 }, (_, i) => i + 1));
    assert.equal(resubscribed[0].recovered, true);
    assert.notEqual(reader.info.node, first);
    assert.equal(reader.reconnects, 1);
    assert.equal(await a.exited, 0);
  });

  test("a position no longer in history is reported as recovered: false", async () => {
    const n = await sharedNode();
    const c = client(n.url);
    await c.connect();
    const sub = c.subscribe("chat:gone", { recover: true, since: { offset: 7, epoch: "not-this-one" } });
    let resets = 0;
    sub.on("reset", () => resets++);
    await sub.ready;
    assert.equal(sub.recovered, false);
    assert.equal(resets, 1);
  });

  test("commands in flight when the connection drops reject with Disconnected; later ones wait", async () => {
    const n = await node(CHAT + "[limits]\ndrain_timeout = 0.2\n");
    const m = await sharedNode();
    const c = client([n.url, m.url], { backoffBase: 20 });
    await c.connect();
    const sub = c.subscribe("chat:w");
    await sub.ready;
    n.term();
    await until(() => c.state !== "connected", "the disconnect");
    assert.equal(await c.publish("chat:w", "after"), 1); // waited for the reconnect to m
    assert.equal(c.info.node !== undefined, true);
  });

  test("a silent server is given up after ping + timeout and another node is used", async () => {
    const n = await node(CHAT + "[limits]\nping_interval = 0.5\n");
    const m = await sharedNode();
    const c = client([n.url, m.url], { timeout: 1000, backoffBase: 20 });
    await c.connect();
    const first = c.info.node;
    const ends = [];
    c.on("disconnected", (d) => ends.push(d));
    n.proc.kill("SIGSTOP"); // alive but silent: no close, no ping
    try {
      await until(() => c.state === "connected" && c.info.node !== first, "the move to the other node");
    } finally {
      n.proc.kill("SIGCONT");
    }
    assert.equal(ends[0].reason, "no traffic from the server");
  });

  test("a disconnect without reconnect (3004) is final: subscriptions end", async () => {
    const n = await sharedNode();
    const c = client(n.url);
    await c.connect();
    const sub = c.subscribe("chat:final");
    let ended = null;
    sub.on("unsubscribed", (err) => (ended = err));
    await sub.ready;
    c._ws.send("this is not JSON"); // a protocol error: the server answers 3004
    await until(() => ended !== null, "the end of the subscription");
    assert.equal(ended.code, 3004);
    assert.equal(ended.reconnect, false);
    assert.equal(c.state, "disconnected");
    assert.equal(c.subscriptions.size, 0);
    await assert.rejects(c.publish("chat:final", 1), (e) => e instanceof Disconnected);
  });

  test("server pings are answered: the connection stays up", async () => {
    const n = await node(CHAT + "[limits]\nping_interval = 0.3\nping_timeout = 0.3\n");
    const c = client(n.url);
    const ends = [];
    c.on("disconnected", (d) => ends.push(d));
    await c.connect();
    await new Promise((r) => setTimeout(r, 1500)); // several ping intervals
    assert.equal(c.state, "connected");
    assert.deepEqual(ends, []);
  });
});

describe("tokens", { concurrency: true }, () => {

  test("getToken is asked ahead of exp and the token refreshed in place", async () => {
    const n = await sharedNode(AUTH);
    let asked = 0;
    const c = client(n.url, { token: makeToken("ann", 2), getToken: async () => (asked++, makeToken("ann", 60)), refreshAhead: 1000 });
    const ends = [];
    c.on("disconnected", (d) => ends.push(d));
    await c.connect();
    await until(() => asked === 1 && tokenExpiry(c.token) > Date.now() / 1000 + 30, "the refresh");
    await new Promise((r) => setTimeout(r, 2500)); // past the first token's exp
    assert.equal(c.state, "connected");
    assert.deepEqual(ends, []);
  });

  test("a 3005 (expired token) makes the client fetch a new token and reconnect", async () => {
    const n = await sharedNode(AUTH);
    let asked = 0;
    const c = client(n.url, { token: makeToken("bob", 3), getToken: async () => (asked++, makeToken("bob", 60)), refreshAhead: 0, backoffBase: 20 });
    const ends = [];
    c.on("disconnected", (d) => ends.push(d));
    await c.connect();
    const sub = c.subscribe("chat:t", { recover: true });
    const got = collect(sub);
    await sub.ready;
    await until(() => ends.length === 1 && c.state === "connected", "the 3005 and the reconnect");
    assert.equal(ends[0].code, 3005);
    assert.equal(asked, 1);
    await c.publish("chat:t", "still here");
    await until(() => got.length === 1, "a publication after the new token");
  });

  test("a refresh that no longer allows a channel ends its subscription (unsubscribe push)", async () => {
    const n = await sharedNode(AUTH);
    const c = client(n.url, { token: makeToken("dee", 60, SECRET, { channels: ["chat:*", "news*"] }) });
    await c.connect();
    const chat = c.subscribe("chat:narrowed");
    const news = c.subscribe("news-kept");
    let ended = null;
    chat.on("unsubscribed", (err) => (ended = err));
    await Promise.all([chat.ready, news.ready]);
    await c.refresh(makeToken("dee", 60, SECRET, { channels: ["news*"] }));
    await until(() => ended !== null, "the unsubscribe push");
    assert.ok(ended instanceof ReplyError);
    assert.equal(ended.code, 403);
    assert.equal(chat.state, "closed");
    assert.deepEqual([...c.subscriptions.keys()], ["news-kept"]);
  });

  test("without getToken a 3005 is final", async () => {
    const n = await sharedNode(AUTH);
    const c = client(n.url, { token: makeToken("cy", 60) });
    await c.connect();
    c.token = makeToken("cy", 1); // used by the refresh below
    await c.refresh(c.token);
    await until(() => c.state === "disconnected" && c.lastDisconnect, "the 3005");
    assert.equal(c.lastDisconnect.code, 3005);
    await assert.rejects(c.publish("chat:x", 1), (e) => e instanceof Disconnected && e.reconnect === false);
  });
});
