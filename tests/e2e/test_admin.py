"""The admin listener of a real node (PROTOCOL.md §6): health, readiness,
metrics and the server API."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import http.client
import json
from collections.abc import Iterator

import pytest

from tests.e2e.rawclient import JSON, channel, open_tcp, open_ws
from tests.procs import NodeProc, start_node

API_KEY = "s3cret-key"
CONFIG = f"""
[auth]
api_key = "{API_KEY}"

[namespaces.chat]
history_size = 10
"""


@pytest.fixture(scope="module")
def api_node() -> Iterator[NodeProc]:
    node = start_node(CONFIG)
    yield node
    node.stop()


@pytest.fixture(scope="module")
def keyless_node() -> Iterator[NodeProc]:
    node = start_node(None)
    yield node
    node.stop()


def http_request(
    node: NodeProc,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, str, bytes]:
    """One request to the admin listener: status, content type, body."""
    assert node.admin is not None
    conn = http.client.HTTPConnection(node.admin[0], node.admin[1], timeout=5)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.getheader("content-type") or "", response.read()
    finally:
        conn.close()


async def ahttp(
    node: NodeProc, method: str, path: str, body: bytes | None = None, key: str | None = None
) -> tuple[int, str, bytes]:
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    return await asyncio.to_thread(http_request, node, method, path, body, headers)


def publish_body(ch: object, data: object) -> bytes:
    return json.dumps({"channel": ch, "data": data}).encode()


def test_healthz(api_node: NodeProc) -> None:
    status, _, body = http_request(api_node, "GET", "/healthz")
    assert status == 200, body


def test_readyz(api_node: NodeProc) -> None:
    status, ctype, body = http_request(api_node, "GET", "/readyz")
    assert status == 200, body
    assert ctype.startswith("application/json")
    assert json.loads(body)["ready"] is True


def test_unknown_path_is_404(api_node: NodeProc) -> None:
    status, _, _ = http_request(api_node, "GET", "/nope")
    assert status == 404


async def test_metrics(api_node: NodeProc) -> None:
    ch = channel()
    async with await open_tcp(api_node) as tcp, await open_ws(api_node, JSON) as ws:
        await tcp.ok("subscribe", channel=ch)
        await ws.ok("publish", channel=ch, data="m")
        await tcp.push("pub", channel=ch)
        status, ctype, body = await ahttp(api_node, "GET", "/metrics")
    assert status == 200
    assert ctype.startswith("text/plain"), ctype
    text = body.decode()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    for name in (
        "hubbub_connections",
        "hubbub_commands_total",
        "hubbub_deliveries_total",
        "hubbub_publications_total",
        "hubbub_command_duration_seconds",
        "hubbub_subscriptions",
        "hubbub_channels",
        "hubbub_broker_up",
        "hubbub_bytes_received_total",
        "hubbub_bytes_sent_total",
    ):
        assert any(s.split("{")[0].startswith(name) for s in samples), f"{name} missing:\n{text}"
    assert samples['hubbub_connections{transport="tcp"}'] >= 1
    assert samples['hubbub_connections{transport="ws"}'] >= 1
    assert samples["hubbub_deliveries_total"] >= 1
    assert samples["hubbub_publications_total"] >= 1
    assert samples['hubbub_commands_total{op="publish",result="ok"}'] >= 1
    assert samples['hubbub_command_duration_seconds_count{op="subscribe"}'] >= 1
    assert samples["hubbub_broker_up"] == 1


async def test_metrics_count_disconnects_by_code(api_node: NodeProc) -> None:
    async with await open_tcp(api_node, handshake=False) as c:
        await c.send_bytes(b"\x00\x00\x00\x01\xc1")  # undecodable: 3004
        await c.disconnected()
    _, _, body = await ahttp(api_node, "GET", "/metrics")
    assert 'hubbub_disconnects_total{code="3004"}' in body.decode()


async def test_api_publish_without_api_key_configured_is_404(keyless_node: NodeProc) -> None:
    for key in (None, "", "anything"):
        status, _, body = await ahttp(
            keyless_node, "POST", "/api/publish", publish_body("news", 1), key
        )
        assert status == 404, body


async def test_api_publish_with_wrong_or_missing_key_is_401(api_node: NodeProc) -> None:
    ch = channel()
    async with await open_tcp(api_node) as sub:
        await sub.ok("subscribe", channel=ch)
        for key in (None, "wrong", API_KEY + "x", ""):
            status, _, body = await ahttp(
                api_node, "POST", "/api/publish", publish_body(ch, 1), key
            )
            assert status == 401, (key, body)
        status, _, _ = await asyncio.to_thread(
            http_request,
            api_node,
            "POST",
            "/api/publish",
            publish_body(ch, 1),
            {"Authorization": f"Basic {API_KEY}"},
        )
        assert status == 401
        await sub.ok("ping")
        assert not sub.pushes, f"an unauthorized publish was delivered: {list(sub.pushes)}"


async def test_api_publish_delivers(api_node: NodeProc) -> None:
    ch = channel()
    async with await open_tcp(api_node) as tcp, await open_ws(api_node, JSON) as ws:
        await tcp.ok("subscribe", channel=ch)
        await ws.ok("subscribe", channel=ch)
        status, ctype, body = await ahttp(
            api_node, "POST", "/api/publish", publish_body(ch, {"via": "api"}), API_KEY
        )
        assert status == 200, body
        assert ctype.startswith("application/json")
        assert json.loads(body) == {}
        for c in (tcp, ws):
            pub = await c.push("pub", channel=ch)
            assert pub["data"] == {"via": "api"}
            assert "from" not in pub, pub  # the server API is not a client

        blob = b"\x00\xffapi"
        data = {"$b64": base64.b64encode(blob).decode()}
        status, _, body = await ahttp(
            api_node, "POST", "/api/publish", publish_body(ch, data), API_KEY
        )
        assert status == 200, body
        assert (await tcp.push("pub", channel=ch))["data"] == blob
        assert (await ws.push("pub", channel=ch))["data"] == data


async def test_api_publish_on_history_channel_returns_offset(api_node: NodeProc) -> None:
    ch = channel("chat:")
    async with await open_tcp(api_node) as c:
        for expected in (1, 2):
            status, _, body = await ahttp(
                api_node, "POST", "/api/publish", publish_body(ch, expected), API_KEY
            )
            assert status == 200, body
            reply = json.loads(body)
            assert reply["offset"] == expected, reply
        history = await c.ok("history", channel=ch)
        assert [p["data"] for p in history["publications"]] == [1, 2]
        assert history["epoch"] == reply["epoch"]


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[1, 2]",
        b'{"data": 1}',
        b'{"channel": "news"}',
        b'{"channel": "bad channel", "data": 1}',
        b'{"channel": 7, "data": 1}',
        b"",
    ],
    ids=["not-json", "list", "no-channel", "no-data", "bad-channel", "int-channel", "empty"],
)
async def test_api_publish_bad_body_is_400(api_node: NodeProc, body: bytes) -> None:
    status, _, reply = await ahttp(api_node, "POST", "/api/publish", body, API_KEY)
    assert status == 400, reply


# -- what a client can make the admin listener hold (docs/limits.md) -------------

LIMITED = f"""
[limits]
admin_max_connections = 8
admin_max_body = 4096
admin_request_timeout = 1.0

