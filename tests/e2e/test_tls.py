"""TCP and WebSocket over TLS (``[server] tls_cert`` / ``tls_key``) with a
self-signed certificate made by the ``openssl`` command line for each test."""

from __future__ import annotations

import asyncio
import signal
import ssl
import subprocess
from collections.abc import Callable
from pathlib import Path

from websockets.asyncio.client import connect
from websockets.typing import Subprotocol

from tests.e2e.probes import log_line
from tests.e2e.rawclient import MSGPACK, TcpRaw, WsRaw, channel
from tests.procs import HUBBUB, ROOT, NodeProc

Factory = Callable[..., NodeProc]


def make_certificate(directory: Path, name: str = "server") -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (an EC key: quick to make)."""
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            f"/CN={name}",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def client_context(cert: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(cert))


def tls_config(cert: Path, key: Path) -> str:
    return f'[server]\ntls_cert = "{cert}"\ntls_key = "{key}"\n'


async def open_tls_tcp(node: NodeProc, context: ssl.SSLContext) -> TcpRaw:
    assert node.tcp is not None
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(*node.tcp, ssl=context, server_hostname="127.0.0.1"), 5
    )
    client = TcpRaw(reader, writer)
    await client.connect()
    return client


async def open_wss(node: NodeProc, context: ssl.SSLContext) -> WsRaw:
    assert node.ws is not None
    ws = await connect(
        f"wss://{node.ws[0]}:{node.ws[1]}/ws",
        ssl=context,
        subprotocols=[Subprotocol(MSGPACK)],
        compression=None,
    )
    client = WsRaw(ws)
    await client.connect()
    return client


async def test_tcp_and_wss_over_tls(node_factory: Factory, tmp_path: Path) -> None:
    cert, key = make_certificate(tmp_path)
    node = node_factory(tls_config(cert, key))
    assert "tls=on" in await log_line(node, "event=listening")
    context = client_context(cert)
    tcp, wss = await open_tls_tcp(node, context), await open_wss(node, context)
    name = channel()
    await tcp.ok("subscribe", channel=name)
    await wss.ok("subscribe", channel=name)
    await tcp.ok("publish", channel=name, data=b"\x00secret")
    await wss.ok("publish", channel=name, data={"n": 2})
    for client in (tcp, wss):
        assert (await client.push("pub", channel=name))["data"] == b"\x00secret"
        assert (await client.push("pub", channel=name))["data"] == {"n": 2}
        await client.close()


async def test_a_plain_client_gets_no_hubbub_answer(node_factory: Factory, tmp_path: Path) -> None:
    cert, key = make_certificate(tmp_path)
    node = node_factory(tls_config(cert, key))
    assert node.tcp is not None
    reader, writer = await asyncio.open_connection(*node.tcp)
    raw = TcpRaw(reader, writer)
    await raw.send({"op": "connect", "id": 1})
    data = await raw.eof()  # the TLS layer refuses it and closes
    assert b"client" not in data
    await raw.close()


async def test_sighup_rotates_the_certificate_without_dropping_clients(
    node_factory: Factory, tmp_path: Path
) -> None:
    cert, key = make_certificate(tmp_path, "first")
    node = node_factory(tls_config(cert, key))
    old_client = await open_tls_tcp(node, client_context(cert))
    new_cert, new_key = make_certificate(tmp_path, "second")
    cert.write_bytes(new_cert.read_bytes())  # renewed in place, as certbot does
    key.write_bytes(new_key.read_bytes())
    node.signal(signal.SIGHUP)
    await log_line(node, "event=reloaded")
    fresh = await open_tls_tcp(node, client_context(new_cert))  # trusts only the new one
    peer = fresh.writer.get_extra_info("ssl_object").getpeercert()
    assert dict(x[0] for x in peer["subject"])["commonName"] == "second"
    assert "ok" in await old_client.request("ping")  # not dropped
    await fresh.close()
    await old_client.close()


def test_unreadable_tls_files_exit_1_with_one_line(tmp_path: Path) -> None:
    config = tmp_path / "hubbub.toml"
    config.write_text(tls_config(tmp_path / "missing.crt", tmp_path / "missing.key"))
    result = subprocess.run(
        [
            *HUBBUB,
            "serve",
            "--config",
            str(config),
            "--tcp",
            "127.0.0.1:0",
            "--ws",
            "",
            "--admin",
            "",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert result.returncode == 1
    assert "event=config_error" in result.stderr and "missing.crt" in result.stderr
