"""hubbub: a real-time messaging server, its client and its load tester, in one package.

The sub-packages are the layers of the architecture (docs/architecture.md):
``hubbub.protocol`` (Sans-I/O), ``hubbub.cluster`` (brokers), ``hubbub.server``
(the node), ``hubbub.client`` (the client core) and ``hubbub.loadtest``.

``from hubbub import Client`` is the public client import. It is resolved
lazily (PEP 562), so importing ``hubbub.server`` never loads the client.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hubbub.client import (
        ChannelEvent,
        Client,
        ClientError,
        Disconnected,
        Publication,
        ReplyError,
        ReplyTimeout,
        Subscription,
    )

__all__ = [
    "ChannelEvent",
    "Client",
    "ClientError",
    "Disconnected",
    "Publication",
    "ReplyError",
    "ReplyTimeout",
    "Subscription",
]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from hubbub import client

        return getattr(client, name)
    raise AttributeError(f"module 'hubbub' has no attribute {name!r}")
