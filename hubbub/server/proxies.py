"""Whose word on the client's address is believed: ``[server] trusted_proxies``.

A connection's address is its peer's, unless the peer is a trusted proxy: then it
is what the proxy says (docs/protocol-additions.md "Behind a proxy"), from the
PROXY protocol header on TCP (protocol.proxy) or from ``X-Forwarded-For`` /
``X-Real-IP`` on the WebSocket handshake. ``X-Forwarded-For`` is read from the
right: every proxy appends the peer it saw, so the first hop from the right that
is not itself a trusted proxy is the client; hops further left were written by
the client and prove nothing. What the per-IP limit, the logs and ``/api/nodes``
see is that address.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_ip(text: str) -> str | None:
    """An address as it appears in a forwarding header (``1.2.3.4``,
    ``1.2.3.4:5678``, ``[2001:db8::1]:443``, ``2001:db8::1``), normalized;
    None when it is not one (``unknown``, an obfuscated identifier)."""
    text = text.strip()
    if text.startswith("["):
        text = text[1 : text.find("]")] if "]" in text else ""
    elif text.count(":") == 1:
        text = text.split(":", 1)[0]
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


class TrustedProxies:
    """The networks of ``[server] trusted_proxies`` (validated by server.config)."""

    __slots__ = ("networks",)

    def __init__(self, entries: Iterable[str]) -> None:
        self.networks: tuple[Network, ...] = tuple(
            ipaddress.ip_network(e, strict=False) for e in entries
        )

    def __bool__(self) -> bool:
        return bool(self.networks)

    def trusts(self, ip: str) -> bool:
        """Whether ``ip`` (a peer address) is one of the trusted proxies."""
        if not self.networks:
            return False
        address = parse_ip(ip)
        if address is None:
            return False
        parsed = ipaddress.ip_address(address)
        return any(parsed in net for net in self.networks)

    def forwarded_client(self, peer: str, forwarded_for: Iterable[str], real_ip: str | None) -> str:
        """The client's address of a WebSocket handshake from ``peer``: from the
        ``X-Forwarded-For`` values (every header, in order) when ``peer`` is
        trusted, else ``X-Real-IP``, else ``peer``."""
        if not self.trusts(peer):
            return peer
        hops = [hop for value in forwarded_for for hop in value.split(",")]
        client = None
        for hop in reversed(hops):
            address = parse_ip(hop)
            if address is None:
                break  # garbage: the hop to its right is as far as we can trust
            client = address
            if not self.trusts(address):
                return address
        if client is not None:
            return client  # every hop is a trusted proxy: the leftmost one
        if real_ip is not None:
            address = parse_ip(real_ip)
            if address is not None:
                return address
        return peer
