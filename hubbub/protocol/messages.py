"""The message model (PROTOCOL.md §2-3): commands in, replies and pushes out.

Commands are parsed from a decoded map into small frozen dataclasses, one per
op, after checking every field. A bad command raises :class:`CommandError`
(400) carrying the command's id when it had a valid one, so the server can
answer on that id. Replies and pushes are plain maps built by the functions
below, ready for :mod:`protocol.codec`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hubbub.protocol.channels import validate_channel
from hubbub.protocol.codes import REASONS, RECONNECT, DisconnectCode, ErrorCode
from hubbub.protocol.exceptions import CommandError

MAX_ID = 2**53


@dataclass(frozen=True, slots=True)
class StreamPosition:
    """A position in a channel's history: ``offset`` within ``epoch``."""

    offset: int
    epoch: str

    def to_wire(self) -> dict[str, Any]:
        return {"offset": self.offset, "epoch": self.epoch}


@dataclass(frozen=True, slots=True)
class Command:
    """Base of every command; ``id`` is None for fire-and-forget."""

    id: int | None


@dataclass(frozen=True, slots=True)
class Connect(Command):
    token: str | None = None
    client_name: str | None = None
    client_version: str | None = None


@dataclass(frozen=True, slots=True)
class Subscribe(Command):
    channel: str = ""
    recover: bool = False
    since: StreamPosition | None = None


@dataclass(frozen=True, slots=True)
class Unsubscribe(Command):
    channel: str = ""


@dataclass(frozen=True, slots=True)
class Publish(Command):
    channel: str = ""
    data: Any = None


@dataclass(frozen=True, slots=True)
class Presence(Command):
    channel: str = ""


@dataclass(frozen=True, slots=True)
class History(Command):
    channel: str = ""
    since: StreamPosition | None = None
    limit: int | None = None


@dataclass(frozen=True, slots=True)
class Ping(Command):
    pass


@dataclass(frozen=True, slots=True)
class Pong(Command):
    pass


@dataclass(frozen=True, slots=True)
class Refresh(Command):
    token: str = ""


def _bad(message: str, command_id: int | None, op: str | None) -> CommandError:
    return CommandError(ErrorCode.BAD_REQUEST, message, command_id=command_id, op=op)


def _id_of(message: dict[str, Any]) -> int | None:
    cid = message.get("id")
    if cid is None:
        return None
    if type(cid) is not int or not 1 <= cid < MAX_ID:
        raise _bad("id must be an integer from 1 to 2^53-1", None, None)
    return cid


def _str(message: dict[str, Any], key: str, cid: int | None, op: str, *, required: bool) -> Any:
    value = message.get(key)
    if value is None:
        if required:
            raise _bad(f"{key} is required", cid, op)
        return None
    if not isinstance(value, str):
        raise _bad(f"{key} must be a string", cid, op)
    return value


def _channel(message: dict[str, Any], cid: int | None, op: str) -> str:
    if "channel" not in message:
        raise _bad("channel is required", cid, op)
    try:
        return validate_channel(message["channel"])
    except CommandError as exc:
        raise _bad(exc.message, cid, op) from None


def _since(message: dict[str, Any], cid: int | None, op: str) -> StreamPosition | None:
    since = message.get("since")
    if since is None:
        return None
    if not isinstance(since, dict):
        raise _bad("since must be a map of offset and epoch", cid, op)
    offset, epoch = since.get("offset"), since.get("epoch")
    if type(offset) is not int or offset < 0 or not isinstance(epoch, str):
        raise _bad("since needs an integer offset >= 0 and a string epoch", cid, op)
    return StreamPosition(offset, epoch)


