"""server.config: defaults of PROTOCOL.md §8, source precedence, refusals."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from hubbub.server.config import (
    Config,
    ConfigError,
    NamespaceConfig,
    from_env,
    from_mapping,
    load,
)
from tests.procs import ROOT

#: Every key of PROTOCOL.md §8 with its documented default.
SPEC_DEFAULTS: dict[str, dict[str, object]] = {
    "server": {
        "tcp": "0.0.0.0:7400",
        "ws": "0.0.0.0:7401",
        "admin": "127.0.0.1:7402",
        "node_id": "",
    },
    "broker": {"redis": ()},
    "limits": {
        "max_frame": 65536,
        "messages_per_second": 100,
        "message_burst": 200,
        "max_subscriptions": 1000,
        "max_connections": 0,
        "max_connections_per_ip": 0,
        "outbound_buffer": 1048576,
        "slow_consumer": "disconnect",
        "handshake_timeout": 5.0,
        "ping_interval": 25.0,
        "ping_timeout": 10.0,
        "drain_timeout": 30.0,
    },
    "auth": {"anonymous": True, "hmac_secret": "", "api_key": "", "allowed_origins": ()},
}
NAMESPACE_DEFAULTS: dict[str, object] = {
    "history_size": 0,
    "history_ttl": 300,
    "presence": False,
    "join_leave": False,
    "client_publish": True,
    "anonymous": True,
}


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "hubbub.toml"
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("config", [Config(), load(None, {}, {})], ids=["dataclass", "load"])
def test_defaults_match_the_protocol(config: Config) -> None:
    for section, keys in SPEC_DEFAULTS.items():
        table = getattr(config, section)
        for key, value in keys.items():
            assert getattr(table, key) == value, f"[{section}] {key}"
    ns = config.namespace("chat")
    for key, value in NAMESPACE_DEFAULTS.items():
        assert getattr(ns, key) == value, f"[namespaces.chat] {key}"


def test_types_of_defaults() -> None:
    lim = Config().limits
    assert type(lim.max_frame) is int and type(lim.handshake_timeout) is float


def test_toml_then_environment_then_flags(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[server]
tcp = "127.0.0.1:1001"
ws = "127.0.0.1:1002"
admin = "127.0.0.1:1003"
[limits]
max_frame = 1000
ping_interval = 3
[broker]
redis = ["redis://file:6379/0"]
""",
    )
    env = {
        "HUBBUB_WS": "127.0.0.1:2002",
        "HUBBUB_TCP": "127.0.0.1:2001",
        "HUBBUB_LIMITS_MAX_FRAME": "2000",
        "HUBBUB_AUTH_ANONYMOUS": "false",
        "HUBBUB_REDIS": "redis://env-a:6379/0, redis://env-b:6379/0",
        "PATH": "/usr/bin",  # not ours: ignored
    }
    config = load(path, env, {"tcp": "127.0.0.1:3001", "node_id": None})
    assert config.server.tcp == "127.0.0.1:3001"  # flag over env over file
    assert config.server.ws == "127.0.0.1:2002"  # env over file
    assert config.server.admin == "127.0.0.1:1003"  # file over default
    assert config.limits.max_frame == 2000
    assert config.limits.ping_interval == 3.0 and type(config.limits.ping_interval) is float
    assert config.limits.ping_timeout == 10.0  # default kept
    assert config.auth.anonymous is False
    assert config.broker.redis == ("redis://env-a:6379/0", "redis://env-b:6379/0")
    flagged = load(path, env, {"redis": ["redis://flag:1/0"]})
    assert flagged.broker.redis == ("redis://flag:1/0",)


