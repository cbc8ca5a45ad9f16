"""What a SIGHUP changes live and what needs a restart (server.reload)."""

from __future__ import annotations

from typing import Any

from hubbub.server.config import Config, from_mapping
from hubbub.server.reload import plan
from hubbub.server.settings import Settings

BASE: dict[str, dict[str, Any]] = {
    "server": {"tcp": "127.0.0.1:7400", "tls_cert": "a.pem", "tls_key": "a.key"},
    "limits": {"messages_per_second": 100.0},
    "auth": {"hmac_secret": "old"},
    "namespaces": {"chat": {"history_size": 10, "client_publish": True}},
}


def _config(**changes: dict[str, Any]) -> Config:
    data: dict[str, dict[str, Any]] = {k: dict(v) for k, v in BASE.items()}
    for section, table in changes.items():
        data[section] = {**data.get(section, {}), **table}
    return from_mapping(data, "test")


def test_nothing_changed() -> None:
    old = _config()
    result = plan(old, _config())
    assert result.changed == () and result.needs_restart == ()
    assert result.config == old


def test_limits_auth_and_log_level_change_live() -> None:
    old, new = (
        _config(),
        _config(
            limits={"messages_per_second": 5.0, "max_connections": 10},
            auth={"hmac_secret": "new", "anonymous": False},
            server={"log_level": "debug"},
        ),
    )
    result = plan(old, new)
    assert set(result.changed) == {
        "limits.messages_per_second",
        "limits.max_connections",
        "auth.hmac_secret",
        "auth.anonymous",
        "server.log_level",
    }
    assert result.needs_restart == ()
    assert result.config == new


def test_listeners_broker_and_node_id_need_a_restart() -> None:
    old = _config()
    new = _config(
        server={"tcp": "127.0.0.1:9999", "node_id": "n2"},
        broker={"redis": ["redis://127.0.0.1:6379/0"], "probe_interval": 0.5},
        limits={"message_burst": 7},
    )
    result = plan(old, new)
    assert set(result.needs_restart) == {
        "server.tcp",
        "server.node_id",
        "broker.redis",
        "broker.probe_interval",
    }
    assert result.changed == ("limits.message_burst",)
    assert result.config.server == old.server
    assert result.config.broker == old.broker
    assert result.config.limits.message_burst == 7


def test_tls_files_rotate_live_but_tls_cannot_be_turned_off() -> None:
    old = _config()
    rotated = plan(old, _config(server={"tls_cert": "b.pem", "tls_key": "b.key"}))
    assert set(rotated.changed) == {"server.tls_cert", "server.tls_key"}
    assert rotated.config.server.tls_cert == "b.pem"
    off = plan(old, _config(server={"tls_cert": "", "tls_key": ""}))
    assert set(off.needs_restart) == {"server.tls_cert", "server.tls_key"}
    assert off.config.server.tls_cert == "a.pem"


def test_namespace_access_and_limit_keys_change_live() -> None:
    old = _config()
    new = _config(
        namespaces={
            "chat": {"history_size": 10, "client_publish": False, "publish_rate": 5.0},
            "news": {"max_publication": 100},
        }
    )
    result = plan(old, new)
    assert set(result.changed) == {
        "namespaces.chat.client_publish",
        "namespaces.chat.publish_rate",
        "namespaces.news.max_publication",
    }
    assert result.config.namespace("chat").client_publish is False
    assert result.config.namespace("news").max_publication == 100


def test_a_storage_key_change_keeps_all_namespaces_as_they_were() -> None:
    old = _config()
    new = _config(namespaces={"chat": {"history_size": 50, "client_publish": False}})
    result = plan(old, new)
    assert set(result.needs_restart) == {
        "namespaces.chat.history_size",
        "namespaces.chat.client_publish",
    }
    assert result.config.namespaces == old.namespaces


def test_a_new_namespace_with_storage_needs_a_restart() -> None:
    old = _config()
    new = _config(namespaces={"feed": {"presence": True}})
    result = plan(old, new)
    assert result.needs_restart == ("namespaces.feed.presence",)
    assert result.config.namespace("feed").presence is False


def test_trusted_proxies_change_live_proxy_protocol_needs_a_restart() -> None:
    old = _config()
    new = _config(server={"trusted_proxies": ["10.0.0.0/8"], "proxy_protocol": True})
    result = plan(old, new)
    assert result.changed == ("server.trusted_proxies",)
    assert result.needs_restart == ("server.proxy_protocol",)
    settings = Settings(old)
    assert not settings.trusted.trusts("10.1.2.3")
    settings.update(result.config)
    assert settings.trusted.trusts("10.1.2.3")
    assert settings.config.server.proxy_protocol is False
