"""Glob patterns of tokens and of ``[auth] allowed_origins`` (docs/protocol-additions.md).

One meaning everywhere: ``**`` matches any run of characters, ``*`` any run
that holds none of the pattern's separators and ``?`` one such character (``:`` for channels, so
``user:alice*`` grants ``user:alice2`` but not ``user:alice:private``; ``:`` and
``/`` for origins, so ``https://*.example.com`` cannot reach into a port or a
path). Every other character (``[`` included) stands for itself.
Patterns are compiled once, when the token or the config is read.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

#: What ``*`` stops at in channel patterns (the namespace separator, PROTOCOL.md §4).
CHANNEL_SEPARATORS = ":"
#: What ``*`` stops at in origin patterns (scheme, host and port stay apart).
ORIGIN_SEPARATORS = ":/"


def compile_glob(pattern: str, separators: str) -> re.Pattern[str]:
    """The regular expression that matches exactly what ``pattern`` means."""
    char = "[^" + re.escape(separators) + "]"
    parts = []
    for i, piece in enumerate(pattern.split("**")):
        if i:
            parts.append(".*")
        runs = ("(?:" + char + "*)").join(
            char.join(re.escape(q) for q in p.split("?")) for p in piece.split("*")
        )
        parts.append(runs)
    return re.compile("".join(parts), re.DOTALL)


_WILD = frozenset("*?")


class Globs:
    """A set of patterns; :meth:`match` tells whether any of them matches a name."""

    __slots__ = ("_exact", "_patterns")

    def __init__(self, patterns: Iterable[str], separators: str) -> None:
        self._exact: frozenset[str] = frozenset(p for p in patterns if not _WILD & set(p))
        self._patterns = tuple(compile_glob(p, separators) for p in patterns if _WILD & set(p))

    def match(self, name: str) -> bool:
        return name in self._exact or any(p.fullmatch(name) for p in self._patterns)
