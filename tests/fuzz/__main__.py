"""Run one fuzz target under atheris: ``python -m tests.fuzz TARGET [libFuzzer flags]``
(e.g. ``-runs=1000000``, ``-max_total_time=60``). Exits non-zero with the
input and its traceback on the first unhandled exception."""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports(include=["hubbub"]):
    from tests.fuzz.targets import TARGETS


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in TARGETS:
        sys.exit(f"usage: python -m tests.fuzz {{{','.join(TARGETS)}}} [libFuzzer flags]")
    target = TARGETS[sys.argv[1]]
    atheris.Setup([sys.argv[0], *sys.argv[2:]], target)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
