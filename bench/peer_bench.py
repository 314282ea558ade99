"""aggbook's Binance spot feed against cryptofeed and ccxt pro on the same recorded frames.

Recording (not timed, in this process): the simulated Binance spot venue runs with its market pump
off; a raw aiohttp client opens the combined stream aggbook's feed opens
(``/stream?streams=btcusdt@depth@100ms``), one market step proves the subscription, the REST
snapshot is taken (``/api/v3/depth?limit=1000``) together with ``/api/v3/exchangeInfo`` (ccxt and
cryptofeed read their symbol tables from it), and then the market is stepped by hand: whole market
steps are gathered until they change at least ``--levels`` distinct levels, and that batch is
published as one ``depthUpdate`` event.  Real Binance frames at busy times carry a few dozen level
changes; the simulator's single step carries a handful, which would measure per-frame overhead
only.  Gathering whole steps (never splitting one) keeps every frame boundary a real market state,
so no contender ever sees a transiently crossed book.  The truth is the venue's own book after the
last step: its update id and best bid and ask.

Replay (timed), each contender in its own fresh subprocess per run, on the same frames:

* ``aggbook``: the Binance spot feed from ``feeds.registry.create_feed`` with the service's real
  Prometheus metrics (``ServiceMetrics().feeds``), the snapshot loaded through the feed's own
  parser, then ``await feed.handle(conn, msg)`` per ``aiohttp.WSMessage`` as the read loop calls it.
* ``aggbook_without_metrics``: the same with the metrics discarded (``NullMetrics``), so that the
  line ``metrics_overhead aggbook=<n> aggbook_without_metrics=<n> overhead_pct=<x>`` says what the
  service's metrics cost the hot path: (time with them - time without) / time without.
* ``cryptofeed``: ``cryptofeed.exchanges.Binance`` subscribed to ``L2_BOOK`` with a no-op callback,
  its symbol table set from the recorded exchangeInfo, its own ``_snapshot`` run against the
  recorded REST body, then ``await feed.message_handler(text, conn, receipt_time)`` per frame text.
* ``ccxt``: ``ccxt.pro.binance`` with markets loaded by its own ``load_markets`` from the recorded
  exchangeInfo, the book primed by its own ``handle_order_book_subscription`` /
  ``fetch_order_book_snapshot`` against the recorded REST body, then per frame text its WebSocket
  client's ``handle_text_or_binary_message`` (ccxt's JSON decode, then ``binance.handle_message``),
  which is what its read loop does with a text frame.

Nothing leaves the process during a replay: the HTTP reads are answered from the recording.  Every
run must end at the truth's last update id and best bid and ask, or the benchmark fails.  The
median of ``--runs`` runs counts; the runs go round-robin over the contenders.  The last line is
machine-readable:
``peer_msgs_per_s aggbook=<n> cryptofeed=<n> ccxt=<n> ratio_vs_cryptofeed=<r> ratio_vs_ccxt=<r>``
(``cryptofeed=nan`` and ``ratio_vs_cryptofeed=nan`` when cryptofeed is not installed).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import importlib.util
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import aiohttp
import orjson

CONTENDERS = ("aggbook", "cryptofeed", "ccxt")
# aggbook's feed again with its metrics discarded (NullMetrics): what the service's metrics cost it
BARE = "aggbook_without_metrics"
CANONICAL = "BTC-USDT"
UNIFIED = "BTC/USDT"  # ccxt's spelling
DUMMY_REST = "http://127.0.0.1:9"
DUMMY_WS = "ws://127.0.0.1:9"
REPLAY_TIMEOUT = 600.0  # one subprocess replay, seconds


# ---------------------------------------------------------------------- recording (not timed)
async def _record_async(frames: int, levels: int, seed: int) -> dict[str, Any]:
    from aggbook.simulator.binance import BinanceSpotVenue
    from aggbook.simulator.market import DEFAULT_SYMBOLS, LevelChange

    spec = next(s for s in DEFAULT_SYMBOLS if s.canonical == CANONICAL)
    venue = BinanceSpotVenue([spec], seed=seed, autostart_pump=False, ping_interval=3600.0)
    received: list[str] = []
    async with venue, aiohttp.ClientSession() as session:
        symbol = venue.venue_symbol(spec)
        market = venue.markets[symbol]
        urls = venue.urls()
        ws = await session.ws_connect(f"{urls['ws_url']}/stream?streams={symbol.lower()}@depth@100ms",
                                      max_msg_size=0)

        async def read() -> None:
            async for msg in ws:
                if msg.type is aiohttp.WSMsgType.TEXT and '"depthUpdate"' in msg.data:
                    received.append(msg.data)

        reader = asyncio.create_task(read())

        async def until(count: int, what: str, timeout: float = 30.0) -> None:
            deadline = time.monotonic() + timeout
            while len(received) < count:
                if reader.done() or time.monotonic() > deadline:
                    raise RuntimeError(f"recording: {what}: {len(received)}/{count} frames arrived")
                await asyncio.sleep(0.005)

        try:
            for _ in range(100):  # one published step proves the subscription is active
                await venue.step_all(1)
                await asyncio.sleep(0.01)
                if received:
                    break
            await until(1, "no first frame")
            async with session.get(f"{urls['rest_url']}/api/v3/depth",
                                   params={"symbol": symbol, "limit": "1000"}) as resp:
                assert resp.status == 200, resp.status
                snapshot = await resp.text()
            async with session.get(f"{urls['rest_url']}/api/v3/exchangeInfo") as resp:
                assert resp.status == 200, resp.status
                exchange_info = await resp.text()
            received.clear()  # frames before the snapshot: the snapshot contains them
            for n in range(frames):
                batch: dict[tuple[str, Decimal], LevelChange] = {}
                while len(batch) < levels:
                    for change in market.step():
                        batch.pop((change.side, change.price), None)  # keep the order of the last change
                        batch[(change.side, change.price)] = change
                await venue.publish(symbol, list(batch.values()))
                if n % 64 == 63:
                    await asyncio.sleep(0)  # let the reader drain
            await until(frames, "recorded frames missing")
        finally:
            await ws.close()
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
        truth = venue.truth(symbol)
    last = orjson.loads(received[-1])["data"]
    first_u = orjson.loads(received[0])["data"]["U"]
    if last["u"] != truth.seq or orjson.loads(snapshot)["lastUpdateId"] + 1 != first_u:
        raise RuntimeError("recording: frames do not run from the snapshot to the truth's update id")
    return {
        "symbol": symbol, "exchange_info": exchange_info, "snapshot": snapshot, "frames": received,
        "truth": {"last_update_id": truth.seq,
                  "best_bid": str(truth.bids[0][0]), "best_ask": str(truth.asks[0][0])},
    }


def record(frames: int, levels: int, seed: int) -> dict[str, Any]:
    """The recording: exchangeInfo and snapshot bodies, the frames' text, the truth at the end."""
    return asyncio.run(_record_async(frames, levels, seed))


