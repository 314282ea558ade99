"""Two shards and two gateways over the simulator and a real NATS: every symbol on either gateway,
books equal to the simulator's truth at the published depth, and the faults of the scale-out."""

from __future__ import annotations

import nats
import orjson
import pytest

from aggbook.service.nats.gateway import Gateway, GatewayConfig
from aggbook.service.nats.settings import shard_of
from aggbook.service.nats.view import ViewSettings
from tests.conftest import wait_for
from tests.service.nats.cluster import DEPTH, SYMBOLS, Watcher, equal_to_truth, eventually, running_cluster
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

                async def same_book(gw=gw, shard=shard, symbol=symbol) -> bool:
                    # the gateway serves the owning shard's own payloads (a venue of the shard may
                    # move, resync or go stale meanwhile: the gateway follows within book_interval)
                    status, book = await cluster.get(gw, f"/v1/books/{symbol}?depth=7")
                    direct = await cluster.get_json(shard.url + f"/v1/books/{symbol}?depth=7")
                    return status == 200 and book == direct

                async def same_quote(gw=gw, shard=shard, symbol=symbol) -> bool:
                    status, quote = await cluster.get(gw, f"/v1/quotes/{symbol}?fees=true")
                    direct = await cluster.get_json(shard.url + f"/v1/quotes/{symbol}?fees=true")
                    assert all("age_seconds" in v and "last_id" in v for v in quote["venues"])
                    return status == 200 and {k: v for k, v in quote.items() if k != "venues"} == {
                        k: v for k, v in direct.items() if k != "venues"
                    }

                await eventually(same_book, what=f"{symbol} book as the shard serves it")
                await eventually(same_quote, what=f"{symbol} quote as the shard serves it")
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


async def _watchers(cluster) -> list[Watcher]:
    watchers = [Watcher(cluster.http, gw.url) for gw in cluster.gateways]
    for w in watchers:
        await w.start()
    for w in watchers:
        await wait_for(lambda w=w: all(w.book(s) and w.quote(s) for s in SYMBOLS), what="every subscription")
    return watchers


async def test_a_nats_restart_reaches_every_subscriber_as_a_conflated_snapshot(
    nats_server: NatsServer,
) -> None:
    async with running_cluster(nats_server) as cluster:
        watchers = await _watchers(cluster)
        before = [w.conflated() for w in watchers]
        await nats_server.restart()
        for w, b in zip(watchers, before, strict=True):
            # every subscription of every client hears that states were skipped: never a silent gap
            await wait_for(
                lambda w=w, b=b: all(w.conflated().get(sub, 0) > b.get(sub, 0) for sub in w.seq),
                timeout=20,
                what="a conflated snapshot on every subscription",
            )
        for svc in cluster.shards.values():
            assert svc.publisher is not None
            await wait_for(lambda svc=svc: svc.publisher.link.up, timeout=20, what="publisher back")
        for gw in cluster.gateways:
            await cluster.ready(gw)
        cluster.sim.pause()
        for w in watchers:
            await wait_for(
                lambda w=w: equal_to_truth(w, cluster.sim), timeout=20, what="books equal the truth"
            )
            assert not w.errors and w.closed is None
        metrics = await cluster.get_text(cluster.gateways[0].url + "/metrics")
        assert "aggbook_nats_reconnects_total 1.0" in metrics
        for w in watchers:
            await w.stop()


async def test_a_stopped_shard_is_excluded_then_recovered_and_the_other_shard_goes_on(
    nats_server: NatsServer,
) -> None:
    async with running_cluster(nats_server) as cluster:
        watchers = await _watchers(cluster)
        gone = [s for s in SYMBOLS if shard_of(s, 2) == 1]
        kept = [s for s in SYMBOLS if shard_of(s, 2) == 0]
        await cluster.stop_shard(1)
        for w in watchers:
            # the symbols of the silent shard are excluded: no venue, no price
            await wait_for(
                lambda w=w: all(
                    w.quote(s)["bid"] is None
                    and all(v["excluded_reason"] == "shard stale" for v in w.quote(s)["venues"])
                    and w.book(s)["bids"] == []
                    for s in gone
                ),
                timeout=10,
                what="the stopped shard's symbols excluded",
            )
        gw = cluster.gateways[0]
        status, ready = await cluster.get(gw, "/readyz")
        assert status == 503 and sorted(ready["not_ready"]) == sorted(gone)
        # the other shard's symbols keep moving
        counts = {id(w): w.messages for w in watchers}
        for w in watchers:
            await wait_for(lambda w=w: w.messages > counts[id(w)] + 5, what="updates of the live shard")
            assert all(w.quote(s)["bid"] is not None for s in kept)
        await cluster.start_shard(1)  # a new process of shard 1
        for gw in cluster.gateways:
            await cluster.ready(gw)
        cluster.sim.pause()
        for w in watchers:
            await wait_for(
                lambda w=w: equal_to_truth(w, cluster.sim), timeout=20, what="books equal the truth"
            )
            assert not w.errors and w.closed is None
            for s in gone:  # the restarted shard's states reached the clients as conflated snapshots
                assert w.conflated().get(f"quotes:{s}", 0) >= 1
        for w in watchers:
            await w.stop()


