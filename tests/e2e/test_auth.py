"""Authentication and authorization against a real node (PROTOCOL.md §3, §5, §8):
HS256 connection tokens, refresh and expiry, namespace access, Origin checks."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import jwt
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from hubbub.client import Client, ReplyError
from tests.e2e.probes import metric
from tests.e2e.rawclient import channel, open_tcp, open_ws
from tests.procs import NodeProc, start_node

SECRET = "test-secret-of-32-bytes-or-more!"
CONFIG = f"""
[auth]
hmac_secret = "{SECRET}"
api_key = "k"
allowed_origins = ["https://good.example", "https://*.trusted.example"]

[namespaces.private]
anonymous = false

[namespaces.announce]
client_publish = false

[namespaces.sports]
history_size = 10
"""


def token(sub: str = "alice", ttl: float = 60, secret: str = SECRET, **claims: Any) -> str:
    return jwt.encode(
        {"sub": sub, "exp": int(time.time() + ttl), **claims}, secret, algorithm="HS256"
    )


@pytest.fixture(scope="module")
def auth_node() -> Iterator[NodeProc]:
    node = start_node(CONFIG)
    yield node
    node.stop()


async def _refused(node: NodeProc, **fields: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """Connect with ``fields``: the 401 reply, then the 3005 disconnect."""
    client = await open_tcp(node, handshake=False)
    reply = await client.request("connect", **fields)
    push, _ = await client.disconnected()
    return reply, push


async def test_tokens_that_are_not_good_are_401_then_3005(auth_node: NodeProc) -> None:
    for fields in (
        {"token": token(secret="another-secret-of-32-bytes-long!")},
        {"token": token(ttl=-5)},  # expired
        {"token": "not.a.jwt"},
        {"token": jwt.encode({"exp": int(time.time()) + 60}, SECRET, algorithm="HS256")},
        {"token": token(channels="chat:*")},  # channels must be a list
    ):
        reply, push = await _refused(auth_node, **fields)
        assert reply["error"]["code"] == 401, (fields, reply)
        assert push["code"] == 3005 and push["reconnect"] is False


async def test_without_anonymous_a_token_is_required(
    node_factory: Callable[..., NodeProc],
) -> None:
    node = node_factory(f'[auth]\nanonymous = false\nhmac_secret = "{SECRET}"\n')
    reply, push = await _refused(node)
    assert reply["error"]["code"] == 401 and push["code"] == 3005
    client = await open_tcp(node, token=token())
    assert "ok" in await client.request("ping")
    await client.close()


async def test_token_globs_restrict_subscribe_and_publish(auth_node: NodeProc) -> None:
    client = await open_tcp(
        auth_node, token=token(channels=["chat:*", "news"], publish=["chat:bob-*"])
    )
    await client.ok("subscribe", channel="chat:room1")
    await client.ok("subscribe", channel="news")
    reply = await client.request("subscribe", channel="sports:today")
    assert reply["error"]["code"] == 403
    assert "ok" in await client.request("publish", channel="chat:bob-1", data=1)
    reply = await client.request("publish", channel="chat:room1", data=1)
    assert reply["error"]["code"] == 403
    # The same globs hold for reading presence and history (as subscribing).
    reply = await client.request("history", channel="sports:today")
    assert reply["error"]["code"] == 403
    await client.close()


async def test_namespace_anonymous_false_is_403_for_anonymous_clients(
    auth_node: NodeProc,
) -> None:
    anonymous = await open_tcp(auth_node)
    name = channel("private:")
    reply = await anonymous.request("subscribe", channel=name)
    assert reply["error"]["code"] == 403
    await anonymous.ok("subscribe", channel=channel())  # other namespaces are open
    user = await open_tcp(auth_node, token=token())
    await user.ok("subscribe", channel=name)
    await anonymous.close()
    await user.close()


async def test_client_publish_false_is_403_but_the_server_api_publishes(
    auth_node: NodeProc,
) -> None:
    client = await open_tcp(auth_node, token=token())
    name = channel("announce:")
    await client.ok("subscribe", channel=name)
    reply = await client.request("publish", channel=name, data="from a client")
    assert reply["error"]["code"] == 403
    request = urllib.request.Request(
        auth_node.admin_url + "/api/publish",
        method="POST",
        data=json.dumps({"channel": name, "data": "from the backend"}).encode(),
        headers={"Authorization": "Bearer k"},
    )
    with urllib.request.urlopen(request, timeout=5) as resp:
        assert resp.status == 200
    pub = await client.push("pub", channel=name)
    assert pub["data"] == "from the backend"
    await client.close()


async def test_expired_token_is_cut_with_3005_unless_refreshed(auth_node: NodeProc) -> None:
    lapsing = await open_tcp(auth_node, token=token(ttl=2))
    refreshed = await open_tcp(auth_node, token=token(ttl=2))
    ok = await refreshed.ok("refresh", token=token(ttl=60))
    assert ok["expires"] > time.time() + 50
    # A token of another user, or an expired one, does not replace it.
    reply = await refreshed.request("refresh", token=token(sub="mallory"))
    assert reply["error"]["code"] == 403
    reply = await refreshed.request("refresh", token=token(ttl=-1))
    assert reply["error"]["code"] == 401
    push, _ = await lapsing.disconnected(timeout=6)
    assert push["code"] == 3005 and push["reconnect"] is False
    assert "ok" in await refreshed.request("ping")  # past the first token's exp
    assert metric(auth_node, "hubbub_limited_total", what="token_expired") >= 1
    await refreshed.close()


async def test_websocket_origin_is_checked_at_the_handshake(auth_node: NodeProc) -> None:
    assert auth_node.ws is not None
    url = f"ws://{auth_node.ws[0]}:{auth_node.ws[1]}/ws"
    with pytest.raises(InvalidStatus) as refused:
        await connect(url, origin="https://evil.example")  # type: ignore[arg-type]
    assert refused.value.response.status_code == 403
    for origin in ("https://good.example", "https://a.trusted.example", None):
        ws = await connect(url, origin=origin)  # type: ignore[arg-type]
        await ws.send(json.dumps({"op": "connect", "id": 1}))
        assert "ok" in json.loads(await ws.recv())
        await ws.close()
    assert metric(auth_node, "hubbub_limited_total", what="origin") >= 1


async def test_ws_clients_get_the_same_auth_answers(auth_node: NodeProc) -> None:
    client = await open_ws(auth_node, handshake=False)
    reply = await client.request("connect", token=token(ttl=-5))
    assert reply["error"]["code"] == 401
    push, closed = await client.disconnected()
    assert push["code"] == 3005 and closed.code == 3005
    await asyncio.sleep(0)


def _signed(payload_json: str, header_json: str = '{"alg":"HS256","typ":"JWT"}') -> str:
    """An HS256 token over raw JSON text (PyJWT cannot write 1e400 or NaN)."""
    import base64
    import hashlib
    import hmac

    def b64(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    signing = f"{b64(header_json.encode())}.{b64(payload_json.encode())}"
    mac = hmac.new(SECRET.encode(), signing.encode(), hashlib.sha256).digest()
    return f"{signing}.{b64(mac)}"


@pytest.mark.parametrize(
    "exp", ["1e400", "1" + "0" * 400, "NaN", "Infinity", "-1e400", "4102444800.5"]
)
async def test_time_claims_must_be_finite_integers(auth_node: NodeProc, exp: str) -> None:
    """A signed exp of 10**400 used to overflow float() (500, session left in
    CONNECTING); NaN and Infinity never expired."""
    tok = _signed(f'{{"sub":"alice","exp":{exp}}}')
    reply, push = await _refused(auth_node, token=tok)
    assert reply["error"]["code"] == 401, reply
    assert push["code"] == 3005
    for claim in ("nbf", "iat"):
        tok = _signed(f'{{"sub":"alice","exp":{int(time.time()) + 60},"{claim}":{exp}}}')
        reply, push = await _refused(auth_node, token=tok)
        assert reply["error"]["code"] == 401 and push["code"] == 3005, (claim, reply)


async def test_refusals_echo_no_token_text(auth_node: NodeProc) -> None:
    marker = "ATTACKER<script>"
    for tok in (
        _signed('{"sub":"a","exp":1}', header_json=f'{{"alg":"HS256","kid":"{marker}"'),
        _signed(f'{{"sub":"a","exp":1,"x":"{marker}"'),
        f"{marker}.{marker}.{marker}",
        _signed('{"sub":"a"}', header_json=f'{{"alg":"{marker}"}}'),
        _signed('{"sub":"a","exp":1}', header_json=f'{{"alg":"HS256","crit":["{marker}"]}}'),
    ):
        reply, _ = await _refused(auth_node, token=tok)
        assert reply["error"]["code"] == 401
        assert marker not in json.dumps(reply), reply


async def test_star_stops_at_colon_and_double_star_crosses_it(auth_node: NodeProc) -> None:
    client = await open_tcp(
        auth_node, token=token(channels=["user:alice*", "room:**"], publish=["user:alice*"])
    )
    await client.ok("subscribe", channel="user:alice2")
    await client.ok("subscribe", channel="room:a:b:c")
    for op in ("subscribe", "publish"):
        reply = await client.request(op, channel="user:alice:private", data=1)
        assert reply["error"]["code"] == 403, (op, reply)
    await client.close()


async def test_origin_star_does_not_cross_a_colon(auth_node: NodeProc) -> None:
    assert auth_node.ws is not None
    url = f"ws://{auth_node.ws[0]}:{auth_node.ws[1]}/ws"
    for origin in (
        "https://evil.example:1.trusted.example",
        "https://evil.example/.trusted.example",
    ):
        with pytest.raises(InvalidStatus) as refused:
            await connect(url, origin=origin)  # type: ignore[arg-type]
        assert refused.value.response.status_code == 403, origin


async def test_a_narrowing_refresh_unsubscribes_what_it_no_longer_allows(
    auth_node: NodeProc,
) -> None:
    """refresh used to keep the subscriptions the new token no longer allows."""
    chat, news = channel("chat:"), channel("news")
    client = await open_tcp(auth_node, token=token(channels=["chat:*", "news*"]))
    await client.ok("subscribe", channel=chat)
    await client.ok("subscribe", channel=news)
    await client.ok("refresh", token=token(channels=["news*"]))
    push = await client.push("unsubscribe", channel=chat)
    assert push["code"] == 403, push
    publisher = await open_tcp(auth_node)
    await publisher.ok("publish", channel=chat, data="gone")
    await publisher.ok("publish", channel=news, data="still")
    pub = await client.push("pub")
    assert (pub["channel"], pub["data"]) == (news, "still"), pub
    reply = await client.request("unsubscribe", channel=chat)
    assert reply["error"]["code"] == 409  # already ended by the refresh
    await client.close()
    await publisher.close()


async def test_the_python_client_ends_a_subscription_a_refresh_no_longer_allows(
    auth_node: NodeProc,
) -> None:
    """The client used to ignore the ``unsubscribe`` push: the iterator waited
    forever and every reconnect subscribed the channel again (and got 403)."""
    chat, news = channel("chat:"), channel("news")
    async with Client(auth_node.tcp_url, token=token(channels=["chat:*", "news*"])) as c:
        narrowed = await c.subscribe(chat)
        kept = await c.subscribe(news)
        await c.refresh(token(channels=["news*"]))
        with pytest.raises(ReplyError) as ended:
            async with asyncio.timeout(5):
                await anext(aiter(narrowed))
        assert ended.value.code == 403, ended.value
        assert narrowed.closed and not kept.closed
        assert list(c.subscriptions) == [news]
        await c.publish(news, "still")
        pub = await asyncio.wait_for(anext(aiter(kept)), 5)
        assert pub.data == "still"
