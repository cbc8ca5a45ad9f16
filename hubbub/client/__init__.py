"""hubbub's asyncio client, for TCP (``tcp://``) and WebSocket (``ws://``) servers.

A chat in ten lines::

    import asyncio
    from hubbub.client import Client

    async def main() -> None:
        async with Client("ws://127.0.0.1:7401/ws", name="chat") as c:
            sub = await c.subscribe("chat:lobby", recover=True)
            await c.publish("chat:lobby", {"text": "hello"})
            async for pub in sub:
                print(pub.sender, pub.data["text"])

    asyncio.run(main())

The client answers server pings, reconnects (server-given ``after``, else
backoff with full jitter) and re-subscribes with recovery, so a subscription's
iterator keeps going across reconnects without gaps or duplicates when the
channel has history; ``sub.recovered is False`` (and a ``"reset"`` event) says
publications were lost and the app should reload.
"""

from __future__ import annotations

from hubbub.client.client import Client, HistoryResult, backoff_delay
from hubbub.client.exceptions import ClientError, Disconnected, ReplyError, ReplyTimeout
from hubbub.client.subscription import ChannelEvent, Publication, Subscription
from hubbub.protocol.messages import StreamPosition

__all__ = [
    "ChannelEvent",
    "Client",
    "ClientError",
    "Disconnected",
    "HistoryResult",
    "Publication",
    "ReplyError",
    "ReplyTimeout",
    "StreamPosition",
    "Subscription",
    "backoff_delay",
]
