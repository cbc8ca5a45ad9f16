"""The direction of imports (DESIGN.md "Layout and the direction of imports").

Every ``.py`` file of ``hubbub`` and ``benchmarks`` is parsed with :mod:`ast` (never
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
OURS = frozenset({"hubbub", "benchmarks", "tests"})

#: Any third-party package is allowed.
ANY = None


@dataclass(frozen=True)
class Rule:
    """What the modules of one package may import."""

    ours: tuple[
        str, ...
    ]  # our modules, by dotted prefix ("hubbub.cluster.broker" also allows below)
    third_party: frozenset[str] | None  # top-level names, or ANY
    banned_stdlib: frozenset[str] = frozenset()


RULES: dict[str, Rule] = {
    # The package root: ``from hubbub import Client`` (lazily) and ``python -m hubbub``.
    "hubbub": Rule(ours=("hubbub.client", "hubbub.server.cli"), third_party=frozenset()),
    # Sans-I/O: no event loop, no sockets, no clock-driven I/O libraries.
    "hubbub.protocol": Rule(
        ours=("hubbub.protocol",),
        third_party=frozenset({"msgpack", "orjson"}),
        banned_stdlib=frozenset({"asyncio", "socket", "selectors", "ssl", "socketserver"}),
    ),
    # "redis (with hiredis)": hiredis packs commands in C for the Redis engine.
    # hubbub.log: the one structured-log helper of the node and its engines, at the
    # package root because the cluster may not import the server (stdlib only).
    "hubbub.cluster": Rule(
        ours=("hubbub.cluster", "hubbub.protocol", "hubbub.log"),
        third_party=frozenset({"redis", "hiredis"}),
    ),
    # The node sees the broker interface, its errors and the factory, never an engine.
    "hubbub.server": Rule(
        ours=(
            "hubbub.server",
            "hubbub.protocol",
            "hubbub.log",
            "hubbub.cluster.broker",
            "hubbub.cluster.exceptions",
            "hubbub.cluster.factory",
        ),
        third_party=frozenset(
            {"websockets", "uvloop", "prometheus_client", "h11", "jwt", "msgpack"}
        ),
    ),
    "hubbub.client": Rule(
        ours=("hubbub.client", "hubbub.protocol"), third_party=frozenset({"websockets", "msgpack"})
    ),
    "hubbub.loadtest": Rule(
        ours=("hubbub.loadtest", "hubbub.client", "hubbub.protocol"), third_party=ANY
    ),
    "benchmarks": Rule(
        ours=("benchmarks", "hubbub.client", "hubbub.loadtest", "hubbub.protocol"), third_party=ANY
    ),
}


def rule_for(module: str) -> Rule:
    """The rule of the longest package prefix of ``module`` that has one."""
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        rule = RULES.get(".".join(parts[:n]))
        if rule is not None:
            return rule
    raise KeyError(module)


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
    rule = rule_for(module)
    tree = ast.parse(source, filename=path)
    return [
        Violation(path, line, imported, why)
        for line, imported in imported_modules(tree, module, is_package=is_package, root=root)
        if (why := why_forbidden(imported, rule)) is not None
    ]


def check_package(package: str, root: Path = ROOT) -> list[Violation]:
    """Check every file of ``package`` (dotted), each against its own sub-package's rule."""
    violations: list[Violation] = []
    folder = root.joinpath(*package.split("."))
    files = folder.glob("*.py") if package == "hubbub" else folder.rglob("*.py")
    for file in sorted(files):
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
        (
            "hubbub.protocol.frames",
            "import asyncio\n",
            "hubbub/protocol/frames.py:1: imports asyncio",
        ),
        (
            "hubbub.protocol.frames",
            "x = 1\nimport socket\n",
            "hubbub/protocol/frames.py:2: imports socket",
        ),
        (
            "hubbub.protocol.codec",
            "from websockets.frames import Frame\n",
            "imports websockets.frames",
        ),
        (
            "hubbub.protocol.codec",
            "def f():\n    import redis\n",
            "hubbub/protocol/codec.py:2: imports redis",
        ),
        ("hubbub.protocol.codec", "import uvloop\n", "imports uvloop"),
        ("hubbub.protocol.codec", "import selectors\n", "imports selectors"),
        ("hubbub.protocol.codec", "from hubbub.server import config\n", "imports hubbub.server"),
        ("hubbub.protocol.codec", "from ..server import hub\n", "imports hubbub.server"),
        ("hubbub.cluster.redis", "import websockets\n", "imports websockets"),
        (
            "hubbub.cluster.redis",
            "from hubbub.server.hub import Hub\n",
            "imports hubbub.server.hub",
        ),
        ("hubbub.cluster.memory", "import hubbub.client\n", "imports hubbub.client"),
        (
            "hubbub.server.node",
            "from hubbub.cluster.memory import MemoryBroker\n",
            "imports hubbub.cluster.memory",
        ),
        ("hubbub.server.node", "import hubbub.cluster.redis\n", "imports hubbub.cluster.redis"),
        ("hubbub.server.node", "from ..cluster.memory import X\n", "imports hubbub.cluster.memory"),
        ("hubbub.server.node", "from hubbub.client import Client\n", "imports hubbub.client"),
        ("hubbub.server.node", "import hubbub.loadtest.users\n", "imports hubbub.loadtest.users"),
        ("hubbub.server.node", "import numpy\n", "imports numpy"),
        (
            "hubbub.server.node",
            "import importlib\nimportlib.import_module('hubbub.cluster.memory')\n",
            "hubbub/server/node.py:2: imports hubbub.cluster.memory",
        ),
        (
            "hubbub.client.tcp",
            "from hubbub.server.wire import Encoded\n",
            "imports hubbub.server.wire",
        ),
        (
            "hubbub.client.tcp",
            "from hubbub.cluster.broker import Broker\n",
            "imports hubbub.cluster.broker",
        ),
        ("hubbub.client.tcp", "import redis\n", "imports redis"),
        (
            "hubbub.loadtest.running.runner",
            "from hubbub.server import cli\n",
            "imports hubbub.server",
        ),
        (
            "hubbub.loadtest.running.runner",
            "from hubbub.cluster.broker import Broker\n",
            "imports hubbub.cluster.broker",
        ),
        ("benchmarks.fanout", "import hubbub.server.hub\n", "imports hubbub.server.hub"),
        ("benchmarks.fanout", "from hubbub.cluster import factory\n", "imports hubbub.cluster"),
        (
            "hubbub.protocol",
            "from .. import server\n",
            "hubbub/protocol/__init__.py:1: imports hubbub.server",
        ),
    ],
    ids=_case_id,
)
def test_checker_reports_forbidden_import(module: str, source: str, expected: str) -> None:
    is_package = module in RULES
    reports = _report(source, module, is_package=is_package)
    assert any(expected in r for r in reports), reports


