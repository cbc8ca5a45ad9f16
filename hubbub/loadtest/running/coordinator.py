"""The coordinator: starts the workers, runs the clock, merges what they send.

One run, as a straight line: start N worker processes and hand each the
config -> wait until all loaded the scenario -> broadcast a common start time
-> merge ticks as they come (and tell everyone when all users are spawned;
run ``--disrupt-cmd`` at its time) -> at the run time (or Ctrl-C) broadcast
``stop`` -> collect each worker's publisher ledger and send the merged one back
-> collect the final accounting -> done.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hubbub.loadtest.accounting.aggregate import Aggregate
from hubbub.loadtest.config import RunConfig
from hubbub.loadtest.exceptions import RunFailed

#: Seconds between the broadcast of the start time and the start itself.
START_DELAY = 0.3
#: Longest wait for workers to load the scenario, and for their last answers.
SETUP_TIMEOUT = 60.0

Log = Callable[[str], None]
RowHook = Callable[[dict[str, Any], "Coordinator"], None]


@dataclass
class Event:
    """Something that happened at ``t`` seconds into the run."""

    t: float
    what: str


@dataclass
class WorkerProc:
    index: int
    proc: asyncio.subprocess.Process
    ready: asyncio.Future[dict[str, Any]]
    streams: asyncio.Future[dict[str, Any]]
    final: asyncio.Future[dict[str, Any]]
    spawned: bool = False
    exit_code: int | None = None
    stderr_tail: list[str] = field(default_factory=list)

    def send(self, message: dict[str, Any]) -> None:
        stdin = self.proc.stdin
        if stdin is not None and not stdin.is_closing():
            stdin.write((json.dumps(message, separators=(",", ":")) + "\n").encode())


class Coordinator:
    """Runs one load test; :attr:`aggregate`, :attr:`events` and :attr:`finals` hold the results."""

    def __init__(
        self,
        config: RunConfig,
        *,
        log: Log = lambda line: print(line, file=sys.stderr),
        on_row: RowHook | None = None,
        disrupt_at: float | None = None,
        disrupt_cmd: str = "",
    ) -> None:
        self.config = config
        self.log = log
        self.on_row = on_row
        self.disrupt_at = disrupt_at
        self.disrupt_cmd = disrupt_cmd
        self.aggregate = Aggregate(config.workers, config.warmup)
        self.events: list[Event] = []
        self.workers: list[WorkerProc] = []
        self.finals: list[dict[str, Any]] = []
        self.streams: dict[str, list[Any]] = {}
        self.problems: list[str] = []
        self.t0 = 0.0
        self.started_wall = 0.0
        self.elapsed = 0.0
        self.fd_limit = 0
        self._stop = asyncio.Event()
        self._interrupts = 0
        self._readers: list[asyncio.Task[None]] = []

    def now(self) -> float:
        """Seconds since the start."""
        return time.monotonic() - self.t0 if self.t0 else 0.0

    def event(self, what: str) -> None:
        self.events.append(Event(round(self.now(), 3), what))

    def interrupt(self) -> None:
        """Ctrl-C: the first stops the run cleanly (reports still written), the second aborts."""
        self._interrupts += 1
        if self._interrupts == 1:
            self.log("stopping (Ctrl-C again to abort)")
            self._stop.set()
        else:
            for worker in self.workers:
                with contextlib.suppress(ProcessLookupError):
                    worker.proc.kill()

    # -- the run ------------------------------------------------------------------

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGINT, self.interrupt)
        try:
            await self._start_workers()
            await self._main_phase()
            await self._finish()
        finally:
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(signal.SIGINT)
            await self._reap()

    async def _start_workers(self) -> None:
        loop = asyncio.get_running_loop()
        for index in range(self.config.workers):
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "hubbub.loadtest.running.worker",
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,  # Ctrl-C reaches the coordinator only
                limit=1 << 30,
            )
            worker = WorkerProc(
                index, proc, loop.create_future(), loop.create_future(), loop.create_future()
            )
            self.workers.append(worker)
            worker.send(
                {"type": "config", "worker": index, "config": json.loads(self.config.to_json())}
            )
            self._readers.append(loop.create_task(self._read(worker)))
            self._readers.append(loop.create_task(self._read_stderr(worker)))
        try:
            async with asyncio.timeout(SETUP_TIMEOUT):
                readies = await asyncio.gather(*(w.ready for w in self.workers))
        except TimeoutError:
            raise RunFailed("workers did not start in time") from None
        self.fd_limit = min(int(r.get("fd_limit", 0)) for r in readies)
        for worker, ready in zip(self.workers, readies, strict=True):
            if ready.get("fd_needed", 0) > ready.get("fd_limit", 1 << 30):
                self.problems.append(
                    f"worker {worker.index} needs ~{ready['fd_needed']} file descriptors; "
                    f"its limit is {ready['fd_limit']} (raise `ulimit -Hn` or add --workers)"
                )

    async def _main_phase(self) -> None:
        self.t0 = time.monotonic() + START_DELAY
        self.started_wall = time.time() + START_DELAY
        for worker in self.workers:
            worker.send({"type": "start", "t0": self.t0})
        await asyncio.sleep(START_DELAY)
        self.event("start")
        disrupt: asyncio.Task[None] | None = None
        if self.disrupt_cmd and self.disrupt_at is not None:
            disrupt = asyncio.get_running_loop().create_task(self._disrupt())
        run_time = self.config.run_time
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(run_time):
                await self._stop.wait()
        self.elapsed = self.now()
        self.event("stop")
        if disrupt is not None and not disrupt.done():
            disrupt.cancel()

    async def _disrupt(self) -> None:
        assert self.disrupt_at is not None
        await asyncio.sleep(max(0.0, self.disrupt_at - self.now()))
        self.event(f"disrupt: {self.disrupt_cmd}")
        self.log(f"disrupt at {self.now():.1f}s: {self.disrupt_cmd}")
        proc = await asyncio.create_subprocess_shell(
            self.disrupt_cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
        out, _ = await proc.communicate()
        if proc.returncode:
            self.problems.append(
                f"--disrupt-cmd exited {proc.returncode}: {out.decode(errors='replace').strip()}"
            )

    async def _finish(self) -> None:
        live = [w for w in self.workers if w.exit_code is None]
        for worker in live:
            worker.send({"type": "stop"})
        timeout = self.config.grace + SETUP_TIMEOUT
        ledgers = await self._collect(live, "streams", timeout)
        merged: dict[str, list[Any]] = {}
        for ledger in ledgers:
            merged.update(ledger.get("streams", {}))
        self.streams = merged
        live = [w for w in live if w.streams.done() and not w.streams.exception()]
        for worker in live:
            worker.send({"type": "account", "streams": merged})
        self.finals = await self._collect(live, "final", timeout)
        for final in self.finals:
            self._rows(self.aggregate.add_tick(final["worker"], final["tick"]))
        self._rows(self.aggregate.flush())

    async def _collect(
        self, workers: list[WorkerProc], what: str, timeout: float
    ) -> list[dict[str, Any]]:
        futures = [getattr(w, what) for w in workers]
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await asyncio.wait(futures)
        out = []
        for worker, future in zip(workers, futures, strict=True):
            if future.done() and not future.exception():
                out.append(future.result())
            else:
                self.problems.append(f"worker {worker.index} sent no {what!r}")
        return out

    async def _reap(self) -> None:
        for worker in self.workers:
            try:
                async with asyncio.timeout(10):
                    await worker.proc.wait()
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    worker.proc.kill()
                await worker.proc.wait()
        for task in self._readers:
            task.cancel()
        await asyncio.gather(*self._readers, return_exceptions=True)

    # -- what workers send --------------------------------------------------------

    def _rows(self, rows: list[dict[str, Any]]) -> None:
        if self.on_row is not None:
            for row in rows:
                self.on_row(row, self)

    async def _read(self, worker: WorkerProc) -> None:
        stdout = worker.proc.stdout
        assert stdout is not None
        while True:
            line = await stdout.readline()
            if not line:
                break
            message = json.loads(line)
            kind = message.get("type")
            if kind == "tick":
                self._rows(self.aggregate.add_tick(worker.index, message))
            elif kind == "ready":
                worker.ready.set_result(message)
            elif kind == "spawned":
                worker.spawned = True
                if all(w.spawned for w in self.workers):
                    self.event("all users spawned")
                    for w in self.workers:
                        w.send({"type": "all_spawned"})
            elif kind == "streams":
                worker.streams.set_result(message)
            elif kind == "final":
                message["worker"] = worker.index
                worker.final.set_result(message)
            elif kind == "error":
                worker.ready.set_exception(RunFailed(message.get("message", "worker error")))
        worker.exit_code = await worker.proc.wait()
        gone = RunFailed(f"worker {worker.index} exited with {worker.exit_code}")
        for future in (worker.ready, worker.streams, worker.final):
            if not future.done():
                future.set_exception(gone)
                future.exception()  # retrieved: no "never retrieved" warning
        if not worker.final.done() or worker.final.exception():
            self.problems.append(
                f"worker {worker.index} exited early with {worker.exit_code}"
                + (f": {worker.stderr_tail[-1]}" if worker.stderr_tail else "")
            )
            if self.t0:
                self._stop.set()
        self._rows(self.aggregate.worker_gone(worker.index))

    async def _read_stderr(self, worker: WorkerProc) -> None:
        stderr = worker.proc.stderr
        assert stderr is not None
        while True:
            line = await stderr.readline()
            if not line:
                return
            text = line.decode(errors="replace").rstrip()
            worker.stderr_tail = [*worker.stderr_tail[-20:], text]
            self.log(f"[worker {worker.index}] {text}")
