"""Prometheus metrics; multiprocess mode (one scrape sees every gunicorn worker) when
``PROMETHEUS_MULTIPROC_DIR`` is set, as the gunicorn config does."""

from __future__ import annotations

import os
import threading
import weakref
from bisect import bisect_left
from collections.abc import Sequence
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
BATCH_BUCKETS = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0)

REQUESTS = Counter(
    "server_requests_total",
    "Inference requests by model, version and HTTP status.",
    ["model", "version", "status"],
)
LATENCY = Histogram(
    "server_request_duration_seconds",
    "Inference request latency in the server (body read to answer), by model and version.",
    ["model", "version"],
    buckets=LATENCY_BUCKETS,
)
BATCH_ROWS = Histogram(
    "server_batch_rows",
    "Rows per onnxruntime call after micro-batching.",
    ["model", "version"],
    buckets=BATCH_BUCKETS,
)
SWAPS = Counter(
    "server_model_swaps_total",
    "Attempts to load a published version, by result (loaded, failed).",
    ["model", "role", "result"],
)
REFUSALS = Counter(
    "server_model_refusals_total",
    "Published versions refused, by reason (volume, checksum, onnx, type, schema, warmup, "
    "timeout, invalid).",
    ["model", "role", "reason"],
)
LOAD_SECONDS = Histogram(
    "server_model_load_seconds",
    "Seconds to verify, load and warm up a version.",
    ["model"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
)
LOADED = Gauge(
    "server_model_loaded_info",
    "1 for each version a worker serves (role current or candidate), with its sha256.",
    ["model", "version", "sha256", "role"],
    multiprocess_mode="livemax",
)
SHADOW = Counter(
    "server_shadow_comparisons_total",
    "Shadow runs of a candidate compared with the served answer, by result (same, different, "
    "error, timeout).",
    ["model", "version", "result"],
)


class _LocalHistogram:
    """Observations counted in plain Python, pushed to a prometheus Histogram child on flush.

    The request path only adds to local numbers (a few hundred ns); ``flush`` pushes what was
    added since the last flush. Counts only grow, so a concurrent flush never loses one.
    """

    __slots__ = ("_bounds", "_child", "_counts", "_flushed", "_flushed_sum", "_sum")

    def __init__(self, child: Any, bounds: Sequence[float]) -> None:
        self._child = child
        self._bounds = list(bounds)
        self._counts = [0] * (len(self._bounds) + 1)
        self._flushed = [0] * (len(self._bounds) + 1)
        self._sum = 0.0
        self._flushed_sum = 0.0

    def observe(self, value: float) -> None:
        self._counts[bisect_left(self._bounds, value)] += 1
        self._sum += value

    def flush(self) -> None:
        counts, total = list(self._counts), self._sum
        for index, (now, before) in enumerate(zip(counts, self._flushed, strict=True)):
            if now != before:
                self._child._buckets[index].inc(now - before)
        if total != self._flushed_sum:
            self._child._sum.inc(total - self._flushed_sum)
        self._flushed, self._flushed_sum = counts, total


class ModelMetrics:
    """The metrics of one served version, counted locally and flushed about once a second."""

    def __init__(self, model: str, version: str) -> None:
        self.model = model
        self.version = version
        self.latency = _LocalHistogram(LATENCY.labels(model, version), LATENCY_BUCKETS)
        self.batch_rows = _LocalHistogram(BATCH_ROWS.labels(model, version), BATCH_BUCKETS)
        self._requests: dict[int, int] = {}
        self._flushed_requests: dict[int, int] = {}
        _LIVE.add(self)

    def request(self, status: int, seconds: float | None) -> None:
        requests = self._requests
        requests[status] = requests.get(status, 0) + 1
        if seconds is not None:
            self.latency.observe(seconds)

    def flush(self) -> None:
        for status, count in list(self._requests.items()):
            before = self._flushed_requests.get(status, 0)
            if count != before:
                REQUESTS.labels(self.model, self.version, str(status)).inc(count - before)
                self._flushed_requests[status] = count
        self.latency.flush()
        self.batch_rows.flush()


_LIVE: weakref.WeakSet[ModelMetrics] = weakref.WeakSet()
_FLUSH_LOCK = threading.Lock()


def flush_all() -> None:
    with _FLUSH_LOCK:
        for metrics in list(_LIVE):
            metrics.flush()


class MetricsFlusher:
    """A daemon thread that flushes local counts every ``interval`` seconds."""

    def __init__(self, interval: float = 1.0) -> None:
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="metrics-flusher", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        flush_all()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            flush_all()


def record_failure(model: str, status: int) -> None:
    """A request that never reached a version (404, 503, 401, bad body before routing)."""
    REQUESTS.labels(model, "", str(status)).inc()


def render() -> tuple[bytes, str]:
    """The exposition text: every worker's values when in multiprocess mode."""
    flush_all()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST
