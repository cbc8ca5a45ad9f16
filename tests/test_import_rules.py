"""The direction of imports (DESIGN.md "Layout and the direction of imports").

Every ``.py`` file of the top-level packages is parsed with :mod:`ast` (never
imported) and each import it names, anywhere in the file, is checked against
its package's row of the table. A failure names the file, the line and the
import.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

#: Our own top-level packages: importing one is never "third party".
OURS = frozenset({"protocol", "cluster", "server", "client", "loadtest", "benchmarks", "tests"})

#: Any third-party package is allowed.
ANY = None


@dataclass(frozen=True)
class Rule:
    """What the modules of one package may import."""

    ours: tuple[str, ...]  # our modules, by dotted prefix ("cluster.broker" also allows below it)
    third_party: frozenset[str] | None  # top-level names, or ANY
    banned_stdlib: frozenset[str] = frozenset()


RULES: dict[str, Rule] = {
    # Sans-I/O: no event loop, no sockets, no clock-driven I/O libraries.
    "protocol": Rule(
        ours=("protocol",),
        third_party=frozenset({"msgpack"}),
        banned_stdlib=frozenset({"asyncio", "socket", "selectors", "ssl", "socketserver"}),
    ),
    # "redis (with hiredis)": hiredis packs commands in C for the Redis engine.
    "cluster": Rule(ours=("cluster", "protocol"), third_party=frozenset({"redis", "hiredis"})),
    # The node sees the broker interface and the factory, never an engine.
    "server": Rule(
        ours=("server", "protocol", "cluster.broker", "cluster.factory"),
        third_party=frozenset(
            {"websockets", "uvloop", "prometheus_client", "h11", "jwt", "msgpack"}
        ),
    ),
    "client": Rule(ours=("client", "protocol"), third_party=frozenset({"websockets", "msgpack"})),
    "loadtest": Rule(ours=("loadtest", "client", "protocol"), third_party=ANY),
    "benchmarks": Rule(ours=("benchmarks", "client", "protocol"), third_party=ANY),
}


@dataclass(frozen=True)
class Violation:
    path: str
    line: int
    module: str
    why: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: imports {self.module} ({self.why})"


def _is_our_module(dotted: str, root: Path) -> bool:
    base = root.joinpath(*dotted.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def imported_modules(
    tree: ast.AST, module: str, *, is_package: bool, root: Path = ROOT
) -> list[tuple[int, str]]:
    """Every module ``tree`` imports, absolute and dotted, with its line.

    ``from X import a`` counts as importing ``X.a`` when that is one of our
    modules on disk, else ``X``. Relative imports resolve against ``module``.
    ``importlib.import_module("...")`` and ``__import__("...")`` with a
    literal name count too.
    """
    package = module.split(".") if is_package else module.split(".")[:-1]
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                keep = len(package) - (node.level - 1)
                parts = package[: max(keep, 0)]
                base = ".".join([*parts, node.module] if node.module else parts)
            else:
                base = node.module or ""
            for alias in node.names:
                sub = f"{base}.{alias.name}" if base else alias.name
                if alias.name != "*" and (
                    not base or (base.split(".")[0] in OURS and _is_our_module(sub, root))
                ):
                    found.append((node.lineno, sub))
                else:
                    found.append((node.lineno, base))
        elif (
            isinstance(node, ast.Call)
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
            and (
                (
                    isinstance(node.func, ast.Name)
                    and node.func.id in {"__import__", "import_module"}
                )
                or (isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
            )
        ):
            found.append((node.lineno, node.args[0].value))
    return found


def why_forbidden(imported: str, rule: Rule) -> str | None:
    """The reason ``imported`` breaks ``rule``, or None when it is allowed."""
    top = imported.split(".")[0]
    if not top:
        return "relative import above the top-level package"
    if top in OURS:
        if any(imported == p or imported.startswith(p + ".") for p in rule.ours):
            return None
        return f"may import only {', '.join(rule.ours)} of ours"
    if top in sys.stdlib_module_names:
        return f"stdlib {top} is banned here" if top in rule.banned_stdlib else None
    if rule.third_party is ANY or top in rule.third_party:
        return None
    allowed = ", ".join(sorted(rule.third_party)) or "none"
    return f"third-party {top} not allowed here (allowed: {allowed})"


def check_source(
    source: str, path: str, module: str, *, is_package: bool = False, root: Path = ROOT
) -> list[Violation]:
    """Check one file's source against the rule of its top-level package."""
    rule = RULES[module.split(".")[0]]
    tree = ast.parse(source, filename=path)
    return [
        Violation(path, line, imported, why)
        for line, imported in imported_modules(tree, module, is_package=is_package, root=root)
        if (why := why_forbidden(imported, rule)) is not None
    ]


def check_package(package: str, root: Path = ROOT) -> list[Violation]:
    violations: list[Violation] = []
    for file in sorted((root / package).rglob("*.py")):
        rel = file.relative_to(root)
        if "__pycache__" in rel.parts:
            continue
        is_package = file.name == "__init__.py"
        parts = rel.parent.parts if is_package else rel.with_suffix("").parts
        violations += check_source(
            file.read_text(encoding="utf-8"),
            str(rel),
            ".".join(parts),
            is_package=is_package,
            root=root,
        )
    return violations


