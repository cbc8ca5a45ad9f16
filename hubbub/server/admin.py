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

Every GET route answers HEAD with the same headers and no body. What a client
can make this listener hold is bounded before anything is checked
(docs/limits.md "Admin listener"): ``admin_max_connections`` connections (503
past it), 16 KiB of request line and headers (431), ``admin_request_timeout``
for one request's headers and body together (408, however slowly it trickles),
and ``admin_max_body`` bytes of body (413), read only for ``POST /api/publish``
and only after its key was checked. Refusals close the connection; their
messages are ours, never the client's text.
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
from hubbub.server.exceptions import AdminRefusal

if TYPE_CHECKING:
    from hubbub.server.node import Node

#: Largest request line plus headers (h11 answers 431 past it).
MAX_HEADERS = 16 * 1024
#: Seconds a refused client's unread input is drained before the close, so the
#: close is not a reset that could destroy the answer (docs/limits.md).
CLOSE_GRACE = 1.0

Response = tuple[int, bytes, bytes]  # status, content type, body


def _json(status: int, body: Any) -> Response:
    return status, b"application/json", json.dumps(body).encode()


async def serve_admin(
    node: Node, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    """One admin connection: requests one after the other (keep-alive), each
    with its whole time (headers and body) bounded by ``admin_request_timeout``.
    Over ``admin_max_connections`` the connection gets a 503 and is closed."""
    limits = node.settings.limits
    if node.admin_connections >= limits.admin_max_connections:
        node.limits.hit("admin_max_connections")
        conn = h11.Connection(h11.SERVER)
        _answer(writer, conn, _json(503, {"error": "too many admin connections"}), keep=False)
        await _close(reader, writer)
        return
    node.admin_connections += 1
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEADERS)
    loop = asyncio.get_running_loop()
    try:
        while True:
            deadline = loop.time() + node.settings.limits.admin_request_timeout
            try:
                request = await _next(conn, reader, deadline, h11.Request)
                if request is None:
                    break
                assert isinstance(request, h11.Request)
                response = await _respond(node, conn, reader, request, deadline)
            except AdminRefusal as exc:
                if exc.status == 408:
                    node.limits.hit("admin_request_timeout")
                elif exc.status == 413:
                    node.limits.hit("admin_max_body")
                if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                    _answer(writer, conn, _json(exc.status, {"error": exc.message}), keep=False)
                break
            # Keep the connection only when the request was read to its end.
            keep = response[0] < 400 and conn.their_state is h11.DONE
            _answer(writer, conn, response, keep=keep, head=request.method == b"HEAD")
            await writer.drain()
            if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                break
            conn.start_next_cycle()
    except (ConnectionError, OSError):
        pass
    finally:
        node.admin_connections -= 1
        await _close(reader, writer)


def _answer(
    writer: asyncio.StreamWriter,
    conn: h11.Connection,
    response: Response,
    *,
    keep: bool,
    head: bool = False,
) -> None:
    """Write one response; a HEAD request gets the headers a GET would, no body."""
    status, ctype, payload = response
    headers = [(b"content-type", ctype), (b"content-length", str(len(payload)).encode())]
    if not keep:
        headers.append((b"connection", b"close"))
    out = conn.send(h11.Response(status_code=status, headers=headers)) or b""
    if payload and not head:
        out += conn.send(h11.Data(data=payload)) or b""
    out += conn.send(h11.EndOfMessage()) or b""
    writer.write(out)


