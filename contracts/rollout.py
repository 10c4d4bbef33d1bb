"""The rollout contract: a model's canary or shadow split, one type from models.yaml to a request.

The reconciler writes it on the registered model (tag ``contracts.registry.ROLLOUT_TAG``), the
sidecar copies it into the current version's manifest (``contracts.volume.Manifest.rollout``), the
server routes by it. One rule set, one parser, one encoder. Stdlib only: every component imports it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class RolloutMode(StrEnum):
    CANARY = "canary"
    """The candidate answers ``weight`` percent of the requests."""
    SHADOW = "shadow"
    """The candidate runs on a copy of every request; its answer is compared, never returned."""


class RolloutContractError(ValueError):
    """A rollout value breaks the contract; the message says which rule."""

    def __init__(self, value: object, rule: str) -> None:
        super().__init__(f"rollout {value!r} is invalid: {rule}")
        self.rule = rule


@dataclass(frozen=True, slots=True)
class Rollout:
    """How traffic splits between the current version and a candidate version."""

    candidate_version: str
    mode: RolloutMode
    weight: float
    """Percent of requests the candidate answers in canary mode, 0 to 100 (ignored in shadow)."""

    def __post_init__(self) -> None:
        if not self.candidate_version.isdigit():
            raise RolloutContractError(self.candidate_version, "candidate_version is not a number")
        if not 0 <= self.weight <= 100:
            raise RolloutContractError(self.weight, "weight must be a number from 0 to 100")

    def to_dict(self) -> dict[str, Any]:
        return {
            "candidate_version": self.candidate_version,
            "mode": str(self.mode),
            "weight": self.weight,
        }

    def to_json(self) -> str:
        """The tag value: compact, keys sorted, so equal rollouts are equal strings."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Rollout:
        """Strict: every field present and of its type.

        Raises:
            RolloutContractError: naming the broken rule.
        """
        if not isinstance(data, Mapping):
            raise RolloutContractError(data, "not a JSON object")
        unknown = set(data) - {"candidate_version", "mode", "weight"}
        if unknown:
            raise RolloutContractError(dict(data), f"unknown fields {sorted(unknown)}")
        candidate = data.get("candidate_version")
        if isinstance(candidate, bool) or not isinstance(candidate, str | int):
            raise RolloutContractError(dict(data), "candidate_version missing")
        try:
            mode = RolloutMode(str(data.get("mode")))
        except ValueError:
            modes = [str(mode) for mode in RolloutMode]
            raise RolloutContractError(dict(data), f"mode is not one of {modes}") from None
        weight = data.get("weight")
        if isinstance(weight, bool) or not isinstance(weight, int | float):
            raise RolloutContractError(dict(data), "weight must be a number from 0 to 100")
        return cls(candidate_version=str(candidate), mode=mode, weight=float(weight))

    @classmethod
    def parse(cls, text: str) -> Rollout:
        """The tag value back into a Rollout (``RolloutContractError`` if it breaks a rule)."""
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise RolloutContractError(text, f"not JSON ({exc})") from None
        return cls.from_dict(data)
