"""The web files a node serves on its WebSocket listener, over plain HTTP ``GET``.

``/hubbub.js`` (the browser client), ``/hubbub.d.ts`` and the vendored msgpack
codec it loads are always served; the demo chat (``/`` and ``/demo/*``) only
with ``[server] demo = true``. The files are the package's own (``hubbub/web``,
which is the repository's ``web/``: docs/decisions.md), read once into memory:
a request path is looked up in that fixed table and never joined to a
filesystem path, so no request reaches another file. Responses carry
``Content-Type``, an ``ETag`` (a ``304`` answers a matching ``If-None-Match``)
and ``Cache-Control: no-cache`` and ``Access-Control-Allow-Origin: *`` (a page of
another origin may import ``hubbub.js`` as a module); any other path, and a WebSocket upgrade to any
path but ``/ws``, is a 404.
"""

from __future__ import annotations

import email.utils
import functools
import hashlib
import http
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable

from websockets.datastructures import Headers
from websockets.http11 import Request, Response

NOT_FOUND = "Not Found: hubbub's WebSocket endpoint is /ws\n"

#: Files served with or without the demo, relative to the web folder.
CLIENT_FILES = ("hubbub.js", "hubbub.d.ts", "vendor/msgpack.mjs", "vendor/msgpack.LICENSE")
DEMO_DIR = "demo"

_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".ts": "text/plain; charset=utf-8",
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".json": "application/json",
}


@dataclass(frozen=True, slots=True)
class WebFile:
    body: bytes
    content_type: str
    etag: str


def web_root() -> Traversable:
    """The package's web folder (``hubbub/web``)."""
    return resources.files("hubbub") / "web"


def _load(entry: Traversable) -> WebFile:
    body = entry.read_bytes()
    suffix = "." + entry.name.rsplit(".", 1)[-1] if "." in entry.name else ""
    content_type = _TYPES.get(suffix, "text/plain; charset=utf-8")
    return WebFile(body, content_type, '"' + hashlib.sha256(body).hexdigest()[:20] + '"')


@functools.cache
def files(demo: bool) -> dict[str, WebFile]:
    """URL path -> file: the client files, plus the demo when asked."""
    root = web_root()
    table = {"/" + name: _load(root.joinpath(*name.split("/"))) for name in CLIENT_FILES}
    if demo:
        for entry in root.joinpath(DEMO_DIR).iterdir():
            if entry.is_file() and not entry.name.startswith("."):
                table[f"/{DEMO_DIR}/{entry.name}"] = _load(entry)
        table["/"] = table[f"/{DEMO_DIR}/index.html"]
    return table


def _response(status: http.HTTPStatus, headers: list[tuple[str, str]], body: bytes) -> Response:
    base = [("Date", email.utils.formatdate(usegmt=True)), ("Connection", "close")]
    return Response(status.value, status.phrase, Headers(base + headers), body)


def respond(request: Request, demo: bool) -> Response:
    """The answer to a plain ``GET`` of anything but ``/ws``."""
    path = request.path.split("?", 1)[0]
    upgrade = request.headers.get("Upgrade", "").lower() == "websocket"
    found = None if upgrade else files(demo).get(path)
    if found is None:
        body = NOT_FOUND.encode()
        return _response(
            http.HTTPStatus.NOT_FOUND,
            [("Content-Length", str(len(body))), ("Content-Type", "text/plain; charset=utf-8")],
            body,
        )
    # Public files: pages of other origins may import hubbub.js (module scripts use CORS).
    common = [
        ("ETag", found.etag),
        ("Cache-Control", "no-cache"),
        ("Access-Control-Allow-Origin", "*"),
    ]
    tags = _etags(request.headers.get("If-None-Match", ""))
    if found.etag in tags or "*" in tags:
        return _response(http.HTTPStatus.NOT_MODIFIED, common, b"")
    return _response(
        http.HTTPStatus.OK,
        [
            *common,
            ("Content-Type", found.content_type),
            ("Content-Length", str(len(found.body))),
            ("X-Content-Type-Options", "nosniff"),
        ],
        found.body,
    )


def _etags(header: str) -> set[str]:
    """The entity tags of an ``If-None-Match`` header (weak ones compare equal)."""
    return {tag.strip().removeprefix("W/") for tag in header.split(",") if tag.strip()}