def level_updates(recording: dict[str, Any]) -> int:
    return sum(len(d["b"]) + len(d["a"]) for d in (orjson.loads(f)["data"] for f in recording["frames"]))


# ---------------------------------------------------------------------- replays (one per subprocess)
def _settle_gc() -> None:
    """Collect, then freeze what exists before the timed loop.

    The replay holds every recorded frame at once (tens of thousands of ``WSMessage`` tuples for
    aggbook, plain strings for the others); a running service holds one frame at a time.  Without
    the freeze, every full collection during the loop would walk the whole recording, charging the
    contender whose frames are container objects for memory a live feed never holds.
    """
    gc.collect()
    gc.freeze()


async def replay_aggbook(rec: dict[str, Any], with_metrics: bool = True) -> dict[str, Any]:
    from aggbook.feeds.config import VenueConfig
    from aggbook.feeds.registry import create_feed
    from aggbook.service.metrics import ServiceMetrics

    metrics = ServiceMetrics() if with_metrics else None
    feed = create_feed(VenueConfig(name="binance", kind="binance", symbols={CANONICAL: rec["symbol"]},
                                   rest_url=DUMMY_REST, ws_url=DUMMY_WS),
                       metrics=metrics.feeds if metrics is not None else None)
    if metrics is not None:
        metrics.feeds.precreate([("binance", CANONICAL)])
    conn = feed.new_connection([CANONICAL], publish_when_live=False)
    sync = conn.syncs[CANONICAL]
    body = orjson.loads(rec["snapshot"])

    async def get_json(url: str, params: dict | None = None) -> tuple[int, Any, Any]:
        return 200, {}, body

    feed.get_json = get_json  # type: ignore[method-assign]
    snap = await feed.fetch_snapshot(conn, CANONICAL)
    assert snap is not None
    feed.deliver_snapshot(conn, CANONICAL, snap)
    # a REST snapshot with no diff before it waits for the first one (VenueFeed.deliver_snapshot), as
    # in a live feed: the first timed frame loads it, a cost the other contenders do not pay
    if not (sync.live or CANONICAL in conn.parked):
        raise RuntimeError(f"aggbook: the snapshot did not bring the book live ({sync.reason})")
    msgs = [aiohttp.WSMessage(aiohttp.WSMsgType.TEXT, text, None) for text in rec["frames"]]
    handle = feed.handle
    _settle_gc()
    start = time.perf_counter()
    for msg in msgs:
        conn.frame_bytes = len(msg.data)  # as the supervisor's read loop sets them
        conn.frame_counted = False
        await handle(conn, msg)
    elapsed = time.perf_counter() - start
    bid, ask = sync.book.best_bid(), sync.book.best_ask()
    return {"seconds": elapsed, "last_update_id": sync.last_id, "applied": sync.counters.applied,
            "resyncs": sum(sync.counters.resyncs.values()),
            "best_bid": bid[0] if bid else None, "best_ask": ask[0] if ask else None}


