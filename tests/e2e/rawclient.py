"""Raw protocol clients for e2e tests: bytes on the wire, no client library.

:class:`TcpRaw` speaks PROTOCOL.md §1 framing (``protocol.frames``) with msgpack
(``protocol.codec``); :class:`WsRaw` speaks WebSocket through
``websockets.asyncio.client.connect`` with a chosen subprotocol. JSON messages
are decoded with plain :func:`json.loads`, so a test sees binary values in
their wire form ``{"$b64": ...}``. Both clients share one small API: ``send``,
``send_bytes``, ``recv``, ``request``, ``push`` and ``closed``; every wait is
bounded and fails with a message saying what was expected and what came.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections import deque
from typing import Any, Self

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from hubbub.protocol.codec import decode_msgpack, encode_msgpack
from hubbub.protocol.frames import FrameDecoder, encode_frame
from tests.procs import NodeProc

MSGPACK = "hubbub.v1.msgpack"
JSON = "hubbub.v1.json"
TIMEOUT = 5.0

Message = dict[str, Any]


def channel(prefix: str = "") -> str:
    """A fresh channel name, so tests sharing a node do not see each other."""
    return f"{prefix}t-{uuid.uuid4().hex[:12]}"


class Closed(Exception):
    """The server closed the connection; ``code`` is the WebSocket close code."""

    def __init__(self, code: int | None = None, reason: str = "") -> None:
        super().__init__(f"connection closed (code {code}, reason {reason!r})")
        self.code = code
        self.reason = reason


class RawClient:
    """What both transports share: ids, buffered pushes, bounded waits."""

    def __init__(self) -> None:
        self.next_id = 0
        self.pushes: deque[Message] = deque()
        self.seen: list[Message] = []  # every message received, for failure messages

    # -- transport hooks ------------------------------------------------------

    async def send(self, message: Message) -> None:
        raise NotImplementedError

    async def send_bytes(self, data: bytes) -> None:
        raise NotImplementedError

    async def _read(self) -> Message:
        """The next message from the server; raises :class:`Closed` at the end."""
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    # -- API --------------------------------------------------------------------

    async def recv(self, timeout: float = TIMEOUT) -> Message:
        """The next message, buffered pushes first."""
        if self.pushes:
            return self.pushes.popleft()
        try:
            message = await asyncio.wait_for(self._read(), timeout)
        except TimeoutError:
            raise AssertionError(
                f"no message from the server within {timeout}s; last seen: {self.seen[-3:]}"
            ) from None
        self.seen.append(message)
        return message

    async def request(self, op: str, *, timeout: float = TIMEOUT, **fields: Any) -> Message:
        """Send a command with a fresh id and return its reply; pushes that
        arrive meanwhile are kept for :meth:`push`/:meth:`recv`."""
        self.next_id += 1
        cid = self.next_id
        await self.send({"op": op, "id": cid, **fields})
        return await self.reply(cid, timeout=timeout)

    async def reply(self, cid: int, *, timeout: float = TIMEOUT) -> Message:
        """Wait for the reply with id ``cid``, keeping pushes."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            left = deadline - loop.time()
            if left <= 0:
                raise AssertionError(f"no reply to id {cid} within {timeout}s; seen {self.seen}")
            try:
                message = await asyncio.wait_for(self._read(), left)
            except TimeoutError:
                continue
            except Closed as exc:
                raise AssertionError(f"closed before reply {cid}: {exc}; seen {self.seen}") from exc
            self.seen.append(message)
            if message.get("id") == cid:
                return message
            self.pushes.append(message)

    async def ok(self, op: str, **fields: Any) -> Any:
        """:meth:`request` that must succeed; returns the ``ok`` body."""
        reply = await self.request(op, **fields)
        assert "ok" in reply, f"{op} {fields} failed: {reply}"
        return reply["ok"]

    async def connect(self, **fields: Any) -> Any:
        return await self.ok("connect", **fields)

    async def push(self, kind: str, *, timeout: float = TIMEOUT, **match: Any) -> Message:
        """The next push of ``kind`` whose fields include ``match``; other
        pushes before it are kept, in order."""
        for i, message in enumerate(self.pushes):
            if _matches(message, kind, match):
                del self.pushes[i]
                return message
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            left = deadline - loop.time()
            if left <= 0:
                raise AssertionError(
                    f"no {kind} push {match} within {timeout}s; seen {self.seen[-10:]}"
                )
            try:
                message = await asyncio.wait_for(self._read(), left)
            except TimeoutError:
                continue
            except Closed as exc:
                raise AssertionError(
                    f"closed while waiting for {kind} {match}: {exc}; seen {self.seen[-10:]}"
                ) from exc
            self.seen.append(message)
            if _matches(message, kind, match):
                return message
            self.pushes.append(message)

    async def closed(self, timeout: float = TIMEOUT) -> tuple[list[Message], Closed]:
        """Read until the server closes; returns what came before and the close."""
        got = list(self.pushes)
        self.pushes.clear()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            left = deadline - loop.time()
            if left <= 0:
                raise AssertionError(f"server did not close within {timeout}s; got {got}")
            try:
                message = await asyncio.wait_for(self._read(), left)
            except TimeoutError:
                continue
            except Closed as exc:
                return got, exc
            self.seen.append(message)
            got.append(message)

    async def disconnected(self, timeout: float = TIMEOUT) -> tuple[Message, Closed]:
        """Expect a ``disconnect`` push as the last message, then the close."""
        got, closed = await self.closed(timeout)
        pushes = [m for m in got if m.get("push") == "disconnect"]
        assert pushes, f"closed without a disconnect push; got {got}"
        assert got[-1] is pushes[-1], f"messages after the disconnect push: {got}"
        return pushes[-1], closed

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def _matches(message: Message, kind: str, match: dict[str, Any]) -> bool:
    if message.get("push") != kind:
        return False
    return all(message.get(k) == v for k, v in match.items())


