"""Brokers: how nodes share publications, history and presence.

The node depends on :class:`cluster.broker.Broker` only; the server's entry
point picks an engine through :func:`cluster.factory.make_broker`.
"""
