"""``HubbubUser`` for real Locust (``pip install 'hubbub[locust]'``).

Every command and every received publication goes through Locust's
``request`` event, so Locust's web UI, console and ``--csv`` show them::

    from locust import constant_throughput, task
    from hubbub.loadtest.locust_user import HubbubUser

    class Chat(HubbubUser):
        wait_time = constant_throughput(5)

        def on_start(self):
            self.hubbub.subscribe("chat:lobby")

        @task
        def say(self):
            self.hubbub.publish("chat:lobby")

    # locust -f chat.py --host tcp://127.0.0.1:7400

Rows: request type ``HUBBUB`` for commands (``connect``, ``subscribe``,
``publish``, ``presence``, ``history``), and ``RECV`` for receptions, named by
channel, with the latency from the publication's intended send time (payloads
published by a ``HubbubUser`` or ``hubbub-loadtest`` carry it). A gap or a
duplicate in a publisher's sequence is a failure of ``RECV <channel>``.

Importing this module imports Locust, which monkey-patches the process for
gevent: import it only in locustfiles.
"""

from __future__ import annotations

import random
import time
from typing import Any

from locust import User
from locust.env import Environment

from hubbub.client.exceptions import ClientError
from hubbub.client.sync import SyncConnection
from hubbub.loadtest.accounting.payload import make_payload, read_stamp, stream_id
from hubbub.loadtest.accounting.sequences import DUPLICATE, GAP, SeqTracker
from hubbub.loadtest.exceptions import SequenceError

COMMAND = "HUBBUB"
RECEIVE = "RECV"


class HubbubClient:
    """The commands of one Locust user, each reported as a Locust request."""

    def __init__(self, host: str, environment: Environment, size: int = 100) -> None:
        self.host = host
        self.environment = environment
        self.size = size
        self.conn: SyncConnection | None = None
        #: This user's publisher number in stamps (random: Locust workers do not coordinate).
        self.publisher = random.getrandbits(40)
        self._streams: dict[str, tuple[int, int]] = {}
        self._trackers: dict[int, SeqTracker] = {}

    def _fire(
        self,
        request_type: str,
        name: str,
        start: float,
        length: int = 0,
        exception: BaseException | None = None,
        response_time: float | None = None,
    ) -> None:
        self.environment.events.request.fire(
            request_type=request_type,
            name=name,
            response_time=(time.monotonic() - start) * 1000
            if response_time is None
            else response_time,
            response_length=length,
            response=None,
            context={},
            exception=exception,
        )

    def _command(self, name: str, message: dict[str, Any]) -> dict[str, Any] | None:
        start = time.monotonic()
        try:
            conn = self.connection()
            ok = conn.call(message)
        except (ClientError, OSError) as exc:
            self._fire(COMMAND, name, start, exception=exc)
            return None
        self._fire(COMMAND, name, start)
        return ok

    def connection(self) -> SyncConnection:
        """The open connection (connects, as request ``connect``, when needed)."""
        if self.conn is not None and self.conn.closed is None:
            return self.conn
        start = time.monotonic()
        conn = SyncConnection(self.host, on_pub=self._on_pub)
        try:
            conn.connect()
        except Exception as exc:
            self._fire(COMMAND, "connect", start, exception=exc)
            raise
        self._fire(COMMAND, "connect", start)
        self.conn = conn
        return conn

    def subscribe(self, channel: str) -> bool:
        return self._command("subscribe", {"op": "subscribe", "channel": channel}) is not None

    def publish(self, channel: str, data: Any = None) -> bool:
        """Publish ``data``, or (None) a stamped payload; waits for the reply."""
        if data is None:
            sid, seq = self._streams.get(
                channel, (stream_id(self.publisher, len(self._streams)), 0)
            )
            seq += 1
            self._streams[channel] = (sid, seq)
            data = make_payload(0, sid, seq, time.monotonic(), self.size)
        return (
            self._command("publish", {"op": "publish", "channel": channel, "data": data})
            is not None
        )

    def presence(self, channel: str) -> dict[str, Any] | None:
        ok = self._command("presence", {"op": "presence", "channel": channel})
        return None if ok is None else ok.get("clients", {})

    def history(self, channel: str, limit: int | None = None) -> list[Any] | None:
        message: dict[str, Any] = {"op": "history", "channel": channel}
        if limit is not None:
            message["limit"] = limit
        ok = self._command("history", message)
        return None if ok is None else list(ok.get("publications") or ())

    def _on_pub(self, channel: str, data: Any, now: float) -> None:
        stamp = read_stamp(data)
        length = len(data) if isinstance(data, bytes | str) else 0
        name = channel
        if stamp is None:
            self._fire(RECEIVE, name, now, length, response_time=0)
            return
        _run, stream, seq, intended = stamp
        tracker = self._trackers.get(stream)
        kind = 0
        if tracker is None:
            self._trackers[stream] = SeqTracker(seq)
        else:
            kind = tracker.add(seq)
        latency = max(0.0, (now - intended) * 1000)
        if kind == GAP:
            error: BaseException | None = SequenceError(f"gap before {seq} from publisher {stream}")
        elif kind == DUPLICATE:
            error = SequenceError(f"duplicate {seq} from publisher {stream}")
        else:
            error = None
        self._fire(RECEIVE, name, now, length, error, response_time=latency)

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


class HubbubUser(User):
    """A Locust user with a hubbub connection as ``self.hubbub`` (see the module doc).

    ``host`` is ``tcp://HOST:PORT`` or ``ws://HOST:PORT/ws``; ``payload_size``
    the bytes of stamped publications.
    """

    abstract = True
    payload_size = 100

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        if not self.host:
            raise ValueError("HubbubUser needs a host: --host tcp://HOST:PORT or ws://HOST:PORT/ws")
        self.hubbub = HubbubClient(self.host, environment, self.payload_size)

    def on_stop(self) -> None:
        self.hubbub.close()
