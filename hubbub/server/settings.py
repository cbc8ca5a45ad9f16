"""The running configuration, shared by the node's parts (one object, swapped on SIGHUP).

Every part that reads configuration while the node runs — admission, limits,
the outboxes, the commands, the transports — holds this one object rather than
a copy, so :meth:`Settings.update` (``Node.reload``) reaches all of them at once.
The per-namespace views are cached here, per configured namespace only, and
cleared on each update.
"""

from __future__ import annotations

from hubbub.cluster.broker import ChannelOptions
from hubbub.protocol.channels import DEFAULT_NAMESPACE, namespace_of
from hubbub.server.config import Config, LimitsConfig, NamespaceConfig
from hubbub.server.proxies import TrustedProxies


class Settings:
    """``config`` and ``limits`` of the running node, and its namespace views."""

    __slots__ = ("_delays", "_options", "_policies", "config", "limits", "trusted")

    def __init__(self, config: Config) -> None:
        self.config = config
        self.limits: LimitsConfig = config.limits
        #: ``[server] trusted_proxies``: whose word on the client's address counts.
        self.trusted = TrustedProxies(config.server.trusted_proxies)
        self._options: dict[str, ChannelOptions] = {}
        self._policies: dict[str, str] = {}
        self._delays: dict[str, float] = {}

    def update(self, config: Config) -> None:
        """Run with ``config`` from now on (a reload's plan, server.reload)."""
        self.config = config
        self.limits = config.limits
        self.trusted = TrustedProxies(config.server.trusted_proxies)
        self._options.clear()
        self._policies.clear()
        self._delays.clear()

    def namespace(self, channel: str) -> NamespaceConfig:
        """The options of ``channel``'s namespace (PROTOCOL.md §4)."""
        return self.config.namespace(namespace_of(channel))

    def _configured(self, channel: str) -> str:
        """The namespace whose table applies to ``channel``: its own when the
        config has one, else ``default``. The caches are keyed by it, so a
        client inventing namespaces (``n1-x:c``, ``n2-x:c``, ...) adds nothing."""
        name = namespace_of(channel)
        return name if name in self.config.namespaces else DEFAULT_NAMESPACE

    def channel_options(self, channel: str) -> ChannelOptions:
        """What the broker stores for ``channel``: history and presence options."""
        name = self._configured(channel)
        opts = self._options.get(name)
        if opts is None:
            ns = self.config.namespace(name)
            opts = self._options[name] = ChannelOptions(
                history_size=ns.history_size,
                history_ttl=ns.history_ttl,
                presence=ns.presence,
                join_leave=ns.join_leave,
            )
        return opts

    def write_delay(self, channel: str) -> float:
        """Seconds publications of ``channel`` may be held in an outbox: the
        namespace's ``write_delay``, else ``[limits] write_delay`` (read by the
        hub when a subscriber joins, never per delivery)."""
        name = namespace_of(channel)
        delay = self._delays.get(name)
        if delay is None:
            own = self.config.namespace(name).write_delay
            delay = own if own >= 0 else self.config.limits.write_delay
            if name in self.config.namespaces or name == "default":
                self._delays[name] = delay
        return delay

    def slow_consumer_policy(self, channel: str) -> str:
        """The namespace's ``slow_consumer``, else ``[limits] slow_consumer``
        (called only when a client's buffer overflows, never per delivery)."""
        name = self._configured(channel)
        policy = self._policies.get(name)
        if policy is None:
            own = self.config.namespace(name).slow_consumer
            policy = self._policies[name] = own or self.config.limits.slow_consumer
        return policy
