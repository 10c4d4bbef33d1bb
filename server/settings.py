"""Server settings (environment, prefix ``SERVER_``), read once in ``get_app()`` and passed down."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import SettingsConfigDict

from contracts.settings import ComponentSettings

METRICS_DIR_CREATED = "SERVER_METRICS_DIR_CREATED"
"""Set by gunicorn.conf.py for its own children: the metrics directory it made (and removes)."""


class ServerSettings(ComponentSettings):
    """Everything the server can be told; each field is ``SERVER_<NAME>`` in the environment."""

    model_config = SettingsConfigDict(env_prefix="SERVER_")

    volume: Path = Field(description="The volume the sidecar publishes into (contracts.volume).")
    host: str = Field(default="0.0.0.0", description="Address to listen on.")
    port: int = Field(default=8000, ge=0, le=65535, description="Port to listen on.")
    workers: int = Field(default=2, ge=1, description="gunicorn worker processes.")
    worker_class: str = Field(
        default="server.worker.HttpWorker",
        description="gunicorn worker class: the package's lean worker (uvloop + httptools) or "
        "uvicorn_worker.UvicornWorker; both serve the same app.",
    )
    default_model: str | None = Field(
        default=None, description="Model served by POST /predict; default: the only one."
    )
    required_models: str = Field(
        default="",
        description="Comma-separated models the pod must serve to be ready (/v2/health/ready), "
        "besides the default model; empty: ready when any model serves.",
    )
    load_timeout_seconds: float = Field(
        default=60.0,
        gt=0,
        description="Most seconds one load and warm-up (then refused), or one inference the "
        "server runs on its own (a shadow run; then stopped), may take.",
    )
    body_timeout_seconds: float = Field(
        default=30.0, gt=0, description="Most seconds a request may take to arrive."
    )
    max_body_bytes: int = Field(default=8 * 1024 * 1024, gt=0)
    metrics_port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="Serve /metrics only on this port (also bound by `python -m server`), so a "
        "load balancer that exposes the inference port never exposes the metrics; unset: "
        "/metrics on every port.",
    )
    auth_token: SecretStr | None = Field(
        default=None,
        description="Bearer token required on the inference routes when set (printable "
        "ASCII, no spaces); an empty value is refused: unset the variable to serve without auth.",
    )
    force_polling: bool = Field(
        default=False, description="Poll the volume instead of inotify (network volumes)."
    )
    poll_delay_ms: int = Field(default=300, gt=0, description="Polling interval with polling.")
    rescan_seconds: float = Field(
        default=5.0, gt=0, description="Full rescan of the volume even without file events."
    )
    intra_op_threads: int = Field(default=1, ge=0, description="onnxruntime threads per session.")
    batch_max_rows: int = Field(
        default=256, ge=1, description="Most rows the micro-batcher joins into one inference."
    )
    batch_window_us: int = Field(
        default=0,
        ge=0,
        description="Extra time to wait for more requests before a batch runs (0: only "
        "requests that arrived while the previous batch ran are joined).",
    )
    inline_max_us: int = Field(
        default=300,
        ge=0,
        description="Models whose warm-up inference is faster run on the event loop; slower "
        "ones in a thread.",
    )
    allow_schema_change: bool = Field(
        default=False,
        description="Accept a new version whose inputs/outputs differ from the serving one.",
    )
    shadow_tolerance: float = Field(
        default=1e-4,
        ge=0,
        description="Shadow outputs differing more than this count as different.",
    )
    retry_after_seconds: int = Field(default=1, ge=1)

    @field_validator("auth_token")
    @classmethod
    def _token_is_usable(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        token = value.get_secret_value()
        if not token:
            raise ValueError(
                "is empty: set a token, or unset SERVER_AUTH_TOKEN to serve without auth"
            )
        if not all("!" <= char <= "~" for char in token):
            raise ValueError(
                "must be printable ASCII without spaces (HTTP headers carry no other text)"
            )
        return value

    @property
    def binds(self) -> list[str]:
        """The addresses gunicorn listens on: the port, and the metrics port when separate."""
        found = [f"{self.host}:{self.port}"]
        if self.metrics_port is not None and self.metrics_port != self.port:
            found.append(f"{self.host}:{self.metrics_port}")
        return found

    @property
    def required(self) -> frozenset[str]:
        return frozenset(name.strip() for name in self.required_models.split(",") if name.strip())