def parse_command(message: dict[str, Any]) -> Command:
    """Check a decoded client message and return its :class:`Command`.

    Raises :class:`CommandError` (400) for an unknown op or a bad field.
    """
    cid = _id_of(message)
    op = message.get("op")
    if not isinstance(op, str):
        raise _bad("op is required", cid, None)
    if op == "publish":
        if "data" not in message:
            raise _bad("data is required", cid, op)
        return Publish(cid, _channel(message, cid, op), message["data"])
    if op == "subscribe":
        recover = message.get("recover")
        if recover is None:  # null is absent, as for every optional field
            recover = False
        elif not isinstance(recover, bool):
            raise _bad("recover must be a boolean", cid, op)
        return Subscribe(cid, _channel(message, cid, op), recover, _since(message, cid, op))
    if op == "unsubscribe":
        return Unsubscribe(cid, _channel(message, cid, op))
    if op == "pong":
        return Pong(cid)
    if op == "ping":
        return Ping(cid)
    if op == "connect":
        client = message.get("client")
        name = version = None
        if client is not None:
            if not isinstance(client, dict):
                raise _bad("client must be a map", cid, op)
            name = _str(client, "name", cid, op, required=False)
            version = _str(client, "version", cid, op, required=False)
        return Connect(cid, _str(message, "token", cid, op, required=False), name, version)
    if op == "presence":
        return Presence(cid, _channel(message, cid, op))
    if op == "history":
        limit = message.get("limit")
        if limit is not None and (type(limit) is not int or limit < 0):
            raise _bad("limit must be an integer >= 0", cid, op)
        return History(cid, _channel(message, cid, op), _since(message, cid, op), limit)
    if op == "refresh":
        return Refresh(cid, _str(message, "token", cid, op, required=True))
    raise _bad(f"unknown op {op[:64]!r}", cid, op)


# -- replies -----------------------------------------------------------------


def reply_ok(command_id: int, ok: dict[str, Any] | None = None) -> dict[str, Any]:
    """A success reply to the command ``command_id``."""
    return {"id": command_id, "ok": ok if ok is not None else {}}


def error_body(code: int, message: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"code": int(code), "message": message}
    if extra:
        body.update(extra)
    return body


def reply_error(
    command_id: int, code: int, message: str, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """An error reply (e.g. ``retry_after`` goes in ``extra`` for 429)."""
    return {"id": command_id, "error": error_body(code, message, extra)}


# -- pushes ------------------------------------------------------------------


def push_pub(
    channel: str,
    data: Any,
    offset: int | None = None,
    sender: dict[str, str] | None = None,
    epoch: str | None = None,
) -> dict[str, Any]:
    """A ``pub`` push; ``sender`` is the ``from`` field (client, user).

    ``epoch`` (an addition to PROTOCOL.md) comes with ``offset`` on channels
    with history, so a client can tell a history restart from a duplicate.
    """
    msg: dict[str, Any] = {"push": "pub", "channel": channel, "data": data}
    if offset is not None:
        msg["offset"] = offset
        if epoch is not None:
            msg["epoch"] = epoch
    if sender is not None:
        msg["from"] = sender
    return msg


def push_join(channel: str, client: str, user: str) -> dict[str, Any]:
    return {"push": "join", "channel": channel, "client": client, "user": user}


def push_leave(channel: str, client: str, user: str) -> dict[str, Any]:
    return {"push": "leave", "channel": channel, "client": client, "user": user}


def push_lag(channel: str, dropped: int) -> dict[str, Any]:
    return {"push": "lag", "channel": channel, "dropped": dropped}


def push_unsubscribe(channel: str, code: int, reason: str) -> dict[str, Any]:
    """The server ended a subscription (e.g. a ``refresh`` token no longer allows it)."""
    return {"push": "unsubscribe", "channel": channel, "code": code, "reason": reason}


def push_ping() -> dict[str, Any]:
    return {"push": "ping"}


def push_error(
    code: int, message: str, op: str | None = None, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The ``error`` push: failure of a fire-and-forget command."""
    msg: dict[str, Any] = {"push": "error", **error_body(code, message, extra)}
    if op is not None:
        msg["op"] = op
    return msg


def push_disconnect(
    code: DisconnectCode, reason: str | None = None, after: int | None = None
) -> dict[str, Any]:
    """The ``disconnect`` push sent just before the server closes."""
    msg: dict[str, Any] = {
        "push": "disconnect",
        "code": int(code),
        "reason": reason or REASONS[code],
        "reconnect": RECONNECT[code],
    }
    if after is not None:
        msg["after"] = after
    return msg
