"""The web files on the WebSocket listener (hubbub/server/static.py): hubbub.js always,
the demo with ``[server] demo = true``; Content-Type, ETag/304, 404 elsewhere, no way
out of the package's web folder; and the package's copy is the repository's web/."""

from __future__ import annotations

import http.client
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from hubbub.server import static
from tests.procs import ROOT, NodeProc, start_node

WEB = ROOT / "web"


@pytest.fixture(scope="module")
def demo_node() -> Iterator[NodeProc]:
    node = start_node("[server]\ndemo = true\n")
    yield node
    node.stop()


@pytest.fixture(scope="module")
def plain_node() -> Iterator[NodeProc]:
    node = start_node()
    yield node
    node.stop()


def get(
    node: NodeProc, path: str, headers: dict[str, str] | None = None
) -> http.client.HTTPResponse:
    assert node.ws
    conn = http.client.HTTPConnection(*node.ws, timeout=5)
    conn.request("GET", path, headers=headers or {})
    response = conn.getresponse()
    response.read()
    conn.close()
    return response


def body(node: NodeProc, path: str) -> tuple[int, bytes, str]:
    assert node.ws
    conn = http.client.HTTPConnection(*node.ws, timeout=5)
    conn.request("GET", path)
    response = conn.getresponse()
    data = response.read()
    conn.close()
    return response.status, data, response.getheader("Content-Type", "")


@pytest.mark.parametrize(
    ("path", "file", "content_type"),
    [
        ("/hubbub.js", "hubbub.js", "text/javascript; charset=utf-8"),
        ("/hubbub.d.ts", "hubbub.d.ts", "text/plain; charset=utf-8"),
        ("/vendor/msgpack.mjs", "vendor/msgpack.mjs", "text/javascript; charset=utf-8"),
        ("/hubbub.js?v=2", "hubbub.js", "text/javascript; charset=utf-8"),
    ],
)
def test_client_files_are_served_without_the_demo(
    plain_node: NodeProc, path: str, file: str, content_type: str
) -> None:
    status, data, ctype = body(plain_node, path)
    assert status == 200
    assert data == (WEB / file).read_bytes()
    assert ctype == content_type


def test_demo_is_off_by_default(plain_node: NodeProc) -> None:
    assert get(plain_node, "/").status == 404
    assert get(plain_node, "/demo/app.js").status == 404


def test_demo_is_served_when_on(demo_node: NodeProc) -> None:
    status, data, ctype = body(demo_node, "/")
    assert (status, ctype) == (200, "text/html; charset=utf-8")
    assert data == (WEB / "demo" / "index.html").read_bytes()
    for name in ("app.js", "demo.css"):
        status, data, _ = body(demo_node, f"/demo/{name}")
        assert status == 200 and data == (WEB / "demo" / name).read_bytes()
    assert body(demo_node, "/demo/demo.css")[2] == "text/css; charset=utf-8"


def test_etag_and_304(demo_node: NodeProc) -> None:
    first = get(demo_node, "/hubbub.js")
    etag = first.getheader("ETag")
    assert etag and first.getheader("Cache-Control") == "no-cache"
    assert first.getheader("Access-Control-Allow-Origin") == "*"  # importable from any page
    again = get(demo_node, "/hubbub.js", {"If-None-Match": etag})
    assert again.status == 304 and again.getheader("ETag") == etag
    assert get(demo_node, "/hubbub.js", {"If-None-Match": f'"other", W/{etag}'}).status == 304
    assert get(demo_node, "/hubbub.js", {"If-None-Match": '"other"'}).status == 200


@pytest.mark.parametrize(
    "path",
    [
        "/nothing",
        "/../pyproject.toml",
        "/demo/../../pyproject.toml",
        "/%2e%2e/pyproject.toml",
        "/demo/%2e%2e%2f%2e%2e%2fpyproject.toml",
        "//etc/passwd",
        "/web/hubbub.js",
        "/server/static.py",
        "/demo/",
        "/vendor/",
    ],
)
def test_anything_else_is_404(demo_node: NodeProc, path: str) -> None:
    assert demo_node.ws
    with socket.create_connection(demo_node.ws, timeout=5) as s:  # raw: no client normalising
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        reply = b""
        while chunk := s.recv(65536):
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 404 "), reply[:200]
    assert b"hubbub's WebSocket endpoint is /ws" in reply


def test_a_websocket_upgrade_elsewhere_is_404(demo_node: NodeProc) -> None:
    headers = {
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version": "13",
    }
    assert get(demo_node, "/", headers).status == 404


def test_the_package_web_folder_is_the_repository_web_folder() -> None:
    """One copy: hubbub/web is the symlink the wheel resolves (test_packaging checks the wheel)."""
    root = Path(str(static.web_root()))
    assert root.resolve() == WEB.resolve()
    for name in static.CLIENT_FILES:
        assert (WEB / name).is_file(), name
