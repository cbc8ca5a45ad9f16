"""server.proxies: which address a connection from a proxy gets (no sockets)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hubbub.server.proxies import TrustedProxies, parse_ip

TRUSTED = TrustedProxies(["127.0.0.1", "10.0.0.0/8", "fd00::/8"])


@pytest.mark.parametrize(
    ("text", "ip"),
    [
        ("192.0.2.7", "192.0.2.7"),
        (" 192.0.2.7:5678 ", "192.0.2.7"),
        ("[2001:db8::1]:443", "2001:db8::1"),
        ("2001:DB8::1", "2001:db8::1"),
        ("::ffff:192.0.2.7", "192.0.2.7"),
        ("unknown", None),
        ("_hidden", None),
        ("", None),
        ("[2001:db8::1", None),
    ],
)
def test_parse_ip(text: str, ip: str | None) -> None:
    assert parse_ip(text) == ip


def test_untrusted_peers_cannot_spoof() -> None:
    assert TRUSTED.forwarded_client("192.0.2.50", ["1.2.3.4"], "5.6.7.8") == "192.0.2.50"
    assert TrustedProxies([]).forwarded_client("127.0.0.1", ["1.2.3.4"], None) == "127.0.0.1"


def test_rightmost_untrusted_hop_is_the_client() -> None:
    # The client sent "X-Forwarded-For: 6.6.6.6"; nginx appended what it saw.
    assert TRUSTED.forwarded_client("127.0.0.1", ["6.6.6.6, 192.0.2.7"], None) == "192.0.2.7"
    # Two proxies of ours in a row (a CDN edge at 10.1.2.3, then nginx).
    chain = ["6.6.6.6", "192.0.2.7, 10.1.2.3"]
    assert TRUSTED.forwarded_client("127.0.0.1", chain, "10.1.2.3") == "192.0.2.7"
    # Garbage stops the walk: the hop right of it is the furthest we trust.
    assert TRUSTED.forwarded_client("127.0.0.1", ["192.0.2.9, unknown, 10.1.2.3"], None) == (
        "10.1.2.3"
    )


def test_x_real_ip_then_peer() -> None:
    assert TRUSTED.forwarded_client("10.0.0.5", [], "192.0.2.7") == "192.0.2.7"
    assert TRUSTED.forwarded_client("10.0.0.5", [], "junk") == "10.0.0.5"
    assert TRUSTED.forwarded_client("10.0.0.5", [], None) == "10.0.0.5"
    assert TRUSTED.forwarded_client("fd00::1", ["2001:db8::7"], None) == "2001:db8::7"


def test_trusts() -> None:
    assert TRUSTED.trusts("127.0.0.1") and TRUSTED.trusts("10.9.9.9")
    assert TRUSTED.trusts("::ffff:10.0.0.1")
    assert not TRUSTED.trusts("127.0.0.2") and not TRUSTED.trusts("") and TRUSTED
    assert not TrustedProxies([])


@settings(max_examples=200, deadline=None)
@given(values=st.lists(st.text(max_size=60), max_size=4), real=st.none() | st.text(max_size=40))
def test_random_headers_never_crash_and_give_an_address(
    values: list[str], real: str | None
) -> None:
    got = TRUSTED.forwarded_client("127.0.0.1", values, real)
    assert got == "127.0.0.1" or parse_ip(got) == got
