"""Two shards and two gateways over the simulator and a real NATS: every symbol on either gateway,
books equal to the simulator's truth at the published depth, and the faults of the scale-out."""

from __future__ import annotations

import pytest

from aggbook.service.nats.settings import shard_of
from tests.conftest import wait_for
from tests.service.nats.cluster import DEPTH, SYMBOLS, Watcher, equal_to_truth, running_cluster
from tests.service.nats.natsserver import NatsServer

pytestmark = pytest.mark.integration


async def test_each_gateway_serves_every_symbol_of_both_shards_equal_to_the_truth(
    nats_server: NatsServer,
) -> None:
    async with running_cluster(nats_server) as cluster:
        owners = {s: shard_of(s, 2) for s in SYMBOLS}
        assert set(owners.values()) == {0, 1}  # both shards own something
        for index, svc in cluster.shards.items():
            assert set(svc.config.symbols) == {s for s, k in owners.items() if k == index}
        watchers = [Watcher(cluster.http, gw.url) for gw in cluster.gateways]
        for w in watchers:
            await w.start()
        cluster.sim.pause()  # freeze the markets: the books can be compared with the truth exactly
        for w in watchers:
            await wait_for(
                lambda w=w: equal_to_truth(w, cluster.sim), timeout=20, what="books equal the truth"
            )
            assert all(w.quote(s) is not None and w.quote(s)["bid"] is not None for s in SYMBOLS)
            assert not w.errors
        for gw in cluster.gateways:
            status, symbols = await cluster.get(gw, "/v1/symbols")
            assert status == 200 and sorted(s["symbol"] for s in symbols["symbols"]) == sorted(SYMBOLS)
            status, ready = await cluster.get(gw, "/readyz")
            assert status == 200 and ready["ready"] is True
            for symbol in SYMBOLS:
                shard = cluster.shards[owners[symbol]]
                # the gateway serves the owning shard's own payloads
                status, book = await cluster.get(gw, f"/v1/books/{symbol}?depth=7")
                assert status == 200
                direct = await cluster.get_json(shard.url + f"/v1/books/{symbol}?depth=7")
                assert book == direct
                status, quote = await cluster.get(gw, f"/v1/quotes/{symbol}?fees=true")
                direct = await cluster.get_json(shard.url + f"/v1/quotes/{symbol}?fees=true")
                assert status == 200 and quote["bid"] == direct["bid"] and quote["ask"] == direct["ask"]
                assert [v["venue"] for v in quote["venues"]] == [v["venue"] for v in direct["venues"]]
                assert all("age_seconds" in v and "last_id" in v for v in quote["venues"])
            status, quotes = await cluster.get(gw, "/v1/quotes")
            assert status == 200 and sorted(q["symbol"] for q in quotes["quotes"]) == sorted(SYMBOLS)
            status, err = await cluster.get(gw, f"/v1/books/{SYMBOLS[0]}?depth={DEPTH + 1}")
            assert status == 400
            status, err = await cluster.get(gw, f"/v1/books/{SYMBOLS[0]}?venues=binance")
            assert status == 400 and "gateway" in err["error"]["message"]
            status, report = await cluster.get(gw, "/v1/status")
            assert status == 200 and report["role"] == "gateway" and len(report["shards"]) == 2
            metrics = await cluster.get_text(gw.url + "/metrics")
            assert 'aggbook_gateway_messages_total{kind="quote"}' in metrics
        for w in watchers:
            await w.stop()
