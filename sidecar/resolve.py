"""Which version to serve: MLflow's registry (stage or alias), read into plain values."""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import unquote

import httpx

from contracts.redact import mask_credentials
from contracts.registry import (
    BREAKING_CHANGE_ACKNOWLEDGED_TAG,
    MANAGED_TAG,
    ROLLOUT_TAG,
    SHA256_TAG,
    SIZE_TAG,
)
from contracts.rollout import Rollout, RolloutContractError
from sidecar.errors import (
    NothingToServeError,
    RegistryAnswerError,
    RegistryUnavailableError,
    RolloutTagError,
    ServerTooOldError,
)


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
    breaking_change_acknowledged: str | None = None

    @property
    def key(self) -> tuple[str, str, str | None]:
        """Identity of what would be published: a new tag value is a new thing to fetch."""
        return (self.name, self.version, self.sha256)


def parse_rollout(model: str, value: str) -> Rollout:
    """The registered model's ROLLOUT_TAG (contracts.rollout), or RolloutTagError naming why."""
    try:
        return Rollout.parse(value)
    except RolloutContractError as exc:
        raise RolloutTagError(model, value, exc.rule) from None


@dataclass(frozen=True, slots=True)
class RegisteredModel:
    """A registered model as the listing shows it: its name and whether mlgitops manages it."""

    name: str
    managed: bool = True


class Registry(Protocol):
    """The part of MLflow's registry the sidecar reads (a fake in unit tests)."""

    def server_version(self) -> str: ...

    def registered_models(self) -> list[RegisteredModel]: ...

    def target(self, name: str, *, stage: str, alias: str | None) -> VersionRef: ...

    def version(self, name: str, version: str) -> VersionRef: ...

    def rollout(self, name: str) -> Rollout | None: ...


MINIMUM_MLFLOW = (2, 7)
"""The oldest MLflow server the sidecar supports (the REST calls below exist since 2.7)."""
PROMPT_TAG = "mlflow.prompt.is_prompt"
"""MLflow 3 stores prompts as registered models with this tag: never models to serve."""


def parse_version(text: str) -> tuple[int, int]:
    """``"2.17.2"`` -> (2, 17); raises ValueError on anything else."""
    match = re.match(r"^\s*(\d+)\.(\d+)", text)
    if match is None:
        raise ValueError(f"not a version: {text[:40]!r}")
    return int(match.group(1)), int(match.group(2))


def check_supported(version: str) -> None:
    """Raise :class:`ServerTooOldError` for a server older than :data:`MINIMUM_MLFLOW`."""
    minimum = ".".join(str(part) for part in MINIMUM_MLFLOW)
    try:
        found = parse_version(version)
    except ValueError:
        raise ServerTooOldError(version[:40] or "unknown", minimum) from None
    if found < MINIMUM_MLFLOW:
        raise ServerTooOldError(version, minimum)


