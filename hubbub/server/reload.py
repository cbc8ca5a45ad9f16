"""What SIGHUP may change while clients stay connected (docs/limits.md "Reload").

:func:`plan` compares the running configuration with the one just read and
returns what to apply: ``[limits]`` and ``[auth]`` change live, as do
``[server] log_level``, ``trusted_proxies`` and the TLS files (re-read for certificate rotation),
and the access and limit keys of ``[namespaces]``. Listeners, the broker, the
node id, turning TLS on or off, and the storage keys of a namespace (history,
presence, join/leave: existing subscriptions were made under them) need a
restart; when one of those changed it is kept as it was and reported.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from hubbub.server.config import Config, NamespaceConfig, ServerConfig

#: Namespace keys that shape what the broker stores: a restart is needed.
STORAGE_KEYS = frozenset({"history_size", "history_ttl", "presence", "join_leave"})


@dataclass(frozen=True)
class ReloadPlan:
    """The configuration to run with, and what changed, as ``section.key`` names."""

    config: Config
    changed: tuple[str, ...]
    needs_restart: tuple[str, ...]


def _diff(old: object, new: object, prefix: str) -> list[str]:
    return [
        f"{prefix}.{f.name}"
        for f in dataclasses.fields(old)  # type: ignore[arg-type]
        if getattr(old, f.name) != getattr(new, f.name)
    ]


def _server(old: ServerConfig, new: ServerConfig) -> tuple[ServerConfig, list[str], list[str]]:
    live: dict[str, Any] = {}
    changed: list[str] = []
    restart: list[str] = []
    tls_stays_on = bool(old.tls_cert) and bool(new.tls_cert)
    for key in _diff(old, new, "server"):
        name = key.split(".", 1)[1]
        tls_rotation = name in ("tls_cert", "tls_key") and tls_stays_on
        if name in ("log_level", "trusted_proxies") or tls_rotation:
            live[name] = getattr(new, name)
            changed.append(key)
        else:
            restart.append(key)
    return dataclasses.replace(old, **live), changed, restart


def _namespaces(old: Config, new: Config) -> list[str]:
    names = sorted(set(old.namespaces) | set(new.namespaces) | {"default"})
    keys: list[str] = []
    for name in names:
        before: NamespaceConfig = old.namespace(name)
        after: NamespaceConfig = new.namespace(name)
        keys += _diff(before, after, f"namespaces.{name}")
    return keys


def plan(old: Config, new: Config) -> ReloadPlan:
    """Merge ``new`` into ``old`` as far as it can change live."""
    server, changed, restart = _server(old.server, new.server)
    restart += _diff(old.broker, new.broker, "broker")
    changed += _diff(old.limits, new.limits, "limits")
    changed += _diff(old.auth, new.auth, "auth")
    ns_keys = _namespaces(old, new)
    storage = [k for k in ns_keys if k.rsplit(".", 1)[1] in STORAGE_KEYS]
    if storage:
        restart += ns_keys  # [namespaces] is kept whole: one consistent set of tables
        namespaces = old.namespaces
    else:
        changed += ns_keys
        namespaces = new.namespaces
    config = dataclasses.replace(
        old, server=server, limits=new.limits, auth=new.auth, namespaces=namespaces
    )
    return ReloadPlan(config, tuple(changed), tuple(restart))