class TcpRaw(RawClient):
    """Length-prefixed msgpack frames over a plain socket."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        super().__init__()
        self.reader = reader
        self.writer = writer
        self.decoder = FrameDecoder(2**31)
        self.frames: deque[bytes] = deque()

    async def send(self, message: Message) -> None:
        await self.send_bytes(encode_frame(encode_msgpack(message)))

    async def send_bytes(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def _read(self) -> Message:
        while not self.frames:
            try:
                data = await self.reader.read(65536)
            except ConnectionError as exc:
                raise Closed(None, str(exc)) from None
            if not data:
                raise Closed()
            self.frames.extend(self.decoder.feed(data))
        return decode_msgpack(self.frames.popleft())

    async def eof(self, timeout: float = TIMEOUT) -> bytes:
        """Read raw bytes until EOF; what came (for tests of bad framing)."""
        chunks: list[bytes] = []

        async def read_all() -> None:
            while True:
                try:
                    data = await self.reader.read(65536)
                except ConnectionError:
                    return
                if not data:
                    return
                chunks.append(data)

        try:
            await asyncio.wait_for(read_all(), timeout)
        except TimeoutError:
            raise AssertionError(
                f"server did not close within {timeout}s; got {b''.join(chunks)!r}"
            ) from None
        return b"".join(chunks)

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self.writer.wait_closed()


class WsRaw(RawClient):
    """One hubbub message per WebSocket message, in the negotiated encoding."""

    def __init__(self, ws: ClientConnection) -> None:
        super().__init__()
        self.ws = ws
        self.subprotocol = ws.subprotocol

    @property
    def binary(self) -> bool:
        return self.subprotocol == MSGPACK

    async def send(self, message: Message) -> None:
        if self.binary:
            await self.ws.send(encode_msgpack(message))
        else:
            await self.ws.send(json.dumps(message))

    async def send_bytes(self, data: bytes) -> None:
        await self.ws.send(data)

    async def send_text(self, text: str) -> None:
        await self.ws.send(text)

    async def _read(self) -> Message:
        try:
            data = await self.ws.recv()
        except ConnectionClosed as exc:
            rcvd = exc.rcvd
            raise Closed(rcvd.code if rcvd else None, rcvd.reason if rcvd else "") from None
        if isinstance(data, bytes):
            assert self.binary, f"binary message on a {self.subprotocol} connection: {data!r}"
            return decode_msgpack(data)
        assert not self.binary, f"text message on a msgpack connection: {data!r}"
        message = json.loads(data)
        assert isinstance(message, dict), message
        return message

    async def close(self) -> None:
        await self.ws.close()


async def open_tcp(node: NodeProc, *, handshake: bool = True, **fields: Any) -> TcpRaw:
    """A raw TCP client of ``node``, connected (``connect`` done) by default."""
    assert node.tcp is not None
    reader, writer = await asyncio.wait_for(asyncio.open_connection(*node.tcp), TIMEOUT)
    client = TcpRaw(reader, writer)
    if handshake:
        await client.connect(**fields)
    return client


async def open_ws(
    node: NodeProc,
    subprotocol: str | None = MSGPACK,
    *,
    handshake: bool = True,
    path: str = "/ws",
    **fields: Any,
) -> WsRaw:
    """A raw WebSocket client of ``node`` offering ``subprotocol`` (None: none)."""
    assert node.ws is not None
    url = f"ws://{node.ws[0]}:{node.ws[1]}{path}"
    offered = [Subprotocol(subprotocol)] if subprotocol else None
    ws = await asyncio.wait_for(
        connect(url, subprotocols=offered, compression=None, max_size=2**24), TIMEOUT
    )
    client = WsRaw(ws)
    if handshake:
        await client.connect(**fields)
    return client
