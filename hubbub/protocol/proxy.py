"""The PROXY protocol, versions 1 (text) and 2 (binary), receiving side.

A load balancer in front of the TCP listener (nginx ``stream {}`` with
``proxy_protocol on``, HAProxy ``send-proxy``/``send-proxy-v2``, cloud L4
balancers) starts each connection with one header that names the client's
address; after it come the client's own bytes (docs/protocol-additions.md
"Behind a proxy"). Spec: haproxy.org/download/2.9/doc/proxy-protocol.txt.

Sans-I/O: :func:`parse_header` looks at the bytes received so far and says
"need more" (``None``), or returns what the header says and its length, or
raises :class:`~hubbub.protocol.exceptions.BadProxyHeader`. It never looks past the
header, and refuses as soon as the bytes cannot begin a header: a v1 header is
at most 107 bytes, a v2 header at most ``max_v2`` bytes.

:func:`encode_v1` and :func:`encode_v2` build headers (for tests and tools).
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

from hubbub.protocol.exceptions import BadProxyHeader

V1_PREFIX = b"PROXY "
V1_MAX = 107  # "PROXY TCP6 " + 2 x 39 + 2 x 5 + 3 spaces + CRLF (spec §2.1)
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V2_HEADER = struct.Struct("!12sBBH")
DEFAULT_MAX_V2 = 4096  # address block + TLVs; nginx sends none, cloud balancers a few

_V2_ADDRESSES = {
    0x1: (struct.Struct("!4s4sHH"), 4),  # AF_INET
    0x2: (struct.Struct("!16s16sHH"), 6),  # AF_INET6
}

Address = tuple[str, int]


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    """What a PROXY header says. ``source`` is the client's address; ``None``
    for v1 ``UNKNOWN``, v2 ``LOCAL`` (the proxy's own health check) and
    address families other than IPv4/IPv6: then the peer's address stands."""

    version: int
    source: Address | None
    destination: Address | None


def parse_header(data: bytes, max_v2: int = DEFAULT_MAX_V2) -> tuple[ProxyHeader, int] | None:
    """Parse the PROXY header at the start of ``data``: ``(header, length)``,
    or ``None`` while ``data`` is a valid beginning of one."""
    if data[:1] == V1_PREFIX[:1]:
        return _parse_v1(data)
    if data[:1] == V2_SIGNATURE[:1]:
        return _parse_v2(data, max_v2)
    if not data:
        return None
    raise BadProxyHeader("no PROXY header")


def _parse_v1(data: bytes) -> tuple[ProxyHeader, int] | None:
    end = data.find(b"\r\n", 0, V1_MAX)
    if end < 0:
        if not V1_PREFIX.startswith(data[:6]):
            raise BadProxyHeader("no PROXY header")
        if len(data) >= V1_MAX or b"\n" in data[:V1_MAX]:
            raise BadProxyHeader("v1 line too long or not CRLF-terminated")
        return None
    line = data[:end]
    try:
        parts = line.decode("ascii").split(" ")
    except UnicodeDecodeError:
        raise BadProxyHeader("v1 line is not ASCII") from None
    if parts[0] != "PROXY" or len(parts) < 2:
        raise BadProxyHeader("no PROXY header")
    if parts[1] == "UNKNOWN":
        return ProxyHeader(1, None, None), end + 2
    if parts[1] not in ("TCP4", "TCP6") or len(parts) != 6:
        raise BadProxyHeader(f"v1: bad protocol or field count: {line[:40]!r}")
    family = 4 if parts[1] == "TCP4" else 6
    source = (_v1_ip(parts[2], family), _v1_port(parts[4]))
    destination = (_v1_ip(parts[3], family), _v1_port(parts[5]))
    return ProxyHeader(1, source, destination), end + 2


def _v1_ip(text: str, family: int) -> str:
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        raise BadProxyHeader(f"v1: bad address {text[:40]!r}") from None
    if ip.version != family:
        raise BadProxyHeader(f"v1: {text!r} is not an IPv{family} address")
    return str(ip)


def _v1_port(text: str) -> int:
    if not text.isdigit() or not text.isascii() or len(text) > 5 or int(text) > 65535:
        raise BadProxyHeader(f"v1: bad port {text[:10]!r}")
    return int(text)


def _parse_v2(data: bytes, max_v2: int) -> tuple[ProxyHeader, int] | None:
    if len(data) < V2_HEADER.size:
        if not V2_SIGNATURE.startswith(data[:12]):
            raise BadProxyHeader("no PROXY header")
        return None
    signature, ver_cmd, family, length = V2_HEADER.unpack_from(data)
    if signature != V2_SIGNATURE:
        raise BadProxyHeader("no PROXY header")
    if ver_cmd >> 4 != 2:
        raise BadProxyHeader(f"v2: unknown version {ver_cmd >> 4}")
    command = ver_cmd & 0xF
    if command not in (0, 1):
        raise BadProxyHeader(f"v2: unknown command {command}")
    total = V2_HEADER.size + length
    if total > max_v2:
        raise BadProxyHeader(f"v2: header of {total} bytes is over {max_v2}")
    if len(data) < total:
        return None
    if command == 0:  # LOCAL: the proxy's own connection (health check)
        return ProxyHeader(2, None, None), total
    layout = _V2_ADDRESSES.get(family >> 4)
    if layout is None:  # AF_UNSPEC, AF_UNIX: keep the peer's address
        return ProxyHeader(2, None, None), total
    struct_, version = layout
    if length < struct_.size:
        raise BadProxyHeader(f"v2: address block of {length} bytes is too short")
    src, dst, sport, dport = struct_.unpack_from(data, V2_HEADER.size)
    ip = ipaddress.IPv4Address if version == 4 else ipaddress.IPv6Address
    return ProxyHeader(2, (str(ip(src)), sport), (str(ip(dst)), dport)), total


def encode_v1(source: Address | None, destination: Address | None = None) -> bytes:
    """A v1 header; ``source`` None gives ``PROXY UNKNOWN``."""
    if source is None:
        return b"PROXY UNKNOWN\r\n"
    destination = destination or (source[0], 0)
    family = "TCP4" if ipaddress.ip_address(source[0]).version == 4 else "TCP6"
    line = f"PROXY {family} {source[0]} {destination[0]} {source[1]} {destination[1]}\r\n"
    return line.encode("ascii")


def encode_v2(
    source: Address | None, destination: Address | None = None, tlvs: bytes = b""
) -> bytes:
    """A v2 header (command PROXY over TCP, or LOCAL when ``source`` is None),
    with optional raw TLV bytes after the addresses."""
    if source is None:
        return V2_HEADER.pack(V2_SIGNATURE, 0x20, 0x00, len(tlvs)) + tlvs
    destination = destination or (source[0], 0)
    src, dst = ipaddress.ip_address(source[0]), ipaddress.ip_address(destination[0])
    family = 0x11 if src.version == 4 else 0x21
    struct_, _ = _V2_ADDRESSES[family >> 4]
    body = struct_.pack(src.packed, dst.packed, source[1], destination[1]) + tlvs
    return V2_HEADER.pack(V2_SIGNATURE, 0x21, family, len(body)) + body
