"""A progressive rollout's state: the registered-model tag ``mlgitops.progressive``, one type,
one strict parser, one encoder.

apply writes it when a rollout starts, ``promote`` when a step advances, the candidate is
promoted or it is rolled back; plan and status read it. It lives in MLflow, so a runner that dies
mid-rollout is resumed by the next ``promote`` from what it says.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from contracts.registry import TAG_PREFIX
from contracts.rollout import Rollout, RolloutMode
from reconciler.errors import ReconcilerError

PROGRESSIVE_TAG = f"{TAG_PREFIX}progressive"
"""On the registered model: JSON of a ProgressiveState. Absent: no progressive rollout yet."""

FORMAT_VERSION = 1
SHADOW = "shadow"


class Phase(StrEnum):
    RUNNING = "running"
    """Steps are under way: the rollout tag splits traffic; the stages are as before."""
    PROMOTED = "promoted"
    """The candidate is Production, the old stable version archived, the rollout tag gone."""
    ROLLED_BACK = "rolled_back"
    """A limit was breached (or the rollout was cancelled): every request goes to the stable
    version, the stages are as before the rollout."""


class ProgressiveStateError(ReconcilerError):
    """The state tag is not what this module writes; says which rule it breaks."""

    def __init__(self, model: str, rule: str) -> None:
        self.rule = rule
        super().__init__(
            f"{model}: the {PROGRESSIVE_TAG} tag is invalid ({rule}). It is written by apply "
            f"and promote only; delete the tag in MLflow and run apply to start the rollout "
            "again."
        )


@dataclass(frozen=True, slots=True)
class Step:
    """One step: a canary share of requests, or a shadow copy of every request."""

    mode: RolloutMode
    weight: float

    @classmethod
    def of(cls, value: int | str) -> Step:
        """From models.yaml's ``steps`` entry: a percent or ``shadow``."""
        if value == SHADOW:
            return cls(RolloutMode.SHADOW, 100.0)
        return cls(RolloutMode.CANARY, float(value))

    def label(self) -> str:
        return SHADOW if self.mode is RolloutMode.SHADOW else f"canary {_percent(self.weight)}"

    def short(self) -> str:
        return SHADOW if self.mode is RolloutMode.SHADOW else _percent(self.weight)

    def encoded(self) -> int | float | str:
        if self.mode is RolloutMode.SHADOW:
            return SHADOW
        return int(self.weight) if self.weight.is_integer() else self.weight


def _percent(weight: float) -> str:
    return f"{int(weight)}%" if weight.is_integer() else f"{weight:g}%"


def steps_of(values: Sequence[int | str]) -> tuple[Step, ...]:
    return tuple(Step.of(value) for value in values)


def steps_text(steps: Sequence[Step]) -> str:
    return ", ".join(step.short() for step in steps)


@dataclass(frozen=True, slots=True)
class Breach:
    """A limit a step's figures went past: its name, the figure and the bound."""

    limit: str
    value: float
    bound: float

    def text(self) -> str:
        return f"{self.limit} {self.value:.4g} > {self.bound:.4g}"