def test_sentinel_and_cluster_urls_are_one_url_each(tmp_path: Path) -> None:
    """Their host lists have commas: in the environment only a comma before the
    next URL's scheme separates two URLs (docs/clustering.md)."""
    sentinel = "redis+sentinel://10.0.0.1:26379,10.0.0.2:26379/main/2"
    env = {"HUBBUB_REDIS": f"{sentinel}, redis://shard-b:6379/0"}
    assert load(None, env, {}).broker.redis == (sentinel, "redis://shard-b:6379/0")
    cluster = "redis+cluster://10.0.0.1:7000,10.0.0.2:7000"
    assert load(None, {"HUBBUB_REDIS": cluster}, {}).broker.redis == (cluster,)
    for bad in (f"{cluster},redis://other:6379/0", "redis+sentinel://h:1", "redis+cluster://h"):
        with pytest.raises(ConfigError, match=r"\[broker\] redis"):
            load(None, {"HUBBUB_REDIS": bad}, {})


def test_config_path_from_environment(tmp_path: Path) -> None:
    path = write(tmp_path, "[limits]\nmax_subscriptions = 7\n")
    assert load(None, {"HUBBUB_CONFIG": path}).limits.max_subscriptions == 7


def test_repeated_tables_merge_over_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, "[namespaces.chat]\npresence = true\n")
    ns = load(path).namespace("chat")
    assert ns.presence is True and ns.history_ttl == 300.0


def test_shipped_config_loads() -> None:
    config = load(str(ROOT / "configs" / "hubbub.toml"), {})
    chat = config.namespace("chat")
    assert chat.history_size == 100 and chat.presence and chat.join_leave
    assert config.namespace("other") == config.namespace("default")
    assert config.limits.max_frame == 65536
    assert config.server.demo is True  # `make run` shows the demo; the built-in default is off
    assert load(None, {}).server.demo is False


@pytest.mark.parametrize(
    ("toml", "names"),
    [
        ("[limits]\nmax_frames = 1\n", "max_frames"),
        ("[server]\nport = 1\n", "port"),
        ("[limitz]\nmax_frame = 1\n", "limitz"),
        ("[namespaces.chat]\nhistroy_size = 1\n", "histroy_size"),
        ("limits = 3\n", "limits"),
        ("[namespaces]\nchat = 1\n", "chat"),
    ],
    ids=["key", "server-key", "section", "namespace-key", "section-not-table", "ns-not-table"],
)
def test_unknown_keys_are_refused_naming_key_and_file(
    tmp_path: Path, toml: str, names: str
) -> None:
    path = write(tmp_path, toml)
    with pytest.raises(ConfigError) as info:
        load(path, {})
    assert names in str(info.value) and path in str(info.value)


@pytest.mark.parametrize(
    ("toml", "names"),
    [
        ('[limits]\nmax_frame = "big"\n', "max_frame"),
        ("[limits]\nmax_frame = 1.5\n", "max_frame"),
        ("[limits]\nmax_frame = true\n", "max_frame"),
        ('[limits]\nping_interval = "soon"\n', "ping_interval"),
        ('[auth]\nanonymous = "yes"\n', "anonymous"),
        ("[auth]\napi_key = 5\n", "api_key"),
        ('[broker]\nredis = "redis://x:1/0"\n', "redis"),
        ("[broker]\nredis = [1]\n", "redis"),
        ('[namespaces.chat]\npresence = "on"\n', "presence"),
        ("[namespaces.chat]\nhistory_size = 1.0\n", "history_size"),
    ],
)
def test_bad_types_are_refused_naming_key_and_file(tmp_path: Path, toml: str, names: str) -> None:
    path = write(tmp_path, toml)
    with pytest.raises(ConfigError) as info:
        load(path, {})
    assert names in str(info.value) and path in str(info.value)


