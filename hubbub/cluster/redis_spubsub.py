"""Sharded pub/sub on one Redis Cluster primary: SSUBSCRIBE, and slots that move.

The same reader as classic pub/sub (:class:`~cluster.redis_pubsub.Subscriber`:
confirmation before ``subscribe`` returns, reconnects, gap reports), speaking
``SSUBSCRIBE``/``SUNSUBSCRIBE``/``smessage``. What is new is that a channel can
stop belonging to this primary while subscribed:

- the primary gives the channel's slot away (a reshard) or stops serving it,
  and says so with a ``sunsubscribe`` push we did not ask for;
- an ``SSUBSCRIBE`` is answered ``-MOVED`` (our slot map was stale).

Either way the subscriber lets go of every channel of that slot (a
``subscribe`` still waiting fails with :class:`SlotMoved`, which the engine
retries on the new owner) and hands the others to :attr:`on_moved`; the
engine re-subscribes them on the primary that owns the slot now, and they get
``on_gap`` once confirmed there (publications may have been missed meanwhile).
Every ``SSUBSCRIBE`` names one channel: a command's channels must share a slot.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from redis.crc import key_slot
from redis.exceptions import AskError, ClusterDownError, ResponseError

from hubbub import log
from hubbub.cluster.exceptions import SlotMoved
from hubbub.cluster.redis_pubsub import Subscriber


class ShardedSubscriber(Subscriber):
    """The sharded pub/sub connection to one cluster primary."""

    SUBSCRIBE = b"SSUBSCRIBE"
    UNSUBSCRIBE = b"SUNSUBSCRIBE"
    SUBSCRIBED = b"ssubscribe"
    MESSAGE = b"smessage"
    batch = 1

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: Told which subscribed channels this primary let go (set by the engine).
        self.on_moved: Callable[[list[str]], None] = _nobody

    @property
    def needed(self) -> bool:
        """Connected from the first subscribed channel on (one sharded pub/sub
        connection per primary that owns subscribed slots)."""
        return bool(self.wanted)

    async def subscribe(self, channel: str) -> None:
        if self.conn is None:
            self.wake()  # the reader connects now that a channel is wanted
        await super().subscribe(channel)

    def adopt(self, channel: str) -> None:
        """Subscribe ``channel`` here without waiting, as one that moved in: its
        subscribers get ``on_gap`` once the primary confirms."""
        rch = self._keys.pubsub(channel)
        if self.conn is None:
            self.wake()
        self.wanted[channel] = rch
        self._lost.add(channel)
        if rch not in self.routes:
            self._send_subscribe((rch,))

    def release(self, channel: str) -> None:
        """Stop holding ``channel`` here (it lives on another primary now): its
        waiting subscribes fail with :class:`SlotMoved`; nothing is sent."""
        rch = self.wanted.pop(channel, None)
        if rch is None:
            return
        self._last.pop(channel, None)
        self._epochs.pop(channel, None)
        self._lost.discard(channel)
        self.routes.pop(rch, None)
        self._outstanding.pop(rch, None)
        for future in self._waiters.pop(channel, ()):
            if not future.done():
                future.set_exception(SlotMoved())

    def _slot_moved(self, slot: int) -> None:
        probe = self.probe_channel
        if probe is not None and key_slot(probe) == slot:
            self.set_probe_channel(None)  # the engine places a new one after a refresh
            self.on_moved([])
        channels = [c for c, rch in self.wanted.items() if key_slot(rch) == slot]
        if not channels:
            return
        log.info("redis_slot_moved", shard=self.name, slot=slot, channels=len(channels))
        waiting = [c for c in channels if c in self._waiters]
        for channel in channels:
            self.release(channel)
        moved = [c for c in channels if c not in waiting]
        if moved:
            self.on_moved(moved)

    def _other_push(self, reply: list[object]) -> None:
        if reply[0] == b"sunsubscribe":
            rch = reply[1]
            if isinstance(rch, bytes) and (rch in self.routes or rch == self.probe_channel):
                # Not ours (ours forgot the channel first): the primary let it go.
                self._slot_moved(key_slot(rch))

    def _error_reply(self, exc: ResponseError) -> None:
        if isinstance(exc, AskError):  # MOVED (or ASK) to an SSUBSCRIBE
            self._slot_moved(exc.slot_id)
        elif isinstance(exc, ClusterDownError):  # the slot is served by nobody now
            log.warning("redis_pubsub_error", shard=self.name, error=str(exc))
        else:
            raise exc


def _nobody(channels: list[str]) -> None:
    return None
