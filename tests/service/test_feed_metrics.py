"""Feed metrics off the hot path: frame and byte integers folded into counters at scrape time, lag sampled."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from aggbook.service.metrics import ServiceMetrics
from aggbook.service.metrics.feeds import LAG_SAMPLE_EVERY

BOOKS = [("alpha", "BTC-USDT"), ("alpha", "ETH-USDT"), ("beta", "BTC-USDT")]


def scrape(metrics: ServiceMetrics) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """sample name -> (sorted labels) -> value, from the text a Prometheus scrape reads."""
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def frames(text: dict, name: str, venue: str, symbol: str) -> float:
    return text[name][(("symbol", symbol), ("venue", venue))]


def fresh() -> ServiceMetrics:
    metrics = ServiceMetrics()
    metrics.feeds.precreate(BOOKS)
    return metrics


def test_counters_are_exported_with_their_names_help_and_precreated_series() -> None:
    metrics = fresh()
    families = {f.name: f for f in text_string_to_metric_families(metrics.render().decode())}
    expected = (("aggbook_feed_messages", "Frames received"), ("aggbook_feed_bytes", "Bytes received"))
    for name, help_text in expected:
        family = families[name]
        assert (family.type, family.documentation) == ("counter", help_text)
        assert {(s.name, s.labels["venue"], s.labels["symbol"], s.value) for s in family.samples} == {
            (f"{name}_total", venue, symbol, 0.0) for venue, symbol in BOOKS
        }


def test_folded_counters_equal_the_frames_and_bytes_reported() -> None:
    metrics = fresh()
    feeds = metrics.feeds
    sizes = {book: [17 * i + len(book[0]) for i in range(1, 40 + 7 * n)] for n, book in enumerate(BOOKS)}
    for (venue, symbol), lengths in sizes.items():
        for n in lengths:
            feeds.message(venue, symbol, n)
    feeds.message("alpha", "", 9)  # a control frame: its own series, created when first seen
    text = scrape(metrics)
    for (venue, symbol), lengths in sizes.items():
        assert frames(text, "aggbook_feed_messages_total", venue, symbol) == len(lengths)
        assert frames(text, "aggbook_feed_bytes_total", venue, symbol) == sum(lengths)
        assert feeds.frames(venue, symbol) == (len(lengths), sum(lengths))
    assert frames(text, "aggbook_feed_messages_total", "alpha", "") == 1
    assert frames(text, "aggbook_feed_bytes_total", "alpha", "") == 9


def test_scrapes_are_monotonic_and_never_count_a_frame_twice() -> None:
    metrics = fresh()
    seen: list[tuple[float, float]] = []
    for batch in (0, 5, 0, 0, 3, 11, 0):
        for _ in range(batch):
            metrics.feeds.message("beta", "BTC-USDT", 100)
        text = scrape(metrics)
        seen.append((frames(text, "aggbook_feed_messages_total", "beta", "BTC-USDT"),
                     frames(text, "aggbook_feed_bytes_total", "beta", "BTC-USDT")))
    assert seen == [(0, 0), (5, 500), (5, 500), (5, 500), (8, 800), (19, 1900), (19, 1900)]


def test_lag_is_sampled_one_frame_in_n_per_venue_starting_with_the_first() -> None:
    metrics = fresh()
    feeds = metrics.feeds
    alpha = [0.001 * i for i in range(2 * LAG_SAMPLE_EVERY + 1)]  # frames 0, N and 2N are observed
    for i, seconds in enumerate(alpha):
        feeds.lag("alpha", seconds)
        if i == 0:
            feeds.lag("beta", 0.5)  # another venue keeps its own rotation
    feeds.lag("beta", -1.0)  # skipped: beta's second frame
    text = scrape(metrics)
    assert text["aggbook_feed_lag_seconds_count"][(("venue", "alpha"),)] == 3
    expected = alpha[0] + alpha[LAG_SAMPLE_EVERY] + alpha[2 * LAG_SAMPLE_EVERY]
    assert abs(text["aggbook_feed_lag_seconds_sum"][(("venue", "alpha"),)] - expected) < 1e-12
    assert text["aggbook_feed_lag_seconds_count"][(("venue", "beta"),)] == 1
    assert text["aggbook_feed_lag_seconds_sum"][(("venue", "beta"),)] == 0.5
    assert text["aggbook_feed_lag_seconds_bucket"][(("le", "0.5"), ("venue", "beta"))] == 1
    assert text["aggbook_feed_lag_seconds_bucket"][(("le", "0.25"), ("venue", "beta"))] == 0


def test_lag_help_says_it_is_sampled() -> None:
    families = {f.name: f for f in text_string_to_metric_families(fresh().render().decode())}
    assert f"one frame in {LAG_SAMPLE_EVERY}" in families["aggbook_feed_lag_seconds"].documentation
