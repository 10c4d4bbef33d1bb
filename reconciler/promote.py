"""promote: advance, promote or roll back the running progressive rollouts from the servers'
metrics. One-shot and resumable: the state is read from MLflow and written back at every step.

Each round scrapes every ``--metrics`` URL (a server pod's ``/metrics``), adds what grew since
the step's window opened, and lets ``progression.decide`` judge. Writes happen under the apply
lock, after re-reading the state: a rollout another run has moved on is left to it. A breach
removes the rollout tag before anything else (every request back to the stable version), then
records why.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from enum import StrEnum

import httpx

from contracts.redact import mask_credentials
from contracts.registry import ROLLOUT_TAG
from reconciler import progressive
from reconciler.apply import (
    LockOptions,
    apply_lock,
    describe,
    execute,
    safe_order,
    write_progress,
)
from reconciler.errors import ReconcilerError
from reconciler.plan import make_plan, release_changes
from reconciler.progression import Check, Decision, Move, decide
from reconciler.progressive import Phase, ProgressiveState
from reconciler.scrape import Figures, Window, figures, parse
from reconciler.spec import Desired, ModelSpec, ProgressiveSpec
from reconciler.state import ActualModel, Registry
from reconciler.status import Resolve, pods, resolve_addresses

log = logging.getLogger(__name__)

Fetch = Callable[[str], str]
"""GET one pod's /metrics URL: its text (raises httpx.HTTPError or OSError)."""


def http_metrics(timeout: float = 5.0) -> Fetch:
    def fetch(url: str) -> str:
        response = httpx.get(url, timeout=timeout)
        response.raise_for_status()
        return response.text

    return fetch


class Ending(StrEnum):
    PROMOTED = "promoted"
    ROLLED_BACK = "rolled back"
    RUNNING = "still running"
    """The run's --timeout came first: the next promote resumes the rollout."""
    SUPERSEDED = "superseded"
    """Another run (an apply, another promote) changed the rollout: left to it."""
    SKIPPED = "skipped"


@dataclass(frozen=True, slots=True)
class StepRecord:
    """One step as this run observed it."""

    position: str
    seconds: float
    figures: Figures
    checks: tuple[Check, ...]
    move: Move


@dataclass(frozen=True, slots=True)
class Outcome:
    model: str
    ending: Ending
    state: ProgressiveState | None
    steps: tuple[StepRecord, ...]
    message: str

    @property
    def failed(self) -> bool:
        return self.ending is Ending.ROLLED_BACK


@dataclass
class _Tracker:
    spec: ModelSpec
    strategy: ProgressiveSpec
    state: ProgressiveState
    window: Window = field(default_factory=Window)
    opened: float = 0.0
    steps: list[StepRecord] = field(default_factory=list)
    outcome: Outcome | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    def end(self, ending: Ending, message: str, state: ProgressiveState | None = None) -> None:
        self.outcome = Outcome(self.name, ending, state or self.state, tuple(self.steps), message)


@dataclass(frozen=True, slots=True)
class PromoteOptions:
    lock: LockOptions
    holder: str
    interval: float = 5.0
    """Seconds between two scrapes of every pod."""
    timeout: float | None = None
    """Stop after this long with the rollouts still running (the next run resumes them)."""


def _written(state: ProgressiveState) -> ProgressiveState:
    """The state as reading its tag back gives it (times rounded as stored)."""
    return ProgressiveState.parse("", state.to_json())


