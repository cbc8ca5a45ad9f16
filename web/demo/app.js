// The demo chat and live feed on hubbub.js (served by a node with [server] demo = true).
// URL parameters prefill the form: ?name=&room=&encoding=json|msgpack, and
// ?ws=url1,url2 to connect elsewhere than this page's own node.

import { Client } from "../hubbub.js";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const defaultUrl = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`;
const urls = (params.get("ws") ?? defaultUrl).split(",");
const SYMBOLS = ["HUB", "BUB", "WSS", "TCP", "RDS", "PUB"];

// What the browser tests read (tests/web/test_browser.py).
const demo = (window.hubbubDemo = { client: null, received: [], states: [], recoveries: [] });

let client = null;
let room = null;
let me = null;
const messages = new Map(); // offset -> rendered <li>, so history and live never show one twice

// -- joining ---------------------------------------------------------------------

for (const key of ["name", "room", "encoding"]) if (params.has(key)) $(key).value = params.get(key);
$("name").value ||= localStorage.getItem("hubbub-demo-name") ?? "";

$("join-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  me = $("name").value.trim();
  room = `chat:${$("room").value.trim()}`;
  localStorage.setItem("hubbub-demo-name", me);
  $("join-button").disabled = true;
  $("join-error").hidden = true;
  try {
    await start($("encoding").value);
  } catch (err) {
    $("join-error").textContent = `Could not connect: ${err.message}`;
    $("join-error").hidden = false;
    $("join-button").disabled = false;
    client?.close();
  }
});

async function start(encoding) {
  client = demo.client = new Client(urls, { name: me, encoding, version: "demo" });
  client.on("state", showState);
  client.on("connected", (info) => {
    $("node-id").textContent = info.node;
    myIds.add(info.client);
  });
  await client.connect();
  $("join").hidden = true;
  document.querySelector(".tabs").hidden = false;
  $("chat").hidden = false;
  $("room-name").textContent = room.slice(5);
  $("encoding-name").textContent = encoding === "json" ? "JSON" : "msgpack";
  const sub = client.subscribe(room, { recover: true });
  sub.on("publication", (p) => {
    demo.received.push(p.offset);
    addMessage(p);
  });
  sub.on("join", () => refreshPresence());
  sub.on("leave", () => refreshPresence());
  sub.on("subscribed", onSubscribed);
  sub.on("reset", () => loadHistory(true));
  await sub.ready;
  await loadHistory(false);
  await refreshPresence();
  $("message").focus();
}

async function loadHistory(reload) {
  if (reload) {
    messages.clear();
    $("messages").replaceChildren();
    systemLine("Some messages could not be recovered: history reloaded.", "warn");
  }
  const { publications } = await client.history(room, { limit: 50 });
  for (const p of publications) addMessage(p);
}

function onSubscribed(event) {
  if (!event.resubscribed) return;
  demo.recoveries.push(event);
  refreshPresence();
  if (event.recovered) {
    const what = event.missed === 0 ? "nothing missed" : `recovered ${event.missed} missed message${event.missed === 1 ? "" : "s"}`;
    toast(`Reconnected to node ${client.info.node} · ${what}`);
    systemLine(`Reconnected to node ${client.info.node} — ${what}.`, "good");
  }
}

// -- chat --------------------------------------------------------------------------

$("composer").addEventListener("submit", async (event) => {
  event.preventDefault();
  const text = $("message").value.trim();
  if (!text) return;
  $("message").value = "";
  try {
    await client.publish(room, { name: me, text, ts: Date.now() });
  } catch (err) {
    toast(`Not sent: ${err.message}`);
    $("message").value = text;
  }
});

function addMessage(p) {
  const data = p.data && typeof p.data === "object" ? p.data : { text: String(p.data) };
  if (p.offset !== null && messages.has(p.offset)) return;
  const li = document.createElement("li");
  li.className = "message" + (p.sender?.client === client.clientId ? " mine" : "");
  li.dataset.offset = p.offset ?? "";
  const name = String(data.name ?? "someone");
  const avatar = el("span", "avatar", name.slice(0, 1).toUpperCase());
  avatar.style.background = color(name);
  const time = new Date(Number.isFinite(data.ts) ? data.ts : Date.now());
  const head = el("div", "meta");
  head.append(el("span", "sender", name), el("time", "time", time.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })));
  const body = el("div", "bubble");
  body.append(head, el("div", "text", String(data.text ?? "")));
  li.append(avatar, body);
  const list = $("messages");
  // Keep offset order (history can arrive after live ones).
  const later = p.offset === null ? null : [...messages.entries()].filter(([o]) => o > p.offset).sort((a, b) => a[0] - b[0])[0];
  if (later) list.insertBefore(li, later[1]);
  else list.append(li);
  if (p.offset !== null) messages.set(p.offset, li);
  list.scrollTop = list.scrollHeight;
}

function systemLine(text, kind = "") {
  const li = el("li", `system ${kind}`, text);
  $("messages").append(li);
  $("messages").scrollTop = $("messages").scrollHeight;
}

async function refreshPresence() {
  let clients;
  try {
    clients = await client.presence(room);
  } catch {
    return; // reconnecting: the re-subscribe refreshes it
  }
  const people = Object.entries(clients)
    .filter(([id]) => id === client.clientId || !myIds.has(id)) // not this page's old connection
    .map(([id, c]) => ({ id, name: String(c.info?.name ?? c.user ?? id) }));
  people.sort((a, b) => a.name.localeCompare(b.name));
  const items = people.map(({ id, name }) => {
    const li = el("li", id === client.clientId ? "me" : "");
    const avatar = el("span", "avatar small", name.slice(0, 1).toUpperCase());
    avatar.style.background = color(name);
    li.append(avatar, el("span", "name", name + (id === client.clientId ? " (you)" : "")));
    return li;
  });
  $("presence").replaceChildren(...items);
  announce(people);
  $("online-count").textContent = String(people.length);
}

let present = null; // client id -> name, as last shown
const myIds = new Set(); // this page's client ids, one per connection

/** "Bob joined" / "Bob left" lines from the difference with the last presence list. */
function announce(people) {
  const now = new Map(people.map(({ id, name }) => [id, name]));
  if (present !== null) {
    for (const [id, name] of now) if (!present.has(id) && !myIds.has(id)) systemLine(`${name} joined`);
    for (const [id, name] of present) if (!now.has(id) && !myIds.has(id)) systemLine(`${name} left`);
  }
  present = now;
}

// -- connection indicator ------------------------------------------------------------

let everConnected = false;

function showState(state) {
  demo.states.push(state);
  const reconnecting = state === "connecting" && everConnected;
  everConnected ||= state === "connected";
  const label = {
    connected: `Connected`,
    connecting: reconnecting ? "Reconnecting…" : "Connecting…",
    disconnected: client.lastDisconnect ? "Disconnected" : "Not connected",
  }[state];
  $("status").className = `status ${reconnecting ? "reconnecting" : state}`;
  $("status-text").textContent = label;
  if (state === "connecting" && reconnecting) {
    systemLine(`Connection lost${client.lastDisconnect?.code ? ` (${client.lastDisconnect.code})` : ""} — reconnecting…`, "warn");
  }
}

function toast(text) {
  const t = $("toast");
  t.textContent = text;
  t.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => (t.hidden = true), 4000);
}

// -- tabs and the live feed ------------------------------------------------------------

for (const tab of document.querySelectorAll(".tab")) {
  tab.addEventListener("click", () => {
    for (const t of document.querySelectorAll(".tab")) t.classList.toggle("active", t === tab);
    $("chat").hidden = tab.dataset.view !== "chat";
    $("feed").hidden = tab.dataset.view !== "feed";
    if (tab.dataset.view === "feed") startFeed();
  });
}

const feed = { sub: null, latencies: [], arrivals: [], count: 0, prices: {}, timer: null, otherPublisher: null };

function startFeed() {
  if (feed.sub) return;
  $("tickers").replaceChildren(
    ...SYMBOLS.map((sym) => {
      const card = el("div", "ticker card");
      card.id = `t-${sym}`;
      card.append(el("div", "sym", sym), el("div", "price", "–"), el("div", "change", ""));
      return card;
    }),
  );
  feed.sub = client.subscribe("feed:ticker");
  feed.sub.on("publication", (p) => {
    const id = p.sender?.client;
    if (id && !myIds.has(id)) feed.otherPublisher = { id, at: Date.now() };
    onTick(p.data);
  });
  for (const sym of SYMBOLS) feed.prices[sym] = 50 + Math.random() * 150;
  feed.timer = setInterval(publishTick, 250);
  setInterval(drawFeed, 500);
}

function publishTick() {
  if (!$("publishing").checked || !client.connected) return;
  // One publisher at a time: a tab that hears another's ticks stays quiet, unless its
  // id sorts first, so two open tabs do not both drive the ticker.
  const other = feed.otherPublisher;
  if (other && Date.now() - other.at < 1500 && other.id < client.clientId) return;
  const sym = SYMBOLS[Math.floor(Math.random() * SYMBOLS.length)];
  const price = (feed.prices[sym] *= 1 + (Math.random() - 0.5) * 0.01);
  client.publish("feed:ticker", { sym, price: Math.round(price * 100) / 100, ts: Date.now() }).catch(() => {});
}

function onTick(tick) {
  if (!tick || typeof tick.sym !== "string" || !Number.isFinite(tick.price)) return;
  const now = Date.now();
  feed.prices[tick.sym] = tick.price; // whoever publishes next walks on from here
  feed.count += 1;
  feed.arrivals.push(now);
  if (Number.isFinite(tick.ts)) feed.latencies.push(Math.max(0, now - tick.ts));
  if (feed.latencies.length > 300) feed.latencies.shift();
  const card = $(`t-${tick.sym}`);
  if (!card) return;
  const priceEl = card.querySelector(".price");
  const prev = Number(card.dataset.price ?? tick.price);
  const first = Number(card.dataset.first ?? tick.price);
  card.dataset.price = tick.price;
  card.dataset.first ??= tick.price;
  priceEl.textContent = tick.price.toFixed(2);
  const change = ((tick.price - first) / first) * 100;
  const changeEl = card.querySelector(".change");
  changeEl.textContent = `${change >= 0 ? "▲" : "▼"} ${Math.abs(change).toFixed(2)}%`;
  changeEl.className = `change ${change >= 0 ? "up" : "down"}`;
  card.classList.remove("flash-up", "flash-down");
  void card.offsetWidth; // restart the animation
  card.classList.add(tick.price >= prev ? "flash-up" : "flash-down");
}

function percentile(values, q) {
  if (!values.length) return null;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
}

function drawFeed() {
  const now = Date.now();
  feed.arrivals = feed.arrivals.filter((t) => now - t < 5000);
  const fmt = (v) => (v === null ? "–" : `${v} ms`);
  $("lat-last").textContent = fmt(feed.latencies.at(-1) ?? null);
  $("lat-p50").textContent = fmt(percentile(feed.latencies, 0.5));
  $("lat-p99").textContent = fmt(percentile(feed.latencies, 0.99));
  $("rate").textContent = (feed.arrivals.length / 5).toFixed(1);
  $("ticks").textContent = String(feed.count);
  const canvas = $("spark");
  const ctx = canvas.getContext("2d");
  const w = canvas.width;
  const h = canvas.height;
  ctx.clearRect(0, 0, w, h);
  const values = feed.latencies.slice(-120);
  if (values.length < 2) return;
  const top = Math.max(5, ...values) * 1.2;
  ctx.beginPath();
  values.forEach((v, i) => {
    const x = (i / (values.length - 1)) * w;
    const y = h - (v / top) * (h - 10) - 5;
    if (i) ctx.lineTo(x, y);
    else ctx.moveTo(x, y);
  });
  ctx.strokeStyle = "#8b7cff";
  ctx.lineWidth = 2;
  ctx.stroke();
  ctx.lineTo(w, h);
  ctx.lineTo(0, h);
  ctx.closePath();
  ctx.fillStyle = "rgba(139, 124, 255, 0.15)";
  ctx.fill();
}

// -- helpers ---------------------------------------------------------------------------

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function color(name) {
  let hash = 0;
  for (const ch of name) hash = (hash * 31 + ch.codePointAt(0)) | 0;
  return `hsl(${Math.abs(hash) % 360} 55% 52%)`;
}
