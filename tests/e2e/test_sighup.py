"""SIGHUP re-reads the config file: limits and auth keys change live, clients
stay connected, keys that need a restart are reported and kept."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable

import jwt

from tests.e2e.probes import log_line
from tests.e2e.rawclient import open_tcp
from tests.procs import NodeProc

OLD_SECRET, NEW_SECRET = "a" * 32, "b" * 32
BEFORE = f"""
[limits]
messages_per_second = 1000
message_burst = 1000

[auth]
hmac_secret = "{OLD_SECRET}"
"""
AFTER = f"""
[limits]
messages_per_second = 2
message_burst = 2

[auth]
hmac_secret = "{NEW_SECRET}"

[broker]
redis = ["redis://127.0.0.1:1/0"]
"""


def _token(secret: str) -> str:
    return jwt.encode({"sub": "u", "exp": int(time.time()) + 60}, secret, algorithm="HS256")


async def test_sighup_applies_limits_and_auth_without_dropping_clients(
    node_factory: Callable[..., NodeProc],
) -> None:
    node = node_factory(BEFORE)
    assert node.config_path is not None
    client = await open_tcp(node)
    for _ in range(5):
        assert "ok" in await client.request("ping")
    with open(node.config_path, "w") as fh:
        fh.write(AFTER)
    node.signal(signal.SIGHUP)
    line = await log_line(node, "event=reloaded")
    for key in ("limits.messages_per_second", "limits.message_burst", "auth.hmac_secret"):
        assert key in line, line
    assert "broker.redis" in await log_line(node, "event=reload_needs_restart")
    # The connection is the same one; its bucket now holds 2.
    replies = [await client.request("ping") for _ in range(3)]
    assert ["ok" in r for r in replies] == [True, True, False], replies
    assert replies[2]["error"]["code"] == 429
    # New connections are checked with the new key; the broker did not change.
    fresh = await open_tcp(node, token=_token(NEW_SECRET))
    stale = await open_tcp(node, handshake=False)
    assert (await stale.request("connect", token=_token(OLD_SECRET)))["error"]["code"] == 401
    assert "broker=memory" in await log_line(node, "event=listening")
    await fresh.close()
    await stale.close()
    await client.close()


async def test_a_bad_file_on_sighup_keeps_the_running_config(
    node_factory: Callable[..., NodeProc],
) -> None:
    node = node_factory(BEFORE)
    assert node.config_path is not None
    client = await open_tcp(node)
    with open(node.config_path, "w") as fh:
        fh.write("[limits\nthis is not toml")
    node.signal(signal.SIGHUP)
    await log_line(node, "event=reload_failed")
    for _ in range(20):  # still the old bucket of 1000
        assert "ok" in await client.request("ping")
    assert node.proc.poll() is None
    await client.close()