@pytest.mark.parametrize(
    ("module", "source"),
    [
        (
            "hubbub.protocol.codec",
            "from __future__ import annotations\nimport json, struct\n"
            "import msgpack\nfrom hubbub.protocol.exceptions import ProtocolViolation\n"
            "from . import codes\n"
            "from .codes import ErrorCode\n",
        ),
        (
            "hubbub.cluster.memory",
            "import asyncio\nfrom hubbub.protocol.messages import StreamPosition\n"
            "from hubbub.cluster.broker import Broker\nfrom .broker import Broker\n",
        ),
        ("hubbub.cluster.redis", "import redis.asyncio as aioredis\n"),
        (
            "hubbub.server.node",
            "import asyncio, uvloop, websockets, h11, jwt, msgpack\n"
            "from websockets.server import ServerProtocol\nimport prometheus_client\n"
            "from hubbub.cluster.broker import Broker\n"
            "from hubbub.cluster.factory import make_broker\n"
            "from hubbub.cluster import broker, factory\nfrom . import hub\nfrom .hub import Hub\n",
        ),
        (
            "hubbub.client.tcp",
            "import asyncio, websockets, msgpack\nfrom hubbub.protocol import codec\n",
        ),
        (
            "hubbub.loadtest.running.runner",
            "import numpy\nfrom hubbub.client import Client\nimport hubbub.protocol.codec\n",
        ),
        ("benchmarks.fanout", "import asyncio\nfrom hubbub.client import Client\n"),
    ],
    ids=_case_id,
)
def test_checker_accepts_allowed_imports(module: str, source: str) -> None:
    assert _report(source, module) == []


def test_checker_finds_imports_in_real_files(tmp_path: Path) -> None:
    """check_package walks the folder and names file and line."""
    pkg = tmp_path / "hubbub" / "protocol"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from .. import frames\n")
    (pkg / "frames.py").write_text("import struct\n\n\nimport asyncio  # no!\n")
    (pkg / "sub" / "deep.py").write_text("from ...server import hub\n")
    reports = sorted(map(str, check_package("hubbub.protocol", root=tmp_path)))
    assert len(reports) == 2, reports
    assert reports[0].startswith("hubbub/protocol/frames.py:4: imports asyncio")
    assert reports[1].startswith("hubbub/protocol/sub/deep.py:1: imports hubbub.server")
