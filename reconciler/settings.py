"""ReconcilerSettings: the reconciler's configuration from the environment (prefix RECONCILER_)."""

from __future__ import annotations

import getpass
import os
from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import SettingsConfigDict

from contracts.registry import APPLY_LOCK_MODEL
from contracts.settings import ComponentSettings

# CI systems name the commit being built differently; the first one set wins.
_COMMIT_VARIABLES = ("GITHUB_SHA", "CI_COMMIT_SHA", "GIT_COMMIT", "BUILD_VCS_NUMBER")
_ACTOR_VARIABLES = ("GITHUB_ACTOR", "GITLAB_USER_LOGIN", "BUILD_REQUESTEDFOR")


def _from_environment(names: tuple[str, ...]) -> str | None:
    return next((os.environ[name] for name in names if os.environ.get(name)), None)


def _default_actor() -> str:
    actor = _from_environment(_ACTOR_VARIABLES)
    if actor:
        return actor
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


class ReconcilerSettings(ComponentSettings):
    """Read once in ``main()`` and passed down. MLflow's own variables are accepted as is;
    the policy (unknown names) is ``contracts.settings``'."""

    model_config = SettingsConfigDict(env_prefix="RECONCILER_")

    tracking_uri: str = Field(
        default="http://127.0.0.1:5000",
        validation_alias=AliasChoices("RECONCILER_TRACKING_URI", "MLFLOW_TRACKING_URI"),
    )
    models_file: Path = Path("models.yaml")
    upload_experiment: str = "mlgitops-uploads"
    """Experiment whose runs hold the repository-path sources the reconciler uploads."""
    retries: int = Field(default=4, ge=0)
    """Attempts after the first for a request that failed temporarily (5xx, timeout)."""
    backoff_seconds: float = Field(default=0.5, gt=0)
    """First wait between attempts; doubles each time (with jitter), capped at 10 s."""
    request_timeout: int = Field(default=30, ge=1)
    lock_name: str = APPLY_LOCK_MODEL
    lock_wait_seconds: float = Field(default=120.0, ge=0)
    """How long an apply waits for another one to finish before it gives up."""
    lock_lease_seconds: float = Field(default=900.0, gt=0)
    """A lock older than this is taken over (its apply died)."""
    git_commit: str | None = Field(
        default_factory=lambda: _from_environment(_COMMIT_VARIABLES),
        validation_alias=AliasChoices("RECONCILER_GIT_COMMIT"),
    )
    applied_by: str = Field(
        default_factory=_default_actor, validation_alias=AliasChoices("RECONCILER_APPLIED_BY")
    )
    gate_timeout_seconds: float = Field(default=60.0, gt=0)
    """Time limit of the promotion gate's onnxruntime load and inference, per version."""
    log_level: str = "INFO"
    server_token: SecretStr | None = None
    """Bearer token ``status`` sends to the servers (their SERVER_AUTH_TOKEN), if auth is on."""