async def replay_cryptofeed(rec: dict[str, Any]) -> dict[str, Any]:
    from cryptofeed.defines import L2_BOOK
    from cryptofeed.exchanges import Binance
    from cryptofeed.symbols import Symbols

    # cryptofeed reads its symbol table from api.binance.com on first use: set it from the recording
    Symbols.set(Binance.id, *Binance._parse_symbol_data(json.loads(rec["exchange_info"])))  # noqa: SLF001
    books: list[int] = []

    async def on_book(book: Any, receipt_timestamp: float) -> None:
        books.append(1)

    feed = Binance(symbols=[CANONICAL], channels=[L2_BOOK], callbacks={L2_BOOK: on_book})

    async def read(address: str, *args: Any, **kwargs: Any) -> str:
        if "/depth" not in address:
            raise RuntimeError(f"cryptofeed asked for {address}")
        return rec["snapshot"]

    feed.http_conn.read = read  # type: ignore[method-assign]
    await feed._snapshot(rec["symbol"])  # noqa: SLF001 -- what its first depthUpdate would trigger
    handler = feed.message_handler
    frames = rec["frames"]
    _settle_gc()
    start = time.perf_counter()
    for text in frames:
        await handler(text, None, time.time())
    elapsed = time.perf_counter() - start
    book = feed._l2_book[CANONICAL].book  # noqa: SLF001
    with contextlib.suppress(Exception):
        await feed.http_conn.close()
    return {"seconds": elapsed, "last_update_id": feed.last_update_id[CANONICAL],
            "applied": len(books) - 1,  # minus the snapshot's callback
            "best_bid": str(book.bids.index(0)[0]), "best_ask": str(book.asks.index(0)[0])}


