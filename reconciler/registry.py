"""MlflowRegistry: the Registry port on MLflow's client, with retries for temporary faults.

Every request goes through MLflow's client (its transport is requests), the one REST call of
our own included (``GET /version``: MLflow's ``http_request``, so it carries the credentials,
TLS settings and request headers MLflow's client sends). The reconciler's own HTTP client, for
the servers, is httpx (``reconciler.status``).
"""

from __future__ import annotations

import contextlib
import io
import logging
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import tenacity
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from packaging.version import InvalidVersion, Version

from contracts.registry import ONNX_FILE_NAME, Stage
from reconciler.errors import ReconcilerError, RegistryRequestError, RegistryUnavailableError
from reconciler.state import LOCK_TAG, ActualModel, ActualVersion, RegistryState

_REGISTERED_MODEL_META = "registered_model_meta"
"""Written by mlflow.artifacts.download_artifacts into a models:/ download (mlflow's
models_artifact_repo), never stored with the model. A ``runs:/<run>/<name>`` download gets it
too when MLflow 3 resolves it to the run's LoggedModel ``<name>`` (``mlflow.<flavor>.log_model``
stores under the model, not the run)."""
_META_ADDED_TO = ("models:/", "runs:/")

log = logging.getLogger(__name__)

T = TypeVar("T")

MIN_SERVER_VERSION = Version("2.7")
"""The oldest MLflow server the reconciler works with."""
NAMES_IN_VERSION_SEARCH = Version("3.0")
"""From this server version on, model versions are searched with ``name IN (...)``; older
ones refuse it ("Only the 'run_id' attribute supports comparison with a list")."""
PROMPT_TAG = "mlflow.prompt.is_prompt"
"""MLflow 3 stores prompts as registered models with this tag: not models, never listed."""
NAMES_PER_SEARCH = 50
"""Names per ``name IN (...)`` filter: the search is a GET, its URL must stay short."""
PAGE_SIZE = 1000

_stage_warning = {"logged": False}


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    retries: int = 4
    backoff_seconds: float = 0.5
    max_backoff_seconds: float = 10.0

    @property
    def wait(self) -> tenacity.wait.wait_base:
        """Exponential backoff, half of it fixed and half random: the wait after failed
        attempt n is between half and all of min(max_backoff, backoff * 2 ** (n - 1))."""
        first, most = self.backoff_seconds / 2, self.max_backoff_seconds / 2
        return tenacity.wait_exponential(multiplier=first, max=most) + (
            tenacity.wait_random_exponential(multiplier=first, max=most)
        )


def is_temporary(exc: BaseException) -> bool:
    """MLflow unreachable, 5xx, 429 or a timeout: worth another try. Anything else is not.

    MLflow's transport raises requests' exceptions, which are OSErrors.
    """
    if isinstance(exc, MlflowException):
        status = int(exc.get_http_status_code())  # type: ignore[no-untyped-call]
        return status >= 500 or status == 429
    return isinstance(exc, OSError)


