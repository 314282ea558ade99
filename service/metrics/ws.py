"""WebSocket clients, queued and sent messages, and what conflation dropped."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge


class WsMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.clients = Gauge("aggbook_ws_clients", "Connected WebSocket clients", registry=r)
        self.queued = Gauge("aggbook_ws_queued_messages", "Messages queued to WebSocket clients", registry=r)
        self.dropped = Counter(
            "aggbook_ws_dropped_messages_total", "WebSocket messages dropped by conflation", registry=r
        )
        self.sent = Counter("aggbook_ws_messages_sent_total", "WebSocket messages sent", registry=r)
        self.refused = Counter(
            "aggbook_ws_subscriptions_refused_total",
            "Subscriptions refused: per_connection or service (distinct subscriptions of all clients)",
            ["limit"], registry=r,
        )
        self.heavy = Counter(
            "aggbook_ws_heavy_renders_total",
            "Heavy (deep) book subscriptions: changes conflated into a later update, and renders "
            "deferred to a later event-loop iteration by the render budget",
            ["outcome"], registry=r,
        )
        self.handshakes_abandoned = Counter(
            "aggbook_ws_handshakes_abandoned_total",
            "WebSocket clients gone before the upgrade could be answered (a client disconnect)",
            registry=r,
        )
        for limit in ("per_connection", "service"):
            self.refused.labels(limit)
        for outcome in ("conflated", "deferred"):
            self.heavy.labels(outcome)

    def bind(self, clients: Callable[[], int], queued: Callable[[], int]) -> None:
        """Client and queue counts are read from the hub when scraped, so they are never stale."""
        self.clients.set_function(clients)
        self.queued.set_function(queued)

    def messages_sent(self, n: int = 1) -> None:
        self.sent.inc(n)

    def handshake_abandoned(self) -> None:
        self.handshakes_abandoned.inc()

    def messages_dropped(self, n: int = 1) -> None:
        self.dropped.inc(n)

    def subscription_refused(self, limit: str) -> None:
        self.refused.labels(limit).inc()

    def heavy_render(self, outcome: str, n: int = 1) -> None:
        self.heavy.labels(outcome).inc(n)
