"""Counting a step's window from the servers' /metrics: per pod, restarts counted in."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from reconciler.scrape import Window, figures, parse, quantile

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025)


class Pod:
    """A server pod's metrics, made by prometheus_client itself (as the server makes them)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "server_requests_total", "", ["model", "version", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "server_request_duration_seconds", "", ["model", "version"], buckets=BUCKETS,
            registry=self.registry,
        )  # fmt: skip
        self.shadow = Counter(
            "server_shadow_comparisons_total", "", ["model", "version", "result"],
            registry=self.registry,
        )  # fmt: skip

    def answer(
        self, version: str, status: int, seconds: float, n: int = 1, model: str = "m"
    ) -> None:
        self.requests.labels(model, version, str(status)).inc(n)
        for _ in range(n):
            self.latency.labels(model, version).observe(seconds)

    def text(self) -> str:
        return generate_latest(self.registry).decode()


def test_only_the_window_counts_and_a_restarted_pod_counts_from_zero() -> None:
    one, two = Pod(), Pod()
    one.answer("3", 200, 0.002, n=50)  # before the window: never counted
    one.answer("3", 200, 0.002, n=7, model="other")
    window = Window()
    for name, pod in (("one", one), ("two", two)):
        window.add(name, parse(pod.text(), "m"))
    one.answer("3", 200, 0.002, n=10)
    one.answer("3", 500, 0.002, n=2)
    two.answer("2", 400, 0.001, n=3)
    two.answer("2", 200, 0.004, n=30)
    window.add("one", parse(one.text(), "m"))
    window.add("two", parse(two.text(), "m"))
    seen = figures(window, candidate="3", stable="2")
    assert (seen.candidate_requests, seen.candidate_errors, seen.stable_requests) == (12, 2, 33)
    assert (seen.candidate_rejected, seen.stable_rejected) == (0, 3)
    # Pod one restarts: its counters start again from zero; what it counted since is growth.
    one = Pod()
    one.answer("3", 500, 0.02, n=4)
    window.add("one", parse(one.text(), "m"))
    seen = figures(window, candidate="3", stable="2")
    assert (seen.candidate_requests, seen.candidate_errors, seen.resets) == (16, 6, 1)
    assert seen.pods == 2


def test_shadow_comparisons_are_counted_by_result() -> None:
    pod = Pod()
    window = Window()
    window.add("p", parse(pod.text(), "m"))
    pod.shadow.labels("m", "3", "same").inc(90)
    pod.shadow.labels("m", "3", "different").inc(8)
    pod.shadow.labels("m", "3", "error").inc(2)
    window.add("p", parse(pod.text(), "m"))
    seen = figures(window, candidate="3", stable="2")
    assert (seen.same, seen.different, seen.shadow_errors, seen.comparisons) == (90, 8, 2, 100)


def test_p99_comes_from_the_bucket_growth_of_each_version() -> None:
    pod = Pod()
    window = Window()
    window.add("p", parse(pod.text(), "m"))
    pod.answer("2", 200, 0.0008, n=99)
    pod.answer("2", 200, 0.02, n=1)
    pod.answer("3", 200, 0.004, n=100)
    window.add("p", parse(pod.text(), "m"))
    seen = figures(window, candidate="3", stable="2")
    assert seen.stable_p99 == pytest.approx(0.001)  # rank 99 of 100 ends the first bucket
    assert seen.candidate_p99 == pytest.approx(0.0025 + 0.0025 * 0.99)


@pytest.mark.parametrize(
    ("buckets", "expected"),
    [
        ([], None),
        ([(0.1, 0.0), (float("inf"), 0.0)], None),
        ([(0.1, 50.0), (0.2, 100.0), (float("inf"), 100.0)], 0.198),
        ([(0.1, 100.0), (float("inf"), 100.0)], 0.099),
        ([(0.1, 10.0), (float("inf"), 100.0)], 0.1),  # in +Inf: the highest finite bound
    ],
)
def test_quantile_is_prometheus_histogram_quantile(
    buckets: list[tuple[float, float]], expected: float | None
) -> None:
    found = quantile(0.99, buckets)
    assert found == (None if expected is None else pytest.approx(expected))


def test_text_that_is_not_metrics_is_refused() -> None:
    with pytest.raises(ValueError):
        parse('server_requests_total{model="m" 1\n', "m")