def call_with_retries(
    operation: str,
    call: Callable[[], T],
    policy: RetryPolicy,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Run ``call``; retry temporary failures with backoff; map failures to reconciler errors."""

    def warn(state: tenacity.RetryCallState) -> None:
        log.warning(
            "MLflow failed %s (attempt %d of %d), retrying in %.1fs: %s",
            operation, state.attempt_number, policy.retries + 1, state.upcoming_sleep,
            state.outcome.exception() if state.outcome else None,
        )  # fmt: skip

    retrying = tenacity.Retrying(
        stop=tenacity.stop_after_attempt(policy.retries + 1),
        wait=policy.wait,
        retry=tenacity.retry_if_exception(is_temporary),
        before_sleep=warn,
        sleep=sleep,
        reraise=True,
    )
    try:
        return retrying(call)
    except (MlflowException, OSError) as exc:
        if not is_temporary(exc):
            raise RegistryRequestError(operation, exc) from exc
        attempts = int(retrying.statistics["attempt_number"])
        raise RegistryUnavailableError(operation, attempts, exc) from exc


def error_code(exc: BaseException) -> str | None:
    """MLflow's error code (e.g. RESOURCE_ALREADY_EXISTS) behind a RegistryRequestError."""
    cause = exc.__cause__
    return str(cause.error_code) if isinstance(cause, MlflowException) else None


@contextlib.contextmanager
def mlflow_uris(uri: str) -> Iterator[None]:
    """MLflow's global tracking and registry URIs set to ``uri`` for a while, then exactly as
    they were. ``models:/`` downloads resolve on the globals whatever URI is passed, and
    ``mlflow.set_tracking_uri`` would also rewrite (or unset) the environment variables."""
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    saved = (tracking_utils._tracking_uri, registry_utils._registry_uri)
    tracking_utils._tracking_uri, registry_utils._registry_uri = uri, uri  # type: ignore[assignment]
    try:
        yield
    finally:
        tracking_utils._tracking_uri, registry_utils._registry_uri = saved


def _warn_stages_once() -> None:
    if not _stage_warning["logged"]:
        _stage_warning["logged"] = True
        log.warning(
            "MLflow deprecates model version stages in favour of aliases; models.yaml declares "
            "stages, so the reconciler still sets them (MLflow serves them). Warned once."
        )


def _chunks(items: Sequence[str], size: int) -> list[Sequence[str]]:
    return [items[start : start + size] for start in range(0, len(items), size)]


def _quoted(name: str) -> str:
    return "'" + name.replace("'", "\\'") + "'"


def _name_filter(names: Sequence[str]) -> str:
    """``name = 'a'`` (every server) or ``name IN ('a', 'b')`` (MLflow 3 servers)."""
    if len(names) == 1:
        return f"name = {_quoted(names[0])}"
    return f"name IN ({', '.join(_quoted(name) for name in names)})"


class UnsupportedServerError(ReconcilerError):
    """The MLflow server is older than the oldest the reconciler works with."""

    def __init__(self, version: str) -> None:
        super().__init__(
            f"the MLflow server runs version {version}; the reconciler needs MLflow "
            f"{MIN_SERVER_VERSION} or newer. Upgrade the MLflow server."
        )


class MlflowRegistry:
    """The Registry port on ``MlflowClient`` (credentials from MLflow's own variables)."""

    def __init__(self, tracking_uri: str, policy: RetryPolicy, upload_experiment: str) -> None:
        self.tracking_uri = tracking_uri
        self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        self.policy = policy
        self.upload_experiment = upload_experiment
        self._experiment_id: str | None = None
        self._server_version: tuple[Version | None] | None = None

    def _call(self, operation: str, call: Callable[[], T]) -> T:
        return call_with_retries(operation, call, self.policy)

    # --- the server: its version decides which requests it understands -----------------------

    def server_version(self) -> Version | None:
        """The MLflow server's version (asked once); None when it does not say.

        Raises:
            UnsupportedServerError: older than MIN_SERVER_VERSION.
        """
        if self._server_version is None:
            self._server_version = (self._ask_version(),)
            found = self._server_version[0]
            if found is not None and found < MIN_SERVER_VERSION:
                raise UnsupportedServerError(str(found))
            log.debug("MLflow server version", extra={"version": str(found)})
        return self._server_version[0]

    def _ask_version(self) -> Version | None:
        if not self.tracking_uri.startswith(("http://", "https://")):
            import mlflow

            return Version(mlflow.__version__)  # a local store: this client is the server
        from mlflow.utils.rest_utils import http_request

        creds = self.client._tracking_client.store.get_host_creds()
        response = self._call(
            "asking the MLflow server's version",
            lambda: http_request(creds, "/version", "GET", max_retries=0, timeout=10),  # type: ignore[no-untyped-call]
        )
        try:
            return Version(response.text.strip()) if response.status_code == 200 else None
        except InvalidVersion:
            return None

    def _store(self) -> Any:
        """The registry's REST store: MLflow 3's client adds a prompt filter to every
        registered-model search, which MLflow 2.x servers answer with no model at all."""
        return self.client._get_registry_client().store  # type: ignore[no-untyped-call]

    # --- reading: requests grow with the number of models, not versions -----------------------

    def read(self, names: Sequence[str]) -> RegistryState:
        server = self.server_version()
        wanted = set(names)
        models: dict[str, ActualModel] = {}
        others: list[str] = []
        for registered in self._all_pages(
            "listing registered models",
            partial(self._store().search_registered_models, None, PAGE_SIZE),
        ):
            tags = dict(registered.tags or {})
            if registered.name in wanted:
                models[registered.name] = ActualModel(
                    name=registered.name,
                    description=registered.description or "",
                    tags=tags,
                    aliases={k: str(v) for k, v in (registered.aliases or {}).items()},
                )
            elif tags.get(LOCK_TAG) != "true" and tags.get(PROMPT_TAG) != "true":
                others.append(registered.name)
        versions: dict[str, list[ActualVersion]] = {}
        names_in = server is not None and server >= NAMES_IN_VERSION_SEARCH
        groups = (
            _chunks(sorted(models), NAMES_PER_SEARCH)
            if names_in
            else [[name] for name in sorted(models)]
        )
        for group in groups:
            for found in self._all_pages(
                "searching model versions",
                partial(self._store().search_model_versions, _name_filter(group), PAGE_SIZE * 10),
            ):
                versions.setdefault(found.name, []).append(
                    ActualVersion(
                        version=str(found.version),
                        source=found.source or "",
                        stage=Stage(found.current_stage or "None"),
                        tags=dict(found.tags or {}),
                        description=found.description or "",
                        run_id=found.run_id or None,
                    )
                )
        return RegistryState(
            models={
                name: ActualModel(
                    name=model.name,
                    description=model.description,
                    tags=model.tags,
                    aliases=model.aliases,
                    versions=tuple(sorted(versions.get(name, []), key=lambda v: v.number)),
                )
                for name, model in models.items()
            },
            others=tuple(sorted(others)),
        )

    def _all_pages(self, operation: str, search: Callable[..., Any]) -> list[Any]:
        """Every page of a search (``search(order_by=None, page_token=token)``)."""
        results: list[Any] = []
        token: str | None = None
        while True:
            page = self._call(operation, partial(search, None, token))
            results.extend(page)
            token = page.token
            if not token:
                return results

    # --- writing ---------------------------------------------------------------------------------

    def create_model(self, name: str, description: str | None, tags: Mapping[str, str]) -> None:
        self._call(
            f"creating registered model {name}",
            lambda: self.client.create_registered_model(
                name, tags=dict(tags), description=description
            ),
        )

    def _experiment(self) -> str:
        if self._experiment_id is None:
            found = self._call(
                "finding the upload experiment",
                lambda: self.client.get_experiment_by_name(self.upload_experiment),
            )
            if found is None:
                try:
                    self._experiment_id = self._call(
                        "creating the upload experiment",
                        lambda: self.client.create_experiment(self.upload_experiment),
                    )
                except RegistryRequestError as exc:
                    if error_code(exc) != "RESOURCE_ALREADY_EXISTS":
                        raise
                    return self._experiment()
            else:
                self._experiment_id = str(found.experiment_id)
        return self._experiment_id

    def upload(
        self, model: str, sha256: str, local: Path, tags: Mapping[str, str]
    ) -> tuple[str, str]:
        experiment_id = self._experiment()
        run = self._call(
            f"creating an upload run for {model}",
            lambda: self.client.create_run(
                experiment_id, run_name=f"{model}-{sha256[:12]}", tags=dict(tags)
            ),
        )
        run_id = str(run.info.run_id)
        with tempfile.TemporaryDirectory(prefix="mlgitops-upload-") as scratch:
            if local.is_dir():
                directory = str(local)  # every file under its relative name (external data)
            else:
                shutil.copyfile(local, Path(scratch) / ONNX_FILE_NAME)
                directory = scratch
            self._call(
                f"uploading {local.name} for {model}",
                lambda: self.client.log_artifacts(run_id, directory, "model"),
            )
        # MLflow prints "View run ... at: URL" on stdout, where the plan goes: keep it out.
        with contextlib.redirect_stdout(io.StringIO()):
            self._call("closing the upload run", lambda: self.client.set_terminated(run_id))
        return f"{run.info.artifact_uri}/model", run_id

    def register_version(
        self,
        name: str,
        source: str,
        run_id: str | None,
        tags: Mapping[str, str],
        description: str | None,
        *,
        model_id: str | None = None,
    ) -> str:
        created = self._call(
            f"registering a version of {name}",
            lambda: self.client.create_model_version(
                name,
                source,
                run_id=run_id,
                tags=dict(tags),
                description=description,
                await_creation_for=0,
                model_id=model_id,
            ),
        )
        return str(created.version)

    def alias_version(self, name: str, alias: str) -> str:
        found = self._call(
            f"reading alias {alias} of {name}",
            lambda: self.client.get_model_version_by_alias(name, alias),
        )
        return str(found.version)

    def set_stage(self, name: str, version: str, stage: Stage) -> None:
        _warn_stages_once()

        def transition() -> None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                self.client.transition_model_version_stage(
                    name, version, stage.value, archive_existing_versions=False
                )

        self._call(f"moving {name} version {version} to {stage.value}", transition)

    def set_version_tag(self, name: str, version: str, key: str, value: str) -> None:
        self._call(
            f"setting tag {key} on {name} version {version}",
            lambda: self.client.set_model_version_tag(name, version, key, value),
        )

    def delete_version_tag(self, name: str, version: str, key: str) -> None:
        self._call(
            f"deleting tag {key} of {name} version {version}",
            lambda: self.client.delete_model_version_tag(name, version, key),
        )

    def set_model_tag(self, name: str, key: str, value: str) -> None:
        self._call(
            f"setting tag {key} on {name}",
            lambda: self.client.set_registered_model_tag(name, key, value),
        )

    def delete_model_tag(self, name: str, key: str) -> None:
        self._call(
            f"deleting tag {key} of {name}",
            lambda: self.client.delete_registered_model_tag(name, key),
        )

    def set_alias(self, name: str, alias: str, version: str) -> None:
        self._call(
            f"pointing alias {alias} of {name} at version {version}",
            lambda: self.client.set_registered_model_alias(name, alias, version),
        )

    def delete_alias(self, name: str, alias: str) -> None:
        self._call(
            f"deleting alias {alias} of {name}",
            lambda: self.client.delete_registered_model_alias(name, alias),
        )

    def set_model_description(self, name: str, description: str) -> None:
        self._call(
            f"updating the description of {name}",
            lambda: self.client.update_registered_model(name, description=description),
        )

    def set_version_description(self, name: str, version: str, description: str) -> None:
        self._call(
            f"updating the description of {name} version {version}",
            lambda: self.client.update_model_version(name, version, description=description),
        )

    # --- artifacts -------------------------------------------------------------------------------

    def download_uri(self, name: str, version: str) -> str:
        return self._call(
            f"resolving where {name} version {version} is stored",
            lambda: str(self.client.get_model_version_download_uri(name, version)),
        )

    def download(self, uri: str, destination: Path) -> Path:
        import mlflow.artifacts

        def download() -> str:
            with mlflow_uris(self.tracking_uri):
                return str(
                    mlflow.artifacts.download_artifacts(
                        artifact_uri=uri,
                        dst_path=str(destination),
                        tracking_uri=self.tracking_uri,
                        registry_uri=self.tracking_uri,
                    )
                )

        local = Path(self._call(f"downloading {uri}", download))
        if uri.startswith(_META_ADDED_TO) and local.is_dir():
            # MLflow's models:/ download adds this file to the local copy (the store holds no
            # such file, and the sidecar fetches from the store): it is not the version's bytes.
            (local / _REGISTERED_MODEL_META).unlink(missing_ok=True)
        return local

    # --- the apply lock: a registered model whose creation is atomic in MLflow's database ---------

    def try_lock(self, name: str, tags: Mapping[str, str]) -> bool:
        try:
            self._call(
                "taking the apply lock",
                lambda: self.client.create_registered_model(
                    name,
                    tags=dict(tags),
                    description="Held by a running `python -m reconciler apply`; released at "
                    "its end. Never register versions here.",
                ),
            )
        except RegistryRequestError as exc:
            if error_code(exc) == "RESOURCE_ALREADY_EXISTS":
                return False
            raise
        return True

    def lock_tags(self, name: str) -> Mapping[str, str] | None:
        try:
            found = self._call(
                "reading the apply lock", lambda: self.client.get_registered_model(name)
            )
        except RegistryRequestError as exc:
            if error_code(exc) == "RESOURCE_DOES_NOT_EXIST":
                return None
            raise
        return dict(found.tags or {})

    def unlock(self, name: str, token: str) -> None:
        try:
            found = self._call(
                "checking the apply lock before releasing it",
                lambda: self.client.get_registered_model(name),
            )
        except RegistryRequestError as exc:
            if error_code(exc) == "RESOURCE_DOES_NOT_EXIST":
                return
            raise
        tags = dict(found.tags or {})
        if tags.get(LOCK_TAG) != "true" or tags.get("token") != token or found.latest_versions:
            log.warning(
                "not deleting registered model %s: it is not the apply lock this run holds", name
            )
            return
        try:
            self._call(
                "releasing the apply lock", lambda: self.client.delete_registered_model(name)
            )
        except RegistryRequestError as exc:
            if error_code(exc) != "RESOURCE_DOES_NOT_EXIST":
                raise
