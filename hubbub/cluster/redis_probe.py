"""The end-to-end delivery probe of one pub/sub connection: its timing, time passed in.

A pub/sub connection can break without an error (a ``CLIENT KILL``, a
client-output-buffer kill the node missed, a half-open TCP connection, a proxy
that stopped forwarding) while the health check, on its own connection, stays
green: the node is *deaf*. So every :attr:`Probe.interval` seconds the node
PUBLISHes a probe on a channel only it subscribes to (``Keys.probe``), through
the command connection, and expects it back on the pub/sub connection. A probe
not back within :attr:`Probe.timeout` seconds, or a probe channel whose
SUBSCRIBE was not confirmed within it, means the connection is deaf: it is
dropped and reopened (its channels re-subscribed, their subscribers told
``lag``), and ``healthy`` stays False until a probe comes back.

:class:`Probe` is the bookkeeping only (no I/O, no clock): the subscriber
calls :meth:`Probe.start` when a connection opens, :meth:`Probe.listening`
when its probe channel is confirmed and :meth:`Probe.seen` for each probe that
comes back; the shard's probe loop asks :meth:`Probe.missing` and
:meth:`Probe.due`, sends what :meth:`Probe.sent` numbers, and takes back with
:meth:`Probe.unsent` a probe whose PUBLISH failed. Only the pub/sub side is
judged: while the command connection fails (a Redis down or frozen, which the
health check reports and ``/readyz`` shows) no probe is missing.
"""

from __future__ import annotations

from collections import deque

#: Probes in flight at most: no more are sent until one comes back or the
#: oldest goes missing (a short interval under a long timeout stays bounded).
MAX_IN_FLIGHT = 64


class Probe:
    """Probes sent and not yet back on one pub/sub connection."""

    __slots__ = (
        "_in_flight",
        "_last_sent",
        "_listening",
        "_seq",
        "_since",
        "deaf",
        "interval",
        "last_round_trip",
        "misses",
        "timeout",
    )

    def __init__(self, interval: float, timeout: float) -> None:
        #: Seconds between probes; 0 = probing off.
        self.interval = interval
        #: Seconds a probe (or the probe channel's confirmation) may take.
        self.timeout = timeout
        #: Probes that went missing (each dropped the connection).
        self.misses = 0
        #: True from a miss until a probe comes back.
        self.deaf = False
        #: Seconds the last probe back took, None before the first.
        self.last_round_trip: float | None = None
        self._seq = 0
        self._in_flight: deque[tuple[int, float]] = deque()
        self._since: float | None = None  # the connection opened, probe channel unconfirmed
        self._listening = False
        self._last_sent: float | None = None

    @property
    def enabled(self) -> bool:
        return self.interval > 0

    def start(self, now: float) -> None:
        """A connection opened at ``now``: its probe channel's SUBSCRIBE was sent."""
        self._in_flight.clear()
        self._since = now
        self._listening = False
        self._last_sent = None

    def stop(self) -> None:
        """No connection (or no probe channel): nothing is expected."""
        self._in_flight.clear()
        self._since = None
        self._listening = False

    def listening(self, now: float) -> None:
        """The probe channel's SUBSCRIBE was confirmed: probes can come back."""
        if self._since is not None:
            self._since = None
            self._listening = True

    def due(self, now: float) -> bool:
        """Whether to send a probe now (listening, and ``interval`` since the last)."""
        return (
            self.enabled
            and self._listening
            and (self._last_sent is None or now - self._last_sent >= self.interval)
            and len(self._in_flight) < MAX_IN_FLIGHT
        )

    def sent(self, now: float) -> int:
        """Number a probe sent at ``now``."""
        self._seq += 1
        self._last_sent = now
        self._in_flight.append((self._seq, now))
        return self._seq

    def unsent(self, seq: int) -> None:
        """Probe ``seq`` could not be published (the command connection failed:
        the health check's to report): it is not expected back."""
        for entry in self._in_flight:
            if entry[0] == seq:
                self._in_flight.remove(entry)
                return

    def seen(self, seq: int, now: float) -> bool:
        """Probe ``seq`` came back at ``now``: it and every earlier one are
        accounted for (one connection keeps order). False for a probe not in
        flight (from a connection since replaced)."""
        in_flight = self._in_flight
        sent_at = None
        while in_flight and in_flight[0][0] <= seq:
            number, at = in_flight.popleft()
            if number == seq:
                sent_at = at
        if sent_at is None:
            return False
        self.last_round_trip = now - sent_at
        self.deaf = False
        return True

    def missing(self, now: float) -> bool:
        """Whether a probe, or the probe channel's confirmation, is overdue at ``now``."""
        if not self.enabled:
            return False
        if self._since is not None:
            return now - self._since >= self.timeout
        return bool(self._in_flight) and now - self._in_flight[0][1] >= self.timeout

    def missed(self) -> None:
        """The connection was found deaf and is being dropped."""
        self.misses += 1
        self.deaf = True
        self.stop()

    def reset(self) -> None:
        """Probing is off on this connection now (no probe channel): not deaf."""
        self.deaf = False
        self.stop()
