"""A labelled gauge replaced pass by pass is never seen empty by a scrape in between."""

from __future__ import annotations

import sys
import threading

from prometheus_client import CollectorRegistry, Gauge, generate_latest

from dermaops.monitoring.metrics import SeriesPass


def _series(registry: CollectorRegistry) -> set[str]:
    return {line for line in generate_latest(registry).decode().splitlines()
            if line.startswith("est{")}  # fmt: skip


def test_stale_series_go_at_the_end_and_the_gauge_is_never_empty_meanwhile() -> None:
    registry = CollectorRegistry()
    gauge = Gauge("est", "an estimate", ["version"], registry=registry)
    first = SeriesPass(gauge)
    for version in ("1", "2"):
        first.set(gauge, (version,), 0.5)
    first.finish()
    assert _series(registry) == {'est{version="1"} 0.5', 'est{version="2"} 0.5'}

    seen_empty = threading.Event()
    stop = threading.Event()

    def scrape() -> None:  # what Prometheus does while the monitor's loop exports
        while not stop.is_set():
            if not _series(registry):
                seen_empty.set()

    # Threads switch every microsecond: clear-then-set is seen empty within a few hundred
    # passes this way (5 runs of 5 with 2,000 passes each).
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    scraper = threading.Thread(target=scrape)
    scraper.start()
    try:
        for _ in range(2000):
            p = SeriesPass(gauge)
            p.set(gauge, ("2",), 0.7)
            p.finish()
    finally:
        stop.set()
        scraper.join()
        sys.setswitchinterval(interval)
    assert _series(registry) == {'est{version="2"} 0.7'}, "version 1 has no estimate now"
    assert not seen_empty.is_set()
