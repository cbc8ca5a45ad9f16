"""The demo and hubbub.js in a real browser: Debian's chromium driven by Selenium
through the system chromedriver (no browser download). Two windows chat through
one node (JSON) and through two nodes on Redis (msgpack); a node drained by
SIGTERM while a window is open, whose page moves to the other node and shows
every message published meanwhile, once; a 3005 that makes the page fetch a new
token. Screenshots go to test-artifacts/browser/ (gitignored)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import quote

import jwt
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from hubbub import Client
from tests.procs import ROOT, NodeProc, RedisProc
from tests.web.browser import ARTIFACTS, Window, open_browser

DEMO = """
[server]
demo = true

[limits]
drain_timeout = 1.0

[namespaces.chat]
history_size = 100
presence = true
join_leave = true
"""
SECRET = "browser-test-secret-of-32-bytes!"


@pytest.fixture(scope="session")
def browser() -> Iterator[WebDriver]:
    driver = open_browser()
    yield driver
    driver.quit()


@pytest.fixture
def windows(browser: WebDriver) -> Iterator[Callable[[str], Window]]:
    """Open browser windows for one test; closed afterwards (the session stays)."""
    opened: list[Window] = []
    first = browser.current_window_handle

    def open_window(url: str) -> Window:
        if opened:
            browser.switch_to.new_window("window")
        window = Window(browser, browser.current_window_handle)
        opened.append(window)
        browser.get(url)
        return window

    yield open_window
    for window in opened[1:]:
        window.focus()
        browser.close()
    browser.switch_to.window(first)
    browser.get("about:blank")


def page(node: NodeProc, *, name: str, room: str, encoding: str = "json", ws: str = "") -> str:
    assert node.ws
    query = f"name={quote(name)}&room={room}&encoding={encoding}"
    if ws:
        query += f"&ws={quote(ws)}"
    return f"http://{node.ws[0]}:{node.ws[1]}/?{query}"


def join(window: Window) -> None:
    window.focus()
    window.driver.find_element(By.ID, "join-button").click()
    window.wait(lambda d: d.find_element(By.ID, "chat").is_displayed(), "the chat view")
    window.wait(lambda d: "connected" in d.find_element(By.ID, "status").get_attribute("class"))


def say(window: Window, text: str) -> None:
    window.focus()
    box = window.driver.find_element(By.ID, "message")
    box.send_keys(text)
    window.driver.find_element(By.ID, "send").click()


def texts(window: Window) -> list[str]:
    window.focus()
    return [e.text for e in window.driver.find_elements(By.CSS_SELECTOR, "#messages .text")]


def presence(window: Window) -> list[str]:
    window.focus()
    return [e.text for e in window.driver.find_elements(By.CSS_SELECTOR, "#presence li .name")]


def chat_both_ways(ada: Window, bob: Window, room: str) -> None:
    join(ada)
    join(bob)
    ada.wait(lambda d: len(presence(ada)) == 2, "both in Ada's presence list")
    assert presence(ada) == ["Ada (you)", "Bob"]
    say(bob, "hello from Bob ✓")
    ada.wait(lambda d: "hello from Bob ✓" in texts(ada), "Bob's message at Ada")
    say(ada, "hi Bob")
    bob.wait(lambda d: texts(bob) == ["hello from Bob ✓", "hi Bob"], "both messages at Bob")
    ada.focus()
    senders = [e.text for e in ada.driver.find_elements(By.CSS_SELECTOR, "#messages .sender")]
    assert senders == ["Bob", "Ada"]
    times = [e.text for e in ada.driver.find_elements(By.CSS_SELECTOR, "#messages .time")]
    assert all(t for t in times)


def test_two_windows_chat_through_one_node_json(
    node_factory: Callable[..., NodeProc], windows: Callable[[str], Window]
) -> None:
    node = node_factory(DEMO)
    ada = windows(page(node, name="Ada", room="one"))
    bob = windows(page(node, name="Bob", room="one"))
    chat_both_ways(ada, bob, "one")
    # A third window joining later sees the room's history.
    cy = windows(page(node, name="Cy", room="one"))
    join(cy)
    cy.wait(lambda d: texts(cy) == ["hello from Bob ✓", "hi Bob"], "history on join")
    ada.wait(lambda d: "Cy" in presence(ada), "Cy's join in Ada's presence list")
    ada.screenshot("chat-one-node")
    # The live-feed tab: the page publishes ticks and shows their delivery latency.
    ada.driver.find_element(By.CSS_SELECTOR, '.tab[data-view="feed"]').click()
    ada.wait(lambda d: int(d.find_element(By.ID, "ticks").text) >= 3, "ticks on the feed")
    assert ada.driver.find_element(By.ID, "lat-p50").text.endswith(" ms")
    prices = ada.driver.find_elements(By.CSS_SELECTOR, "#tickers .price")
    assert len(prices) == 6 and any(p.text != "\u2013" for p in prices)  # the placeholder dash
    ada.screenshot("live-feed")


@pytest.fixture
def two_nodes(
    node_factory: Callable[..., NodeProc], redis_server: RedisProc
) -> tuple[NodeProc, NodeProc]:
    """Two demo nodes on one Redis."""
    first = node_factory(DEMO, redis=[redis_server.url])
    return first, node_factory(DEMO, redis=[redis_server.url])


def test_two_windows_chat_through_two_nodes_msgpack(
    two_nodes: tuple[NodeProc, NodeProc], windows: Callable[[str], Window]
) -> None:
    a, b = two_nodes
    ada = windows(page(a, name="Ada", room="two", encoding="msgpack"))
    bob = windows(page(b, name="Bob", room="two", encoding="msgpack"))
    chat_both_ways(ada, bob, "two")
    assert ada.js("return hubbubDemo.client.info.node") == a.node_id
    assert bob.js("return hubbubDemo.client.info.node") == b.node_id
    assert ada.js("return hubbubDemo.client.encoding") == "msgpack"
    bob.screenshot("chat-two-nodes")


async def _publish(url: str, channel: str, texts: list[str]) -> None:
    async with Client(url, name="publisher") as client:
        for text in texts:
            data = {"name": "Publisher", "text": text, "ts": time.time() * 1000}
            await client.publish(channel, data)


def test_sigterm_moves_the_page_to_another_node_and_recovers_everything_once(
    two_nodes: tuple[NodeProc, NodeProc], windows: Callable[[str], Window]
) -> None:
    a, b = two_nodes
    win = windows(page(a, name="Ada", room="moves", ws=f"{a.ws_url},{b.ws_url}"))
    join(win)
    asyncio.run(_publish(b.ws_url, "chat:moves", [f"before {i}" for i in range(1, 4)]))
    win.wait(lambda d: len(texts(win)) == 3, "the first three")
    a.signal(15)  # SIGTERM: the node drains, the page gets 3001 and an `after`
    win.wait(lambda d: win.js("return hubbubDemo.states.at(-1)") != "connected", "the drain")
    asyncio.run(_publish(b.ws_url, "chat:moves", [f"meanwhile {i}" for i in range(1, 8)]))
    win.wait(lambda d: win.js("return hubbubDemo.recoveries.length") == 1, "the recovery")
    expected = [f"before {i}" for i in range(1, 4)] + [f"meanwhile {i}" for i in range(1, 8)]
    win.wait(lambda d: len(texts(win)) >= 10, "every message")
    assert texts(win) == expected
    # Once: the client delivered each offset exactly once (the page does not hide repeats).
    assert win.js("return hubbubDemo.received") == list(range(1, 11))
    assert win.js("return hubbubDemo.recoveries[0].recovered") is True
    assert win.js("return hubbubDemo.client.info.node") == b.node_id
    assert "connected" in win.driver.find_element(By.ID, "status").get_attribute("class")
    system = [e.text for e in win.driver.find_elements(By.CSS_SELECTOR, "#messages .system")]
    assert any("reconnecting" in s for s in system)
    assert any("Reconnected to node" in s for s in system)
    win.screenshot("recovered-after-sigterm")
    assert a.wait(10) == 0


class _TokenServer:
    """An app's token endpoint: each GET /token answers a fresh JWT (exp in 60 s)."""

    def __init__(self) -> None:
        self.issued = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.issued += 1
                claims = {"sub": "ada", "exp": int(time.time()) + 60}
                body = json.dumps({"token": jwt.encode(claims, SECRET, "HS256")}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Access-Control-Allow-Origin", "*")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}/token"
        threading.Thread(target=self.http.serve_forever, daemon=True).start()


_TOKEN_PAGE = """
const [token, tokenUrl] = arguments;
const { Client } = await import("/hubbub.js");
const t = (window.t3005 = { events: [], got: [] });
const client = new Client(`ws://${location.host}/ws`, {
  token,
  refreshAhead: 0, // no refresh ahead of exp: the server's 3005 is what we test
  getToken: async () => {
    t.events.push("getToken");
    return (await (await fetch(tokenUrl)).json()).token;
  },
});
t.client = client;
client.on("disconnected", (d) => t.events.push(`disconnected ${d.code}`));
client.on("connected", () => t.events.push("connected"));
await client.connect();
const sub = client.subscribe("chat:tokens", { recover: true });
sub.on("publication", (p) => t.got.push(p.data));
await sub.ready;
"""


def test_a_3005_makes_the_page_fetch_a_new_token(
    node_factory: Callable[..., NodeProc], windows: Callable[[str], Window]
) -> None:
    node = node_factory(
        DEMO + f'\n[auth]\nanonymous = false\nhmac_secret = "{SECRET}"\n'
        "\n[namespaces.default]\nanonymous = false\n"
    )
    tokens = _TokenServer()
    try:
        assert node.ws
        win = windows(f"http://{node.ws[0]}:{node.ws[1]}/")
        short = jwt.encode({"sub": "ada", "exp": int(time.time()) + 3}, SECRET, "HS256")
        win.js_async(_TOKEN_PAGE, short, tokens.url)
        win.wait(
            lambda d: win.js("return t3005.events").count("connected") == 2,
            "the 3005 and a reconnect with a new token",
        )
        assert win.js("return t3005.events") == [
            "connected",
            "disconnected 3005",
            "getToken",
            "connected",
        ]
        assert tokens.issued == 1
        win.js_async("await t3005.client.publish('chat:tokens', 'after the new token')")
        win.wait(lambda d: win.js("return t3005.got") == ["after the new token"], "delivery")
    finally:
        tokens.http.shutdown()


def test_artifacts_folder_is_gitignored() -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    assert "/test-artifacts/" in (ROOT / ".gitignore").read_text().splitlines()
