"""The live sessions: per model one immutable ``Serving`` value behind one reference.

Writers (the volume sync, in its thread) build a new value and assign it; readers (requests)
take the reference once per request. No lock on the read path.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from contracts.rollout import Rollout
from server.errors import ModelNotFoundError, ModelNotReadyError, NoDefaultModelError
from server.load import LoadedModel


@dataclass(frozen=True, slots=True)
class Serving:
    """What one model serves right now."""

    current: LoadedModel
    candidate: LoadedModel | None = None
    rollout: Rollout | None = None

    def versions(self) -> list[str]:
        return [model.version for model in (self.current, self.candidate) if model is not None]


@dataclass(slots=True, eq=False)  # one per model: compared by identity
class ModelHolder:
    """One model: its ``Serving`` reference and what happened to its last load attempts."""

    name: str
    serving: Serving | None = None
    last_error: str | None = None
    """For people: GET /models and the log."""
    failed_directories: dict[str, str] = field(default_factory=dict)
    """Resolved directory -> reason, so a broken version is not retried on every rescan."""

    def require(self) -> Serving:
        serving = self.serving
        if serving is None:
            reason = ModelNotReadyError.REFUSED if self.last_error else ""
            raise ModelNotReadyError(self.name, reason)
        return serving


class ModelTable:
    """Every model of the volume by name; the dict is replaced, never mutated, on change."""

    def __init__(
        self, default_model: str | None = None, required: frozenset[str] = frozenset()
    ) -> None:
        self._default = default_model
        self.required = required | ({default_model} if default_model else set())
        """Models the pod must serve to be ready (SERVER_REQUIRED_MODELS and the default)."""
        self.holders: dict[str, ModelHolder] = {}

    def names(self) -> list[str]:
        return sorted(self.holders)

    def get(self, name: str) -> ModelHolder:
        """The model's holder; 503 (not 404) for a model the pod must serve and has not seen
        in the volume yet."""
        holder = self.holders.get(name)
        if holder is None:
            if name in self.required:
                raise ModelNotReadyError(name, "not published in the volume yet")
            raise ModelNotFoundError(name, self.names())
        return holder

    def label(self, name: str | None) -> str:
        """The metrics label for a request naming ``name``: unknown names share one value
        (``""``), so that random names never add label children."""
        return name if name is not None and name in self.holders else ""

    def default(self) -> ModelHolder:
        holders = self.holders
        if self._default is not None:
            holder = holders.get(self._default)
            if holder is None:
                raise ModelNotReadyError(self._default, "not published in the volume yet")
            return holder
        if len(holders) == 1:
            return next(iter(holders.values()))
        if not holders:
            raise ModelNotReadyError(None, "nothing is published in the volume yet")
        raise NoDefaultModelError(sorted(holders))

    def add(self, names: list[str]) -> None:
        """Hold every model of the volume, before any loads: one still loading answers 503."""
        new = [name for name in names if name not in self.holders]
        if new:
            self.holders = {**self.holders, **{name: ModelHolder(name) for name in new}}

    def remove(self, name: str) -> None:
        self.holders = {key: value for key, value in self.holders.items() if key != name}

    def waiting(self) -> list[str]:
        """Why the pod is not ready: the required models not served, sorted; with no required
        set, every model when none serves. Empty when ready."""
        holders = self.holders
        if self.required:
            served = {name for name, holder in holders.items() if holder.serving is not None}
            return sorted(self.required - served)
        if any(holder.serving is not None for holder in holders.values()):
            return []
        return sorted(holders)

    def ready(self) -> bool:
        """Every required model serves (or, with none declared, at least one model serves):
        a refused model that is not required never makes the pod unready."""
        return bool(self.holders) and not self.waiting()