@pytest.mark.parametrize("package", sorted(RULES))
def test_package_follows_the_import_table(package: str) -> None:
    if not (ROOT / package).is_dir():
        pytest.skip(f"no {package}/ folder yet")
    violations = check_package(package)
    assert not violations, "imports against DESIGN.md:\n" + "\n".join(map(str, violations))


# -- the checker checks -------------------------------------------------------


def _case_id(value: object) -> str:
    return repr(value)[1:-1].replace("\\n", "; ")[:48] if isinstance(value, str) else ""


def _report(source: str, module: str, *, is_package: bool = False) -> list[str]:
    path = module.replace(".", "/") + ("/__init__.py" if is_package else ".py")
    return [str(v) for v in check_source(source, path, module, is_package=is_package)]


@pytest.mark.parametrize(
    ("module", "source", "expected"),
    [
        ("protocol.frames", "import asyncio\n", "protocol/frames.py:1: imports asyncio"),
        ("protocol.frames", "x = 1\nimport socket\n", "protocol/frames.py:2: imports socket"),
        ("protocol.codec", "from websockets.frames import Frame\n", "imports websockets.frames"),
        ("protocol.codec", "def f():\n    import redis\n", "protocol/codec.py:2: imports redis"),
        ("protocol.codec", "import uvloop\n", "imports uvloop"),
        ("protocol.codec", "import selectors\n", "imports selectors"),
        ("protocol.codec", "from server import config\n", "imports server"),
        ("protocol.codec", "from ..server import hub\n", "imports server"),
        ("cluster.redis", "import websockets\n", "imports websockets"),
        ("cluster.redis", "from server.hub import Hub\n", "imports server.hub"),
        ("cluster.memory", "import client\n", "imports client"),
        ("server.node", "from cluster.memory import MemoryBroker\n", "imports cluster.memory"),
        ("server.node", "import cluster.redis\n", "imports cluster.redis"),
        ("server.node", "from ..cluster.memory import X\n", "imports cluster.memory"),
        ("server.node", "from client import Client\n", "imports client"),
        ("server.node", "import loadtest.users\n", "imports loadtest.users"),
        ("server.node", "import numpy\n", "imports numpy"),
        (
            "server.node",
            "import importlib\nimportlib.import_module('cluster.memory')\n",
            "server/node.py:2: imports cluster.memory",
        ),
        ("client.tcp", "from server.wire import Encoded\n", "imports server.wire"),
        ("client.tcp", "from cluster.broker import Broker\n", "imports cluster.broker"),
        ("client.tcp", "import redis\n", "imports redis"),
        ("loadtest.runner", "from server import cli\n", "imports server"),
        ("loadtest.runner", "from cluster.broker import Broker\n", "imports cluster.broker"),
        ("benchmarks.fanout", "import server.hub\n", "imports server.hub"),
        ("benchmarks.fanout", "from cluster import factory\n", "imports cluster"),
        ("protocol", "from .. import server\n", "protocol/__init__.py:1: imports server"),
    ],
    ids=_case_id,
)
def test_checker_reports_forbidden_import(module: str, source: str, expected: str) -> None:
    is_package = "." not in module
    reports = _report(source, module, is_package=is_package)
    assert any(expected in r for r in reports), reports


@pytest.mark.parametrize(
    ("module", "source"),
    [
        (
            "protocol.codec",
            "from __future__ import annotations\nimport json, struct\n"
            "import msgpack\nfrom protocol.errors import ProtocolViolation\nfrom . import codes\n"
            "from .codes import ErrorCode\n",
        ),
        (
            "cluster.memory",
            "import asyncio\nfrom protocol.messages import StreamPosition\n"
            "from cluster.broker import Broker\nfrom .broker import Broker\n",
        ),
        ("cluster.redis", "import redis.asyncio as aioredis\n"),
        (
            "server.node",
            "import asyncio, uvloop, websockets, h11, jwt, msgpack\n"
            "from websockets.server import ServerProtocol\nimport prometheus_client\n"
            "from cluster.broker import Broker\nfrom cluster.factory import make_broker\n"
            "from cluster import broker, factory\nfrom . import hub\nfrom .hub import Hub\n",
        ),
        ("client.tcp", "import asyncio, websockets, msgpack\nfrom protocol import codec\n"),
        ("loadtest.runner", "import numpy\nfrom client import Client\nimport protocol.codec\n"),
        ("benchmarks.fanout", "import asyncio\nfrom client import Client\n"),
    ],
    ids=_case_id,
)
def test_checker_accepts_allowed_imports(module: str, source: str) -> None:
    assert _report(source, module) == []


def test_checker_finds_imports_in_real_files(tmp_path: Path) -> None:
    """check_package walks the folder and names file and line."""
    pkg = tmp_path / "protocol"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from .. import frames\n")
    (pkg / "frames.py").write_text("import struct\n\n\nimport asyncio  # no!\n")
    (pkg / "sub" / "deep.py").write_text("from ...server import hub\n")
    reports = sorted(map(str, check_package("protocol", root=tmp_path)))
    assert len(reports) == 2, reports
    assert reports[0].startswith("protocol/frames.py:4: imports asyncio")
    assert reports[1].startswith("protocol/sub/deep.py:1: imports server")