[auth]
api_key = "{API_KEY}"
"""


@pytest.fixture(scope="module")
def limited_node() -> Iterator[NodeProc]:
    node = start_node(LIMITED)
    yield node
    node.stop()


def _responses(raw: bytes) -> list[tuple[int, bytes]]:
    """Parse what the server wrote into (status, body) pairs."""
    import h11

    client = h11.Connection(h11.CLIENT)
    client.receive_data(raw)
    out: list[tuple[int, bytes]] = []
    status, body = 0, b""
    while True:
        event = client.next_event()
        if isinstance(event, h11.Response):
            status, body = event.status_code, b""
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            out.append((status, body))
            if client.our_state is h11.MUST_CLOSE or client.their_state is h11.MUST_CLOSE:
                break
            # One request per response: tell h11 a request went out each time.
            client.send(h11.Request(method="GET", target="/", headers=[("host", "x")]))
            client.send(h11.EndOfMessage())
            client.start_next_cycle()
        elif event is h11.NEED_DATA or isinstance(event, h11.ConnectionClosed):
            break
    return out


async def _raw(
    node: NodeProc, data: bytes, *, wait: float = 3.0, method: bytes = b"GET"
) -> tuple[bytes, bool]:
    """Write ``data``, read until the server closes or ``wait`` passes:
    (what came, whether the server closed)."""
    assert node.admin is not None
    reader, writer = await asyncio.open_connection(*node.admin)
    writer.write(data)
    got = b""
    closed = False
    try:
        async with asyncio.timeout(wait):
            while chunk := await reader.read(65536):
                got += chunk
            closed = True
    except TimeoutError:
        pass
    writer.close()
    return got, closed


async def test_head_gets_headers_only_and_the_next_request_is_answered(
    limited_node: NodeProc,
) -> None:
    """HEAD used to raise h11's LocalProtocolError (a traceback per request)
    and drop the request pipelined behind it."""
    import h11

    requests = (
        b"HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
        b"HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n"
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    raw, _ = await _raw(limited_node, requests)
    client = h11.Connection(h11.CLIENT)
    client.receive_data(raw)
    statuses, bodies = [], []
    for method, target in ((b"HEAD", b"/healthz"), (b"HEAD", b"/metrics"), (b"GET", b"/healthz")):
        client.send(h11.Request(method=method, target=target, headers=[(b"host", b"x")]))
        client.send(h11.EndOfMessage())
        body = b""
        while not isinstance(event := client.next_event(), h11.EndOfMessage):
            assert event is not h11.NEED_DATA, raw
            if isinstance(event, h11.Response):
                statuses.append(event.status_code)
            elif isinstance(event, h11.Data):
                body += event.data
        bodies.append(body)
        if client.our_state is h11.DONE and client.their_state is h11.DONE:
            client.start_next_cycle()
    assert statuses == [200, 200, 200] and bodies == [b"", b"", b"ok\n"], raw
    assert "Traceback" not in limited_node.log_text()


@pytest.mark.parametrize("key", [None, "wrong", API_KEY])
async def test_a_large_declared_body_is_refused_before_it_is_read(
    limited_node: NodeProc, key: str | None
) -> None:
    auth = f"Authorization: Bearer {key}\r\n".encode() if key else b""
    head = b"POST /api/publish HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n" + auth
    raw, closed = await _raw(limited_node, head + b"\r\n")
    ((status, body),) = _responses(raw)
    assert status == (413 if key == API_KEY else 401), raw
    assert closed and API_KEY not in body.decode()


async def _trickle(node: NodeProc, head: bytes, piece: bytes, times: int, wait: float) -> bytes:
    """Send an authorised ``POST /api/publish`` head, then ``piece`` up to
    ``times`` times, ``wait`` seconds apart, until the node answers."""
    assert node.admin is not None
    reader, writer = await asyncio.open_connection(*node.admin)
    writer.write(
        b"POST /api/publish HTTP/1.1\r\nHost: x\r\n"
        + head
        + f"Authorization: Bearer {API_KEY}\r\n\r\n".encode()
    )
    got = b""
    for _ in range(times):
        try:
            writer.write(piece)
            await writer.drain()
            got += await asyncio.wait_for(reader.read(65536), wait)
        except TimeoutError:
            continue
        except ConnectionError:
            break
        if got:
            break
    writer.close()
    return got


async def test_an_endless_chunked_body_is_cut_at_the_limit(limited_node: NodeProc) -> None:
    # 200 KB at most; the limit is 4 KB
    chunk = b"400\r\n" + b"x" * 1024 + b"\r\n"
    got = await _trickle(limited_node, b"Transfer-Encoding: chunked\r\n", chunk, 200, 0.05)
    ((status, _),) = _responses(got)
    assert status == 413, got


async def test_a_trickled_body_is_cut_at_the_request_timeout(limited_node: NodeProc) -> None:
    """A body trickled a byte at a time, each within any per-read timeout,
    used to be kept open; the request as a whole has admin_request_timeout."""
    # 40 x 0.25 s, the timeout is 1 s
    got = await _trickle(limited_node, b"Content-Length: 100\r\n", b"{", 40, 0.25)
    ((status, _),) = _responses(got)
    assert status == 408, got


async def test_connections_past_the_limit_get_503(limited_node: NodeProc) -> None:
    assert limited_node.admin is not None
    idle = [await asyncio.open_connection(*limited_node.admin) for _ in range(8)]
    await asyncio.sleep(0.2)
    raw, closed = await _raw(limited_node, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert [s for s, _ in _responses(raw)] == [503] and closed, raw
    for _, writer in idle:
        writer.close()
    await asyncio.sleep(0.2)
    raw, _ = await _raw(
        limited_node, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    assert [s for s, _ in _responses(raw)] == [200], raw


@pytest.mark.parametrize(
    "request_bytes",
    [b"GARBAGE\r\n\r\n", b"GET / HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 20000 + b"\r\n\r\n"],
    ids=["malformed", "headers-too-large"],
)
async def test_bad_requests_get_a_clear_4xx(limited_node: NodeProc, request_bytes: bytes) -> None:
    raw, closed = await _raw(limited_node, request_bytes)
    ((status, body),) = _responses(raw)
    assert status in (400, 431) and b"GARBAGE" not in body and closed, raw


async def test_partial_bodies_without_the_key_hold_no_memory(api_node: NodeProc) -> None:
    """60 connections each sending 900 KB of a 1 MB body without the key used
    to make the node buffer them all (+117 MB for 100)."""
    from tests.e2e.probes import rss_bytes

    assert api_node.admin is not None
    before = rss_bytes(api_node.proc.pid)
    conns = [await asyncio.open_connection(*api_node.admin) for _ in range(60)]
    head = b"POST /api/publish HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n"
    for _, writer in conns:
        writer.write(head + b"x" * 900_000)
    for _, writer in conns:
        with contextlib.suppress(ConnectionError):
            await writer.drain()
    await asyncio.sleep(0.5)
    growth = rss_bytes(api_node.proc.pid) - before
    for _, writer in conns:
        writer.close()
    assert growth < 20 * 1024 * 1024, growth / 2**20
