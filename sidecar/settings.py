"""The sidecar's settings: environment variables ``SIDECAR_*`` (and MLflow's own), CLI on top."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from contracts.digest import MAX_FILES
from contracts.registry import Stage
from contracts.settings import ComponentSettings
from contracts.volume import is_valid_model_name


class SidecarSettings(ComponentSettings):
    """Built once in ``main()`` and passed down; the policy (unknown names) is
    ``contracts.settings``'."""

    model_config = SettingsConfigDict(env_prefix="SIDECAR_")

    volume: Path = Field(description="The shared volume the server reads.")
    models: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Registered models to follow (comma-separated in the environment); "
        "empty: every registered model.",
    )
    stage: str = Field(default=Stage.PRODUCTION.value, description="Stage to serve.")
    alias: str | None = Field(default=None, description="Serve this alias instead of a stage.")
    interval: float = Field(default=30.0, gt=0, description="Seconds between two polls.")
    once: bool = False
    tracking_uri: str | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "SIDECAR_TRACKING_URI", "MLFLOW_TRACKING_URI", "tracking_uri"
        ),
    )
    http_host: str = "0.0.0.0"
    http_port: int = Field(default=8081, ge=0, le=65535, description="0 disables the endpoint.")
    webhook_secret: str | None = Field(
        default=None, description="MLflow webhook secret; unset: the receiver is disabled."
    )
    webhook_max_age: float = Field(
        default=300.0, gt=0, description="Reject webhook deliveries older than this (seconds)."
    )
    keep_versions: int = Field(default=3, ge=1, description="Version directories to keep.")
    backoff_initial: float = Field(default=1.0, gt=0)
    backoff_max: float = Field(default=60.0, gt=0)
    rollout: bool = Field(default=True, description="Also fetch a canary/shadow candidate.")
    max_artifact_bytes: int = Field(
        default=4 << 30, gt=0, description="Refuse a version whose files exceed this in all."
    )
    max_artifact_files: int = Field(
        default=MAX_FILES, gt=0, le=MAX_FILES, description="Refuse a version with more files."
    )
    refusal_retry: float = Field(
        default=60.0, gt=0, description="Seconds before a refused version is tried again "
        "(doubling on each refusal up to refusal_retry_max).",
    )  # fmt: skip
    refusal_retry_max: float = Field(default=3600.0, gt=0)
    verify_interval: float = Field(
        default=3600.0, gt=0, description="Seconds between two full digests of what is "
        "published (each cycle checks sizes and modification times).",
    )  # fmt: skip
    webhook_fanout: str | None = Field(
        default=None, description="host:port (comma-separated for several) whose addresses are "
        "every sidecar's (a headless Service): a verified delivery is forwarded to the others.",
    )  # fmt: skip

    @field_validator("models", mode="before")
    @classmethod
    def _split_models(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("models")
    @classmethod
    def _valid_names(cls, value: list[str]) -> list[str]:
        for name in value:
            if not is_valid_model_name(name):
                raise ValueError(f"{name!r} cannot be a directory name in the volume")
        return value

    @field_validator("stage")
    @classmethod
    def _known_stage(cls, value: str) -> str:
        known = {stage.value for stage in Stage}
        if value not in known:
            raise ValueError(f"stage {value!r} is not one of {sorted(known)}")
        return value

    @field_validator("webhook_fanout")
    @classmethod
    def _fanout_addresses(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        for entry in value.split(","):
            host, _, port = entry.strip().rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"{entry.strip()!r} is not host:port (e.g. sidecars:8081)")
        return value

    @model_validator(mode="after")
    def _backoff_order(self) -> SidecarSettings:
        if self.backoff_max < self.backoff_initial:
            raise ValueError("backoff_max must be at least backoff_initial")
        if self.refusal_retry_max < self.refusal_retry:
            raise ValueError("refusal_retry_max must be at least refusal_retry")
        return self

    @property
    def fanout_targets(self) -> list[tuple[str, int]]:
        """``webhook_fanout`` as (host, port) pairs (brackets of an IPv6 literal removed)."""
        if not self.webhook_fanout:
            return []
        pairs = []
        for entry in self.webhook_fanout.split(","):
            host, _, port = entry.strip().rpartition(":")
            pairs.append((host.strip("[]"), int(port)))
        return pairs

    @property
    def selector(self) -> str:
        """What the sidecar serves, for people: ``stage Production`` or ``alias champion``."""
        return f"alias {self.alias}" if self.alias else f"stage {self.stage}"