async def test_a_stopped_gateway_leaves_the_other_gateways_clients_alone(nats_server: NatsServer) -> None:
    async with running_cluster(nats_server) as cluster:
        watchers = await _watchers(cluster)
        first, other = cluster.gateways
        await first.stop()
        cluster.gateways.remove(first)
        await wait_for(lambda: watchers[0].closed is not None, what="the stopped gateway's client closed")
        seen = watchers[1].messages
        await wait_for(lambda: watchers[1].messages > seen + 10, what="the other gateway's client served")
        cluster.sim.pause()
        await wait_for(
            lambda: equal_to_truth(watchers[1], cluster.sim), timeout=20, what="books equal the truth"
        )
        assert not watchers[1].errors and watchers[1].closed is None
        assert not any(watchers[1].conflated().values())  # nothing was skipped on the other gateway
        for w in watchers:
            await w.stop()


async def test_nats_dropping_messages_for_a_slow_gateway_resynchronises_it(nats_server: NatsServer) -> None:
    from nats.errors import SlowConsumerError

    async with running_cluster(nats_server, gateways=1) as cluster:
        [watcher] = await _watchers(cluster)
        gw = cluster.gateways[0]
        sub = gw.view._sub
        assert sub is not None
        # what waits to be read is bounded: NATS drops past it, and the gateway then reloads
        assert sub._pending_msgs_limit == gw.view.settings.pending_msgs
        assert sub._pending_bytes_limit == gw.view.settings.pending_bytes
        await gw.view.link._error(
            SlowConsumerError(subject="aggbook.quote.BTC-USDT", reply="", sid=1, sub=sub)
        )
        await wait_for(
            lambda: all(watcher.conflated().get(sub_key, 0) >= 1 for sub_key in watcher.seq),
            what="every subscription resnapshotted",
        )
        metrics = await cluster.get_text(gw.url + "/metrics")
        assert "aggbook_nats_slow_consumer_total 1.0" in metrics
        await watcher.stop()


async def test_a_gateway_joining_a_still_market_starts_from_the_bucket(nats_server: NatsServer) -> None:
    async with running_cluster(nats_server, gateways=0) as cluster:
        for svc in cluster.shards.values():  # every shard's quotes and books are in the bucket
            assert svc.publisher is not None
            await wait_for(lambda svc=svc: svc.publisher.link.up, what="publisher connected")
        await wait_for(
            lambda: all(
                svc.publisher is not None
                and svc.publisher.metrics.published.labels("book")._value.get() >= len(svc.config.symbols)
                for svc in cluster.shards.values()
            ),
            what="every book published",
        )
        cluster.sim.pause()  # the markets stop: the bucket settles
        await wait_for(
            lambda: all(
                svc.publisher is not None
                and not svc.publisher._quotes
                and not svc.publisher._books_due
                and not svc.publisher._books
                for svc in cluster.shards.values()
            ),
            what="nothing left to publish",
        )
        # a gateway listening on another prefix hears nothing live: what it has is the bucket's
        deaf = Gateway(
            GatewayConfig(ViewSettings(nats_server.url, prefix="nothing-live"), port=0, max_depth=DEPTH)
        )
        await deaf.start()
        try:
            await wait_for(lambda: deaf.view.loaded.is_set(), what="the bucket read")
            kv = await nats.connect(nats_server.url)
            try:
                bucket = await kv.jetstream().key_value("aggbook")

                async def holds_the_bucket() -> bool:
                    # a frame in flight at the pause may still move the bucket: read it again then
                    for symbol in SYMBOLS:
                        st = deaf.view.consolidated.get(symbol)
                        for kind in ("quote", "book"):
                            entry = await bucket.get(f"{kind}.{symbol}")
                            env = None if st is None else (st.quote_env if kind == "quote" else st.book_env)
                            if entry.value is None or env != orjson.loads(entry.value):
                                assert deaf.view.link.nc is not None
                                await deaf.view._reload(deaf.view.link.nc, None)
                                return False
                    return True

                await eventually(holds_the_bucket, what="the deaf gateway holding the bucket's states")
                for symbol in SYMBOLS:
                    st = deaf.view.consolidated[symbol]
                    assert st.quote_env is not None and st.quote_env["quote"]["bid"] is not None
                    assert st.book_env is not None and st.book_env["book"]["bids"]
            finally:
                await kv.close()
            assert deaf.nats_metrics.received.labels("quote")._value.get() == 0
        finally:
            await deaf.stop()
        gw = await cluster.start_gateway()
        await cluster.ready(gw)
        watcher = Watcher(cluster.http, gw.url)
        await watcher.start()
        await wait_for(lambda: equal_to_truth(watcher, cluster.sim), timeout=20, what="books equal the truth")
        assert not watcher.errors
        # the WebSocket venues filter is the shard's: a gateway refuses it clearly
        assert watcher.ws is not None
        await watcher.ws.send_json(
            {"op": "subscribe", "channel": "book", "symbol": SYMBOLS[0], "venues": ["binance"], "id": 7}
        )
        await wait_for(
            lambda: any("gateway" not in e and "venues" in e for e in watcher.errors), what="refusal"
        )
        await watcher.stop()
