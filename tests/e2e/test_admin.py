"""The admin listener of a real node (PROTOCOL.md §6): health, readiness,
metrics and the server API."""

from __future__ import annotations

import asyncio
import base64
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
            http_request, api_node, "POST", "/api/publish", publish_body(ch, 1),
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
        status, _, body = await ahttp(api_node, "POST", "/api/publish", publish_body(ch, data),
                                      API_KEY)
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
