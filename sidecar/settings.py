"""The sidecar's settings: environment variables ``SIDECAR_*`` (and MLflow's own), CLI on top."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from contracts.registry import Stage
from contracts.volume import is_valid_model_name


class SidecarSettings(BaseSettings):
    """Built once in ``main()`` and passed down."""

    model_config = SettingsConfigDict(env_prefix="SIDECAR_", extra="forbid")

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

    @model_validator(mode="after")
    def _backoff_order(self) -> SidecarSettings:
        if self.backoff_max < self.backoff_initial:
            raise ValueError("backoff_max must be at least backoff_initial")
        return self

    @property
    def selector(self) -> str:
        """What the sidecar serves, for people: ``stage Production`` or ``alias champion``."""
        return f"alias {self.alias}" if self.alias else f"stage {self.stage}"
