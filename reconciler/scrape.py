"""The servers' Prometheus metrics -> what one step of a progressive rollout measured (pure).

Each ``--metrics`` URL is one server pod. Its counters grow from its start and drop to zero when
the pod (or its gunicorn) restarts, so the window is counted as Prometheus' ``increase()`` is:
per pod, the growth between consecutive scrapes, and after a drop the whole new value (the pod
counted it since its restart). The first scrape of a pod is its baseline: what it counted before
the window opened never counts.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

REQUESTS = "server_requests_total"
LATENCY_BUCKET = "server_request_duration_seconds_bucket"
SHADOW = "server_shadow_comparisons_total"
WANTED = (REQUESTS, LATENCY_BUCKET, SHADOW)

Series = tuple[str, tuple[tuple[str, str], ...]]
"""A sample's name and its labels, sorted: one counter of one pod."""


def parse(text: str, model: str) -> dict[Series, float]:
    """The request, latency-bucket and shadow-comparison counters of ``model`` on one pod.

    Raises:
        ValueError: the text is not Prometheus' exposition format.
    """
    found: dict[Series, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name not in WANTED or sample.labels.get("model") != model:
                continue
            labels = tuple(sorted(sample.labels.items()))
            found[(sample.name, labels)] = found.get((sample.name, labels), 0.0) + sample.value
    return found


@dataclass
class Window:
    """Counter growth since the window opened, summed over pods, restarts counted in."""

    last: dict[str, dict[Series, float]] = field(default_factory=dict)
    """Per pod, the values of its last scrape."""
    grown: dict[Series, float] = field(default_factory=dict)
    resets: int = 0
    """Restarts seen (a counter of a pod went down)."""

    def add(self, pod: str, sample: Mapping[Series, float]) -> None:
        """One scrape of ``pod``: its first is the baseline; later ones add their growth."""
        previous = self.last.get(pod)
        self.last[pod] = dict(sample)
        if previous is None:
            return
        reset = any(value < previous.get(series, 0.0) for series, value in sample.items())
        reset = reset or any(series not in sample for series in previous)
        if reset:
            self.resets += 1
        for series, value in sample.items():
            growth = value if reset else value - previous.get(series, 0.0)
            # Kept at zero too: a histogram's empty buckets still bound the quantile.
            self.grown[series] = self.grown.get(series, 0.0) + growth

    def total(self, name: str, **labels: str) -> float:
        return sum(
            value
            for (series, found), value in self.grown.items()
            if series == name and _has(found, labels)
        )

    def buckets(self, version: str) -> list[tuple[float, float]]:
        """(upper bound, cumulative count) of a version's latency histogram, by bound."""
        by_bound: dict[float, float] = {}
        for (series, found), value in self.grown.items():
            labels = dict(found)
            if series == LATENCY_BUCKET and labels.get("version") == version:
                bound = float(labels["le"])
                by_bound[bound] = by_bound.get(bound, 0.0) + value
        return sorted(by_bound.items())


def _has(found: Iterable[tuple[str, str]], labels: Mapping[str, str]) -> bool:
    present = dict(found)
    return all(present.get(key) == value for key, value in labels.items())


def quantile(q: float, buckets: list[tuple[float, float]]) -> float | None:
    """Prometheus' ``histogram_quantile``: linear within the bucket holding rank q * count.

    None without observations. In the +Inf bucket, the highest finite bound.
    """
    if not buckets or buckets[-1][1] <= 0:
        return None
    total = buckets[-1][1]
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (
                count - lower_count
            )
        lower_bound, lower_count = bound, count
    return lower_bound


@dataclass(frozen=True, slots=True)
class Figures:
    """What a step measured for the candidate, and for the stable version beside it."""

    candidate_requests: int = 0
    candidate_errors: int = 0
    """Answers with a 5xx status."""
    stable_requests: int = 0
    candidate_rejected: int = 0
    """Answers with a 4xx status after routing (the input, or the model, refused it)."""
    stable_rejected: int = 0
    candidate_p99: float | None = None
    stable_p99: float | None = None
    same: int = 0
    different: int = 0
    shadow_errors: int = 0
    pods: int = 0
    """Pods scraped in the window (growth after a pod's first scrape is counted)."""
    resets: int = 0

    @property
    def comparisons(self) -> int:
        return self.same + self.different + self.shadow_errors

    def to_dict(self) -> dict[str, float | int | None]:
        return {
            "candidate_requests": self.candidate_requests,
            "candidate_errors": self.candidate_errors,
            "stable_requests": self.stable_requests,
            "candidate_rejected": self.candidate_rejected,
            "stable_rejected": self.stable_rejected,
            "candidate_p99_seconds": self.candidate_p99,
            "stable_p99_seconds": self.stable_p99,
            "shadow_same": self.same,
            "shadow_different": self.different,
            "shadow_errors": self.shadow_errors,
            "pods": self.pods,
            "counter_resets": self.resets,
        }


def _answers(window: Window, version: str, status_class: str) -> int:
    """A version's answers whose status starts with ``status_class`` ("4", "5")."""
    return round(
        sum(
            value
            for (series, found), value in window.grown.items()
            if series == REQUESTS
            and dict(found).get("version") == version
            and dict(found).get("status", "").startswith(status_class)
        )
    )


def figures(window: Window, *, candidate: str, stable: str) -> Figures:
    """The step's figures from the window's growth (version labels are MLflow numbers)."""
    return Figures(
        candidate_requests=round(window.total(REQUESTS, version=candidate)),
        candidate_errors=_answers(window, candidate, "5"),
        candidate_rejected=_answers(window, candidate, "4"),
        stable_rejected=_answers(window, stable, "4"),
        stable_requests=round(window.total(REQUESTS, version=stable)),
        candidate_p99=quantile(0.99, window.buckets(candidate)),
        stable_p99=quantile(0.99, window.buckets(stable)),
        same=round(window.total(SHADOW, version=candidate, result="same")),
        different=round(window.total(SHADOW, version=candidate, result="different")),
        shadow_errors=round(window.total(SHADOW, version=candidate, result="error")),
        pods=len(window.last),
        resets=window.resets,
    )
