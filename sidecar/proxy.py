"""Download through the tracking server's artifact proxy over plain HTTP (no ``import mlflow``).

The deployed default (``mlflow server --serve-artifacts``) keeps every artifact behind
``/api/2.0/mlflow-artifacts/artifacts``: ``mlflow-artifacts:`` sources, ``runs:/<id>/<path>``
whose run stores there, and MLflow 3 LoggedModels (``models:/m-<id>``, and ``runs:/<id>/<name>``
naming the LoggedModel ``<name>`` the run logged) whose storage is there.
Those are listed and streamed here, within the file-count and byte bounds as the bytes arrive;
anything else (``s3://`` straight from a bucket, ``models:/<name>/<version>``) goes to the
fallback fetcher (MLflow's artifact repositories).
"""

from __future__ import annotations

import posixpath
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlparse

from sidecar.download import Fetcher
from sidecar.errors import ArtifactLayoutError, RegistryAnswerError
from sidecar.resolve import MlflowRest, VersionRef

PROXY = "/api/2.0/mlflow-artifacts/artifacts"
PROXY_SCHEME = "mlflow-artifacts"
MAX_DEPTH = 32


def _safe_relative(name: str) -> bool:
    parts = name.split("/")
    return bool(name) and not name.startswith("/") and all(p not in {"", ".", ".."} for p in parts)


class ProxyFetcher:
    """:class:`Fetcher` for artifacts behind MLflow's proxy; others go to ``fallback``."""

    def __init__(
        self, rest: MlflowRest, fallback: Fetcher, *, max_bytes: int, max_files: int
    ) -> None:
        self.rest = rest
        self.fallback = fallback
        self.max_bytes = max_bytes
        self.max_files = max_files

    def proxied_path(self, source: str) -> str | None:
        """The path behind the proxy that ``source`` names, or None (not proxied)."""
        if source.startswith("runs:/"):
            run_id, _, path = source.removeprefix("runs:/").partition("/")
            answer = self.rest.get(
                "/api/2.0/mlflow/runs/get", {"run_id": run_id}, f"reading run {run_id}"
            )
            run = answer.get("run") or {}
            logged = self._logged_model_of(run, run_id, path)
            if logged is not None:
                return logged
            root = str((run.get("info") or {}).get("artifact_uri", ""))
            return self._path_of(posixpath.join(root, path) if path else root)
        if source.startswith("models:/m-") and "/" not in source.removeprefix("models:/"):
            model_id = source.removeprefix("models:/")
            try:
                answer = self.rest.get(
                    f"/api/2.0/mlflow/logged-models/{quote(model_id)}", None,
                    f"reading logged model {model_id}",
                )  # fmt: skip
            except RegistryAnswerError as exc:
                if exc.status == 404:  # an MLflow 2.x server: no LoggedModels
                    return None
                raise
            info = (answer.get("model") or {}).get("info") or {}
            return self._path_of(str(info.get("artifact_uri", "")))
        return self._path_of(source)

    def _logged_model_of(self, run: dict[str, Any], run_id: str, path: str) -> str | None:
        """``runs:/<run>/<name>[/<rest>]`` as MLflow 3 resolves it when the run logged a
        LoggedModel ``<name>`` (``mlflow.<flavor>.log_model`` stores under the model, not the
        run): the path behind the proxy of that model's artifacts (+ rest), else None."""
        name, _, rest = path.partition("/")
        outputs = (run.get("outputs") or {}).get("model_outputs") or []
        for model_id in [str(o.get("model_id", "")) for o in outputs if isinstance(o, dict)]:
            if not model_id.startswith("m-"):
                continue
            answer = self.rest.get(
                f"/api/2.0/mlflow/logged-models/{quote(model_id)}", None,
                f"reading logged model {model_id}",
            )  # fmt: skip
            info = (answer.get("model") or {}).get("info") or {}
            if info.get("name") == name and info.get("source_run_id") == run_id:
                root = str(info.get("artifact_uri", ""))
                return self._path_of(posixpath.join(root, rest) if rest else root)
        return None

    @staticmethod
    def _path_of(uri: str) -> str | None:
        parsed = urlparse(uri)
        if parsed.scheme != PROXY_SCHEME:
            return None
        path = parsed.path.strip("/")
        return path if _safe_relative(path) else None

    def fetch(self, ref: VersionRef, dest: Path) -> Path:
        path = self.proxied_path(ref.source)
        if path is None:
            return self.fallback.fetch(ref, dest)
        dest.mkdir(parents=True, exist_ok=True)
        listing = self._list_tree(ref, path)
        name = posixpath.basename(path)
        if not listing:  # a file (or nothing: the GET says which)
            target = dest / name
            self._download(ref, path, target, budget=self.max_bytes)
            return target
        root = dest / name
        budget = self.max_bytes
        for relative in listing:
            target = root / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            budget -= self._download(ref, f"{path}/{relative}", target, budget=budget)
        return root

    def _list_tree(self, ref: VersionRef, path: str) -> list[str]:
        """Relative paths of every file under ``path`` (empty: ``path`` is a file), bounded."""
        found: list[str] = []
        pending = [("", 0)]
        while pending:
            prefix, depth = pending.pop()
            if depth > MAX_DEPTH:
                raise self._refusal(ref, f"directories nested deeper than {MAX_DEPTH}")
            listed = f"{path}/{prefix}".rstrip("/")
            answer = self.rest.get(PROXY, {"path": listed}, f"listing {listed}")
            for entry in answer.get("files") or []:
                name = str(entry.get("path", ""))
                relative = f"{prefix}/{name}".lstrip("/")
                if "/" in name or not _safe_relative(relative):
                    raise self._refusal(ref, f"the listing names {name[:80]!r}")
                if entry.get("is_dir"):
                    pending.append((relative, depth + 1))
                    continue
                found.append(relative)
                if len(found) > self.max_files:
                    raise self._refusal(
                        ref, f"its listing shows more than {self.max_files} files or "
                        f"{self.max_bytes} bytes (SIDECAR_MAX_ARTIFACT_FILES/_BYTES); "
                        f"nothing downloaded",
                    )  # fmt: skip
        return sorted(found)

    def _download(self, ref: VersionRef, path: str, target: Path, *, budget: int) -> int:
        """Stream one file to ``target``; refuse once more than ``budget`` bytes arrive."""
        written = 0
        with (
            self.rest.stream(f"{PROXY}/{quote(path)}", f"downloading {path}") as chunks,
            target.open("wb") as handle,
        ):
            for chunk in chunks:
                written += len(chunk)
                if written > budget:
                    raise self._refusal(
                        ref, f"more than {self.max_bytes} bytes arrived "
                        f"(SIDECAR_MAX_ARTIFACT_BYTES); download stopped",
                    )  # fmt: skip
                handle.write(chunk)
        return written

    @staticmethod
    def _refusal(ref: VersionRef, detail: str) -> ArtifactLayoutError:
        return ArtifactLayoutError(ref.name, ref.version, ref.source, detail)