def _int_or_none(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _tags(entity: dict[str, Any]) -> dict[str, str]:
    return {
        str(tag.get("key")): str(tag.get("value", ""))
        for tag in entity.get("tags") or []
        if isinstance(tag, dict)
    }


def version_ref(mv: dict[str, Any], *, alias: str | None = None) -> VersionRef:
    """A model version as MLflow's REST API returns it, as a :class:`VersionRef`."""
    tags = _tags(mv)
    current_stage = mv.get("current_stage")
    stage = current_stage if current_stage and current_stage != "None" else None
    return VersionRef(
        name=str(mv.get("name", "")),
        version=str(mv.get("version", "")),
        source=str(mv.get("source", "")),
        run_id=mv.get("run_id") or None,
        sha256=tags.get(SHA256_TAG),
        size=_int_or_none(tags.get(SIZE_TAG)),
        stage=stage,
        alias=alias,
        breaking_change_acknowledged=tags.get(BREAKING_CHANGE_ACKNOWLEDGED_TAG),
    )


class MlflowRegistry:
    """:class:`Registry` over MLflow's REST API (2.7 through 3.x; no ``import mlflow``).

    The MLflow 3 client adds a prompt filter to every registered-model search that 2.x servers
    answer with no model at all; plain REST lists every model on both (prompts skipped here).
    """

    PAGE = 200

    def __init__(self, tracking_uri: str, *, timeout: float = 30.0) -> None:
        self.rest = MlflowRest(tracking_uri, timeout=timeout)

    def server_version(self) -> str:
        return self.rest.text("/version", "reading the server version").strip()

    def registered_models(self) -> list[RegisteredModel]:
        found: list[RegisteredModel] = []
        token: str | None = None
        while True:
            params: dict[str, str | int] = {"max_results": self.PAGE}
            if token:
                params["page_token"] = token
            page = self.rest.get(
                "/api/2.0/mlflow/registered-models/search", params, "listing registered models"
            )
            for model in page.get("registered_models") or []:
                tags = _tags(model)
                if tags.get(PROMPT_TAG) == "true":
                    continue
                found.append(
                    RegisteredModel(
                        name=str(model.get("name", "")),
                        managed=tags.get(MANAGED_TAG) == "true",
                    )
                )
            token = page.get("next_page_token")
            if not token:
                return sorted(found, key=lambda model: model.name)

    def target(self, name: str, *, stage: str, alias: str | None) -> VersionRef:
        if alias:
            try:
                answer = self.rest.get(
                    "/api/2.0/mlflow/registered-models/alias",
                    {"name": name, "alias": alias},
                    f"reading alias {alias} of {name}",
                )
            except RegistryAnswerError as exc:
                if exc.error_code in {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"}:
                    raise NothingToServeError(name, f"alias {alias}") from None
                raise
            return version_ref(answer.get("model_version") or {}, alias=alias)
        best: dict[str, Any] | None = None
        token: str | None = None
        while True:
            params: dict[str, str | int] = {
                "filter": f"name = {_quote(name)}", "max_results": self.PAGE,
            }  # fmt: skip
            if token:
                params["page_token"] = token
            page = self.rest.get(
                "/api/2.0/mlflow/model-versions/search", params, f"searching versions of {name}"
            )
            for mv in page.get("model_versions") or []:
                if (
                    mv.get("name") == name
                    and mv.get("current_stage") == stage
                    and (best is None or _number(mv) > _number(best))
                ):
                    best = mv
            token = page.get("next_page_token")
            if not token:
                break
        if best is None:
            raise NothingToServeError(name, f"stage {stage}")
        return version_ref(best)

    def version(self, name: str, version: str) -> VersionRef:
        answer = self.rest.get(
            "/api/2.0/mlflow/model-versions/get",
            {"name": name, "version": version},
            f"reading {name} version {version}",
        )
        return version_ref(answer.get("model_version") or {})

    def rollout(self, name: str) -> Rollout | None:
        answer = self.rest.get(
            "/api/2.0/mlflow/registered-models/get", {"name": name}, f"reading model {name}"
        )
        value = _tags(answer.get("registered_model") or {}).get(ROLLOUT_TAG)
        return parse_rollout(name, value) if value else None


def _number(mv: dict[str, Any]) -> int:
    try:
        return int(mv.get("version", -1))
    except (TypeError, ValueError):
        return -1


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _detail(exc: httpx.HTTPError) -> str:
    return mask_credentials(str(exc)) or type(exc).__name__


def _answer_error(what: str, response: httpx.Response) -> RegistryAnswerError:
    code, message = "", response.text[:200]
    with contextlib.suppress(ValueError, AttributeError):
        body = response.json()
        code, message = str(body.get("error_code", "")), str(body.get("message", ""))
    return RegistryAnswerError(what, response.status_code, code, mask_credentials(message))


class MlflowRest:
    """GET requests to an MLflow tracking server, JSON answers, errors as SidecarErrors.

    Credentials come from the URI's user-info, ``MLFLOW_TRACKING_USERNAME``/``_PASSWORD`` or
    ``MLFLOW_TRACKING_TOKEN`` (as MLflow's own client reads them); no error text carries them.
    """

    def __init__(self, tracking_uri: str, *, timeout: float) -> None:
        url = httpx.URL(tracking_uri)
        if url.scheme not in {"http", "https"}:
            raise ValueError(
                f"tracking URI {mask_credentials(tracking_uri)!r} is not http(s)://: the sidecar "
                f"reads MLflow's REST API (point it at the tracking server)"
            )
        auth: httpx.Auth | None = None
        headers: dict[str, str] = {"User-Agent": "mlgitops-sidecar"}
        if url.username or url.password:
            auth = httpx.BasicAuth(unquote(url.username), unquote(url.password))
            url = url.copy_with(username=None, password=None)
        elif os.environ.get("MLFLOW_TRACKING_USERNAME"):
            auth = httpx.BasicAuth(
                os.environ["MLFLOW_TRACKING_USERNAME"],
                os.environ.get("MLFLOW_TRACKING_PASSWORD", ""),
            )
        elif os.environ.get("MLFLOW_TRACKING_TOKEN"):
            headers["Authorization"] = f"Bearer {os.environ['MLFLOW_TRACKING_TOKEN']}"
        verify = os.environ.get("MLFLOW_TRACKING_INSECURE_TLS", "").lower() != "true"
        self.client = httpx.Client(
            base_url=str(url).rstrip("/") + "/", auth=auth, headers=headers, timeout=timeout,
            verify=verify, trust_env=False,
        )  # fmt: skip

    def _send(self, path: str, params: dict[str, str | int] | None, what: str) -> httpx.Response:
        try:
            response = self.client.get(path.lstrip("/"), params=params)
        except httpx.HTTPError as exc:
            raise RegistryUnavailableError(what, _detail(exc)) from None
        if response.status_code != 200:
            raise _answer_error(what, response)
        return response

    @contextlib.contextmanager
    def stream(self, path: str, what: str) -> Iterator[Iterator[bytes]]:
        """GET ``path``; yields its body in 1 MiB chunks as they arrive."""
        try:
            with self.client.stream("GET", path.lstrip("/")) as response:
                if response.status_code != 200:
                    response.read()
                    raise _answer_error(what, response)
                yield response.iter_bytes(1 << 20)
        except httpx.HTTPError as exc:
            raise RegistryUnavailableError(what, _detail(exc)) from None

    def get(self, path: str, params: dict[str, str | int] | None, what: str) -> dict[str, Any]:
        response = self._send(path, params, what)
        try:
            answer = response.json()
        except ValueError:
            raise RegistryUnavailableError(what, "the answer is not JSON") from None
        if not isinstance(answer, dict):
            raise RegistryUnavailableError(what, "the answer is not a JSON object")
        return answer

    def text(self, path: str, what: str) -> str:
        return self._send(path, None, what).text

    def close(self) -> None:
        self.client.close()
