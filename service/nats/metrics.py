"""Prometheus metrics of the NATS side: the link, a shard's publisher and a gateway's view.

Registered in the process's own registry (``ServiceMetrics.registry``), next to the service's.
Labels are bounded: a message kind (``quote``, ``book``, ``status``, ``heartbeat``) or a shard index.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

from aggbook.service.nats.subjects import KINDS


class NatsLinkMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.connected = Gauge("aggbook_nats_connected", "1 while connected to NATS", registry=r)
        self.reconnects = Counter("aggbook_nats_reconnects_total", "Reconnections to NATS", registry=r)
        self.slow_consumer = Counter(
            "aggbook_nats_slow_consumer_total",
            "Messages NATS dropped because this process read too slowly (its pending limits)", registry=r,
        )


class PublisherMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.link = NatsLinkMetrics(r)
        self.published = Counter("aggbook_nats_published_total", "Messages published", ["kind"], registry=r)
        self.conflated = Counter(
            "aggbook_nats_conflated_total",
            "States never published because a newer one of the same subject replaced them "
            "(NATS slow or away)", ["kind"], registry=r,
        )
        self.errors = Counter("aggbook_nats_publish_errors_total", "Publications that failed", registry=r)
        self.pending = Gauge("aggbook_nats_pending_subjects", "Subjects waiting to be published", registry=r)
        self.symbols = Gauge("aggbook_shard_symbols", "Symbols this shard owns", ["shard"], registry=r)
        for kind in KINDS:
            self.published.labels(kind)
            self.conflated.labels(kind)


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.link = NatsLinkMetrics(r)
        self.received = Counter("aggbook_gateway_messages_total", "Messages received from NATS",
                                ["kind"], registry=r)
        self.gaps = Counter(
            "aggbook_gateway_gaps_total",
            "Per-subject sequence gaps and shard restarts seen; each resnapshots the symbol's clients",
            ["kind"], registry=r,
        )
        self.resyncs = Counter(
            "aggbook_gateway_resyncs_total", "Reloads of the key-value snapshot (start, NATS reconnect, "
            "a shard's return)", registry=r,
        )
        self.symbols = Gauge("aggbook_gateway_symbols", "Symbols known, by whether their shard is fresh",
                             ["state"], registry=r)
        self.shards = Gauge("aggbook_gateway_shards", "Shards known, by whether they heartbeat",
                            ["state"], registry=r)
        for kind in KINDS:
            self.received.labels(kind)
        for kind in ("quote", "book", "shard"):
            self.gaps.labels(kind)
