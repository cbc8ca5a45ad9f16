"""Structured logs: one logfmt line per event on stderr, for the node and its engines.

    ts=2026-11-23T15:40:00.123Z level=info event=listening tcp=127.0.0.1:7400

Call :func:`info`, :func:`warning`, ... with keyword fields; nothing is
formatted unless the level is enabled (DESIGN.md "The hot path", point 5).
``hubbub.server`` and ``hubbub.cluster`` both log through this module (the
cluster may not import the server, so it lives at the package root); the
``hubbub serve`` CLI calls :func:`setup`.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

logger = logging.getLogger("hubbub")


def _quote(value: Any) -> str:
    text = str(value)
    if text == "" or any(c in text for c in ' "=\n\t'):
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    return text


class LogfmtFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        parts = [
            f"ts={ts}.{int(record.msecs):03d}Z",
            f"level={record.levelname.lower()}",
            f"event={_quote(record.getMessage())}",
        ]
        fields = getattr(record, "fields", None)
        if fields:
            parts.extend(f"{k}={_quote(v)}" for k, v in fields.items())
        if record.exc_info:
            parts.append("exc=" + _quote(self.formatException(record.exc_info)))
        return " ".join(parts)


def setup(level: str) -> None:
    """Send hubbub's logs to stderr at ``level``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(LogfmtFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    logger.setLevel(level.upper())
    logging.getLogger("websockets").setLevel(logging.WARNING)


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


def debug(name: str, **fields: Any) -> None:
    event(logging.DEBUG, name, **fields)
