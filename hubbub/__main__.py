"""``python -m hubbub``: the same as the ``hubbub`` command."""

from __future__ import annotations

import sys

from hubbub.server.cli import main

sys.exit(main())
