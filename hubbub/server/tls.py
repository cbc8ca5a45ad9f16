"""TLS for the client listeners: ``[server] tls_cert`` / ``tls_key`` (docs/limits.md).

One :class:`ssl.SSLContext` serves both the TCP and the WebSocket listener
(``wss://``); the admin listener stays plain HTTP (it binds to loopback by
default and is scraped by Prometheus). SIGHUP re-reads the certificate and
key into the same context, so a renewed certificate is used by new
connections without a restart.
"""

from __future__ import annotations

import ssl

from hubbub.server.config import ConfigError


def server_context(cert: str, key: str) -> ssl.SSLContext:
    """A server-side context with ``cert`` (PEM chain) and ``key``; ConfigError
    naming the files when they cannot be loaded."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    load_chain(context, cert, key)
    return context


def load_chain(context: ssl.SSLContext, cert: str, key: str) -> None:
    """(Re)load the certificate chain and key into ``context``."""
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"[server] tls_cert/tls_key: cannot load {cert!r}, {key!r}: {exc}"
        ) from None
