"""Which version to serve: MLflow's registry (stage or alias), read into plain values."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Protocol

from contracts.registry import ROLLOUT_TAG, SHA256_TAG, SIZE_TAG
from sidecar.errors import NothingToServeError, RolloutTagError

ROLLOUT_MODES = ("canary", "shadow")


@dataclass(frozen=True, slots=True)
class VersionRef:
    """One model version as the registry describes it (what to fetch and how to verify it)."""

    name: str
    version: str
    source: str
    run_id: str | None = None
    sha256: str | None = None
    size: int | None = None
    stage: str | None = None
    alias: str | None = None

    @property
    def key(self) -> tuple[str, str, str | None]:
        """Identity of what would be published: a new tag value is a new thing to fetch."""
        return (self.name, self.version, self.sha256)


@dataclass(frozen=True, slots=True)
class Rollout:
    """The registered model's canary/shadow declaration (contracts.registry.ROLLOUT_TAG)."""

    candidate_version: str
    mode: str
    weight: float
    raw: dict[str, Any]

    @classmethod
    def parse(cls, model: str, value: str) -> Rollout:
        try:
            data = json.loads(value)
        except ValueError as exc:
            raise RolloutTagError(model, value, f"not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise RolloutTagError(model, value, "not a JSON object")
        candidate = data.get("candidate_version")
        mode = data.get("mode", "canary")
        weight = data.get("weight", 0)
        if not isinstance(candidate, str | int) or isinstance(candidate, bool) or not candidate:
            raise RolloutTagError(model, value, "candidate_version missing")
        if mode not in ROLLOUT_MODES:
            raise RolloutTagError(model, value, f"mode {mode!r} is not one of {ROLLOUT_MODES}")
        if (
            not isinstance(weight, int | float)
            or isinstance(weight, bool)
            or not 0 <= weight <= 100
        ):
            raise RolloutTagError(model, value, "weight must be a number from 0 to 100")
        return cls(candidate_version=str(candidate), mode=mode, weight=float(weight), raw=data)


class Registry(Protocol):
    """The part of MLflow's registry the sidecar reads (a fake in unit tests)."""

    def model_names(self) -> list[str]: ...

    def target(self, name: str, *, stage: str, alias: str | None) -> VersionRef: ...

    def version(self, name: str, version: str) -> VersionRef: ...

    def rollout(self, name: str) -> Rollout | None: ...


def _int_or_none(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def version_ref(mv: Any, *, alias: str | None = None) -> VersionRef:
    """An MLflow ``ModelVersion`` entity as a :class:`VersionRef`."""
    tags: dict[str, str] = dict(mv.tags or {})
    stage = mv.current_stage if mv.current_stage and mv.current_stage != "None" else None
    return VersionRef(
        name=mv.name,
        version=str(mv.version),
        source=mv.source,
        run_id=mv.run_id or None,
        sha256=tags.get(SHA256_TAG),
        size=_int_or_none(tags.get(SIZE_TAG)),
        stage=stage,
        alias=alias,
    )


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


class MlflowRegistry:
    """:class:`Registry` over ``mlflow.MlflowClient`` (import mlflow once, at start-up)."""

    def __init__(self, tracking_uri: str | None) -> None:
        from mlflow import MlflowClient

        self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)

    def model_names(self) -> list[str]:
        names: list[str] = []
        token: str | None = None
        while True:
            page = self.client.search_registered_models(page_token=token)
            names.extend(model.name for model in page)
            token = page.token
            if not token:
                return sorted(names)

    def target(self, name: str, *, stage: str, alias: str | None) -> VersionRef:
        from mlflow.exceptions import MlflowException

        if alias:
            try:
                mv = self.client.get_model_version_by_alias(name, alias)
            except MlflowException as exc:
                if exc.error_code in {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"}:
                    raise NothingToServeError(name, f"alias {alias}") from None
                raise
            return version_ref(mv, alias=alias)
        best: Any = None
        token: str | None = None
        while True:
            page = self.client.search_model_versions(f"name = {_quote(name)}", page_token=token)
            for mv in page:
                if mv.current_stage == stage and (
                    best is None or int(mv.version) > int(best.version)
                ):
                    best = mv
            token = page.token
            if not token:
                break
        if best is None:
            raise NothingToServeError(name, f"stage {stage}")
        return version_ref(best)

    def version(self, name: str, version: str) -> VersionRef:
        return version_ref(self.client.get_model_version(name, version))

    def rollout(self, name: str) -> Rollout | None:
        value = (self.client.get_registered_model(name).tags or {}).get(ROLLOUT_TAG)
        return Rollout.parse(name, value) if value else None
