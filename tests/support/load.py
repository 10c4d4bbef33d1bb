"""A load generator for integration tests: threads calling the server, every answer recorded."""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx


@dataclass(frozen=True, slots=True)
class Outcome:
    started: float  # time.monotonic()
    finished: float
    status: int  # 0: transport error
    version: str | None
    model: str | None
    error: str | None = None
    sent: int = 0
    """Index into the generator's ``bodies`` of the body sent (0 with one body)."""


@dataclass
class LoadGenerator:
    """``threads`` clients POSTing ``body`` to ``url`` in a loop until stopped; with
    ``bodies``, each client sends them in turn instead (one in ten odd: nine plain, one odd)."""

    url: str
    body: dict[str, Any]
    threads: int = 16
    bodies: list[dict[str, Any]] = field(default_factory=list)
    pause: float = 0.0
    """Seconds each client waits after an answer (0: as fast as the server answers)."""
    headers: dict[str, str] = field(default_factory=dict)
    outcomes: list[Outcome] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _workers: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __enter__(self) -> LoadGenerator:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        for _ in range(self.threads):
            worker = threading.Thread(target=self._run, daemon=True)
            worker.start()
            self._workers.append(worker)

    def stop(self) -> None:
        self._stop.set()
        for worker in self._workers:
            worker.join(timeout=30)

    def _run(self) -> None:
        bodies = self.bodies or [self.body]
        sent = 0
        with httpx.Client(timeout=30.0) as client:
            while not self._stop.is_set():
                started = time.monotonic()
                index = sent % len(bodies)
                sent += 1
                try:
                    response = client.post(self.url, json=bodies[index], headers=self.headers)
                    payload = response.json() if response.status_code == 200 else None
                    outcome = Outcome(
                        started, time.monotonic(), response.status_code,
                        payload.get("modelVersion") if payload else None,
                        payload.get("model") if payload else None,
                        None if response.status_code == 200 else response.text[:300], index,
                    )  # fmt: skip
                except httpx.HTTPError as exc:
                    outcome = Outcome(started, time.monotonic(), 0, None, None, repr(exc), index)
                with self._lock:
                    self.outcomes.append(outcome)
                if self.pause:
                    self._stop.wait(self.pause)

    def snapshot(self) -> list[Outcome]:
        with self._lock:
            return list(self.outcomes)

    def failures(self) -> list[Outcome]:
        return [o for o in self.snapshot() if o.status != 200]

    def versions(self) -> Counter[str | None]:
        return Counter(o.version for o in self.snapshot() if o.status == 200)

    def first_answer_from(self, version: str, after: float) -> Outcome | None:
        """The earliest answer from ``version`` among requests started after ``after``."""
        hits = [o for o in self.snapshot() if o.version == version and o.started >= after]
        return min(hits, key=lambda o: o.finished, default=None)
