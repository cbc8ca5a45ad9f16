"""One run's settings: a frozen dataclass the CLI fills and every worker receives.

The coordinator sends it to each worker as JSON (:meth:`RunConfig.to_json`), so
every field is a plain value. Durations on the command line read like Locust's
(``90``, ``30s``, ``2m``, ``1h30m``, ``250ms``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from dataclasses import dataclass, field
from typing import Any

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)")
_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6}


def parse_duration(text: str) -> float:
    """Seconds in ``text``: a number (seconds) or units run together (``1m30s``)."""
    text = text.strip().lower()
    try:
        value = float(text)
    except ValueError:
        pass
    else:
        if value < 0:
            raise ValueError(f"negative duration {text!r}")
        return value
    pos, total = 0, 0.0
    for match in _DURATION.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if pos != len(text) or not text:
        raise ValueError(f"bad duration {text!r} (e.g. 30, 30s, 2m, 1h30m, 250ms)")
    return total


def parse_option(text: str) -> tuple[str, Any]:
    """``key=value`` of ``-o``: the value as JSON when it parses (numbers, true), else text."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"option must be key=value, not {text!r}")
    try:
        value: Any = json.loads(raw)
    except ValueError:
        value = raw
    return key.strip().replace("-", "_"), value


@dataclass(frozen=True)
class RunConfig:
    """Everything a worker needs to play its share of a run."""

    hosts: tuple[str, ...] = ("tcp://127.0.0.1:7400",)
    """Server URLs (tcp:// or ws://); users are spread over them round-robin."""
    users: int = 1
    """Users in the whole run (all workers)."""
    spawn_rate: float = 1.0
    """Users started per second (all workers together)."""
    run_time: float | None = None
    """Seconds from the first spawn to the stop; None runs until interrupted."""
    scenario: str = "chat"
    """A built-in scenario name, or "" with ``scenario_file``."""
    scenario_file: str = ""
    """Path of a scenario file (Locust-style User classes)."""
    rate: float | None = None
    """Task rate per user where the scenario has one (publications/s); None: its default."""
    size: int = 100
    """Bytes of each stamped publication payload."""
    workers: int = 1
    """Worker processes."""
    encoding: str = "msgpack"
    """WebSocket encoding of the friendly client (the fast path always speaks msgpack)."""
    namespace: str = ""
    """Channel namespace of built-in scenarios; "" takes the scenario's default."""
    publishers: int | None = None
    """Publishing users (livefeed, reconnect-storm, slow-consumers); None: default."""
    channels: int | None = None
    """Channels (livefeed, slow-consumers, reconnect-storm); None: default."""
    rooms: int | None = None
    """Chat rooms; None: users / 20."""
    slow_fraction: float = 0.1
    """Fraction of subscribers that read slowly (slow-consumers)."""
    source_ips: int = 0
    """Spread client source addresses over 127.0.0.1..127.0.0.N (0: let the OS pick)."""
    connect_timeout: float = 10.0
    """Seconds for one connection attempt (TCP, WebSocket upgrade and connect reply)."""
    warmup: float = 0.0
    """Seconds from the start whose latencies are left out of the summary (ramp-up)."""
    grace: float = 3.0
    """Longest wait after the stop for in-flight publications (and their acks)."""
    seed: int = 1
    """Seed of every random choice (room picks, waits), so runs repeat."""
    run_id: int = 0
    """Stamped into every payload, so publications of another run are ignored."""
    options: dict[str, Any] = field(default_factory=dict)
    """Free-form ``-o key=value`` options, for scenarios (``self.options``)."""

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> RunConfig:
        data = json.loads(text)
        data["hosts"] = tuple(data["hosts"])
        return cls(**data)

    def option(self, name: str, default: Any) -> Any:
        """A ``-o`` option, else ``default`` (converted to the default's type)."""
        if name not in self.options:
            return default
        value = self.options[name]
        if isinstance(default, bool) or default is None:
            return value
        return type(default)(value)

    def users_of(self, worker: int) -> int:
        """How many users worker ``worker`` runs (global index i goes to worker i % N)."""
        return len(range(worker, self.users, self.workers))


def default_workers() -> int:
    """The core count: one uvloop worker per core."""
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1)
