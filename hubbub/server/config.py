"""The node's configuration: one frozen dataclass tree (PROTOCOL.md §8).

Sources, later ones winning: built-in defaults < TOML file (``--config``) <
environment (``HUBBUB_<NAME>`` for the CLI flags, ``HUBBUB_<SECTION>_<KEY>`` for
any scalar key) < command-line flags. An unknown key or a bad value is refused
at start with a :class:`ConfigError` naming the key and where it came from.

In the environment, only names meant for hubbub are refused when unknown: a key of
a known section (``HUBBUB_LIMITS_MAX_FRAMES``) or a one-word name (a mistyped flag,
``HUBBUB_NODEID``). Other ``HUBBUB_*`` names are someone else's and are ignored
(:func:`from_env` lists them for one warning line): Kubernetes service links of a
Service named ``hubbub`` (``HUBBUB_PORT``, ``HUBBUB_SERVICE_HOST``,
``HUBBUB_PORT_7400_TCP_ADDR``) or ``hubbub-redis`` (``HUBBUB_REDIS_PORT``), Docker
links (``HUBBUB_ENV_*``), and the like.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from hubbub.cluster.factory import check_redis_urls
from hubbub.protocol.channels import DEFAULT_NAMESPACE
from hubbub.server.exceptions import ConfigError


@dataclass(frozen=True)
class ServerConfig:
    tcp: str = "0.0.0.0:7400"
    """Raw TCP listener, HOST:PORT (port 0: any free port; "": no listener)."""
    ws: str = "0.0.0.0:7401"
    """WebSocket listener, HOST:PORT; clients connect to path /ws."""
    admin: str = "127.0.0.1:7402"
    """Admin HTTP listener: /healthz, /readyz, /metrics, /api/*."""
    node_id: str = ""
    """This node's id in replies and the cluster; "" picks a random one."""
    log_level: str = "info"
    """Log level: debug, info, warning or error."""
    tls_cert: str = ""
    """PEM certificate chain: TCP and WebSocket serve over TLS (wss://); "" = plain."""
    tls_key: str = ""
    """PEM private key of tls_cert; required with it."""
    trusted_proxies: tuple[str, ...] = ()
    """Addresses/CIDRs of proxies whose word on the client address is believed:
    X-Forwarded-For / X-Real-IP on WebSocket, the PROXY protocol on TCP."""
    proxy_protocol: bool = False
    """TCP connections from trusted_proxies start with a PROXY protocol v1/v2 header."""
    demo: bool = False
    """Serve the demo chat at / of the WebSocket listener (hubbub.js is always served)."""
    ws_echo_path: str = ""
    """A testing aid: a WebSocket path that echoes every message back (RFC 6455
    conformance runs, docs/conformance.md); "" = off."""


@dataclass(frozen=True)
class BrokerConfig:
    redis: tuple[str, ...] = ()
    """Redis URLs; several shard channels; none = the in-memory broker (one node)."""
    probe_interval: float = 1.0
    """Seconds between delivery probes through each shard's pub/sub connection; 0 = off."""
    probe_timeout: float = 3.0
    """Seconds a probe may take to come back before its pub/sub connection is
    dropped and reopened (subscribers get lag) and /readyz says 503."""


#: Longest ``write_delay``: holding output longer only adds latency.
MAX_WRITE_DELAY = 1.0


@dataclass(frozen=True)
class LimitsConfig:
    max_frame: int = 65536
    """Largest TCP frame or WebSocket message a client may send, in bytes."""
    messages_per_second: float = 100.0
    """Token-bucket rate of commands per connection."""
    message_burst: int = 200
    """Token-bucket size: commands a connection may send at once."""
    max_subscriptions: int = 1000
    """Channels one connection may subscribe to."""
    max_connections: int = 0
    """Connections per node; 0 = no limit."""
    max_connections_per_ip: int = 0
    """Connections per client IP address; 0 = no limit."""
    max_connects_per_ip_per_second: float = 0.0
    """New connections per second from one client IP address (3007 past it); 0 = no limit."""
    max_client_name: int = 128
    """Bytes of connect's client name and of its version, each (400 past it)."""
    outbound_buffer: int = 1048576
    """Bytes pending for one client before the slow-consumer policy applies."""
    slow_consumer: str = "disconnect"
    """Slow-consumer policy: "disconnect" (3002) or "drop" (skip, then a lag push)."""
    handshake_timeout: float = 5.0
    """Seconds a new connection has to send connect."""
    ping_interval: float = 25.0
    """Seconds between server ping pushes."""
    ping_timeout: float = 10.0
    """Seconds a client has to answer a ping before it is disconnected (3003)."""
    drain_timeout: float = 30.0
    """Seconds a draining node gives its clients to move before closing the rest."""
    write_delay: float = 0.0
    """Seconds a client's publications may be held so several share one send(); 0 = none."""
    admin_max_connections: int = 64
    """Open connections to the admin listener; one more gets HTTP 503."""
    admin_max_body: int = 1048576
    """Largest request body of the server API (HTTP 413), checked before it is read."""
    admin_request_timeout: float = 10.0
    """Seconds one admin request (headers and body) may take (HTTP 408)."""


@dataclass(frozen=True)
class AuthConfig:
    anonymous: bool = True
    """Whether clients without a token may connect."""
    hmac_secret: str = ""
    """HS256 key for connection tokens (JWT); "" = tokens are not checked."""
    api_key: str = ""
    """Bearer key of the server API; "" disables POST /api/publish."""
    allowed_origins: tuple[str, ...] = ()
    """WebSocket Origin allow-list; empty = any origin."""


@dataclass(frozen=True)
class NamespaceConfig:
    history_size: int = 0
    """Publications kept for recovery; 0 = no history."""
    history_ttl: float = 300.0
    """Seconds history is kept after the channel's last publication."""
    presence: bool = False
    """Whether the presence of subscribers is tracked."""
    join_leave: bool = False
    """Whether subscribers get join/leave pushes."""
    client_publish: bool = True
    """Whether clients may publish (else only the server API)."""
    anonymous: bool = True
    """Whether clients without a token may subscribe."""
    publish_rate: float = 0.0
    """Client publications per second per channel on this node; 0 = no limit."""
    max_publication: int = 0
    """Largest publication data (bytes of its msgpack encoding); 0 = max_frame only."""
    slow_consumer: str = ""
    """Slow-consumer policy for this namespace's channels; "" = [limits] slow_consumer."""
    write_delay: float = -1.0
    """Seconds this namespace's publications may be held; -1 = [limits] write_delay."""


@dataclass(frozen=True)
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    broker: BrokerConfig = field(default_factory=BrokerConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    namespaces: Mapping[str, NamespaceConfig] = field(
        default_factory=lambda: types.MappingProxyType({})
    )
    """Options per namespace; names without a table use "default"'s."""

    def namespace(self, name: str) -> NamespaceConfig:
        """Options of namespace ``name`` (PROTOCOL.md §4): its own table, else
        ``[namespaces.default]``, else the built-in defaults."""
        ns = self.namespaces.get(name)
        if ns is None:
            ns = self.namespaces.get(DEFAULT_NAMESPACE)
        return ns if ns is not None else _DEFAULT_NAMESPACE


_DEFAULT_NAMESPACE = NamespaceConfig()
SECTIONS: dict[str, type] = {
    "server": ServerConfig,
    "broker": BrokerConfig,
    "limits": LimitsConfig,
    "auth": AuthConfig,
}
#: CLI flags and their short environment names (PROTOCOL.md §7).
FLAG_KEYS: dict[str, tuple[str, str]] = {
    "tcp": ("server", "tcp"),
    "ws": ("server", "ws"),
    "admin": ("server", "admin"),
    "node_id": ("server", "node_id"),
    "redis": ("broker", "redis"),
    "log_level": ("server", "log_level"),
}


def _types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _convert(value: Any, hint: Any, where: str, text: bool = False) -> Any:
    """Check ``value`` against a field's type; strings from env/CLI (``text``)
    are parsed, while a TOML file must give the real type."""
    if hint is bool:
        if text and isinstance(value, str):
            low = value.strip().lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if hint is int:
        if text and isinstance(value, str):
            try:
                value = int(value.strip())
            except ValueError:
                raise ConfigError(f"{where}: expected an integer, got {value!r}") from None
        if type(value) is not int:
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if text and isinstance(value, str):
            try:
                value = float(value.strip())
            except ValueError:
                raise ConfigError(f"{where}: expected a number, got {value!r}") from None
        if type(value) not in (int, float):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    if typing.get_origin(hint) is tuple:
        if text and isinstance(value, str):
            value = [v.strip() for v in _split_list(value) if v.strip()]
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where}: expected a list of strings, got {value!r}")
        return tuple(value)
    raise AssertionError(f"unsupported config type {hint!r}")  # pragma: no cover


#: A comma that starts another URL: ``redis+sentinel://h1:1,h2:2/m`` is one URL.
_NEXT_URL = re.compile(r",(?=\s*[A-Za-z][A-Za-z0-9+.-]*://)")


def _split_list(value: str) -> list[str]:
    """A list given as text (environment, flags): comma-separated; when it holds
    URLs, only a comma before the next URL's scheme separates (a URL's host
    list has commas of its own)."""
    if "://" not in value:
        return value.split(",")
    return _NEXT_URL.split(value)


def _section(
    cls: type, table: Mapping[str, Any], where: str, base: Any = None, text: bool = False
) -> Any:
    hints = _types(cls)
    values: dict[str, Any] = {}
    for key, value in table.items():
        if key not in hints:
            raise ConfigError(f"{where}: unknown key {key!r}")
        values[key] = _convert(value, hints[key], f"{where}.{key}", text)
    if base is not None:
        return dataclasses.replace(base, **values)
    return cls(**values)


def parse_address(value: str, where: str) -> tuple[str, int] | None:
    """``HOST:PORT`` → (host, port); "" → None (listener off)."""
    if value == "":
        return None
    host, sep, port = value.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"{where}: expected HOST:PORT, got {value!r}")
    return host, int(port)


def validate(config: Config, where: str) -> Config:
    """Check values that types alone do not (ranges, choices, addresses)."""
    _validate_listeners(config.server, where)
    try:
        check_redis_urls(config.broker.redis)
    except ValueError as exc:
        raise ConfigError(f"{where}: [broker] redis: {exc}") from None
    _validate_probe(config.broker, where)
    _validate_limits(config.limits, where)
    for name, ns in config.namespaces.items():
        _validate_namespace(name, ns, where)
    _validate_proxies_and_tls(config.server, where)
    return config


def _validate_listeners(s: ServerConfig, where: str) -> None:
    for key in ("tcp", "ws", "admin"):
        parse_address(getattr(s, key), f"{where}: [server] {key}")
    if s.ws_echo_path and (not s.ws_echo_path.startswith("/") or s.ws_echo_path == "/ws"):
        raise ConfigError(f"{where}: [server] ws_echo_path must start with / and not be /ws")
    if s.log_level.lower() not in ("debug", "info", "warning", "error"):
        raise ConfigError(f"{where}: [server] log_level must be debug, info, warning or error")


#: Longest ``probe_interval`` / ``probe_timeout``: a deaf node must be found in minutes.
MAX_PROBE_SECONDS = 300.0


def _validate_probe(b: BrokerConfig, where: str) -> None:
    if not 0 <= b.probe_interval <= MAX_PROBE_SECONDS:
        raise ConfigError(
            f"{where}: [broker] probe_interval must be from 0 (off) to {MAX_PROBE_SECONDS:g}"
        )
    if not 0 < b.probe_timeout <= MAX_PROBE_SECONDS:
        raise ConfigError(
            f"{where}: [broker] probe_timeout must be > 0 and at most {MAX_PROBE_SECONDS:g}"
        )
    if b.probe_interval and b.probe_timeout <= b.probe_interval:
        raise ConfigError(
            f"{where}: [broker] probe_timeout must be longer than probe_interval "
            "(a probe is sent every probe_interval)"
        )


def _validate_limits(lim: LimitsConfig, where: str) -> None:
    if not 16 <= lim.max_frame <= 64 * 1024 * 1024:
        raise ConfigError(f"{where}: [limits] max_frame must be from 16 to 67108864")
    if lim.slow_consumer not in ("disconnect", "drop"):
        raise ConfigError(f"{where}: [limits] slow_consumer must be 'disconnect' or 'drop'")
    positive = (
        "messages_per_second",
        "message_burst",
        "outbound_buffer",
        "handshake_timeout",
        "ping_interval",
        "ping_timeout",
        "max_subscriptions",
    )
    for key in positive:
        if getattr(lim, key) <= 0:
            raise ConfigError(f"{where}: [limits] {key} must be > 0")
    for key in ("max_connections", "max_connections_per_ip", "drain_timeout"):
        if getattr(lim, key) < 0:
            raise ConfigError(f"{where}: [limits] {key} must be >= 0")
    if not 0 <= lim.write_delay <= MAX_WRITE_DELAY:
        raise ConfigError(f"{where}: [limits] write_delay must be from 0 to {MAX_WRITE_DELAY}")


def _validate_namespace(name: str, ns: NamespaceConfig, where: str) -> None:
    if ns.history_size < 0 or ns.history_ttl <= 0:
        raise ConfigError(
            f"{where}: [namespaces.{name}] history_size must be >= 0, history_ttl > 0"
        )
    if ns.publish_rate < 0 or ns.max_publication < 0:
        raise ConfigError(
            f"{where}: [namespaces.{name}] publish_rate and max_publication must be >= 0"
        )
    if ns.write_delay != -1 and not 0 <= ns.write_delay <= MAX_WRITE_DELAY:
        raise ConfigError(
            f"{where}: [namespaces.{name}] write_delay must be -1 or from 0 to {MAX_WRITE_DELAY}"
        )
    if ns.slow_consumer not in ("", "disconnect", "drop"):
        raise ConfigError(
            f"{where}: [namespaces.{name}] slow_consumer must be '', 'disconnect' or 'drop'"
        )


def _validate_proxies_and_tls(s: ServerConfig, where: str) -> None:
    for entry in s.trusted_proxies:
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            raise ConfigError(
                f"{where}: [server] trusted_proxies: not an address or CIDR: {entry!r}"
            ) from None
    if s.proxy_protocol and not s.trusted_proxies:
        raise ConfigError(f"{where}: [server] proxy_protocol needs trusted_proxies")
    if s.proxy_protocol and s.tls_cert:
        raise ConfigError(
            f"{where}: [server] proxy_protocol does not combine with tls_cert "
            "(the PROXY header precedes TLS): terminate TLS at the proxy"
        )
    if bool(s.tls_cert) != bool(s.tls_key):
        raise ConfigError(f"{where}: [server] tls_cert and tls_key go together")


def from_mapping(
    data: Mapping[str, Any], where: str, base: Config | None = None, *, text: bool = False
) -> Config:
    """Build a config from a TOML-shaped mapping, over ``base`` (defaults);
    ``text``: values are strings to parse (environment, command line)."""
    config = base or Config()
    changes: dict[str, Any] = {}
    for section, table in data.items():
        if section == "namespaces":
            if not isinstance(table, Mapping):
                raise ConfigError(f"{where}: [namespaces] must be a table of tables")
            namespaces = dict(config.namespaces)
            for name, ns_table in table.items():
                if not isinstance(ns_table, Mapping):
                    raise ConfigError(f"{where}: [namespaces.{name}] must be a table")
                try:
                    namespaces[name] = _section(
                        NamespaceConfig,
                        ns_table,
                        f"[namespaces.{name}]",
                        namespaces.get(name),
                        text,
                    )
                except ConfigError as exc:
                    raise ConfigError(f"{where}: {exc}") from None
            changes["namespaces"] = types.MappingProxyType(namespaces)
            continue
        cls = SECTIONS.get(section)
        if cls is None:
            raise ConfigError(f"{where}: unknown section [{section}]")
        if not isinstance(table, Mapping):
            raise ConfigError(f"{where}: [{section}] must be a table")
        try:
            changes[section] = _section(cls, table, f"[{section}]", getattr(config, section), text)
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
    return dataclasses.replace(config, **changes)


#: Kubernetes service-link variables (``<SVC>_SERVICE_HOST``, ``<SVC>_PORT``,
#: ``<SVC>_PORT_7400_TCP_ADDR``, ...) of any Service whose name starts with "hubbub".
_SERVICE_LINK = re.compile(
    r"HUBBUB_(?:[A-Z0-9_]+_)?(?:SERVICE_HOST|SERVICE_PORT(?:_[A-Z0-9_]+)?"
    r"|PORT(?:_\d+_(?:TCP|UDP|SCTP)(?:_(?:PROTO|PORT|ADDR))?)?)"
)


def from_env(env: Mapping[str, str]) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """The ``HUBBUB_*`` variables as a TOML-shaped mapping (strings, parsed later),
    and the sorted names ignored as not meant for hubbub (module docstring)."""
    out: dict[str, dict[str, Any]] = {}
    ignored: list[str] = []
    for name, value in env.items():
        if not name.startswith("HUBBUB_") or name == "HUBBUB_CONFIG":
            continue
        key = name[len("HUBBUB_") :].lower()
        if key in FLAG_KEYS:
            section, field_name = FLAG_KEYS[key]
        elif _SERVICE_LINK.fullmatch(name):
            ignored.append(name)
            continue
        else:
            section, sep, field_name = key.partition("_")
            if section in SECTIONS:
                if field_name not in _types(SECTIONS[section]):
                    raise ConfigError(f"environment: unknown variable {name}")
            elif not sep:
                raise ConfigError(f"environment: unknown variable {name} (not a flag)")
            else:
                ignored.append(name)
                continue
        out.setdefault(section, {})[field_name] = value
    return out, sorted(ignored)


def load(
    path: str | None = None,
    env: Mapping[str, str] | None = None,
    flags: Mapping[str, Any] | None = None,
) -> Config:
    """Defaults < TOML file < environment < flags, validated."""
    config = Config()
    env = env or {}
    path = path or env.get("HUBBUB_CONFIG") or None
    if path:
        try:
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None
        config = from_mapping(data, path, config)
    config = from_mapping(from_env(env)[0], "environment", config, text=True)
    if flags:
        table: dict[str, dict[str, Any]] = {}
        for key, value in flags.items():
            if value is None:
                continue
            section, field_name = FLAG_KEYS[key]
            table.setdefault(section, {})[field_name] = value
        config = from_mapping(table, "command line", config, text=True)
    return validate(config, path or "configuration")