@dataclass(frozen=True, slots=True)
class ProgressiveState:
    """Where a rollout of ``candidate_version`` beside ``stable_version`` stands."""

    candidate_version: str
    candidate_sha256: str
    stable_version: str
    steps: tuple[Step, ...]
    """The steps the rollout started with: it finishes the path it began on."""
    step: int
    """Index into ``steps`` of the step under way (running) or the last one reached."""
    step_started_at: float
    """Unix time the current step's observation window opened (restarted on resume)."""
    phase: Phase
    reason: str = ""
    breach: Breach | None = None

    def __post_init__(self) -> None:
        if not self.steps:
            raise ValueError("a rollout has at least one step")
        if not 0 <= self.step < len(self.steps):
            raise ValueError(f"step {self.step} is not an index of {len(self.steps)} steps")

    @property
    def current(self) -> Step:
        return self.steps[self.step]

    @property
    def last(self) -> bool:
        return self.step == len(self.steps) - 1

    def rollout(self) -> Rollout:
        """The rollout tag (contracts.rollout) of the step under way."""
        step = self.current
        return Rollout(self.candidate_version, step.mode, step.weight)

    def position(self) -> str:
        """``step 2 of 3 (canary 50%)``."""
        return f"step {self.step + 1} of {len(self.steps)} ({self.current.label()})"

    def describe(self) -> str:
        """One line for people: the phase, and where it stands or why it ended."""
        head = f"v{self.stable_version} -> v{self.candidate_version}"
        if self.phase is Phase.RUNNING:
            return f"{head}: running, {self.position()} since {_utc(self.step_started_at)}"
        if self.phase is Phase.PROMOTED:
            return f"{head}: promoted after {len(self.steps)} step(s)"
        return f"{head}: rolled back at {self.position()}: {self.reason}"

    def advanced(self, now: float) -> ProgressiveState:
        return replace(self, step=self.step + 1, step_started_at=now)

    def restarted(self, now: float) -> ProgressiveState:
        return replace(self, step_started_at=now)

    def ended(self, phase: Phase, reason: str, breach: Breach | None = None) -> ProgressiveState:
        return replace(self, phase=phase, reason=reason, breach=breach)

    # --- the tag ------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "format_version": FORMAT_VERSION,
            "candidate_version": self.candidate_version,
            "candidate_sha256": self.candidate_sha256,
            "stable_version": self.stable_version,
            "steps": [step.encoded() for step in self.steps],
            "step": self.step,
            "step_started_at": round(self.step_started_at, 3),
            "phase": str(self.phase),
            "reason": self.reason,
        }
        if self.breach is not None:
            data["breach"] = {
                "limit": self.breach.limit,
                "value": self.breach.value,
                "bound": self.breach.bound,
            }
        return data

    def to_json(self) -> str:
        """The tag value: compact, keys sorted (MLflow tag values hold up to 5000 chars)."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def parse(cls, model: str, text: str) -> ProgressiveState:
        """The tag value back into a state; ProgressiveStateError naming the broken rule."""
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ProgressiveStateError(model, f"not JSON: {exc}") from None
        try:
            return cls._from_dict(data)
        except (TypeError, ValueError, KeyError) as exc:
            raise ProgressiveStateError(model, str(exc)) from None

    @classmethod
    def _from_dict(cls, data: Any) -> ProgressiveState:
        if not isinstance(data, Mapping):
            raise TypeError("not a JSON object")
        fields = {
            "format_version", "candidate_version", "candidate_sha256", "stable_version",
            "steps", "step", "step_started_at", "phase", "reason", "breach",
        }  # fmt: skip
        unknown = set(data) - fields
        if unknown:
            raise ValueError(f"unknown fields {sorted(unknown)}")
        if data.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"format_version {data.get('format_version')!r} is not 1")
        steps = data.get("steps")
        if not isinstance(steps, list):
            raise TypeError("steps is not a list")
        breach = data.get("breach")
        return cls(
            candidate_version=_number(data, "candidate_version"),
            candidate_sha256=_text(data, "candidate_sha256"),
            stable_version=_number(data, "stable_version"),
            steps=tuple(_step(value) for value in steps),
            step=_integer(data, "step"),
            step_started_at=_real(data, "step_started_at"),
            phase=Phase(_text(data, "phase")),
            reason=_text(data, "reason"),
            breach=None if breach is None else _breach(breach),
        )


def read(model: str, tags: Mapping[str, str]) -> ProgressiveState | None:
    """The state in a registered model's tags; None when it has none.

    Raises:
        ProgressiveStateError: the tag is there but invalid.
    """
    text = tags.get(PROGRESSIVE_TAG)
    return None if text is None else ProgressiveState.parse(model, text)


def _utc(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _text(data: Mapping[str, Any], key: str) -> str:
    value = data[key]
    if not isinstance(value, str):
        raise TypeError(f"{key} is not a string")
    return value


def _number(data: Mapping[str, Any], key: str) -> str:
    value = _text(data, key)
    if not value.isdigit():
        raise ValueError(f"{key} {value!r} is not a version number")
    return value


def _integer(data: Mapping[str, Any], key: str) -> int:
    value = data[key]
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{key} is not an integer")
    return value


def _real(data: Mapping[str, Any], key: str) -> float:
    value = data[key]
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise TypeError(f"{key} is not a finite number")
    return float(value)


def _step(value: Any) -> Step:
    if value == SHADOW:
        return Step(RolloutMode.SHADOW, 100.0)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 100:
        raise ValueError(f"step {value!r} is neither a share from 1 to 100 nor {SHADOW!r}")
    return Step(RolloutMode.CANARY, float(value))


def _breach(value: Any) -> Breach:
    if not isinstance(value, Mapping) or set(value) != {"limit", "value", "bound"}:
        raise ValueError("breach is not {limit, value, bound}")
    return Breach(_text(value, "limit"), _real(value, "value"), _real(value, "bound"))