async def replay_ccxt(rec: dict[str, Any]) -> dict[str, Any]:
    import ccxt.pro

    exchange = ccxt.pro.binance({"options": {
        "defaultType": "spot",
        "fetchMarkets": {"types": ["spot"]},
        "fetchCurrencies": False,
    }})
    answers = {"/exchangeInfo": json.loads(rec["exchange_info"]), "/depth": json.loads(rec["snapshot"])}

    async def fetch(url: str, method: str = "GET", headers: Any = None, body: Any = None) -> Any:
        for path, answer in answers.items():
            if path in url:
                return answer
        raise RuntimeError(f"ccxt asked for {url}")

    exchange.fetch = fetch
    try:
        await exchange.load_markets()
        # ccxt tells spot from futures by its client's URL ("/stream" = spot); nothing connects
        client = exchange.client(DUMMY_WS + "/stream")
        exchange.handle_order_book_subscription(client, {}, {"symbol": UNIFIED, "limit": 1000,
                                                             "type": "spot", "params": {}})
        for _ in range(1000):  # its snapshot fetch runs as a spawned task
            if exchange.orderbooks[UNIFIED]["nonce"] is not None:
                break
            await asyncio.sleep(0.001)
        else:
            raise RuntimeError("ccxt: the snapshot never loaded")
        orderbook = exchange.orderbooks[UNIFIED]
        handle = client.handle_text_or_binary_message
        frames = rec["frames"]
        _settle_gc()
        start = time.perf_counter()
        for text in frames:
            handle(text)
        elapsed = time.perf_counter() - start
        orderbook = exchange.orderbooks.get(UNIFIED)  # ccxt drops the book on a gap
        if orderbook is None:
            raise RuntimeError("ccxt dropped its book during the replay (it saw a gap)")
        return {"seconds": elapsed, "last_update_id": orderbook["nonce"], "applied": None,
                "best_bid": str(orderbook["bids"][0][0]), "best_ask": str(orderbook["asks"][0][0])}
    finally:
        await exchange.close()


async def replay_aggbook_without_metrics(rec: dict[str, Any]) -> dict[str, Any]:
    return await replay_aggbook(rec, with_metrics=False)


REPLAYS = {"aggbook": replay_aggbook, "cryptofeed": replay_cryptofeed, "ccxt": replay_ccxt,
           BARE: replay_aggbook_without_metrics}


def available(contender: str) -> bool:
    module = {"aggbook": "aggbook", BARE: "aggbook", "cryptofeed": "cryptofeed",
              "ccxt": "ccxt.pro"}[contender]
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def replay_main(contender: str, path: str) -> None:
    """Subprocess side: one timed replay, its result as one JSON line on stdout."""
    with open(path, "rb") as f:
        rec = orjson.loads(f.read())
    try:
        import uvloop
        runner = uvloop.run  # the service's own loop (aggbook serve runs on uvloop)
    except ImportError:
        runner = asyncio.run
    result = runner(REPLAYS[contender](rec))
    print(json.dumps({"contender": contender, "frames": len(rec["frames"]), **result}))


# ---------------------------------------------------------------------- the run
@dataclass
class Result:
    contender: str
    frames: int
    seconds: list[float]  # one per run
    checked: int  # runs whose end state matched the truth

    @property
    def msgs_per_s(self) -> float:
        return self.frames / statistics.median(self.seconds) if self.seconds else math.nan


def check(contender: str, out: dict[str, Any], truth: dict[str, Any], frames: int) -> None:
    """The replay must end where the venue's book ended; anything else is a failed benchmark."""
    problems = []
    if out["frames"] != frames:
        problems.append(f"replayed {out['frames']}/{frames} frames")
    if out["last_update_id"] != truth["last_update_id"]:
        problems.append(f"last update id {out['last_update_id']} != {truth['last_update_id']}")
    for side in ("best_bid", "best_ask"):
        if out[side] is None or Decimal(str(out[side])) != Decimal(truth[side]):
            problems.append(f"{side} {out[side]} != {truth[side]}")
    if out.get("applied") is not None and out["applied"] != frames:
        problems.append(f"applied {out['applied']}/{frames} frames")
    if out.get("resyncs"):
        problems.append(f"{out['resyncs']} resyncs")
    if problems:
        raise RuntimeError(f"{contender}: replay does not match the recording's truth: "
                           + "; ".join(problems))


