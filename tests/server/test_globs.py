"""server.globs: one glob meaning for token claims and allowed_origins."""

from __future__ import annotations

import pytest

from hubbub.server.globs import CHANNEL_SEPARATORS, ORIGIN_SEPARATORS, Globs


@pytest.mark.parametrize(
    ("pattern", "name", "matches"),
    [
        ("user:alice*", "user:alice", True),
        ("user:alice*", "user:alice2", True),
        ("user:alice*", "user:alice:private", False),
        ("user:**", "user:alice:private", True),
        ("**", "a:b:c", True),
        ("*", "a:b", False),
        ("chat:room-?", "chat:room-1", True),
        ("chat:room-?", "chat:room-:", False),
        ("chat:[ab]", "chat:a", False),  # [ is a plain character
        ("chat:[ab]", "chat:[ab]", True),
        ("a.b", "aXb", False),  # . is not a regex wildcard
        ("news", "news:sport", False),
    ],
)
def test_channel_globs(pattern: str, name: str, matches: bool) -> None:
    assert Globs([pattern], CHANNEL_SEPARATORS).match(name) is matches


@pytest.mark.parametrize(
    ("origin", "matches"),
    [
        ("https://a.example.com", True),
        ("https://a.b.example.com", True),
        ("https://evil.com:1.example.com", False),
        ("https://evil.com/.example.com", False),
        ("http://a.example.com", False),
    ],
)
def test_origin_globs(origin: str, matches: bool) -> None:
    assert Globs(["https://*.example.com"], ORIGIN_SEPARATORS).match(origin) is matches
