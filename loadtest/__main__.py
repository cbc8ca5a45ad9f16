"""``python -m loadtest``: the same as ``hubbub-loadtest``."""

from __future__ import annotations

from loadtest.cli import main

main()