@pytest.mark.parametrize(
    ("toml", "names"),
    [
        ('[limits]\nslow_consumer = "explode"\n', "slow_consumer"),
        ("[limits]\nmax_frame = 0\n", "max_frame"),
        ("[limits]\nping_interval = 0\n", "ping_interval"),
        ("[limits]\nhandshake_timeout = -1\n", "handshake_timeout"),
        ("[limits]\nmax_connections = -1\n", "max_connections"),
        ('[server]\ntcp = "nowhere"\n', "tcp"),
        ('[server]\nws = "host:99999"\n', "ws"),
        ('[server]\nlog_level = "loud"\n', "log_level"),
        ('[broker]\nredis = ["http://x"]\n', "redis"),
        ("[namespaces.chat]\nhistory_size = -1\n", "history_size"),
        ("[limits]\nwrite_delay = -0.01\n", "write_delay"),
        ("[limits]\nwrite_delay = 2.0\n", "write_delay"),
        ("[namespaces.feed]\nwrite_delay = -0.5\n", "write_delay"),
        ("[broker]\nprobe_interval = -1\n", "probe_interval"),
        ("[broker]\nprobe_interval = 301\n", "probe_interval"),
        ("[broker]\nprobe_timeout = 0\n", "probe_timeout"),
        ("[broker]\nprobe_timeout = inf\n", "probe_timeout"),
        ("[broker]\nprobe_interval = 2.0\nprobe_timeout = 2.0\n", "probe_timeout"),
    ],
)
def test_bad_values_are_refused_naming_key_and_file(tmp_path: Path, toml: str, names: str) -> None:
    path = write(tmp_path, toml)
    with pytest.raises(ConfigError) as info:
        load(path, {})
    assert names in str(info.value) and path in str(info.value)


def test_probe_settings(tmp_path: Path) -> None:
    broker = Config().broker
    assert (broker.probe_interval, broker.probe_timeout) == (1.0, 3.0)
    off = load(write(tmp_path, "[broker]\nprobe_interval = 0\nprobe_timeout = 0.5\n"), {})
    assert (off.broker.probe_interval, off.broker.probe_timeout) == (0.0, 0.5)
    env = {"HUBBUB_BROKER_PROBE_INTERVAL": "0.2", "HUBBUB_BROKER_PROBE_TIMEOUT": "0.6"}
    fast = load(None, env).broker
    assert (fast.probe_interval, fast.probe_timeout) == (0.2, 0.6)


