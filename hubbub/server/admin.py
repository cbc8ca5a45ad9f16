"""The admin listener (PROTOCOL.md §6): health, readiness, metrics, server API.

HTTP/1.1 is parsed by h11 (a small, well-kept Sans-I/O parser) rather than by
hand. Routes:

- ``GET /healthz``: 200 while the process serves.
- ``GET /readyz``: 200 when accepting clients and the broker is reachable, else 503.
- ``GET /metrics``: Prometheus text exposition.
- ``POST /api/publish``: ``{"channel", "data"}`` with ``Authorization: Bearer
  <api key>``; 401 without the key, 404 when no key is configured.
- ``GET /api/nodes``: the live nodes of the cluster (the broker's registry),
  same key rules; ``{"node": <this node>, "nodes": [{"node", "started", ...}]}``.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
from typing import TYPE_CHECKING, Any

import h11
from prometheus_client import CONTENT_TYPE_LATEST

from hubbub import log
from hubbub.protocol.channels import is_valid_channel
from hubbub.protocol.codec import decode_json
from hubbub.protocol.exceptions import CommandError, ProtocolViolation

if TYPE_CHECKING:
    from hubbub.server.node import Node

MAX_BODY = 1024 * 1024
READ_TIMEOUT = 10.0

Response = tuple[int, bytes, bytes]  # status, content type, body


def _json(status: int, body: Any) -> Response:
    return status, b"application/json", json.dumps(body).encode()


async def serve_admin(
    node: Node, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=16 * 1024)
    try:
        while True:
            request, body = await _read_request(conn, reader)
            if request is None:
                break
            if body is None:
                status, ctype, payload = _json(413, {"error": "body too large"})
            else:
                status, ctype, payload = await _route(node, request, body)
            keep = status < 400
            headers = [
                (b"content-type", ctype),
                (b"content-length", str(len(payload)).encode()),
            ]
            if not keep:
                headers.append((b"connection", b"close"))
            writer.write(conn.send(h11.Response(status_code=status, headers=headers)) or b"")
            writer.write(conn.send(h11.Data(data=payload)) or b"")
            writer.write(conn.send(h11.EndOfMessage()) or b"")
            await writer.drain()
            if conn.our_state is h11.MUST_CLOSE or not keep:
                break
            conn.start_next_cycle()
    except (TimeoutError, h11.RemoteProtocolError, ConnectionError, OSError):
        if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            try:
                bad = conn.send(
                    h11.Response(
                        status_code=400,
                        headers=[(b"content-length", b"0"), (b"connection", b"close")],
                    )
                )
                writer.write((bad or b"") + (conn.send(h11.EndOfMessage()) or b""))
            except h11.LocalProtocolError:
                pass
    finally:
        writer.close()


async def _read_request(
    conn: h11.Connection, reader: asyncio.StreamReader
) -> tuple[h11.Request | None, bytes | None]:
    """One request and its body (None when over MAX_BODY); (None, None) at EOF."""
    request: h11.Request | None = None
    chunks: list[bytes] = []
    size = 0
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            data = await asyncio.wait_for(reader.read(65536), READ_TIMEOUT)
            conn.receive_data(data)
            continue
        if isinstance(event, h11.Request):
            request = event
        elif isinstance(event, h11.Data):
            size += len(event.data)
            if size <= MAX_BODY:
                chunks.append(event.data)
        elif isinstance(event, h11.EndOfMessage):
            return request, (b"".join(chunks) if size <= MAX_BODY else None)
        elif isinstance(event, h11.ConnectionClosed):
            return None, None


async def _route(node: Node, request: h11.Request, body: bytes) -> Response:
    method = request.method.decode()
    path = request.target.decode().split("?", 1)[0]
    if path == "/healthz" and method in ("GET", "HEAD"):
        return 200, b"text/plain", b"ok\n"
    if path == "/readyz" and method in ("GET", "HEAD"):
        ready = node.ready
        body_out = {"ready": ready, "draining": node.draining, "broker": node.broker.healthy}
        return _json(200 if ready else 503, body_out)
    if path == "/metrics" and method in ("GET", "HEAD"):
        return 200, CONTENT_TYPE_LATEST.encode(), node.metrics.exposition()
    if path == "/api/publish":
        if method != "POST":
            return _json(405, {"error": "use POST"})
        return await _api_publish(node, request, body)
    if path == "/api/nodes" and method in ("GET", "HEAD"):
        return await _api_nodes(node, request)
    return _json(404, {"error": "not found"})


def authorized(node: Node, request: h11.Request) -> bool:
    """Whether the request carries the API key (compared in constant time)."""
    key = node.config.auth.api_key.encode()
    for name, value in request.headers:
        if name == b"authorization":
            scheme, _, token = value.partition(b" ")
            if scheme.lower() == b"bearer":
                return hmac.compare_digest(token.strip(), key)
    return False


async def _api_publish(node: Node, request: h11.Request, body: bytes) -> Response:
    if not node.config.auth.api_key:
        return _json(404, {"error": "the server API is disabled (no [auth] api_key)"})
    if not authorized(node, request):
        return _json(401, {"error": "missing or wrong API key"})
    try:
        message = decode_json(body)
    except ProtocolViolation:
        return _json(400, {"error": "body must be a JSON object"})
    channel = message.get("channel")
    if not is_valid_channel(channel) or "data" not in message:
        return _json(400, {"error": "body needs a valid channel and data"})
    assert isinstance(channel, str)
    try:
        settings = node.settings
        node.limits.check_publication(
            channel, settings.namespace(channel), message["data"], client=False, now=node.clock()
        )
        position = await node.broker.publish(
            channel, message["data"], options=settings.channel_options(channel)
        )
    except CommandError as exc:
        return _json(int(exc.code), {"error": exc.message})
    except Exception:
        log.error("api_publish_failed", exc_info=True, channel=channel)
        return _json(500, {"error": "internal error"})
    if position is None:
        return _json(200, {})
    return _json(200, {"offset": position.offset, "epoch": position.epoch})


async def _api_nodes(node: Node, request: h11.Request) -> Response:
    """The cluster's live nodes as the broker's registry knows them (docs/clustering.md)."""
    if not node.config.auth.api_key:
        return _json(404, {"error": "the server API is disabled (no [auth] api_key)"})
    if not authorized(node, request):
        return _json(401, {"error": "missing or wrong API key"})
    try:
        nodes = await node.broker.nodes()
    except CommandError as exc:
        return _json(int(exc.code), {"error": exc.message})
    if not nodes:  # an engine without a registry: a single node
        nodes = [{"node": node.node_id, "started": node.started_at, **node.describe()}]
    now = time.time()
    for entry in nodes:
        started = entry.get("started")
        if isinstance(started, int | float):
            entry["uptime"] = round(now - started, 1)
    return _json(200, {"node": node.node_id, "nodes": nodes})
