"""A progressive rollout's limits and steps as pure functions: state + figures + time -> decision.

``checks`` judges one step's figures against the limits of models.yaml; ``decide`` says what
``promote`` does next: wait, advance to the next step, promote the candidate, or roll it back.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from contracts.rollout import RolloutMode
from reconciler.progressive import Breach, Phase, ProgressiveState, Step
from reconciler.scrape import Figures
from reconciler.spec import ProgressiveSpec


@dataclass(frozen=True, slots=True)
class Check:
    """One limit against what the step measured; ``value`` None: not measured yet."""

    limit: str
    """The models.yaml field: max_error_rate, max_p99_latency_ratio, max_disagreement,
    max_rejection_increase."""
    figure: str
    """What was measured, for people: "error rate"."""
    value: float | None
    bound: float
    detail: str
    """How the figure was made: "3 of 310 answers 5xx"."""

    @property
    def ok(self) -> bool:
        return self.value is None or self.value <= self.bound

    def text(self) -> str:
        if self.value is None:
            return f"{self.figure} not measured yet ({self.detail}); {self.limit} {self.bound:g}"
        relation = "within" if self.ok else "past"
        return (
            f"{self.figure} {self.value:.4g} ({self.detail}) {relation} {self.limit} {self.bound:g}"
        )

    def breach(self) -> Breach:
        assert self.value is not None
        return Breach(self.limit, self.value, self.bound)


def checks(spec: ProgressiveSpec, step: Step, figures: Figures) -> tuple[Check, ...]:
    """Every limit that applies to ``step``, judged once the candidate has ``min_requests``.

    Canary: the candidate's 5xx share, its p99 over the stable version's p99 (both need
    ``min_requests`` answers, and at least LATENCY_SAMPLES), and its 4xx share above the
    stable version's (both need ``min_requests``); the last two below a 100 % share only.
    Shadow: the share of its runs that failed, and the share of compared answers that differ
    (its latency there is inference alone: not compared).
    """
    needed = spec.min_requests
    if step.mode is RolloutMode.SHADOW:
        runs = figures.comparisons
        failed = _rate(
            "shadow error rate", figures.shadow_errors, runs, "shadow runs failed",
            needed=needed, bound=spec.max_error_rate,
        )  # fmt: skip
        if spec.max_disagreement is None:
            return (failed,)
        differ = _rate(
            "disagreement", figures.different, runs, "compared answers differ",
            needed=needed, bound=spec.max_disagreement, limit="max_disagreement",
        )  # fmt: skip
        return (failed, differ)
    answers = figures.candidate_requests
    failed = _rate(
        "error rate", figures.candidate_errors, answers, "answers 5xx",
        needed=needed, bound=spec.max_error_rate,
    )  # fmt: skip
    found = [failed]
    if step.weight >= 100:
        return tuple(found)  # at 100 % no stable answer is there to compare with
    if spec.max_p99_latency_ratio is not None:
        found.append(_latency(spec.max_p99_latency_ratio, figures, needed))
    if spec.max_rejection_increase is not None:
        found.append(_rejections(spec.max_rejection_increase, figures, needed))
    return tuple(found)


def _rejections(bound: float, figures: Figures, needed: int) -> Check:
    """The candidate's 4xx share minus the stable version's: both get the same inputs (the
    split is random), so the difference is what the candidate's model refuses."""
    candidate, stable = figures.candidate_requests, figures.stable_requests
    detail = (
        f"{figures.candidate_rejected} of {candidate} answers 4xx against "
        f"{figures.stable_rejected} of {stable} stable"
    )
    if candidate < needed or stable < needed:
        return Check("max_rejection_increase", "rejection increase", None, bound, detail)
    value = figures.candidate_rejected / candidate - figures.stable_rejected / stable
    return Check("max_rejection_increase", "rejection increase", value, bound, detail)


def _rate(
    figure: str, part: int, whole: int, what: str,
    *, needed: int, bound: float, limit: str = "max_error_rate",
) -> Check:  # fmt: skip
    """``part / whole`` against ``bound``, measured once ``whole`` reaches ``needed``."""
    value = part / whole if whole >= needed and whole else None
    return Check(limit, figure, value, bound, f"{part} of {whole} {what}")


LATENCY_SAMPLES = 100
"""Answers each side needs before its p99 is judged: below 100, a p99 is the slowest answer
(a candidate's first, cold request would decide)."""


def _latency(bound: float, figures: Figures, needed: int) -> Check:
    needed = max(needed, LATENCY_SAMPLES)
    candidate, stable = figures.candidate_p99, figures.stable_p99
    measured = (
        figures.candidate_requests >= needed
        and figures.stable_requests >= needed
        and candidate is not None
        and stable is not None
        and stable > 0
    )
    if measured and candidate is not None and stable is not None:
        detail = f"p99 {candidate * 1000:.3g} ms against {stable * 1000:.3g} ms stable"
        return Check(
            "max_p99_latency_ratio", "p99 latency ratio", candidate / stable, bound, detail
        )
    detail = f"{figures.candidate_requests} candidate, {figures.stable_requests} stable answers"
    return Check("max_p99_latency_ratio", "p99 latency ratio", None, bound, detail)


class Move(StrEnum):
    WAIT = "wait"
    ADVANCE = "advance"
    PROMOTE = "promote"
    ROLL_BACK = "roll back"


@dataclass(frozen=True, slots=True)
class Decision:
    move: Move
    state: ProgressiveState
    """The state to write (unchanged when waiting)."""
    checks: tuple[Check, ...]
    why: str


def measured(step: Step, figures: Figures) -> int:
    """What counts toward ``min_requests``: the candidate's answers, or its shadow runs."""
    return figures.comparisons if step.mode is RolloutMode.SHADOW else figures.candidate_requests


def decide(
    state: ProgressiveState, spec: ProgressiveSpec, figures: Figures, now: float
) -> Decision:
    """The next move of a running rollout, from the current step's figures.

    A breached limit rolls back at once (not at the end of the step). A step ends when it has
    lasted ``pause_seconds`` and the candidate has ``min_requests`` and every limit has been
    judged and held; after the last step the candidate is promoted.
    """
    if state.phase is not Phase.RUNNING:
        return Decision(Move.WAIT, state, (), f"the rollout is {state.phase}")
    step = state.current
    found = checks(spec, step, figures)
    broken = next((check for check in found if not check.ok), None)
    if broken is not None:
        reason = f"{broken.text()} at {state.position()}"
        ended = state.ended(Phase.ROLLED_BACK, reason, broken.breach())
        return Decision(Move.ROLL_BACK, ended, found, reason)
    count = measured(step, figures)
    if count < spec.min_requests:
        why = f"{count} of min_requests {spec.min_requests} so far"
        return Decision(Move.WAIT, state, found, why)
    unjudged = [check.limit for check in found if check.value is None]
    if unjudged:  # a declared limit is judged before its step may end
        why = f"not measured yet: {', '.join(unjudged)}"
        return Decision(Move.WAIT, state, found, why)
    elapsed = now - state.step_started_at
    if elapsed < spec.pause_seconds:
        why = f"{elapsed:.0f} s of pause_seconds {spec.pause_seconds:g}"
        return Decision(Move.WAIT, state, found, why)
    if state.last:
        reason = f"all {len(state.steps)} step(s) held the limits"
        return Decision(Move.PROMOTE, state.ended(Phase.PROMOTED, reason), found, reason)
    return Decision(Move.ADVANCE, state.advanced(now), found, f"{state.position()} held the limits")