def test_bad_toml_and_missing_file_name_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[limits\n")
    with pytest.raises(ConfigError, match="TOML") as info:
        load(path, {})
    assert path in str(info.value)
    missing = str(tmp_path / "absent.toml")
    with pytest.raises(ConfigError) as info:
        load(missing, {})
    assert missing in str(info.value)


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"HUBBUB_LIMITS_NOPE": "1"}, "HUBBUB_LIMITS_NOPE"),
        ({"HUBBUB_NOPE": "1"}, "HUBBUB_NOPE"),
        ({"HUBBUB_LIMITS_MAX_FRAME": "big"}, "max_frame"),
        ({"HUBBUB_AUTH_ANONYMOUS": "maybe"}, "anonymous"),
        ({"HUBBUB_LIMITS_PING_TIMEOUT": "soon"}, "ping_timeout"),
    ],
)
def test_bad_environment_is_refused_naming_the_variable(env: dict[str, str], names: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(None, env)
    assert names in str(info.value) and "environment" in str(info.value)


def test_bad_flag_value_is_refused() -> None:
    with pytest.raises(ConfigError, match="tcp"):
        load(None, {}, {"tcp": "no-port"})


def test_namespace_fallback() -> None:
    bare = Config()
    assert bare.namespace("anything") == NamespaceConfig()
    config = from_mapping(
        {"namespaces": {"default": {"presence": True}, "chat": {"history_size": 5}}}, "test"
    )
    assert config.namespace("chat").history_size == 5
    assert config.namespace("chat").presence is False  # its own table, not default's
    assert config.namespace("default").presence is True
    assert config.namespace("unlisted").presence is True  # falls back to default's table
    assert config.namespace("unlisted") is config.namespace("default")


def test_config_is_frozen() -> None:
    config = Config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.limits.max_frame = 1  # type: ignore[misc]
    with pytest.raises(TypeError):
        config.namespaces["x"] = NamespaceConfig()  # type: ignore[index]


#: What the kubelet injects into every pod of a namespace with a Service named
#: "hubbub" (ports 7400, 7401) and one named "hubbub-redis", plus a Docker link.
SERVICE_LINKS = {
    "HUBBUB_PORT": "tcp://10.96.0.12:7400",
    "HUBBUB_SERVICE_HOST": "10.96.0.12",
    "HUBBUB_SERVICE_PORT": "7400",
    "HUBBUB_SERVICE_PORT_WS": "7401",
    "HUBBUB_PORT_7400_TCP": "tcp://10.96.0.12:7400",
    "HUBBUB_PORT_7400_TCP_ADDR": "10.96.0.12",
    "HUBBUB_PORT_7400_TCP_PORT": "7400",
    "HUBBUB_PORT_7400_TCP_PROTO": "tcp",
    "HUBBUB_REDIS_PORT": "tcp://10.96.0.13:6379",
    "HUBBUB_REDIS_SERVICE_HOST": "10.96.0.13",
    "HUBBUB_SERVER_PORT_7400_TCP_ADDR": "10.96.0.14",
    "HUBBUB_ENV_FOO": "bar",
}


def test_service_links_are_ignored_and_listed() -> None:
    env = {**SERVICE_LINKS, "HUBBUB_LIMITS_MAX_FRAME": "4096", "HUBBUB_WS": "127.0.0.1:1"}
    config = load(None, env)
    assert config.limits.max_frame == 4096 and config.server.ws == "127.0.0.1:1"
    values, ignored = from_env(env)
    assert ignored == sorted(SERVICE_LINKS)
    assert values == {"limits": {"max_frame": "4096"}, "server": {"ws": "127.0.0.1:1"}}


@pytest.mark.parametrize(
    "name", ["HUBBUB_LIMITS_MAX_FRAMES", "HUBBUB_SERVER_TRUSTED_PROXY", "HUBBUB_NODEID"]
)
def test_typos_next_to_service_links_are_still_refused(name: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(None, {**SERVICE_LINKS, name: "1"})
    assert name in str(info.value) and "environment" in str(info.value)


def test_trusted_proxies() -> None:
    env = {"HUBBUB_SERVER_TRUSTED_PROXIES": "127.0.0.1, 10.0.0.0/8,::1"}
    config = load(None, {**env, "HUBBUB_SERVER_PROXY_PROTOCOL": "true"})
    assert config.server.trusted_proxies == ("127.0.0.1", "10.0.0.0/8", "::1")
    assert config.server.proxy_protocol is True
    assert load(None, {}).server.trusted_proxies == ()
    with pytest.raises(ConfigError, match=r"trusted_proxies.*nginx"):
        load(None, {"HUBBUB_SERVER_TRUSTED_PROXIES": "nginx"})
    with pytest.raises(ConfigError, match="proxy_protocol needs trusted_proxies"):
        load(None, {"HUBBUB_SERVER_PROXY_PROTOCOL": "true"})
    with pytest.raises(ConfigError, match="terminate TLS at the proxy"):
        load(
            None,
            {
                **env,
                "HUBBUB_SERVER_PROXY_PROTOCOL": "1",
                "HUBBUB_SERVER_TLS_CERT": "c",
                "HUBBUB_SERVER_TLS_KEY": "k",
            },
        )


def test_write_delay_of_a_namespace_falls_back_to_limits(tmp_path: Path) -> None:
    from hubbub.server.settings import Settings

    path = write(
        tmp_path,
        "[limits]\nwrite_delay = 0.01\n[namespaces.feed]\nwrite_delay = 0.05\n"
        "[namespaces.chat]\nwrite_delay = 0\n",
    )
    settings = Settings(load(path, {}))
    assert settings.write_delay("feed:prices") == 0.05
    assert settings.write_delay("chat:lobby") == 0
    assert settings.write_delay("lobby") == 0.01  # default namespace
    assert settings.write_delay("other:x") == 0.01  # no table of its own
