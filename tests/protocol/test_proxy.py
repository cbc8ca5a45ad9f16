"""protocol.proxy: PROXY protocol v1/v2 headers, with plain bytes (no sockets)."""

from __future__ import annotations

import contextlib
import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hubbub.protocol.codes import DisconnectCode
from hubbub.protocol.exceptions import BadProxyHeader, ProtocolViolation
from hubbub.protocol.proxy import (
    V1_MAX,
    V2_SIGNATURE,
    ProxyHeader,
    encode_v1,
    encode_v2,
    parse_header,
)

FAST = settings(max_examples=200, deadline=None)

ports = st.integers(0, 65535)
ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).map(str)
addresses = st.one_of(st.tuples(ipv4, ports), st.tuples(ipv6, ports))
pairs = st.one_of(
    st.tuples(st.tuples(ipv4, ports), st.tuples(ipv4, ports)),
    st.tuples(st.tuples(ipv6, ports), st.tuples(ipv6, ports)),
)


def test_nginx_v1_header() -> None:
    data = b"PROXY TCP4 192.0.2.7 127.0.0.1 51234 7400\r\n\x00\x00\x00\x05rest"
    header, used = parse_header(data)  # type: ignore[misc]
    assert header == ProxyHeader(1, ("192.0.2.7", 51234), ("127.0.0.1", 7400))
    assert data[used:] == b"\x00\x00\x00\x05rest"


def test_v1_ipv6_and_unknown() -> None:
    header, _ = parse_header(b"PROXY TCP6 2001:db8::1 ::1 1 2\r\n")  # type: ignore[misc]
    assert header.source == ("2001:db8::1", 1)
    assert parse_header(b"PROXY UNKNOWN ffff:f...f 1 2\r\nX") == (ProxyHeader(1, None, None), 30)
    assert parse_header(b"PROXY UNKNOWN\r\n") == (ProxyHeader(1, None, None), 15)


def test_v2_local_and_unspec_keep_the_peer() -> None:
    assert parse_header(encode_v2(None)) == (ProxyHeader(2, None, None), 16)
    unix = V2_SIGNATURE + bytes([0x21, 0x31]) + (216).to_bytes(2, "big") + bytes(216)
    assert parse_header(unix) == (ProxyHeader(2, None, None), 232)


@pytest.mark.parametrize(
    "data",
    [
        b"GET / HTTP/1.1\r\n",
        b"\x00\x00\x00\x10",  # a hubbub frame: the client skipped the proxy
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",  # LF without CR
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",  # a field missing
        b"PROXY TCP4 ::1 ::1 1 2\r\n",  # family mismatch
        b"PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 65536\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n",
        b"PROXY TCP4 1.2.3.999 5.6.7.8 1 2\r\n",
        b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n",
        b"PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n",
        b"PROXY " + b"A" * (V1_MAX - 6),  # no CRLF within 107 bytes
        b"PROXY TCP4 \xff\r\n",
        V2_SIGNATURE + bytes([0x11, 0x11, 0, 12]) + bytes(12),  # version 1 in a v2 header
        V2_SIGNATURE + bytes([0x22, 0x11, 0, 12]) + bytes(12),  # command 2
        V2_SIGNATURE + bytes([0x21, 0x11, 0, 4]) + bytes(4),  # address block too short
        V2_SIGNATURE + bytes([0x21, 0x11, 0xFF, 0xFF]),  # over max_v2
        b"\r\n\r\n\x00\r\nQUIX\n" + bytes(4),
    ],
)
def test_bad_headers_are_refused_with_3004(data: bytes) -> None:
    with pytest.raises(BadProxyHeader) as info:
        parse_header(data)
    assert isinstance(info.value, ProtocolViolation)
    assert info.value.code == DisconnectCode.PROTOCOL_ERROR


def test_refused_as_soon_as_the_bytes_cannot_begin_a_header() -> None:
    for data in (b"PRX", b"PROXYX", b"\r\n\r\n\x01"):
        with pytest.raises(BadProxyHeader):
            parse_header(data)
    assert parse_header(b"") is None
    assert parse_header(b"PROX") is None
    assert parse_header(V2_SIGNATURE[:7]) is None


@FAST
@given(pair=pairs, tail=st.binary(max_size=40), version=st.sampled_from([1, 2]))
def test_round_trip_and_every_prefix_needs_more(
    pair: tuple[tuple[str, int], tuple[str, int]], tail: bytes, version: int
) -> None:
    source, destination = pair
    header = (encode_v1 if version == 1 else encode_v2)(source, destination)
    parsed, used = parse_header(header + tail)  # type: ignore[misc]
    assert used == len(header)
    assert parsed.version == version
    assert parsed.source == (str(ipaddress.ip_address(source[0])), source[1])
    assert parsed.destination == (str(ipaddress.ip_address(destination[0])), destination[1])
    for cut in range(len(header)):
        assert parse_header(header[:cut]) is None


@FAST
@given(source=addresses, tlvs=st.binary(max_size=300))
def test_v2_tlvs_are_skipped(source: tuple[str, int], tlvs: bytes) -> None:
    header = encode_v2(source, None, tlvs)
    parsed, used = parse_header(header + b"after")  # type: ignore[misc]
    assert used == len(header) and parsed.source is not None


@FAST
@given(data=st.binary(max_size=200))
def test_random_bytes_never_crash(data: bytes) -> None:
    try:
        result = parse_header(data)
    except BadProxyHeader:
        return
    if result is not None:
        _, used = result
        assert 0 < used <= len(data)


@FAST
@given(prefix=st.sampled_from([b"PROXY TCP4 ", b"PROXY TCP6 ", V2_SIGNATURE]),
       data=st.binary(max_size=200))
def test_random_bytes_after_a_valid_start_never_crash(prefix: bytes, data: bytes) -> None:
    with contextlib.suppress(BadProxyHeader):
        parse_header(prefix + data)
