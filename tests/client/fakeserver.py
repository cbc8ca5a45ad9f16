"""A small fake hubbub server for the client tests (TCP framing and WebSocket).

It keeps an in-memory hub: subscriptions, presence, and history with offsets
and an epoch on channels whose name starts with ``h:``. Tests steer it with
``hook`` (answer a command themselves), ``send`` pushes, ``drop``/``close``
connections, and read every command from ``commands`` (queued after the reply
has been written, so a test that sees a command knows its reply went out).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from hubbub.protocol.codec import SUBPROTOCOLS, Encoding, decode, encode
from hubbub.protocol.codes import DisconnectCode
from hubbub.protocol.frames import FrameDecoder, encode_frame
from hubbub.protocol.messages import (
    push_disconnect,
    push_pub,
    reply_error,
    reply_ok,
)

Hook = Callable[["FakeConn", dict[str, Any]], Awaitable[bool]]


class FakeConn:
    """One client connection as the fake server sees it."""

    def __init__(self, server: FakeServer, number: int, encoding: Encoding) -> None:
        self.server = server
        self.number = number
        self.client_id = f"client-{number}"
        self.encoding = encoding
        self.received: list[dict[str, Any]] = []
        self.raw: list[bytes | str] = []
        self.channels: set[str] = set()
        self.closed = asyncio.Event()
        self._tcp: asyncio.StreamWriter | None = None
        self._ws: ServerConnection | None = None

    async def send(self, message: dict[str, Any]) -> None:
        data = encode(message, self.encoding)
        if self._tcp is not None:
            if not self._tcp.is_closing():
                self._tcp.write(encode_frame(data))
        else:
            assert self._ws is not None
            with contextlib.suppress(ConnectionClosed):
                await self._ws.send(data, text=self.encoding is Encoding.JSON)

    async def send_raw(self, data: bytes) -> None:
        """Bytes straight onto the TCP stream (framing tests)."""
        assert self._tcp is not None
        self._tcp.write(data)
        await self._tcp.drain()

    async def disconnect(
        self, code: DisconnectCode, after: int | None = None, *, push: bool = True
    ) -> None:
        """Send the ``disconnect`` push (optionally) and close (WS: with ``code``)."""
        if push:
            await self.send(push_disconnect(code, after=after))
        await self.close(int(code))

    async def close(self, code: int = 1000) -> None:
        if self._tcp is not None:
            self._tcp.close()
        elif self._ws is not None:
            await self._ws.close(code)
        await self.closed.wait()

    def drop(self) -> None:
        """Cut the connection without a word (network failure)."""
        if self._tcp is not None:
            self._tcp.transport.abort()
        elif self._ws is not None:
            self._ws.transport.abort()


class FakeServer:
    """Answers connect/subscribe/unsubscribe/publish/presence/history/ping/refresh."""

    def __init__(self, *, ping: float = 25.0, limits: dict[str, Any] | None = None) -> None:
        self.ping = ping
        self.limits = limits if limits is not None else {"max_frame": 65536}
        self.hook: Hook | None = None
        self.conns: list[FakeConn] = []
        self.commands: asyncio.Queue[tuple[FakeConn, dict[str, Any]]] = asyncio.Queue()
        self.new_conn: asyncio.Queue[FakeConn] = asyncio.Queue()
        self.history: dict[str, list[dict[str, Any]]] = {}
        self.epoch = "epoch-1"
        self.history_cap: int | None = None  # most publications per history reply
        self.subs: dict[str, set[FakeConn]] = {}
        self._tcp_server: asyncio.Server | None = None
        self._ws_server: Server | None = None

    # -- listeners --------------------------------------------------------------

    async def start_tcp(self) -> str:
        self._tcp_server = await asyncio.start_server(self._serve_tcp, "127.0.0.1", 0)
        port = self._tcp_server.sockets[0].getsockname()[1]
        return f"tcp://127.0.0.1:{port}"

    async def start_ws(self) -> str:
        self._ws_server = await serve(
            self._serve_ws,
            "127.0.0.1",
            0,
            subprotocols=[Subprotocol(p) for p in SUBPROTOCOLS],
            compression=None,
            ping_interval=None,
            close_timeout=1,
        )
        port = next(iter(self._ws_server.sockets)).getsockname()[1]
        return f"ws://127.0.0.1:{port}/ws"

    async def stop(self) -> None:
        for conn in self.conns:
            conn.drop()
        if self._tcp_server is not None:
            self._tcp_server.close()
            await self._tcp_server.wait_closed()
        if self._ws_server is not None:
            self._ws_server.close()
            await self._ws_server.wait_closed()

    def _new(self, encoding: Encoding) -> FakeConn:
        conn = FakeConn(self, len(self.conns) + 1, encoding)
        self.conns.append(conn)
        self.new_conn.put_nowait(conn)
        return conn

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = self._new(Encoding.MSGPACK)
        conn._tcp = writer
        decoder = FrameDecoder()
        try:
            while data := await reader.read(65536):
                for frame in decoder.feed(data):
                    conn.raw.append(frame)
                    await self._handle(conn, decode(frame, Encoding.MSGPACK))
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._gone(conn)
            writer.close()

    async def _serve_ws(self, ws: ServerConnection) -> None:
        encoding = Encoding.MSGPACK if ws.subprotocol == Encoding.MSGPACK.value else Encoding.JSON
        conn = self._new(encoding)
        conn._ws = ws
        try:
            async for message in ws:
                conn.raw.append(message)
                payload = message.encode() if isinstance(message, str) else message
                await self._handle(conn, decode(payload, encoding))
        except ConnectionClosed:
            pass
        finally:
            self._gone(conn)

    def _gone(self, conn: FakeConn) -> None:
        for channel in conn.channels:
            self.subs.get(channel, set()).discard(conn)
        conn.closed.set()

    # -- the hub ----------------------------------------------------------------

    def top(self, channel: str) -> int:
        pubs = self.history.get(channel, [])
        return pubs[-1]["offset"] if pubs else 0

    async def publish(
        self, channel: str, data: Any, sender: FakeConn | None = None, *, deliver: bool = True
    ) -> int | None:
        """Publish as the server would; ``deliver=False`` only records it in
        history (the publication a disconnected or lagging client missed)."""
        offset = None
        if channel.startswith("h:"):
            offset = self.top(channel) + 1
        frm = {"client": sender.client_id, "user": ""} if sender is not None else None
        pub = push_pub(channel, data, offset, frm)
        if offset is not None:
            self.history.setdefault(channel, []).append(pub)
        if deliver:
            for conn in list(self.subs.get(channel, ())):
                await conn.send(pub)
        return offset

    async def _handle(self, conn: FakeConn, msg: dict[str, Any]) -> None:
        conn.received.append(msg)
        if not (self.hook is not None and await self.hook(conn, msg)):
            await self._default(conn, msg)
        self.commands.put_nowait((conn, msg))

    async def _default(self, conn: FakeConn, msg: dict[str, Any]) -> None:
        op, cid, channel = msg.get("op"), msg.get("id"), msg.get("channel")

        async def ok(body: dict[str, Any] | None = None) -> None:
            if cid is not None:
                await conn.send(reply_ok(cid, body))

        async def error(code: int, text: str) -> None:
            if cid is not None:
                await conn.send(reply_error(cid, code, text))
            else:
                await conn.send({"push": "error", "code": code, "message": text, "op": op})

        if op == "connect":
            await ok(
                {"client": conn.client_id, "node": "fake", "ping": self.ping, "limits": self.limits}
            )
        elif op == "pong":
            pass
        elif op == "ping":
            await ok()
        elif op == "subscribe":
            assert isinstance(channel, str)
            if channel in conn.channels:
                await error(409, "already subscribed")
                return
            conn.channels.add(channel)
            self.subs.setdefault(channel, set()).add(conn)
            await ok(self._subscribe_reply(channel, msg))
        elif op == "unsubscribe":
            if channel not in conn.channels:
                await error(409, "not subscribed")
                return
            conn.channels.discard(channel)
            self.subs.get(channel, set()).discard(conn)
            await ok()
        elif op == "publish":
            assert isinstance(channel, str)
            if channel.startswith("forbidden:"):
                await error(403, "forbidden")
                return
            offset = await self.publish(channel, msg.get("data"), conn)
            await ok({} if offset is None else {"offset": offset})
        elif op == "presence":
            await ok(
                {
                    "clients": {
                        c.client_id: {"user": "", "info": None}
                        for c in self.subs.get(str(channel), ())
                    }
                }
            )
        elif op == "history":
            assert isinstance(channel, str)
            pubs = self.history.get(channel, [])
            since = msg.get("since")
            if since is not None:
                if since["epoch"] != self.epoch:
                    await error(410, "gone")
                    return
                pubs = [p for p in pubs if p["offset"] > since["offset"]]
            limit = msg.get("limit", self.history_cap)
            if limit is not None:
                pubs = pubs[:limit] if since is not None else pubs[-limit:]
            await ok({"publications": pubs, "offset": self.top(channel), "epoch": self.epoch})
        elif op == "refresh":
            await ok({"expires": 2_000_000_000})
        else:
            await error(400, f"unknown op {op!r}")

    def _subscribe_reply(self, channel: str, msg: dict[str, Any]) -> dict[str, Any]:
        if not channel.startswith("h:"):
            return {"channel": channel}
        reply: dict[str, Any] = {
            "channel": channel,
            "offset": self.top(channel),
            "epoch": self.epoch,
        }
        since = msg.get("since")
        if msg.get("recover") and since is not None:
            if since["epoch"] == self.epoch:
                reply["recovered"] = True
                reply["publications"] = [
                    p for p in self.history.get(channel, []) if p["offset"] > since["offset"]
                ]
            else:
                reply["recovered"] = False
        return reply
