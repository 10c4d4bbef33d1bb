"""Prometheus metrics and the status the probes read (last success, versions, last error)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class Metrics:
    """The sidecar's metrics in their own registry (no process-global state)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.fetches = Counter(
            "sidecar_fetches",
            "Publications attempted, by result: published (downloaded), reused (an already "
            "published directory), refused (verification failed), failed (temporary error).",
            ["model", "role", "result"],
            registry=self.registry,
        )
        self.checks = Counter(
            "sidecar_checks", "Registry checks per model, by result.", ["model", "result"],
            registry=self.registry,
        )  # fmt: skip
        self.fetch_seconds = Histogram(
            "sidecar_fetch_seconds",
            "Seconds to download, verify and publish one version.",
            ["model"],
            buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
            registry=self.registry,
        )
        self.fetch_bytes = Counter(
            "sidecar_fetch_bytes", "Bytes downloaded (model files).", ["model"],
            registry=self.registry,
        )  # fmt: skip
        self.current_version = Gauge(
            "sidecar_current_version",
            "Version number each link points at (role current or candidate).",
            ["model", "role"],
            registry=self.registry,
        )
        self.last_success = Gauge(
            "sidecar_last_success_timestamp_seconds",
            "Unix time of the last check that ended with the model published.",
            ["model"],
            registry=self.registry,
        )
        self.unmanaged_models = Gauge(
            "sidecar_unmanaged_models",
            "Registered models skipped because mlgitops does not manage them (no mlgitops "
            "tags: registered by hand, another team's).",
            registry=self.registry,
        )
        self.volume_repairs = Counter(
            "sidecar_volume_repairs",
            "Published directories found changed in the volume and published again.",
            ["model"],
            registry=self.registry,
        )
        self.webhook_deliveries = Counter(
            "sidecar_webhook_deliveries",
            "Webhook deliveries by result: accepted, forwarded (received from another sidecar), "
            "rejected, duplicate.",
            ["result"],
            registry=self.registry,
        )
        self.consecutive_failures = Gauge(
            "sidecar_consecutive_failed_cycles",
            "Poll cycles failed in a row (the loop backs off meanwhile).",
            registry=self.registry,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)


@dataclass(slots=True)
class ModelStatus:
    current: str | None = None
    candidate: str | None = None
    last_success: float | None = None
    last_error: str | None = None
    last_error_at: float | None = None


@dataclass
class Status:
    """What /healthz and /readyz report; updated by the loop, read by the HTTP thread."""

    models: dict[str, ModelStatus] = field(default_factory=dict)
    started_at: float = field(default_factory=time.time)
    last_cycle_at: float | None = None
    last_cycle_ok: bool | None = None
    expected: list[str] = field(default_factory=list)
    unmanaged: int = 0
    """Registered models skipped as not managed by mlgitops (following every model)."""
    listed_at: float | None = None
    """When the models to follow were last known (named, or listed from the registry)."""
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def model(self, name: str) -> ModelStatus:
        with self._lock:
            return self.models.setdefault(name, ModelStatus())

    def keep_only(self, names: set[str]) -> None:
        """Forget models no longer in the registry (the status stays bounded by it)."""
        with self._lock:
            for name in [n for n in self.models if n not in names]:
                del self.models[name]

    def ready(self) -> bool:
        """Every model the sidecar follows has been published at least once (following every
        registered model and none has a version to serve: ready, there is nothing to wait for)."""
        with self._lock:
            if self.last_cycle_at is None or self.listed_at is None:
                return False
            return all(name in self.models and self.models[name].current for name in self.expected)

    def errors(self) -> dict[str, str]:
        """The models whose last check failed, with the error."""
        with self._lock:
            return {n: s.last_error for n, s in self.models.items() if s.last_error}

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "started_at": self.started_at,
                "last_cycle_at": self.last_cycle_at,
                "last_cycle_ok": self.last_cycle_ok,
                "unmanaged_models": self.unmanaged,
                "models": {
                    name: {
                        "current": status.current,
                        "candidate": status.candidate,
                        "last_success": status.last_success,
                        "last_error": status.last_error,
                        "last_error_at": status.last_error_at,
                    }
                    for name, status in sorted(self.models.items())
                },
            }
