"""Who gets in: connection limits, per-IP counts, and turning a client away.

A new connection counts against ``max_connections`` and
``max_connections_per_ip`` when both have room; one that does not fit, or that
slipped in while the listeners were closing for a drain, is *not admitted*:
its transport refuses it with :meth:`Admission.refuse` — TCP at once, WebSocket
right after the handshake so a browser sees the close code — with 3007 and an
``after`` spread over a few seconds, or 3001 while draining (PROTOCOL.md §5).

Counts are by the client's address (``Connection.peer``): the peer's, or, from a
``[server] trusted_proxies`` peer, the one its proxy gave (``server.proxies``): the
transport admits a connection once it knows it — at once, after the PROXY header
(TCP), or at the handshake request (WebSocket, X-Forwarded-For).

Two more reasons to refuse with 3007: ``max_connects_per_ip_per_second`` (so a
client cannot reset its command bucket by reconnecting), and the process's
open-files limit — clients are refused while fewer than
``admin_max_connections`` + :data:`FD_RESERVE` descriptors are left, so the
admin listener (``/healthz``) and the broker still get theirs and the kernel
never resets clients silently (one aggregated error line, ``what=fd_limit``).
"""

from __future__ import annotations

import heapq
import random
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from hubbub.protocol.codes import DisconnectCode
from hubbub.server.lifecycle import Lifecycle
from hubbub.server.limits import Limits, connection_limit_after
from hubbub.server.settings import Settings

if TYPE_CHECKING:
    from hubbub.server.connection import Connection


#: Descriptors left free beyond ``admin_max_connections`` (broker reconnects, logs).
FD_RESERVE = 16


class Admission:
    """The node's connection counts and the decision to admit or refuse."""

    __slots__ = (
        "admitted",
        "clock",
        "file_limit",
        "lifecycle",
        "limits",
        "open_files",
        "per_ip",
        "settings",
    )

    def __init__(self, settings: Settings, limits: Limits, lifecycle: Lifecycle) -> None:
        self.settings = settings
        self.limits = limits
        self.lifecycle = lifecycle
        self.admitted: set[Connection] = set()  # those counted against the limits
        self.per_ip: dict[str, int] = {}  # admitted connections by peer address
        self.clock: Callable[[], float] = time.monotonic
        #: The soft limit of open files (0: unknown, not checked) and how many
        #: the process has open, as the node counts them (set at its start).
        self.file_limit = 0
        self.open_files: Callable[[], int] = lambda: 0

    @property
    def counted(self) -> int:
        """Connections counted against ``max_connections``."""
        return len(self.admitted)

    def admit(self, conn: Connection) -> bool:
        """Count ``conn`` when the limits have room and the node is not draining."""
        if self.lifecycle.draining:
            return False
        lim = self.settings.limits
        if lim.max_connections and len(self.admitted) >= lim.max_connections:
            self.limits.hit("max_connections")
            return False
        if self.file_limit:
            room = self.file_limit - lim.admin_max_connections - FD_RESERVE
            if self.open_files() >= room:
                self.limits.hit("fd_limit")
                return False
        ip = conn.peer
        count = self.per_ip.get(ip, 0)
        if lim.max_connections_per_ip and count >= lim.max_connections_per_ip:
            self.limits.hit("max_connections_per_ip")
            return False
        if not self.limits.connect_rate(ip, self.clock()):
            return False
        self.per_ip[ip] = count + 1
        self.admitted.add(conn)
        return True

    def refuse(self, conn: Connection) -> None:
        """Turn away a connection :meth:`admit` did not count: 3007 over a
        connection limit, 3001 while draining."""
        if self.lifecycle.draining:
            after = int(random.uniform(0, self.settings.limits.drain_timeout) * 1000)
            conn.disconnect(DisconnectCode.DRAINING, after=after, abort_after=1.0)
            return
        conn.disconnect(
            DisconnectCode.CONNECTION_LIMIT, after=connection_limit_after(), abort_after=1.0
        )

    def top_clients(self, count: int = 5) -> list[dict[str, object]]:
        """The client addresses with the most admitted connections (``/api/nodes``)."""
        top = heapq.nlargest(count, self.per_ip.items(), key=lambda item: item[1])
        return [{"address": ip, "connections": n} for ip, n in top]

    def release(self, conn: Connection) -> None:
        """``conn`` is gone: give its place back."""
        if conn not in self.admitted:
            return
        self.admitted.discard(conn)
        left = self.per_ip.get(conn.peer, 1) - 1
        if left > 0:
            self.per_ip[conn.peer] = left
        else:
            self.per_ip.pop(conn.peer, None)
