"""RFC 6455 conformance: the Autobahn TestSuite's fuzzingclient cases, run by
kosoku (PyPI), against a node's ``[server] ws_echo_path`` — the same read loop,
framing and close handling as ``/ws``, with messages echoed back.

Every case but the compression ones (12.*, 13.*: hubbub never negotiates
permessage-deflate) must be OK or NON-STRICT. The only INFORMATIONAL verdicts
allowed are those of the cases whose behaviour the RFC leaves open (Autobahn
labels them so for every server). The summary is in docs/conformance.md.
"""

from __future__ import annotations

import collections
from collections.abc import Callable

from kosoku import FailureError, run_fuzzingclient

from tests.procs import NodeProc

#: Large messages (9.*: up to 16 MiB) must be echoed, not refused with 1009;
#: an echo connection never sends `connect`, so the handshake timer is long.
CONFIG = """
[server]
ws_echo_path = "/echo"

[limits]
max_frame = 67108864
outbound_buffer = 67108864
handshake_timeout = 300.0
"""
EXCLUDED = ["12.*", "13.*"]
#: Cases whose outcome RFC 6455 leaves undefined: INFORMATIONAL for any server.
INFORMATIONAL = {"7.1.6", "7.13.1", "7.13.2"}
ACCEPTED = {"OK", "NON-STRICT"}


async def test_autobahn_fuzzingclient_cases(node_factory: Callable[..., NodeProc]) -> None:
    node = node_factory(CONFIG)
    assert node.ws is not None
    url = f"ws://{node.ws[0]}:{node.ws[1]}/echo"
    try:
        results = await run_fuzzingclient(url, None, EXCLUDED, concurrency=2)
    except FailureError as failure:
        results = failure.results
    verdicts = collections.Counter(r.behavior.value for r in results)
    bad = [
        (r.case_id, r.behavior.value, r.behavior_close.value, r.result, r.result_close)
        for r in results
        if not (
            (r.behavior.value in ACCEPTED and r.behavior_close.value in ("OK", "INFORMATIONAL"))
            or (r.case_id in INFORMATIONAL and r.behavior.value == "INFORMATIONAL")
        )
    ]
    assert bad == [], f"{len(bad)} cases not conformant ({dict(verdicts)}): {bad[:5]}"
    assert len(results) > 290, f"only {len(results)} cases ran"
    assert not any(r.case_id.startswith(("12.", "13.")) for r in results)


async def test_echo_path_is_off_by_default(node_factory: Callable[..., NodeProc]) -> None:
    from websockets.asyncio.client import connect
    from websockets.exceptions import InvalidStatus

    node = node_factory()
    assert node.ws is not None
    try:
        async with connect(f"ws://{node.ws[0]}:{node.ws[1]}/echo"):
            raise AssertionError("an echo path without ws_echo_path")
    except InvalidStatus as exc:
        assert exc.response.status_code == 404
