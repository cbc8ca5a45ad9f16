"""Structured log events of the cluster engines.

The node's log setup (``server.log``) writes one logfmt line per record and
reads keyword fields from ``record.fields``; engines may not import the
server, so they log through this module with the same convention, under the
``hubbub.cluster`` logger (its level follows the node's ``--log-level``).
"""

from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger("hubbub.cluster")


def event(level: int, name: str, exc_info: bool = False, **fields: Any) -> None:
    """Log one event with fields, only when ``level`` is enabled."""
    if logger.isEnabledFor(level):
        logger.log(level, name, extra={"fields": fields}, exc_info=exc_info)


def info(name: str, **fields: Any) -> None:
    event(logging.INFO, name, **fields)


def warning(name: str, **fields: Any) -> None:
    event(logging.WARNING, name, **fields)


def error(name: str, exc_info: bool = False, **fields: Any) -> None:
    event(logging.ERROR, name, exc_info=exc_info, **fields)
