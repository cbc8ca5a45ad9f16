"""Channel names and namespaces (PROTOCOL.md §4)."""

from __future__ import annotations

import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hubbub.protocol.channels import (
    DEFAULT_NAMESPACE,
    MAX_CHANNEL_LENGTH,
    is_valid_channel,
    namespace_of,
    validate_channel,
)
from hubbub.protocol.codes import ErrorCode
from hubbub.protocol.exceptions import CommandError

ALLOWED = frozenset(string.ascii_letters + string.digits + "_-:.@/=+")

VALID = [
    "a",
    "x" * 255,
    "chat:lobby",
    "a:b:c",
    ":x",
    "x:",
    ":",
    "user@example.com/room=1+2",
    "AZaz09_-:.@/=+",
]
INVALID = [
    "",
    "x" * 256,
    "a b",
    "a#b",
    "a\n",
    "lobby\n",
    "\x00",
    "a*",
    "é",
    "caf\u00e9",
    "\uff4cobby",  # fullwidth l
    "١٢٣",  # Arabic-Indic digits: \d would take them, the protocol does not
    "ß",
    "\u212a",  # Kelvin sign: folds to "k" under re.IGNORECASE
    "x" * 200 + "é" * 30,
]


def test_max_length_is_255() -> None:
    assert MAX_CHANNEL_LENGTH == 255
    assert DEFAULT_NAMESPACE == "default"


@pytest.mark.parametrize("name", VALID)
def test_valid_names(name: str) -> None:
    assert is_valid_channel(name)
    assert validate_channel(name) == name


@pytest.mark.parametrize("name", [*INVALID, None, 1, b"lobby", ["lobby"], {"a": 1}])
def test_invalid_names(name: object) -> None:
    assert not is_valid_channel(name)
    with pytest.raises(CommandError) as info:
        validate_channel(name)
    assert info.value.code == ErrorCode.BAD_REQUEST


@settings(max_examples=300, deadline=None)
@given(
    name=st.text(max_size=300)
    | st.text(alphabet=sorted(ALLOWED), min_size=250, max_size=260)
    | st.text(alphabet=[*sorted(ALLOWED), "é", " ", "\n"], max_size=20)
)
def test_validity_matches_the_protocol_rule(name: str) -> None:
    """1 to 255 bytes of ``[A-Za-z0-9_-:.@/=+]``."""
    expected = 1 <= len(name.encode("utf-8")) <= 255 and set(name) <= ALLOWED
    assert is_valid_channel(name) is expected


@pytest.mark.parametrize(
    ("channel", "namespace"),
    [
        ("chat:lobby", "chat"),
        ("lobby", "default"),
        (":x", "default"),
        ("a:b:c", "a"),
        ("chat:", "chat"),
        (":", "default"),
        ("news.sport:live", "news.sport"),
    ],
)
def test_namespace_of(channel: str, namespace: str) -> None:
    assert namespace_of(channel) == namespace


@settings(max_examples=200, deadline=None)
@given(name=st.text(alphabet=sorted(ALLOWED), min_size=1, max_size=40))
def test_namespace_is_the_part_before_the_first_colon(name: str) -> None:
    head = name.split(":", 1)[0]
    expected = head if ":" in name and head else DEFAULT_NAMESPACE
    assert namespace_of(name) == expected
    assert ":" not in namespace_of(name)
