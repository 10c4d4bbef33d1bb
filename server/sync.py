"""Bring the table in line with the volume: load what ``current``/``candidate`` point at."""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

from contracts.rollout import Rollout
from contracts.volume import (
    CANDIDATE_LINK,
    CURRENT_LINK,
    PublishedModel,
    VolumeError,
    list_models,
    resolve,
)
from server.errors import ModelLoadError
from server.holder import ModelHolder, ModelTable, Serving
from server.load import LoadedModel, LoadOptions, load_version
from server.metrics import LOAD_SECONDS, LOADED, REFUSALS, SWAPS

log = logging.getLogger(__name__)


class VolumeSync:
    """Called at start and on every change of the volume; safe to call again and again."""

    def __init__(
        self,
        volume: Path,
        table: ModelTable,
        load: LoadOptions,
        *,
        allow_schema_change: bool = False,
    ) -> None:
        """``allow_schema_change``: serve a new version whose inputs or outputs differ from the
        serving one's even if models.yaml does not acknowledge the change."""
        self._volume = volume
        self._table = table
        self._load_options = load
        self._allow_schema_change = allow_schema_change
        self._lock = threading.Lock()

    def sync(self) -> None:
        with self._lock:
            names = list_models(self._volume)
            self._table.add(names)
            for name in names:
                holder = self._table.get(name)
                try:
                    self._sync_model(holder)
                except Exception as exc:  # one model's surprise never stops the others
                    log.exception("syncing %s failed", name)
                    holder.last_error = self._public(f"syncing failed: {exc}")
            for name in self._table.names():
                if name not in names:
                    log.warning("model %s left the volume; no longer served", name)
                    self._retire(self._table.get(name).serving, None)
                    self._table.remove(name)

    def _public(self, text: str) -> str:
        """``text`` with the volume's own path left out (it is served in /models)."""
        for prefix in {str(self._volume), os.path.realpath(self._volume)}:
            text = text.replace(prefix + os.sep, "").replace(prefix, "<volume>")
        return text

    def _resolve(self, holder: ModelHolder, role: str) -> PublishedModel | None:
        try:
            return resolve(self._volume, holder.name, role)
        except VolumeError as exc:
            reason = self._public(str(exc))
            if holder.last_error != reason:
                log.error("cannot read %s/%s: %s", holder.name, role, reason)
                SWAPS.labels(holder.name, role, "failed").inc()
            holder.last_error = reason
            return None

    def _load(
        self, holder: ModelHolder, published: PublishedModel, role: str, like: LoadedModel | None
    ) -> LoadedModel | None:
        directory = str(published.directory)
        if directory in holder.failed_directories:
            return None
        accepted = (
            self._allow_schema_change or published.manifest.breaking_change_acknowledged is not None
        )
        expected = None if accepted else like
        try:
            model = load_version(published, self._load_options, expected)
        except ModelLoadError as exc:
            holder.failed_directories[directory] = exc.reason
            holder.last_error = self._public(str(exc))
            SWAPS.labels(holder.name, role, "failed").inc()
            REFUSALS.labels(holder.name, role, exc.kind).inc()
            extra = {"model": holder.name, "version": published.manifest.version, "role": role}
            serving = like.version if like is not None else "nothing"
            log.error("%s; still serving %s", exc, serving, extra=extra)
            return None
        SWAPS.labels(holder.name, role, "loaded").inc()
        LOAD_SECONDS.labels(holder.name).observe(model.load_seconds)
        LOADED.labels(holder.name, model.version, model.sha256, role).set(1)
        log.info(
            "loaded %s version %s as %s in %.3fs (warm-up %.0fus, %s)",
            holder.name, model.version, role, model.load_seconds, model.warmup_us,
            "inline" if model.inline else "threaded",
            extra={"model": holder.name, "version": model.version, "role": role},
        )  # fmt: skip
        return model

    def _sync_model(self, holder: ModelHolder) -> None:
        old = holder.serving
        current = old.current if old is not None else None
        published = self._resolve(holder, CURRENT_LINK)
        if published is not None and (current is None or published.directory != current.directory):
            promoted = old.candidate if old is not None else None
            if promoted is not None and promoted.directory == published.directory:
                current = promoted  # the candidate became current: no second load
                LOADED.labels(holder.name, current.version, current.sha256, CURRENT_LINK).set(1)
            else:
                loaded = self._load(holder, published, CURRENT_LINK, current)
                if loaded is not None:
                    current = loaded
        if current is None:
            return

        candidate = old.candidate if old is not None else None
        rollout: Rollout | None = None
        published_candidate = self._resolve(holder, CANDIDATE_LINK)
        if published_candidate is None or published_candidate.directory == current.directory:
            candidate = None
        elif candidate is None or published_candidate.directory != candidate.directory:
            candidate = self._load(holder, published_candidate, CANDIDATE_LINK, current)
        if candidate is not None and published_candidate is not None:
            rollout = published_candidate.manifest.rollout
            if rollout is None and published is not None:
                rollout = published.manifest.rollout
            if rollout is not None and rollout.candidate_version != candidate.version:
                log.warning(
                    "rollout of %s names candidate %s but %s is published; not routing to it",
                    holder.name, rollout.candidate_version, candidate.version,
                )  # fmt: skip
                rollout = None

        new = Serving(current=current, candidate=candidate, rollout=rollout)
        if new != old:
            holder.serving = new
            self._retire(old, new)
        served = published is not None and published.directory == current.directory
        if served and (published_candidate is None or candidate is not None):
            holder.last_error = None  # what the volume names is served: nothing refused

    @staticmethod
    def _retire(old: Serving | None, new: Serving | None) -> None:
        """Mark versions no longer served as such (the sessions go with their last request)."""
        if old is None:
            return
        kept = {id(new.current), id(new.candidate)} if new is not None else set()
        for role, model in ((CURRENT_LINK, old.current), (CANDIDATE_LINK, old.candidate)):
            if model is not None and id(model) not in kept:
                LOADED.labels(model.name, model.version, model.sha256, role).set(0)
