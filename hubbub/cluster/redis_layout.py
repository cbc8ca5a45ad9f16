"""Where the Redis engine keeps things, and how its messages are encoded.

Keys of one channel share the hash tag ``{channel}`` (one slot should the
shards ever be a Redis Cluster); ``hubbub`` is the default prefix:

====================================  ========  ===============================================
key                                   type      holds
====================================  ========  ===============================================
``hubbub:{<channel>}:stream``         stream    history: one entry per publication, id
                                                ``<offset>-0``, field ``d`` = the envelope;
                                                ``XADD MAXLEN history_size``; PEXPIRE history_ttl
``hubbub:{<channel>}:meta``           hash      ``epoch`` (random, made with the history) and
                                                ``top`` (last offset); same PEXPIRE as the
                                                stream, so both vanish together → new epoch
``hubbub:{<channel>}:presence``       hash      client id → ``<expires_ms>:<msgpack {u, i}>``;
                                                expired entries are removed when read; the hash
                                                itself PEXPIREs with the presence TTL
``hubbub:ch:<channel>``               pub/sub   the channel's envelopes (publications, join, leave)
``hubbub:nodes``                      hash      node id → ``<expires_ms>:<msgpack info>``: live
                                                nodes (first shard only; ``GET /api/nodes``)
``hubbub:probe:<node>.<random>``      pub/sub   one node's delivery probes (cluster.redis_probe):
                                                outside ``hubbub:ch:``, so no client channel is it;
                                                on a Redis Cluster ``...:{<tag>}``, a tag of a slot
                                                the probed primary owns
====================================  ========  ===============================================

The envelope is one msgpack map (:mod:`protocol.codec`): ``d`` data and ``f``
``[client, user]`` for a publication, ``k`` ``"j"``/``"l"`` and ``f`` for
join/leave. The publish script appends ``o`` (offset) and ``e`` (epoch) to a
publication's map before PUBLISHing it, so subscribers decode each message
once and have everything the ``pub`` push needs.
"""

from __future__ import annotations

from typing import Any

from hubbub.cluster.broker import ClientInfo, Publication
from hubbub.protocol.codec import decode_msgpack, encode_msgpack

JOIN = "j"
LEAVE = "l"


class Keys:
    """Key and pub/sub channel names of one prefix."""

    __slots__ = ("prefix", "pubsub_prefix")

    def __init__(self, prefix: str = "hubbub") -> None:
        self.prefix = prefix
        self.pubsub_prefix = f"{prefix}:ch:"

    def stream(self, channel: str) -> str:
        return f"{self.prefix}:{{{channel}}}:stream"

    def meta(self, channel: str) -> str:
        return f"{self.prefix}:{{{channel}}}:meta"

    def presence(self, channel: str) -> str:
        return f"{self.prefix}:{{{channel}}}:presence"

    def nodes(self) -> str:
        """The registry of live nodes (on the first shard)."""
        return f"{self.prefix}:nodes"

    def pubsub(self, channel: str) -> bytes:
        return (self.pubsub_prefix + channel).encode()

    def probe(self, name: str) -> bytes:
        """A node's probe channel: never a client channel's pub/sub name (those
        are :meth:`pubsub`'s), so no client can subscribe to it or publish on it."""
        return f"{self.prefix}:probe:{name}".encode()

    def channel_of(self, pubsub: bytes) -> str:
        """The channel whose pub/sub name is ``pubsub`` (the inverse of :meth:`pubsub`)."""
        return pubsub[len(self.pubsub_prefix) :].decode()

    def history_keys(self, channel: str) -> tuple[str, str]:
        """The KEYS of the publish and history scripts: stream, meta."""
        return self.stream(channel), self.meta(channel)


class SlotKeys(Keys):
    """The layout on a Redis Cluster: the same keys, and a sharded pub/sub
    channel ``hubbub:{<channel>}:ch`` with the channel's hash tag, so the
    publish script's keys and its SPUBLISH are all in the channel's slot."""

    __slots__ = ()

    def pubsub(self, channel: str) -> bytes:
        return f"{self.prefix}:{{{channel}}}:ch".encode()

    def channel_of(self, pubsub: bytes) -> str:
        return pubsub[len(self.prefix) + 2 : -4].decode()


def encode_publication(data: Any, sender: ClientInfo | None) -> bytes:
    """A publication's envelope, before the script adds ``o`` and ``e``.

    Always a msgpack fixmap (at most 2 entries here): the script relies on it.
    """
    if sender is None:
        return encode_msgpack({"d": data})
    return encode_msgpack({"d": data, "f": [sender.client, sender.user]})


def encode_event(kind: str, info: ClientInfo) -> bytes:
    """A join or leave envelope."""
    return encode_msgpack({"k": kind, "f": [info.client, info.user]})


def decode(payload: bytes) -> dict[str, Any]:
    """One envelope; raises ``ProtocolViolation`` when it is not one."""
    return decode_msgpack(payload)


def member_of(message: dict[str, Any]) -> ClientInfo:
    """Who joined or left, from a join/leave envelope."""
    client, user = message["f"]
    return ClientInfo(client, user)


def publication(
    channel: str, message: dict[str, Any], offset: int | None, epoch: str | None
) -> Publication:
    """The :class:`Publication` an envelope stands for."""
    sender = message.get("f")
    return Publication(
        channel,
        message.get("d"),
        offset,
        epoch,
        None if sender is None else ClientInfo(sender[0], sender[1]),
    )


def encode_presence(info: ClientInfo) -> bytes:
    """The value part of a presence entry (the script prefixes the expiry)."""
    return encode_msgpack({"u": info.user, "i": info.info})


def decode_presence(client: str, payload: bytes) -> ClientInfo:
    value = decode_msgpack(payload)
    return ClientInfo(client, value.get("u", ""), value.get("i"))
