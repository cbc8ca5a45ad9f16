"""The ``hubbub`` command line (PROTOCOL.md §7).

``hubbub serve`` runs one node on uvloop; ``hubbub --version`` prints the
version. Bad flags print usage and exit 2; a bad config or a busy port prints
one line and exits 1; a drained node exits 0. SIGTERM/SIGINT drain (a second
one closes at once); SIGHUP re-reads the config file and applies what can
change live (server.reload, docs/limits.md).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import resource
import secrets
import signal
import sys
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING

from hubbub import log
from hubbub.server.config import Config, from_env, load
from hubbub.server.exceptions import ConfigError

if TYPE_CHECKING:
    from hubbub.server.node import Node


def _version() -> str:
    try:
        return version("hubbub")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0+unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hubbub", description="hubbub real-time messaging server")
    parser.add_argument("--version", action="version", version=f"hubbub {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = sub.add_parser("serve", help="run one node")
    serve.add_argument("--config", metavar="FILE", help="TOML config file (env HUBBUB_CONFIG)")
    serve.add_argument("--tcp", metavar="HOST:PORT", help="TCP listener [0.0.0.0:7400]")
    serve.add_argument("--ws", metavar="HOST:PORT", help="WebSocket listener [0.0.0.0:7401]")
    serve.add_argument("--admin", metavar="HOST:PORT", help="admin HTTP listener [127.0.0.1:7402]")
    serve.add_argument(
        "--redis",
        metavar="URL",
        action="append",
        help="Redis URL, repeat for shards [none: in-memory broker, single node]",
    )
    serve.add_argument("--node-id", metavar="ID", help="node id [random]")
    serve.add_argument(
        "--log-level", choices=("debug", "info", "warning", "error"), help="log level [info]"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    flags = {
        "tcp": args.tcp,
        "ws": args.ws,
        "admin": args.admin,
        "redis": args.redis,
        "node_id": args.node_id,
        "log_level": args.log_level,
    }
    try:
        config = load(args.config, os.environ, flags)
    except ConfigError as exc:
        print(f"hubbub: config error: {exc}", file=sys.stderr)
        return 1
    log.setup(config.server.log_level)
    ignored = from_env(os.environ)[1]
    if ignored:  # e.g. Kubernetes service links of a Service named "hubbub"
        log.warning("environment_ignored", variables=",".join(ignored))
    try:
        import uvloop

        return uvloop.run(serve(config, lambda: load(args.config, os.environ, flags)))
    except KeyboardInterrupt:  # pragma: no cover - signal handlers catch SIGINT
        return 0


class _Signals:
    """SIGTERM/SIGINT drain the node (a second one closes at once); SIGHUP applies
    ``reread()`` with :meth:`Node.reload`. Signals that come before the node is up
    (it logs ``listening`` from inside ``start``, and a supervisor may signal at
    once) are acted on as soon as it is (:meth:`started`)."""

    def __init__(self, node: Node, reread: Callable[[], Config] | None) -> None:
        self.node = node
        self.reread = reread
        self.stops = 0
        self.early: list[str] | None = []

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.on_stop, sig.name)
        loop.add_signal_handler(signal.SIGHUP, self.on_reload)

    def started(self) -> None:
        """The node is up: act on the signals that came before."""
        pending, self.early = self.early or [], None
        for signame in pending:
            if signame == "SIGHUP":
                self.on_reload()
            else:
                self.on_stop(signame)

    def on_stop(self, signame: str) -> None:
        if self.early is not None:
            self.early.append(signame)
            return
        self.stops += 1
        node = self.node
        if self.stops == 1:
            log.info("signal", signal=signame, action="drain")
            node.spawn_root(node.drain())
        else:
            log.info("signal", signal=signame, action="close now")
            node.spawn_root(node.stop())

    def on_reload(self) -> None:
        if self.early is not None:
            self.early.append("SIGHUP")
            return
        if self.reread is None or self.node.draining:
            return
        log.info("signal", signal="SIGHUP", action="reload")
        try:
            fresh = self.reread()
        except ConfigError as exc:
            log.error("reload_failed", error=str(exc))  # keep running as configured
            return
        self.node.reload(fresh)


def raise_fd_limit() -> dict[str, int]:
    """Raise the soft limit of open files to the hard one (each client is a
    file descriptor); returns ``soft``, ``hard`` and what the soft one ``was``,
    which :func:`serve` logs once the node listens. The node keeps a reserve
    of descriptors and refuses clients past it (docs/limits.md)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    was = soft
    target = hard
    if hard == resource.RLIM_INFINITY:
        try:  # the kernel's ceiling for one process
            with open("/proc/sys/fs/nr_open") as fh:
                target = int(fh.read())
        except (OSError, ValueError):
            target = 1 << 20
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass  # the line serve logs shows it was not raised
    return {"soft": soft, "hard": hard, "was": was}


async def serve(config: Config, reread: Callable[[], Config] | None = None) -> int:
    """Run a node until it has drained after a signal; SIGHUP applies
    ``reread()`` (the config file again) with :meth:`Node.reload`."""
    from hubbub.cluster.factory import make_broker
    from hubbub.server.node import Node

    if not config.server.node_id:  # one random id, shared by the node and its broker
        server = dataclasses.replace(config.server, node_id=secrets.token_hex(4))
        config = dataclasses.replace(config, server=server)
    b = config.broker
    broker = make_broker(
        b.redis,
        node_id=config.server.node_id,
        probe_interval=b.probe_interval,
        probe_timeout=b.probe_timeout,
    )
    fds = raise_fd_limit()
    node = Node(config, broker)
    signals = _Signals(node, reread)
    signals.install(asyncio.get_running_loop())
    try:
        await node.start()
    except OSError as exc:
        log.error("cannot_listen", error=exc.strerror or str(exc))
        return 1
    except ConfigError as exc:
        log.error("config_error", error=str(exc))
        return 1
    log.info("fd_limit", **fds)
    signals.started()
    await node.wait_stopped()
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