class Promoter:
    """One promote run over the progressive rollouts models.yaml declares."""

    def __init__(
        self,
        registry: Registry,
        desired: Desired,
        metrics_urls: Sequence[str],
        options: PromoteOptions,
        *,
        fetch: Fetch | None = None,
        resolve: Resolve = resolve_addresses,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.registry = registry
        self.desired = desired
        self.urls = list(metrics_urls)
        self.options = options
        self.fetch = fetch or http_metrics()
        self.resolve = resolve
        self.clock = clock
        self.sleep = sleep

    # --- the run --------------------------------------------------------------------------------

    def run(self) -> list[Outcome]:
        """Observe every running rollout until each has ended (or the timeout)."""
        outcomes: list[Outcome] = []
        trackers = self._running(outcomes)
        if not trackers:
            return outcomes
        if not self.urls:
            raise NoMetricsError([t.name for t in trackers])
        self._resume(trackers)
        deadline = None if self.options.timeout is None else self.clock() + self.options.timeout
        while True:
            active = [t for t in trackers if t.outcome is None]
            if not active:
                break
            texts = self._scrape()
            now = self.clock()
            for tracker in active:
                for pod, text in texts.items():
                    try:
                        tracker.window.add(pod, parse(text, tracker.name))
                    except ValueError as exc:
                        log.warning("not Prometheus metrics from %s: %s", pod, exc)
                measured = figures(
                    tracker.window,
                    candidate=tracker.state.candidate_version,
                    stable=tracker.state.stable_version,
                )
                decision = decide(tracker.state, tracker.strategy, measured, now)
                if decision.move is not Move.WAIT:
                    self._record(tracker, decision, measured, now)
                    self._carry_out(tracker, decision, now)
            if deadline is not None and self.clock() >= deadline:
                for tracker in trackers:
                    if tracker.outcome is None:
                        tracker.end(
                            Ending.RUNNING,
                            f"still at {tracker.state.position()} after the run's timeout; "
                            "the next promote resumes it (the step's window restarts)",
                        )
                break
            self.sleep(self.options.interval)
        return outcomes + [t.outcome for t in trackers if t.outcome is not None]

    def _running(self, outcomes: list[Outcome]) -> list[_Tracker]:
        specs = [m for m in self.desired.file.models if m.progressive is not None]
        if not specs:
            return []
        actual = self.registry.read([m.name for m in specs])
        trackers = []
        for spec in specs:
            found = actual.models.get(spec.name)
            state = progressive.read(spec.name, found.tags) if found else None
            if state is None or state.phase is not Phase.RUNNING:
                continue
            wanted = spec.production()
            assert spec.progressive is not None
            if wanted is None or wanted.sha256 != state.candidate_sha256:
                message = (
                    f"models.yaml no longer declares v{state.candidate_version} as Production: "
                    "run apply (it ends this rollout), not promote"
                )
                outcomes.append(Outcome(spec.name, Ending.SKIPPED, state, (), message))
                continue
            trackers.append(_Tracker(spec, spec.progressive, state))
        return trackers

    def _resume(self, trackers: list[_Tracker]) -> None:
        """Open every step's window now: what happened while no run watched is not judged."""
        now = self.clock()
        with self._lock():
            for tracker in trackers:
                fresh = self._fresh(tracker)
                if fresh is None:
                    continue
                restarted = fresh.restarted(now)
                write_progress(self.registry, tracker.name, restarted)
                tracker.state = _written(restarted)
                tracker.opened = now
                log.info(
                    "observing progressive rollout",
                    extra={"model": tracker.name, "step": tracker.state.position()},
                )

    def _scrape(self) -> dict[str, str]:
        """Every pod's metrics text, by pod; a pod that does not answer is left out this round."""
        texts: dict[str, str] = {}
        for url in self.urls:
            try:
                found = pods(url, self.resolve)
            except OSError as exc:
                log.warning("cannot resolve %s: %s", mask_credentials(url), exc)
                continue
            for pod in found:
                try:
                    texts[pod.label] = self.fetch(pod.url)
                except (httpx.HTTPError, OSError) as exc:
                    log.warning("no metrics from %s: %s", pod.label, exc)
        return texts

    # --- moves ----------------------------------------------------------------------------------

    def _record(self, tracker: _Tracker, decision: Decision, measured: Figures, now: float) -> None:
        tracker.steps.append(
            StepRecord(
                tracker.state.position(),
                now - tracker.opened,
                measured,
                decision.checks,
                decision.move,
            )
        )
        log.info(
            "progressive rollout: %s",
            decision.move,
            extra={"model": tracker.name, "step": tracker.state.position(), "why": decision.why},
        )

    def _carry_out(self, tracker: _Tracker, decision: Decision, now: float) -> None:
        if decision.move is Move.ROLL_BACK:
            self._roll_back(tracker, decision.state)
            return
        with self._lock():
            fresh = self._fresh(tracker)
            if fresh is None:
                return
            if decision.move is Move.ADVANCE:
                write_progress(self.registry, tracker.name, decision.state)
                tracker.state = _written(decision.state)
                tracker.window = Window(last=dict(tracker.window.last))
                tracker.opened = now
            else:
                self._release(tracker, decision.state)

    def _roll_back(self, tracker: _Tracker, ended: ProgressiveState) -> None:
        name = tracker.name
        # Every request back to the stable version first: no lock is awaited for that.
        if ROLLOUT_TAG in self._model(name).tags:
            self.registry.delete_model_tag(name, ROLLOUT_TAG)
        log.warning("progressive rollout rolled back: %s", ended.reason, extra={"model": name})
        with self._lock():
            fresh = self._fresh(tracker)
            if fresh is None:
                # Another run started something else meanwhile: put its split back.
                current = progressive.read(name, self._model(name).tags)
                if current is not None and current.phase is Phase.RUNNING:
                    write_progress(self.registry, name, current)
                return
            self.registry.set_model_tag(name, progressive.PROGRESSIVE_TAG, ended.to_json())
        tracker.end(
            Ending.ROLLED_BACK,
            f"{ended.reason}. Every request goes to v{ended.stable_version}, which stays "
            f"Production; v{ended.candidate_version} keeps its stage. To try again, declare a "
            f"new version; or revert models.yaml to v{ended.stable_version}.",
            ended,
        )

    def _release(self, tracker: _Tracker, ended: ProgressiveState) -> None:
        """The held changes of apply (candidate to Production, stable archived, aliases), then
        the rollout tag removed and the state promoted."""
        name = tracker.name
        actual = self._model(name)
        candidate = actual.version(ended.candidate_version)
        if candidate is None or candidate.sha256 != ended.candidate_sha256:
            raise PromotionError(name, ended.candidate_version)
        done = []
        for change in sorted(release_changes(tracker.spec, actual), key=safe_order):
            execute(self.registry, change)
            done.append(describe(change))
        if ROLLOUT_TAG in actual.tags:
            self.registry.delete_model_tag(name, ROLLOUT_TAG)
        self.registry.set_model_tag(name, progressive.PROGRESSIVE_TAG, ended.to_json())
        left = [
            describe(c)
            for c in make_plan(self.desired.file, self.registry.read([name])).actionable
            if c.target.model == name
        ]
        message = f"v{ended.candidate_version} is Production ({'; '.join(done) or 'no change'})"
        if left:
            message += f"; still differs from models.yaml (run apply): {'; '.join(left)}"
        tracker.end(Ending.PROMOTED, message, ended)

    # --- MLflow ---------------------------------------------------------------------------------

    def _lock(self) -> AbstractContextManager[Callable[[], None]]:
        return apply_lock(self.registry, self.options.lock, holder=self.options.holder)

    def _model(self, name: str) -> ActualModel:
        found = self.registry.read([name]).models.get(name)
        if found is None:
            raise ReconcilerError(f"{name}: the registered model is gone from MLflow")
        return found

    def _fresh(self, tracker: _Tracker) -> ProgressiveState | None:
        """The state in MLflow when it is still the one this run last saw; else the tracker
        ends as superseded and None is returned."""
        current = progressive.read(tracker.name, self._model(tracker.name).tags)
        if current == tracker.state:
            return current
        shown = current.describe() if current else "no state"
        tracker.end(
            Ending.SUPERSEDED,
            f"the rollout was changed by another run ({shown}); left to it",
            current,
        )
        return None


class NoMetricsError(ReconcilerError):
    def __init__(self, models: Sequence[str]) -> None:
        super().__init__(
            f"progressive rollouts are running ({', '.join(models)}): give every server pod's "
            "metrics with --metrics URL (repeatable), e.g. --metrics http://10.0.0.7:9090/metrics"
        )


class PromotionError(ReconcilerError):
    def __init__(self, model: str, version: str) -> None:
        super().__init__(
            f"{model}: version {version} no longer has the sha256 the rollout started with; "
            "nothing was promoted. Run apply."
        )


def exit_code(outcomes: Sequence[Outcome]) -> int:
    """1: a rollout was rolled back; 3: one is still running (timeout); else 0."""
    if any(o.failed for o in outcomes):
        return 1
    if any(o.ending is Ending.RUNNING for o in outcomes):
        return 3
    return 0
