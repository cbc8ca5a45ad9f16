"""Channel names and namespaces (PROTOCOL.md §4)."""

from __future__ import annotations

import re

from hubbub.protocol.codes import ErrorCode
from hubbub.protocol.exceptions import CommandError

MAX_CHANNEL_LENGTH = 255
DEFAULT_NAMESPACE = "default"

_CHANNEL_RE = re.compile(r"[A-Za-z0-9_\-:.@/=+]{1,255}")


def is_valid_channel(name: object) -> bool:
    """Whether ``name`` is 1 to 255 bytes of ``[A-Za-z0-9_-:.@/=+]``."""
    return isinstance(name, str) and _CHANNEL_RE.fullmatch(name) is not None


def validate_channel(name: object) -> str:
    """Return ``name`` when it is a valid channel name, else raise a 400."""
    if not is_valid_channel(name):
        raise CommandError(ErrorCode.BAD_REQUEST, "bad channel name")
    assert isinstance(name, str)
    return name


def namespace_of(channel: str) -> str:
    """The namespace of a channel: the part before the first ``:``.

    ``chat:lobby`` is in ``chat``; ``lobby`` (and ``:lobby``) in ``default``.
    """
    head, sep, _ = channel.partition(":")
    return head if sep and head else DEFAULT_NAMESPACE
