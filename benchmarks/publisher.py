"""The open-loop publisher: its own process, one TCP connection, a fixed rate.

Slot ``i`` is due at ``t0 + i / rate`` (``time.monotonic``, one clock for the
whole machine). Each publication's ``data`` is a 100-byte payload carrying
the load tester's stamp (:mod:`hubbub.loadtest.accounting.payload`): the run,
the stream, its sequence number and that *intended* time, so a receiver's
latency includes any delay in sending it. The warm-up slots are stamped with
run ``warmup_run(run)`` and numbered from 1, the measured ones with run
``measured_run(run)`` and numbered from 1 again, so receivers account the
measured window alone. A late send never shifts the slots after it (open
loop). Being a process of its own, the publisher is not held up by the
receivers' event loop; it shares their core. The connection is the client
core's blocking one (:class:`hubbub.client.sync.SyncConnection`); the
publications are framed before the first is due.

``CHANNEL`` may name several channels, comma-separated: slot ``i`` then goes
to channel ``i % n`` as stream ``i % n + 1``, each stream numbered from 1 (the
chat workload: publications spread over the rooms from one connection).

Protocol with the parent, one line each: the child prints ``ready`` once
connected, reads ``t0`` from stdin, publishes, prints one JSON object of
results (``sent``, ``max_late_ms``, ``late_1ms``, ``errors``), and exits when
stdin gives it a line or ends (so the parent can read its CPU time first).

    python -m benchmarks.publisher HOST PORT CHANNEL RATE WARMUP MEASURED RUN
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

from benchmarks.launcher import ROOT, die_with_parent
from hubbub.client.sync import SyncConnection
from hubbub.loadtest.accounting.payload import make_payload

PAYLOAD_SIZE = 100
#: The stream of a one-channel publisher (channel k of several is stream k + 1).
STREAM = 1


def warmup_run(run: int) -> int:
    """The stamp's run of run ``run``'s warm-up publications (receivers ignore them)."""
    return 2 * run


def measured_run(run: int) -> int:
    """The stamp's run of run ``run``'s measured publications."""
    return 2 * run + 1


def payload(run: int, seq: int, intended: float, stream: int = STREAM) -> bytes:
    """A 100-byte publication body carrying its stamp."""
    return make_payload(run, stream, seq, intended, PAYLOAD_SIZE)


def slots(run_id: int, warmup: int, measured: int, channels: int) -> list[tuple[int, int, int]]:
    """``(stamp run, stream, seq)`` of every slot in order: the warm-up's, then the
    measured ones, each phase numbering every stream from 1."""
    out = []
    for run, count in ((warmup_run(run_id), warmup), (measured_run(run_id), measured)):
        out += [(run, i % channels + 1, i // channels + 1) for i in range(count)]
    return out


def run(
    host: str, port: int, channel: str, rate: float, warmup: int, measured: int, run_id: int
) -> None:
    errors = 0

    def on_push(message: dict[str, Any]) -> None:
        nonlocal errors
        if message.get("push") == "error":  # a fire-and-forget publish failed
            errors += 1

    conn = SyncConnection(f"tcp://{host}:{port}", on_push=on_push, name="bench")
    conn.connect()
    print("ready", flush=True)
    t0 = float(sys.stdin.readline())
    period = 1.0 / rate
    names = channel.split(",")
    frames = [
        conn.frame(
            {
                "op": "publish",
                "channel": names[stream - 1],
                "data": payload(r, seq, t0 + i * period, stream),
            }
        )
        for i, (r, stream, seq) in enumerate(slots(run_id, warmup, measured, len(names)))
    ]
    monotonic, sleep, send = time.monotonic, time.sleep, conn.send_framed
    max_late = 0.0
    late_1ms = 0
    for i, frame in enumerate(frames):
        due = t0 + i * period
        wait = due - monotonic()
        if wait > 0:
            sleep(wait)
        send(frame)
        late = monotonic() - due
        if late > max_late:
            max_late = late
        if late > 0.001:
            late_1ms += 1
    time.sleep(0.2)  # let error pushes, if any, arrive
    result = {
        "sent": len(frames),
        "max_late_ms": max_late * 1000,
        "late_1ms": late_1ms,
        "errors": errors,
    }
    print(json.dumps(result), flush=True)
    sys.stdin.readline()  # stay until the parent has read our CPU time
    conn.close()


class Publisher:
    """The parent's side of one publisher process: start, go at ``t0``, results, exit."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(
        cls,
        address: tuple[str, int],
        channel: str,
        rate: float,
        warmup: int,
        measured: int,
        run_id: int,
    ) -> Publisher:
        """Start the process and wait until it is connected."""
        host, port = address
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "benchmarks.publisher", host, str(port), channel,
            str(rate), str(warmup), str(measured), str(run_id),
            cwd=ROOT, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            preexec_fn=die_with_parent,
        )  # fmt: skip
        publisher = cls(proc)
        try:
            if await publisher._readline(15) != "ready":
                raise RuntimeError("publisher did not get ready")
        except BaseException:
            await publisher.kill()
            raise
        return publisher

    @property
    def pid(self) -> int:
        return self.proc.pid

    async def _readline(self, timeout: float) -> str:
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        if not line:
            raise RuntimeError("publisher exited early")
        return line.decode().strip()

    async def go(self, t0: float) -> None:
        """Slot 0 is due at ``t0`` (monotonic)."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{t0!r}\n".encode())
        await self.proc.stdin.drain()

    async def results(self) -> dict[str, Any]:
        """What it printed once done (``sent``, ``max_late_ms``, ``late_1ms``, ``errors``)."""
        result: dict[str, Any] = json.loads(await self._readline(15))
        return result

    async def exit(self) -> None:
        """Let it exit (after its CPU time was read)."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"exit\n")
        await self.proc.stdin.drain()
        await asyncio.wait_for(self.proc.wait(), 10)

    async def kill(self) -> None:
        """Kill it if it is still there."""
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()


def main(argv: list[str]) -> int:
    host, port, channel, rate, warmup, measured, run_id = argv
    run(host, int(port), channel, float(rate), int(warmup), int(measured), int(run_id))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
