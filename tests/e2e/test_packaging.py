"""The distribution installs one import package, ``hubbub``, and nothing else at the top
level, so a user's own ``client.py``, ``server.py`` or ``protocol.py`` never shadows it
(docs/decisions.md, "One import package")."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.procs import ROOT, NodeProc


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """hubbub's wheel, built from the work tree without the network."""
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            *(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"),
            *("-w", str(out), str(ROOT)),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (built,) = out.glob("hubbub-*.whl")
    return built


@pytest.fixture(scope="module")
def site_packages(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh site-packages holding only what ``pip install`` of the wheel puts there."""
    target = tmp_path_factory.mktemp("site-packages")
    subprocess.run(
        [
            *(sys.executable, "-m", "pip", "install", "-q", "--no-deps"),
            *("--target", str(target), str(wheel)),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return target


def test_wheel_declares_one_top_level_package(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        (top_level,) = [n for n in names if n.endswith(".dist-info/top_level.txt")]
        assert zf.read(top_level).decode().split() == ["hubbub"]
        (record,) = [n for n in names if n.endswith(".dist-info/RECORD")]
        paths = [line.split(",")[0] for line in zf.read(record).decode().splitlines() if line]
    tops = {p.split("/")[0] for p in paths}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"hubbub"}, sorted(tops)
    assert "hubbub/server/cli.py" in paths
    assert "hubbub/client/client.py" in paths


def test_install_puts_only_hubbub_into_site_packages(site_packages: Path) -> None:
    entries = {p.name for p in site_packages.iterdir() if p.name != "bin"}
    assert {e for e in entries if not e.endswith(".dist-info")} == {"hubbub"}, sorted(entries)
    scripts = {p.name for p in (site_packages / "bin").iterdir()}
    assert {"hubbub", "hubbub-loadtest"} <= scripts


_USER_SCRIPT = textwrap.dedent(
    """
    import asyncio, sys
    import hubbub
    from hubbub import Client

    async def main() -> None:
        async with Client(sys.argv[1], name="user-script") as c:
            sub = await c.subscribe("lobby")
            await c.publish("lobby", {"text": "hello"})
            pub = await asyncio.wait_for(sub.__anext__(), 5)
            print("got", pub.data["text"], Client.__module__, hubbub.__file__)

    asyncio.run(main())
    """
)


def test_users_client_py_imports_hubbub_and_talks_to_a_node(
    site_packages: Path, tmp_path: Path, node_factory: Callable[..., NodeProc]
) -> None:
    """The README's example saved as ``client.py`` beside a ``server.py`` and a
    ``protocol.py`` of the user's own: the installed hubbub is what it imports."""
    node = node_factory()
    app = tmp_path / "app"
    app.mkdir()
    (app / "client.py").write_text(_USER_SCRIPT)
    (app / "server.py").write_text("raise SystemExit('the user server.py was imported')\n")
    (app / "protocol.py").write_text("raise SystemExit('the user protocol.py was imported')\n")
    env = {**os.environ, "PYTHONPATH": str(site_packages)}
    for url in (node.ws_url, node.tcp_url):
        done = subprocess.run(
            [sys.executable, "client.py", url],
            cwd=app,
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.split() == [
            "got",
            "hello",
            "hubbub.client.client",
            str(site_packages / "hubbub" / "__init__.py"),
        ]


def test_python_dash_m_hubbub_runs_the_cli() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "hubbub", "--version"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    assert "hubbub" in done.stdout + done.stderr


def test_wheel_holds_the_web_files_of_the_repository(wheel: Path) -> None:
    """hubbub/web is a symlink to web/ (docs/decisions.md): the wheel carries real copies."""
    web = ROOT / "web"
    expected = ["hubbub.js", "hubbub.d.ts", "vendor/msgpack.mjs", "vendor/msgpack.LICENSE"]
    expected += [f"demo/{p.name}" for p in (web / "demo").iterdir()]
    with zipfile.ZipFile(wheel) as zf:
        for name in expected:
            assert zf.read(f"hubbub/web/{name}") == (web / name).read_bytes(), name