def run_contender(contender: str, path: str, rec: dict[str, Any], runs: int,
                  result: Result | None = None) -> Result:
    """``runs`` replays of one contender, each in a fresh subprocess and checked, added to ``result``."""
    result = result if result is not None else Result(contender, len(rec["frames"]), [], 0)
    for _ in range(runs):
        cmd = [sys.executable, os.path.abspath(__file__), "--replay", contender, "--recording", path]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=REPLAY_TIMEOUT)
        if proc.returncode != 0:
            raise RuntimeError(f"{contender} replay failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
        out = json.loads(proc.stdout.strip().splitlines()[-1])
        check(contender, out, rec["truth"], len(rec["frames"]))
        result.seconds.append(out["seconds"])
        result.checked += 1
    return result


def _fmt(value: float, digits: int) -> str:
    return "nan" if math.isnan(value) else f"{value:.{digits}f}"


def main(argv: list[str] | None = None) -> dict[str, Result]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=50_000, help="combined-stream frames recorded")
    parser.add_argument("--levels", type=int, default=20, help="at least this many level changes per frame")
    parser.add_argument("--runs", type=int, default=3, help="subprocess runs per contender (median)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--contenders", default=",".join(CONTENDERS))
    parser.add_argument("--replay", choices=(*CONTENDERS, BARE), help=argparse.SUPPRESS)
    parser.add_argument("--recording", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.replay:
        replay_main(args.replay, args.recording)
        return {}
    wanted = [c for c in args.contenders.split(",") if c]
    if set(wanted) - set(CONTENDERS) or "aggbook" not in wanted or args.frames < 1 or args.runs < 1:
        parser.error("--contenders must include aggbook and name only " + ",".join(CONTENDERS)
                     + "; --frames and --runs must be >= 1")

    load_before = os.getloadavg()[0]
    rec = record(args.frames, args.levels, args.seed)
    levels = level_updates(rec)
    results: dict[str, Result] = {}
    with tempfile.TemporaryDirectory(prefix="peer_bench") as tmp:
        path = os.path.join(tmp, "recording.json")
        with open(path, "wb") as f:
            f.write(orjson.dumps(rec))
        running = []
        for contender in CONTENDERS:
            if contender not in wanted:
                continue
            results[contender] = Result(contender, len(rec["frames"]), [], 0)
            if available(contender):
                running.append(contender)
            else:
                print(f"{contender}: not installed, no figure")
        results[BARE] = Result(BARE, len(rec["frames"]), [], 0)
        running.insert(1, BARE)
        # round-robin: on a shared machine a burst of someone else's load then hits every contender
        # about equally instead of all the runs of one
        for _ in range(args.runs):
            for contender in running:
                run_contender(contender, path, rec, 1, results[contender])

    truth = rec["truth"]
    print(f"Binance spot {CANONICAL}: {args.frames} combined-stream frames, {levels} level updates "
          f"({levels / args.frames:.1f} per frame), median of {args.runs} subprocess runs each; "
          f"every run ended at update id {truth['last_update_id']}, "
          f"best {truth['best_bid']} / {truth['best_ask']}; "
          f"load average {load_before:.2f} before, {os.getloadavg()[0]:.2f} after")
    for r in results.values():
        if r.seconds:
            print(f"  {r.contender:<24} {r.msgs_per_s:>12,.0f} msgs/s  runs "
                  + " ".join(f"{s:.3f}s" for s in r.seconds) + f"  checked {r.checked}/{len(r.seconds)}")
    agg = results["aggbook"].msgs_per_s
    bare = results[BARE].msgs_per_s
    # the share of the hot path's time the service's metrics take: (time with - time without) / without
    print(f"metrics_overhead aggbook={agg:.0f} {BARE}={bare:.0f} overhead_pct={(bare / agg - 1) * 100:.1f}")
    rates = {c: results[c].msgs_per_s if c in results else math.nan for c in CONTENDERS}
    print("peer_msgs_per_s " + " ".join(f"{c}={_fmt(rates[c], 0)}" for c in CONTENDERS)
          + f" ratio_vs_cryptofeed={_fmt(agg / rates['cryptofeed'], 2)}"
          + f" ratio_vs_ccxt={_fmt(agg / rates['ccxt'], 2)}")
    return results


if __name__ == "__main__":
    main()
