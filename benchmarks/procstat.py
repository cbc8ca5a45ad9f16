"""What a process costs, read from ``/proc``: CPU time, resident memory, cores.

CPU is ``utime + stime`` of ``/proc/<pid>/stat`` (every thread of the
process, user and kernel time) in clock ticks; memory is ``VmRSS`` of
``/proc/<pid>/status``.
"""

from __future__ import annotations

import os
import resource
from dataclasses import dataclass

CLK_TCK = os.sysconf("SC_CLK_TCK")
#: The server's core and the load generator's core (BENCHMARKS.md).
SERVER_CORE = 0
GENERATOR_CORE = 1


def cpu_times(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds ``pid`` has used so far; system includes the
    softirq work (loopback TCP receive path) done while it ran."""
    with open(f"/proc/{pid}/stat", "rb") as fh:
        raw = fh.read()
    # The command name (field 2) may hold spaces: split after its ')'.
    fields = raw[raw.rindex(b")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of stat(5)
    return utime / CLK_TCK, stime / CLK_TCK


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds ``pid`` has used so far."""
    user, system = cpu_times(pid)
    return user + system


def machine_busy_seconds() -> float:
    """CPU seconds all cores have spent busy so far (``/proc/stat``): user, nice,
    system, irq, softirq and steal; idle and iowait left out. (A process's
    system time includes the softirqs served while it ran, so the machine's
    busy time minus our processes' is what others used.)"""
    with open("/proc/stat") as fh:
        fields = fh.readline().split()  # "cpu  user nice system idle iowait irq softirq steal"
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[1:9])
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


def rss_kb(pid: int) -> int:
    """Resident set size of ``pid`` in KiB (``VmRSS``)."""
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


@dataclass
class CpuMeter:
    """CPU used by some processes over a window of wall-clock time."""

    pids: tuple[int, ...]
    wall0: float = 0.0
    cpu0: tuple[float, ...] = ()

    def start(self, now: float) -> None:
        self.wall0 = now
        self.cpu0 = tuple(cpu_seconds(p) for p in self.pids)

    def stop(self, now: float) -> tuple[float, float]:
        """(CPU seconds used, wall seconds elapsed) since :meth:`start`."""
        used = sum(cpu_seconds(p) - c for p, c in zip(self.pids, self.cpu0, strict=True))
        return used, now - self.wall0


def pinning_available() -> bool:
    """Whether both the server's and the generator's cores exist for us."""
    return {SERVER_CORE, GENERATOR_CORE} <= os.sched_getaffinity(0)


def pin(pid: int, core: int) -> bool:
    """Pin ``pid`` (0: this process) to one core; False when that is not possible."""
    try:
        os.sched_setaffinity(pid, {core})
    except OSError:
        return False
    return True


def raise_nofile() -> int:
    """Raise this process's open-file limit to its hard limit (children inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    return soft
