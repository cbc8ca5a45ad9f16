"""Pure pieces of the Redis engine, no server: RESP packing, backoff, URL
redaction, key names and the envelope the publish script extends."""

from __future__ import annotations

import hashlib

import msgpack
import pytest

from hubbub.cluster.broker import ClientInfo
from hubbub.cluster.redis_conn import backoff, pack, redact
from hubbub.cluster.redis_layout import (
    JOIN,
    Keys,
    decode,
    decode_presence,
    encode_event,
    encode_presence,
    encode_publication,
    member_of,
    publication,
)
from hubbub.cluster.redis_scripts import ALL, Script


def test_pack_is_resp_bulk_strings() -> None:
    assert pack(b"SET", "ké", 42) == b"*3\r\n$3\r\nSET\r\n$3\r\nk\xc3\xa9\r\n$2\r\n42\r\n"
    assert pack(b"PING") == b"*1\r\n$4\r\nPING\r\n"
    assert pack(b"X", b"") == b"*2\r\n$1\r\nX\r\n$0\r\n\r\n"


@pytest.mark.parametrize("attempt", [0, 1, 3, 10, 100])
def test_backoff_is_capped_with_jitter(attempt: int) -> None:
    delays = [backoff(attempt, base=0.05, cap=2.0) for _ in range(200)]
    ceiling = min(2.0, 0.05 * 2**attempt)
    assert all(ceiling / 2 <= d <= ceiling for d in delays)
    assert len(set(delays)) > 1  # jittered


def test_redact_hides_passwords_only() -> None:
    assert redact("redis://:s3cret@10.0.0.1:6379/0") == "redis://:***@10.0.0.1:6379/0"
    assert redact("redis://u:s3cret@h:1/2") == "redis://u:***@h:1/2"
    assert redact("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
    # The sentinels' own password is a query parameter: it used to be logged.
    hidden = redact("redis+sentinel://:pw@s1:26379,s2:26379/m?sentinel_password=s3cret&x=1")
    assert hidden == "redis+sentinel://:***@s1:26379,s2:26379/m?sentinel_password=***&x=1"
    assert "s3cret" not in redact("redis+sentinel://s1:1/m?Sentinel_Password=s3cret")
    kept = "redis://h:1/0?min_replicas=auto&replica_timeout_ms=500"
    assert redact(kept) == kept


def test_key_names() -> None:
    keys = Keys()
    assert keys.history_keys("chat:a") == ("hubbub:{chat:a}:stream", "hubbub:{chat:a}:meta")
    assert keys.presence("chat:a") == "hubbub:{chat:a}:presence"
    assert keys.pubsub("chat:a") == b"hubbub:ch:chat:a"
    assert Keys("test").nodes() == "test:nodes"


def _as_the_script_does(envelope: bytes, offset: int, epoch: str) -> bytes:
    """The publish script's splice: fixmap size + 2, then ``o`` and ``e``."""
    head = bytes([envelope[0] + 2])
    return head + envelope[1:] + b"\xa1o" + msgpack.packb(offset) + b"\xa1e" + msgpack.packb(epoch)


@pytest.mark.parametrize("sender", [None, ClientInfo("c1", "u1", {"ignored": True})])
@pytest.mark.parametrize("data", [None, 1, "x" * 300, b"\x00" * 70000, {"a": [1, {"b": b""}]}])
def test_publication_envelope_survives_the_splice(data: object, sender: ClientInfo | None) -> None:
    envelope = encode_publication(data, sender)
    assert 0x81 <= envelope[0] <= 0x82  # a fixmap: the script relies on it
    for offset in (1, 127, 128, 2**16, 2**40):
        message = decode(_as_the_script_does(envelope, offset, "ep0ch"))
        pub = publication("chat:a", message, message["o"], message["e"])
        assert (pub.channel, pub.data, pub.offset, pub.epoch) == ("chat:a", data, offset, "ep0ch")
        assert pub.sender == (None if sender is None else ClientInfo("c1", "u1"))


def test_event_and_presence_encoding() -> None:
    info = ClientInfo("c1", "u1", {"name": "x"})
    message = decode(encode_event(JOIN, info))
    assert message["k"] == JOIN and member_of(message) == ClientInfo("c1", "u1")
    assert decode_presence("c1", encode_presence(info)) == info


def test_scripts_have_their_sha1() -> None:
    for script in ALL:
        assert script.sha == hashlib.sha1(script.source.encode()).hexdigest()
    assert len({s.sha for s in ALL}) == len(ALL)
    assert Script("x", "return 1").source == "return 1\n"
