"""Keepalive and handshake timers, with time passed in (after aioquic).

The node's sweeper calls :meth:`Timers.poll` about every quarter of the
shortest timeout; no per-connection timer handles exist, which keeps idle
connections cheap.
"""

from __future__ import annotations

from enum import Enum


class Due(Enum):
    NOTHING = 0
    PING = 1  # send a ping push (PROTOCOL.md §3)
    STALE = 2  # no traffic within ping_timeout after a ping: disconnect 3003
    HANDSHAKE = 3  # no connect within handshake_timeout: disconnect 3004


class Timers:
    """Per-connection deadlines: handshake, next ping, pong deadline."""

    __slots__ = ("handshake_deadline", "next_ping", "pong_deadline")

    def __init__(self, now: float, handshake_timeout: float) -> None:
        self.handshake_deadline: float | None = now + handshake_timeout
        self.next_ping = 0.0
        self.pong_deadline: float | None = None

    def connected(self, now: float, ping_interval: float) -> None:
        """``connect`` succeeded: stop the handshake timer, start pinging."""
        self.handshake_deadline = None
        self.next_ping = now + ping_interval

    def activity(self) -> None:
        """Any command from the client answers an outstanding ping."""
        self.pong_deadline = None

    def poll(self, now: float, ping_interval: float, ping_timeout: float) -> Due:
        """What is due at ``now``; a PING moves the next ping on by one interval."""
        if self.handshake_deadline is not None:
            return Due.HANDSHAKE if now >= self.handshake_deadline else Due.NOTHING
        if self.pong_deadline is not None and now >= self.pong_deadline:
            return Due.STALE
        if now >= self.next_ping:
            self.next_ping = now + ping_interval
            if self.pong_deadline is None:
                self.pong_deadline = now + ping_timeout
            return Due.PING
        return Due.NOTHING
