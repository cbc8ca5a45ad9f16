"""Run fuzz targets under atheris (coverage-guided, libFuzzer's engine).

``python -m tests.fuzz TARGET [libFuzzer flags]`` runs one target in this
process (e.g. ``-runs=1000000``, ``-max_total_time=60``) and exits non-zero,
with the input and its traceback, on the first unhandled exception.
``python -m tests.fuzz all RUNS [TARGET ...]`` runs every target (or those
named) for RUNS inputs, each in a process of its own, and prints one line per
target (``make fuzz``).
"""

from __future__ import annotations

import sys

import atheris

from tests.fuzz.runner import run

with atheris.instrument_imports(include=["hubbub"]):
    from tests.fuzz.targets import TARGETS


def main() -> None:
    if len(sys.argv) >= 2 and sys.argv[1] == "all":
        runs = int(sys.argv[2]) if len(sys.argv) > 2 else 1_000_000
        failed = 0
        for name in sys.argv[3:] or TARGETS:
            code, line = run(name, runs)
            print(line, flush=True)
            failed += code != 0
        sys.exit(1 if failed else 0)
    if len(sys.argv) < 2 or sys.argv[1] not in TARGETS:
        sys.exit(f"usage: python -m tests.fuzz {{all,{','.join(TARGETS)}}} [flags]")
    atheris.Setup([sys.argv[0], *sys.argv[2:]], TARGETS[sys.argv[1]])
    atheris.Fuzz()


if __name__ == "__main__":
    main()
