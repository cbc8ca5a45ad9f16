"""Commands, replies and pushes (PROTOCOL.md §2-3)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hubbub.protocol.codec import Encoding, decode, encode
from hubbub.protocol.codes import REASONS, RECONNECT, DisconnectCode, ErrorCode
from hubbub.protocol.exceptions import CommandError
from hubbub.protocol.messages import (
    MAX_ID,
    Command,
    Connect,
    History,
    Ping,
    Pong,
    Presence,
    Publish,
    Refresh,
    StreamPosition,
    Subscribe,
    Unsubscribe,
    parse_command,
    push_disconnect,
    push_error,
    push_join,
    push_lag,
    push_leave,
    push_ping,
    push_pub,
    reply_error,
    reply_ok,
)
from tests.protocol.strategies import values

OPS: dict[str, type[Command]] = {
    "connect": Connect,
    "subscribe": Subscribe,
    "unsubscribe": Unsubscribe,
    "publish": Publish,
    "presence": Presence,
    "history": History,
    "ping": Ping,
    "pong": Pong,
    "refresh": Refresh,
}
SINCE = {"offset": 5, "epoch": "e1"}

# -- valid commands -----------------------------------------------------------

VALID: list[tuple[dict[str, Any], Command]] = [
    ({"op": "connect"}, Connect(None)),
    ({"op": "connect", "id": 1}, Connect(1)),
    (
        {"op": "connect", "id": 1, "token": "jwt", "client": {"name": "app", "version": "1.0"}},
        Connect(1, "jwt", "app", "1.0"),
    ),
    ({"op": "connect", "id": 1, "client": {}}, Connect(1)),
    ({"op": "connect", "id": 1, "token": None, "client": None}, Connect(1)),
    ({"op": "subscribe", "id": 2, "channel": "chat:lobby"}, Subscribe(2, "chat:lobby")),
    (
        {"op": "subscribe", "id": 2, "channel": "c", "recover": True, "since": SINCE},
        Subscribe(2, "c", True, StreamPosition(5, "e1")),
    ),
    ({"op": "subscribe", "id": 2, "channel": "c", "recover": False}, Subscribe(2, "c")),
    # null is the same as absent for every optional field.
    (
        {"op": "subscribe", "id": 2, "channel": "c", "recover": None, "since": None},
        Subscribe(2, "c"),
    ),
    (
        {"op": "history", "id": 6, "channel": "c", "since": None, "limit": None},
        History(6, "c"),
    ),
    ({"op": "ping", "id": None}, Ping(None)),
    (
        {"op": "subscribe", "id": 2, "channel": "c", "since": {"offset": 0, "epoch": ""}},
        Subscribe(2, "c", False, StreamPosition(0, "")),
    ),
    ({"op": "unsubscribe", "id": 3, "channel": "c"}, Unsubscribe(3, "c")),
    (
        {"op": "publish", "id": 4, "channel": "c", "data": {"x": [1, b"\x00"]}},
        Publish(4, "c", {"x": [1, b"\x00"]}),
    ),
    ({"op": "publish", "channel": "c", "data": None}, Publish(None, "c", None)),
    ({"op": "presence", "id": 5, "channel": "c"}, Presence(5, "c")),
    ({"op": "history", "id": 6, "channel": "c"}, History(6, "c")),
    (
        {"op": "history", "id": 6, "channel": "c", "since": SINCE, "limit": 10},
        History(6, "c", StreamPosition(5, "e1"), 10),
    ),
    ({"op": "history", "id": 6, "channel": "c", "limit": 0}, History(6, "c", None, 0)),
    ({"op": "ping", "id": 7}, Ping(7)),
    ({"op": "ping"}, Ping(None)),
    ({"op": "pong"}, Pong(None)),
    ({"op": "refresh", "id": 8, "token": "jwt2"}, Refresh(8, "jwt2")),
    ({"op": "ping", "id": MAX_ID - 1}, Ping(2**53 - 1)),
    ({"op": "ping", "id": 1, "extra": "ignored"}, Ping(1)),
]


@pytest.mark.parametrize(("message", "command"), VALID, ids=lambda v: repr(v)[:60])
def test_valid_command(message: dict[str, Any], command: Command) -> None:
    assert parse_command(message) == command


def test_every_op_of_the_protocol_is_parsed() -> None:
    assert {type(c) for _, c in VALID} == set(OPS.values())


def test_max_id_is_2_to_the_53() -> None:
    assert MAX_ID == 2**53


# -- bad fields ---------------------------------------------------------------

BAD_CHANNELS: list[dict[str, Any]] = [
    {},
    {"channel": ""},
    {"channel": 5},
    {"channel": "a b"},
    {"channel": "x" * 256},
    {"channel": None},
    {"channel": ["c"]},
]
BAD_SINCE: list[Any] = [
    5,
    "1:e",
    [],
    {"offset": -1, "epoch": "e"},
    {"offset": "1", "epoch": "e"},
    {"offset": True, "epoch": "e"},
    {"offset": 1.0, "epoch": "e"},
    {"offset": 1},
    {"epoch": "e"},
    {"offset": 1, "epoch": 1},
]

BAD_TOKENS: list[Any] = [5, [], b"jwt", True]
BAD_CLIENTS: list[Any] = ["app", [1], 3, {"name": 1}, {"version": 2.0}]
BAD_RECOVER: list[Any] = ["yes", 1, 0, []]
BAD_LIMITS: list[Any] = [-1, "10", 1.5, True, []]
BAD_REFRESH: list[dict[str, Any]] = [{}, {"token": None}, {"token": 5}, {"token": b"jwt"}]

BAD: list[tuple[str, dict[str, Any]]] = [
    *(("connect", {"token": t}) for t in BAD_TOKENS),
    *(("connect", {"client": c}) for c in BAD_CLIENTS),
    *(("subscribe", {**ch}) for ch in BAD_CHANNELS),
    *(("subscribe", {"channel": "c", "recover": r}) for r in BAD_RECOVER),
    *(("subscribe", {"channel": "c", "recover": True, "since": s}) for s in BAD_SINCE),
    *(("unsubscribe", {**ch}) for ch in BAD_CHANNELS),
    *(("publish", {**ch, "data": 1}) for ch in BAD_CHANNELS),
    ("publish", {"channel": "c"}),
    *(("presence", {**ch}) for ch in BAD_CHANNELS),
    *(("history", {**ch}) for ch in BAD_CHANNELS),
    *(("history", {"channel": "c", "since": s}) for s in BAD_SINCE),
    *(("history", {"channel": "c", "limit": n}) for n in BAD_LIMITS),
    *(("refresh", t) for t in BAD_REFRESH),
]


@pytest.mark.parametrize(("op", "fields"), BAD, ids=lambda v: repr(v)[:50])
@pytest.mark.parametrize("command_id", [7, None])
def test_bad_field_is_400_keeping_the_id(
    op: str, fields: dict[str, Any], command_id: int | None
) -> None:
    message = {"op": op, **fields}
    if command_id is not None:
        message["id"] = command_id
    with pytest.raises(CommandError) as info:
        parse_command(message)
    exc = info.value
    assert exc.code == ErrorCode.BAD_REQUEST
    assert exc.command_id == command_id
    assert exc.op == op
    assert exc.message


def test_every_op_with_fields_has_bad_cases() -> None:
    assert {op for op, _ in BAD} == set(OPS) - {"ping", "pong"}


BAD_IDS = [True, False, 0, -1, MAX_ID, MAX_ID + 1, 2**64, 1.0, 7.5, "7", [7], {"n": 7}, b"7"]


@pytest.mark.parametrize("bad_id", BAD_IDS, ids=repr)
@pytest.mark.parametrize(
    "rest",
    [
        {"op": "ping"},
        {"op": "publish", "channel": "c", "data": 1},
        {"op": "nope"},
        {},
        {"op": "subscribe"},
    ],
    ids=repr,
)
def test_bad_id_is_400_without_an_id(bad_id: Any, rest: dict[str, Any]) -> None:
    with pytest.raises(CommandError) as info:
        parse_command({**rest, "id": bad_id})
    assert info.value.code == ErrorCode.BAD_REQUEST
    assert info.value.command_id is None


@pytest.mark.parametrize("op", ["nope", "", "Publish", "PING", "connect ", "push"])
@pytest.mark.parametrize("command_id", [9, None])
def test_unknown_op_is_400(op: str, command_id: int | None) -> None:
    message: dict[str, Any] = {"op": op, "channel": "c"}
    if command_id is not None:
        message["id"] = command_id
    with pytest.raises(CommandError) as info:
        parse_command(message)
    assert info.value.code == ErrorCode.BAD_REQUEST
    assert info.value.command_id == command_id


@pytest.mark.parametrize(
    "message",
    [
        {"id": 3},
        {"id": 3, "op": None},
        {"id": 3, "op": 1},
        {"id": 3, "op": ["ping"]},
        {"id": 3, "op": b"ping"},
    ],
)
def test_missing_or_non_string_op_is_400_keeping_the_id(message: dict[str, Any]) -> None:
    with pytest.raises(CommandError) as info:
        parse_command(message)
    assert info.value.code == ErrorCode.BAD_REQUEST
    assert info.value.command_id == 3


def test_long_unknown_op_is_cut_in_the_message() -> None:
    with pytest.raises(CommandError) as info:
        parse_command({"op": "x" * 10_000})
    assert len(info.value.message) < 200


# -- random commands ----------------------------------------------------------

FIELDS = ["op", "id", "channel", "data", "recover", "since", "token", "client", "limit"]
ids = st.one_of(
    st.integers(min_value=-5, max_value=2**64),
    st.sampled_from([1, MAX_ID - 1, MAX_ID, 0, True, False, None, 1.0, "1"]),
)
field_values = st.one_of(
    values,
    st.sampled_from(sorted(OPS)),
    st.sampled_from(["c", "chat:lobby", "", "a b"]),
    st.fixed_dictionaries({}, optional={"offset": values | st.integers(), "epoch": values}),
    st.fixed_dictionaries({}, optional={"name": values, "version": values}),
)
commands = st.dictionaries(
    st.sampled_from(FIELDS) | st.text(max_size=6), field_values, max_size=8
).flatmap(
    lambda d: st.builds(
        lambda op, cid: {**d, **op, **cid},
        st.sampled_from([{}, *({"op": op} for op in OPS)]),
        st.sampled_from([{}]) | ids.map(lambda i: {"id": i}),
    )
)


def _valid_id(message: dict[str, Any]) -> int | None:
    cid = message.get("id")
    return cid if type(cid) is int and 1 <= cid < 2**53 else None


@settings(max_examples=400, deadline=None)
@given(message=commands)
def test_random_dicts_raise_only_command_error(message: dict[str, Any]) -> None:
    try:
        command = parse_command(message)
    except CommandError as exc:
        assert exc.code == ErrorCode.BAD_REQUEST
        assert exc.command_id == _valid_id(message)
        return
    assert isinstance(command, OPS[message["op"]])
    assert command.id == message.get("id")
    assert command.id is None or command.id == _valid_id(message)


# -- replies ------------------------------------------------------------------


def test_reply_ok() -> None:
    assert reply_ok(7) == {"id": 7, "ok": {}}
    ok = {"client": "c1", "node": "n1", "ping": 25.0, "limits": {"max_frame": 65536}}
    assert reply_ok(7, ok) == {"id": 7, "ok": ok}


def test_reply_error_with_retry_after() -> None:
    reply = reply_error(7, ErrorCode.RATE_LIMITED, "rate limited", {"retry_after": 250})
    assert reply == {"id": 7, "error": {"code": 429, "message": "rate limited", "retry_after": 250}}
    assert type(reply["error"]["code"]) is int
    assert reply_error(8, 404, "not found") == {
        "id": 8,
        "error": {"code": 404, "message": "not found"},
    }


# -- pushes -------------------------------------------------------------------


def test_push_pub() -> None:
    assert push_pub("c", {"x": 1}) == {"push": "pub", "channel": "c", "data": {"x": 1}}
    assert push_pub("c", b"\x00", offset=12, sender={"client": "c1", "user": "u1"}) == {
        "push": "pub",
        "channel": "c",
        "data": b"\x00",
        "offset": 12,
        "from": {"client": "c1", "user": "u1"},
    }
    assert push_pub("c", None, offset=0)["offset"] == 0


def test_push_join_leave_lag_ping() -> None:
    assert push_join("c", "c1", "u1") == {
        "push": "join",
        "channel": "c",
        "client": "c1",
        "user": "u1",
    }
    assert push_leave("c", "c1", "u1") == {
        "push": "leave",
        "channel": "c",
        "client": "c1",
        "user": "u1",
    }
    assert push_lag("c", 42) == {"push": "lag", "channel": "c", "dropped": 42}
    assert push_ping() == {"push": "ping"}


def test_push_error() -> None:
    assert push_error(ErrorCode.CONFLICT, "already subscribed", op="subscribe") == {
        "push": "error",
        "code": 409,
        "message": "already subscribed",
        "op": "subscribe",
    }
    assert push_error(429, "rate limited", extra={"retry_after": 10}) == {
        "push": "error",
        "code": 429,
        "message": "rate limited",
        "retry_after": 10,
    }
    assert type(push_error(ErrorCode.INTERNAL, "x")["code"]) is int


@pytest.mark.parametrize("code", list(DisconnectCode))
def test_push_disconnect(code: DisconnectCode) -> None:
    msg = push_disconnect(code)
    assert msg == {
        "push": "disconnect",
        "code": int(code),
        "reason": REASONS[code],
        "reconnect": RECONNECT[code],
    }
    assert type(msg["code"]) is int and type(msg["reconnect"]) is bool
    assert push_disconnect(code, "bye", after=1500) == {
        "push": "disconnect",
        "code": int(code),
        "reason": "bye",
        "reconnect": RECONNECT[code],
        "after": 1500,
    }
    assert push_disconnect(code, after=0)["after"] == 0


def test_disconnect_reconnect_flags_follow_the_protocol() -> None:
    assert push_disconnect(DisconnectCode.PROTOCOL_ERROR)["reconnect"] is False
    assert push_disconnect(DisconnectCode.UNAUTHORIZED)["reconnect"] is False
    assert push_disconnect(DisconnectCode.DRAINING, after=100)["reconnect"] is True


def test_stream_position_to_wire() -> None:
    assert StreamPosition(5, "e1").to_wire() == SINCE


BUILT = [
    reply_ok(1, {"publications": [push_pub("c", b"\x01", offset=1)], "offset": 1, "epoch": "e"}),
    reply_error(2, 429, "rate limited", {"retry_after": 250}),
    push_pub("c", {"k": [1, 2.5, None, True, "s", b"b"]}, 3, {"client": "c", "user": "u"}),
    push_join("c", "c1", "u1"),
    push_leave("c", "c1", "u1"),
    push_lag("c", 3),
    push_ping(),
    push_error(400, "bad", "publish"),
    push_disconnect(DisconnectCode.DRAINING, after=1000),
]


@pytest.mark.parametrize("message", BUILT, ids=lambda m: str(m.get("push", "reply")))
@pytest.mark.parametrize("encoding", list(Encoding))
def test_built_messages_survive_both_encodings(message: dict[str, Any], encoding: Encoding) -> None:
    assert decode(encode(message, encoding), encoding) == message
