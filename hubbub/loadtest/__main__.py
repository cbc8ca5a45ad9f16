"""``python -m hubbub.loadtest``: the same as ``hubbub-loadtest``."""

from __future__ import annotations

from hubbub.loadtest.cli import main

main()
