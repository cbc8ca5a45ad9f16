"""A worker's share of a run: spawn users on schedule, run their tasks, report.

The coordinator drives it with a few commands (:mod:`loadtest.running.worker` carries
them): ``start`` (the common start time ``t0``), ``all_spawned``, ``stop``,
``account`` (the publishers' ledger). The runner answers with ``tick``
reports every second (aligned on ``t0``), ``spawned``, ``streams`` and
``final``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import inspect
import logging
import time
import traceback
from collections.abc import Callable
from typing import Any

from hubbub.loadtest.accounting.sequences import StreamInfo, Tally, index_by_channel
from hubbub.loadtest.accounting.stats import WorkerStats
from hubbub.loadtest.config import RunConfig
from hubbub.loadtest.exceptions import StopUser
from hubbub.loadtest.scenarios import Scenario
from hubbub.loadtest.users.schedule import Pacer, as_wait_time, spawn_time
from hubbub.loadtest.users.user import User, WorkerContext

log = logging.getLogger("hubbub.loadtest")

Emit = Callable[[dict[str, Any]], None]

#: How often the event loop's own lag is sampled.
LAG_PROBE = 0.05
#: Receiving is "quiet" (in-flight publications have arrived) after this long without any.
QUIET = 0.3
#: Receivers' losses a worker describes in its final report, at most.
LOSS_SAMPLE = 50


async def _maybe_await(value: Any) -> None:
    if inspect.isawaitable(value):
        await value


class Runner:
    """Spawns and runs this worker's users (global indices ``worker, worker + N, ...``)."""

    def __init__(self, config: RunConfig, worker: int, scenario: Scenario, emit: Emit) -> None:
        self.config = config
        self.worker = worker
        self.scenario = scenario
        self.emit = emit
        self.stats = WorkerStats()
        self.ctx = WorkerContext(config, worker, self.stats, on_ready=self._ready)
        self.users: list[User] = []
        self.t0 = 0.0
        self.stopping = False
        self._user_tasks: set[asyncio.Task[None]] = set()
        self._background: list[asyncio.Task[None]] = []
        self._to_start = config.users_of(worker)
        self._tick = 0
        self._logged: set[str] = set()

    # -- running --------------------------------------------------------------

    def start(self, t0: float) -> None:
        """Begin at ``t0`` (monotonic, shared by every worker)."""
        self.t0 = t0
        loop = asyncio.get_running_loop()
        self._background = [
            loop.create_task(self._spawn_all()),
            loop.create_task(self._ticker()),
            loop.create_task(self._lag_probe()),
        ]
        if self._to_start == 0:
            self.emit({"type": "spawned"})

    async def _spawn_all(self) -> None:
        """Start each user at its slot; every user due by now starts at once.

        A user is timed from its slot (``due``), so one started late by the
        timer's granularity (about 1 ms) or a busy loop is measured honestly.
        """
        config = self.config
        loop = asyncio.get_running_loop()
        indices = range(self.worker, config.users, config.workers)
        i = 0
        while i < len(indices) and not self.stopping:
            now = time.monotonic()
            while i < len(indices):
                index = indices[i]
                due = spawn_time(index, self.t0, config.spawn_rate)
                if due > now:
                    break
                task = loop.create_task(self._run_user(index, due))
                self._user_tasks.add(task)
                task.add_done_callback(self._user_tasks.discard)
                i += 1
            if i < len(indices):
                next_due = spawn_time(indices[i], self.t0, config.spawn_rate)
                await asyncio.sleep(max(0.001, next_due - time.monotonic()))

    def _started_one(self) -> None:
        self._to_start -= 1
        if self._to_start == 0:
            self.emit({"type": "spawned"})

    def _ready(self, user: User) -> None:
        """``user`` is in place (counted once)."""
        if not user._ready:
            user._ready = True
            self._started_one()

    async def _run_user(self, index: int, due: float) -> None:
        cls = self.scenario.assign(index, self.config)
        try:
            user = cls(self.ctx, index)
        except Exception as exc:
            self._failed(f"user {type(exc).__name__}", exc)
            self._started_one()
            return
        self.users.append(user)
        if not await user.session.connect(due):
            self.stats.counts["connect_failures"] += 1
            self._ready(user)
            return
        self.stats.users += 1
        try:
            await _maybe_await(user.on_start())
        except StopUser:
            self._ready(user)
            return
        except Exception as exc:
            self._failed(f"on_start {type(exc).__name__}", exc)
            self._ready(user)
            return
        self._ready(user)
        funcs, cumulative = type(user).tasks_of()
        if funcs and not self.stopping:
            await self._task_loop(user, funcs, cumulative)

    async def _task_loop(
        self, user: User, funcs: list[Callable[..., Any]], cumulative: list[int]
    ) -> None:
        import bisect

        rng = user.random
        total = cumulative[-1]
        pacer = Pacer(as_wait_time(user.wait_time, user), time.monotonic(), rng)
        stats = self.stats
        while not self.stopping:
            now = time.monotonic()
            while (delay := pacer.delay(now)) > 0:  # timers may fire a little early
                await asyncio.sleep(delay)
                now = time.monotonic()
            stats.late(pacer.lateness(now))
            func = (
                funcs[0]
                if len(funcs) == 1
                else funcs[bisect.bisect(cumulative, rng.random() * total)]
            )
            user.intended = pacer.intended
            user._in_task = True
            try:
                await _maybe_await(func(user))
            except StopUser:
                return
            except Exception as exc:
                self._failed(f"task {func.__name__} {type(exc).__name__}", exc)
            finally:
                user._in_task = False
            pacer.advance(time.monotonic())

    def _failed(self, key: str, exc: BaseException) -> None:
        """Count a scenario error; log its first traceback (scenario bugs show up)."""
        self.stats.error(key)
        if key not in self._logged:
            self._logged.add(key)
            log.warning(
                "worker %d: %s\n%s",
                self.worker,
                key,
                "".join(traceback.format_exception(exc)).rstrip(),
            )

    async def _ticker(self) -> None:
        while True:
            delay = self.t0 + self._tick + 1 - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            self.emit(self._tick_report())

    def _tick_report(self) -> dict[str, Any]:
        """The next tick (k = 1, 2, ...: the second ending at t0 + k).

        It also freezes what is alive (``gc.freeze``): users, sessions and
        their state live until the end, and full collections walking
        hundreds of thousands of them would pause the loop for tens of ms
        (showing up as latency). Garbage is still freed by reference counts.
        """
        gc.freeze()
        for user in self.users:
            user.session.poll()
        self._tick += 1
        report = self.stats.tick()
        report.update(type="tick", k=self._tick)
        return report

    async def _lag_probe(self) -> None:
        stats = self.stats
        while True:
            start = time.monotonic()
            await asyncio.sleep(LAG_PROBE)
            lag = time.monotonic() - start - LAG_PROBE
            if lag > stats.lag_max:
                stats.lag_max = lag

    # -- stopping -------------------------------------------------------------

    async def stop(self) -> None:
        """Stop spawning and tasks; wait for publish replies (<= grace); send the ledger."""
        self.stopping = True
        self._background[0].cancel()
        for task in list(self._user_tasks):
            task.cancel()
        await asyncio.gather(*self._user_tasks, return_exceptions=True)
        deadline = time.monotonic() + self.config.grace
        streams = self.ctx.streams
        while time.monotonic() < deadline and any(s.pending for s in streams.values()):
            await asyncio.sleep(0.05)
        ledger = {}
        for sid, record in streams.items():
            info = record.info()
            if info is not None:
                ledger[str(sid)] = info.to_wire()
        self.emit({"type": "streams", "streams": ledger})

    async def account(self, ledger: dict[str, list[Any]]) -> None:
        """Wait for in-flight publications, count every receiver, close, send ``final``."""
        streams = {int(k): StreamInfo.from_wire(v) for k, v in ledger.items()}
        await self._quiet()
        by_channel = index_by_channel(streams)
        tallies: dict[str, Tally] = {}
        losses: list[dict[str, Any]] = []
        for user in self.users:
            receiver = user.receiver
            if receiver.subscribed or receiver.heard:
                mine = Tally()
                receiver.account(streams, by_channel, mine)
                tallies.setdefault(user.group, Tally()).add(mine)
                if mine.lost and len(losses) < LOSS_SAMPLE:
                    for loss in receiver.losses(streams, by_channel):
                        losses.append({"user": user.index, **loss})
        for user in self.users:
            if user.session.connected:
                try:
                    async with asyncio.timeout(self.config.grace):
                        await _maybe_await(user.on_stop())
                except Exception as exc:
                    self._failed(f"on_stop {type(exc).__name__}", exc)
        stats = self.stats
        still_down = sum(1 for u in self.users if not u.session.connected)
        for task in self._background:
            task.cancel()
        last = self._tick_report()
        for user in self.users:
            with contextlib.suppress(Exception):
                await user.session.close()
        self.emit(
            {
                "type": "final",
                "tick": last,
                "tallies": {g: t.to_wire() for g, t in tallies.items()},
                "losses": losses[:LOSS_SAMPLE],
                "first_down": stats.first_down,
                "last_back": stats.last_back,
                "still_down": still_down,
                "users_started": len(self.users),
            }
        )

    async def _quiet(self) -> None:
        """Until nothing has arrived for QUIET seconds (at most ``grace``)."""
        groups = self.stats.groups.values()
        deadline = time.monotonic() + self.config.grace
        last = sum(g.received for g in groups)
        quiet_since = time.monotonic()
        while time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            now = time.monotonic()
            total = sum(g.received for g in groups)
            if total != last:
                last, quiet_since = total, now
            elif now - quiet_since >= QUIET:
                return