async def _close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Half-close, drop what the client still sends for up to :data:`CLOSE_GRACE`
    seconds, then close (unread input would turn the close into a reset)."""
    try:
        if writer.can_write_eof() and not writer.is_closing():
            writer.write_eof()
            async with asyncio.timeout(CLOSE_GRACE):
                while await reader.read(65536):
                    pass
    except (TimeoutError, ConnectionError, OSError):
        pass
    finally:
        writer.close()


async def _next(
    conn: h11.Connection, reader: asyncio.StreamReader, deadline: float, *want: type
) -> Any:
    """The next h11 event of a kind in ``want`` (or EndOfMessage), reading as
    needed until ``deadline`` (408); None at a clean end of the connection."""
    loop = asyncio.get_running_loop()
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError as exc:
            status = exc.error_status_hint
            message = "request headers too large" if status == 431 else "malformed HTTP request"
            raise AdminRefusal(status, message) from None
        if event is h11.NEED_DATA:
            left = deadline - loop.time()
            if left <= 0:
                raise AdminRefusal(408, "request not received in time")
            try:
                data = await asyncio.wait_for(reader.read(65536), left)
            except TimeoutError:
                raise AdminRefusal(408, "request not received in time") from None
            conn.receive_data(data)
            continue
        if isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
            return None
        if isinstance(event, h11.Request):
            # h11 bounds only headers that arrive in pieces; one read can hold more.
            size = len(event.target) + sum(len(n) + len(v) + 4 for n, v in event.headers)
            if size > MAX_HEADERS:
                raise AdminRefusal(431, "request headers too large")
        if isinstance(event, (*want, h11.EndOfMessage)):
            return event


def _declared_body(request: h11.Request) -> int | None:
    """The body size the request declares: its Content-Length, None when
    chunked, 0 without a body."""
    for name, _ in request.headers:
        if name == b"transfer-encoding":
            return None
    for name, value in request.headers:
        if name == b"content-length":
            return int(value)  # h11 has checked it is a number
    return 0


async def _read_body(
    conn: h11.Connection, reader: asyncio.StreamReader, deadline: float, limit: int
) -> bytes:
    """The request body, refused with 413 as soon as it passes ``limit``."""
    chunks: list[bytes] = []
    size = 0
    while True:
        event = await _next(conn, reader, deadline, h11.Data)
        if event is None:
            raise AdminRefusal(400, "connection closed inside the body")
        if isinstance(event, h11.EndOfMessage):
            return b"".join(chunks)
        size += len(event.data)
        if size > limit:
            raise AdminRefusal(413, f"body over {limit} bytes")
        chunks.append(event.data)


async def _respond(
    node: Node,
    conn: h11.Connection,
    reader: asyncio.StreamReader,
    request: h11.Request,
    deadline: float,
) -> Response:
    """Route one request. Only ``POST /api/publish`` reads a body, and only
    after the key and the declared size were checked; other requests' bodies
    are never read (the connection closes after the answer)."""
    method = request.method.decode("latin-1")
    path = request.target.decode("latin-1").split("?", 1)[0]
    declared = _declared_body(request)
    if path == "/api/publish" and method == "POST":
        if not node.settings.config.auth.api_key:
            return _json(404, {"error": "the server API is disabled (no [auth] api_key)"})
        if not authorized(node, request):
            return _json(401, {"error": "missing or wrong API key"})
        limit = node.settings.limits.admin_max_body
        if declared is not None and declared > limit:
            raise AdminRefusal(413, f"body over {limit} bytes")
        body = await _read_body(conn, reader, deadline, limit)
        return await _api_publish(node, body)
    if declared == 0:
        await _next(conn, reader, deadline)  # the request's end: no body to read
    return await _route(node, method, path, request)


async def _route(node: Node, method: str, path: str, request: h11.Request) -> Response:
    """Every route but ``POST /api/publish``: GET and HEAD only."""
    known = path in ("/healthz", "/readyz", "/metrics", "/api/nodes", "/api/publish")
    if not known:
        return _json(404, {"error": "not found"})
    if path == "/api/publish":
        return _json(405, {"error": "use POST"})
    if method not in ("GET", "HEAD"):
        return _json(405, {"error": "use GET or HEAD"})
    if path == "/healthz":
        return 200, b"text/plain", b"ok\n"
    if path == "/readyz":
        ready = node.ready
        body_out = {"ready": ready, "draining": node.draining, "broker": node.broker.healthy}
        return _json(200 if ready else 503, body_out)
    if path == "/metrics":
        return 200, CONTENT_TYPE_LATEST.encode(), node.metrics.exposition()
    return await _api_nodes(node, request)


def authorized(node: Node, request: h11.Request) -> bool:
    """Whether the request carries the API key (compared in constant time)."""
    key = node.settings.config.auth.api_key.encode()
    for name, value in request.headers:
        if name == b"authorization":
            scheme, _, token = value.partition(b" ")
            if scheme.lower() == b"bearer":
                return hmac.compare_digest(token.strip(), key)
    return False


async def _api_publish(node: Node, body: bytes) -> Response:
    """``POST /api/publish`` once its key and size were checked."""
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
    if not node.settings.config.auth.api_key:
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
