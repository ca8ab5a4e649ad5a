"""Batched metrics: what the hot path adds reaches Prometheus exactly as direct updates would."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from proxyworker.metrics import BatchedCounter, BatchedGauge, BatchedHistogram, flush

VALUES = [0.0001, 0.0003, 0.0003, 0.004, 0.02, 0.6, 12.0, 99.0, 0.005]


def test_it_batches_a_histogram_into_the_same_exposition_as_direct_observes() -> None:
    registry = CollectorRegistry()
    direct = Histogram("direct_seconds", "d", registry=registry, buckets=(0.0003, 0.005, 1.0))
    target = Histogram("batched_seconds", "b", registry=registry, buckets=(0.0003, 0.005, 1.0))
    batched = BatchedHistogram(target)
    for value in VALUES:
        direct.observe(value)
        batched.observe(value)
    before = generate_latest(registry).decode()
    assert "batched_seconds_count 0.0" in before  # nothing reaches Prometheus before a flush
    flush()
    text = generate_latest(registry).decode()
    samples = {
        line.split(" ")[0].removeprefix("direct"): line.split(" ")[1]
        for line in text.splitlines()
        if line.startswith("direct_seconds_") and "created" not in line
    }
    batched_samples = {
        line.split(" ")[0].removeprefix("batched"): line.split(" ")[1]
        for line in text.splitlines()
        if line.startswith("batched_seconds_") and "created" not in line
    }
    assert samples == batched_samples
    assert samples['_seconds_bucket{le="0.0003"}'] == "3.0"  # a bound counts as inside
    assert samples["_seconds_count"] == str(float(len(VALUES)))


def test_it_batches_a_counter_and_flushes_only_what_was_added() -> None:
    registry = CollectorRegistry()
    counter = BatchedCounter(Counter("bytes", "b", registry=registry))
    counter.inc(10)
    counter.inc(5)
    flush()
    flush()  # a second flush adds nothing
    counter.inc()
    flush()
    assert "bytes_total 16.0" in generate_latest(registry).decode()


def test_it_batches_a_gauge_both_ways() -> None:
    registry = CollectorRegistry()
    gauge = BatchedGauge(Gauge("idle", "i", registry=registry))
    gauge.inc()
    gauge.inc()
    gauge.dec()
    flush()
    assert "idle 1.0" in generate_latest(registry).decode()
    gauge.dec()
    gauge.inc()  # back where it was: nothing to hand over
    flush()
    gauge.dec()
    flush()
    assert "idle 0.0" in generate_latest(registry).decode()
