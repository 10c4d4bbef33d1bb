"""The sidecar's loop: poll the registry, publish what changed, back off on failure.

A webhook (or anything else) calls :meth:`Sidecar.wake` for an immediate check; polling stays
on as the fallback. A failure never touches ``current``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import random
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

from contracts.registry import SHA256_TAG
from contracts.volume import (
    CANDIDATE_LINK,
    CURRENT_LINK,
    Manifest,
    is_valid_model_name,
    versions_dir,
)
from sidecar.download import Fetcher, arrange, copy_tree
from sidecar.errors import ChecksumMissingError, NothingToServeError, SidecarError, is_expected
from sidecar.metrics import Metrics, Status
from sidecar.publish import CANDIDATE_MARK, Publisher
from sidecar.resolve import Registry, Rollout, VersionRef
from sidecar.settings import SidecarSettings

log = logging.getLogger(__name__)


def backoff_delay(
    failures: int, *, initial: float, maximum: float, rng: Callable[[], float] = random.random
) -> float:
    """Exponential backoff with "equal jitter": half fixed, half random, capped at ``maximum``."""
    if failures <= 0:
        return 0.0
    ceiling = min(maximum, initial * 2.0 ** min(failures - 1, 30))
    return ceiling / 2 + rng() * ceiling / 2


def rollout_digest(rollout: Rollout) -> str:
    return hashlib.sha256(json.dumps(rollout.raw, sort_keys=True).encode()).hexdigest()[:12]


def _version_number(version: str) -> float:
    try:
        return float(int(version))
    except ValueError:
        return float("nan")


class Sidecar:
    """Keeps ``DIR/<model>/current`` (and ``candidate``) on what the registry says."""

    def __init__(
        self,
        settings: SidecarSettings,
        registry: Registry,
        fetcher: Fetcher,
        publisher: Publisher | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.fetcher = fetcher
        self.publisher = publisher or Publisher(settings.volume, settings.keep_versions)
        self.metrics = metrics or Metrics()
        self.status = Status(expected=list(settings.models))
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._refused: dict[tuple[str, str, str | None], SidecarError] = {}
        self.failures = 0

    # -- control -----------------------------------------------------------------------------

    def wake(self, model: str | None = None) -> None:
        """Check now (a webhook arrived) instead of at the next poll."""
        log.info("check requested", extra={"event": "wake", "model": model})
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def clean_leftovers(self) -> None:
        """Remove scratch a killed run left in the volume (``DIR/*/.tmp-*``)."""
        volume = self.settings.volume
        names = set(self.settings.models)
        if volume.is_dir():
            names |= {
                e.name for e in volume.iterdir() if e.is_dir() and is_valid_model_name(e.name)
            }
        for name in sorted(names):
            for path in self.publisher.clean_leftovers(name):
                log.info(
                    "removed leftover", extra={"event": "cleanup", "model": name, "path": str(path)}
                )

    # -- one cycle ---------------------------------------------------------------------------

    def models(self) -> list[str]:
        if self.settings.models:
            names = list(self.settings.models)
        else:
            names = [n for n in self.registry.model_names() if is_valid_model_name(n)]
        self.status.expected = names
        self.status.listed_at = time.time()
        return names

    def sync_all(self) -> bool:
        """Check every model once; True if all ended published (or unchanged)."""
        ok = True
        try:
            names = self.models()
        except Exception as exc:
            log.warning("cannot list registered models: %s", exc, extra={"event": "check_failed"})
            ok = False
            names = []
        for name in names:
            ok = self.sync_model(name) and ok
        self.status.last_cycle_at = time.time()
        self.status.last_cycle_ok = ok
        return ok

    def sync_model(self, name: str) -> bool:
        """Check one model; never raises (errors are logged, counted, kept for /healthz)."""
        status = self.status.model(name)
        try:
            try:
                ref = self.registry.target(
                    name, stage=self.settings.stage, alias=self.settings.alias
                )
            except NothingToServeError:
                if self.settings.models:  # named on purpose: nothing to serve is an error
                    raise
                # Following every registered model: one without a version to serve is skipped.
                self.status.expected = [n for n in self.status.expected if n != name]
                log.debug("nothing to serve for %s", name, extra={"event": "skip", "model": name})
                return True
            self._publish(name, CURRENT_LINK, ref, None)
            status.current = ref.version
            self.metrics.current_version.labels(name, CURRENT_LINK).set(
                _version_number(ref.version)
            )
            if self.settings.rollout:
                self._sync_candidate(name)
            pruned = self.publisher.prune(name)
            if pruned:
                log.info(
                    "pruned old versions",
                    extra={"event": "prune", "model": name, "versions": pruned},
                )
        except Exception as exc:
            temporary = not isinstance(exc, SidecarError) or exc.temporary
            status.last_error = f"{type(exc).__name__}: {exc}"
            status.last_error_at = time.time()
            self.metrics.checks.labels(name, "failed").inc()
            if is_expected(exc):
                log.warning("%s", exc, extra={"event": "check_failed", "model": name})
            else:
                log.exception(
                    "check failed: %s", exc, extra={"event": "check_failed", "model": name}
                )
            return not temporary
        status.last_success = time.time()
        status.last_error = None
        self.metrics.checks.labels(name, "ok").inc()
        self.metrics.last_success.labels(name).set(status.last_success)
        return True

    def _sync_candidate(self, name: str) -> None:
        status = self.status.model(name)
        rollout = self.registry.rollout(name)
        if rollout is None:
            if self.publisher.unlink(name, CANDIDATE_LINK):
                log.info(
                    "rollout ended: candidate removed", extra={"event": "unlink", "model": name}
                )
                with contextlib.suppress(KeyError):  # not set since this process started
                    self.metrics.current_version.remove(name, CANDIDATE_LINK)
            status.candidate = None
            return
        ref = self.registry.version(name, rollout.candidate_version)
        self._publish(name, CANDIDATE_LINK, ref, rollout)
        status.candidate = ref.version
        self.metrics.current_version.labels(name, CANDIDATE_LINK).set(_version_number(ref.version))

    def _publish(self, name: str, role: str, ref: VersionRef, rollout: Rollout | None) -> str:
        """Make ``<name>/<role>`` point at ``ref``; returns unchanged, reused or published."""
        if ref.sha256 is None:
            raise ChecksumMissingError(name, ref.version, SHA256_TAG)
        publisher = self.publisher
        dirname = ref.version
        if rollout is not None:
            dirname = f"{ref.version}{CANDIDATE_MARK}{rollout_digest(rollout)}"

        def matches(directory: str | None) -> bool:
            manifest = publisher.manifest(name, directory) if directory else None
            return (
                manifest is not None
                and manifest.version == ref.version
                and manifest.sha256 == ref.sha256
                and manifest.role == role
                and manifest.rollout == (rollout.raw if rollout else None)
            )

        if matches(publisher.linked_dir(name, role)):
            return "unchanged"
        if ref.key in self._refused:
            raise self._refused[ref.key]
        started = time.monotonic()
        extra = {"model": name, "version": ref.version, "role": role}
        if matches(dirname):
            publisher.flip(name, role, dirname)
            result, size = "reused", 0
        else:
            try:
                dirname, size, reused = self._fetch_and_install(name, role, ref, rollout, dirname)
            except SidecarError as exc:
                result = "failed" if exc.temporary else "refused"
                self.metrics.fetches.labels(name, role, result).inc()
                if not exc.temporary:
                    self._refused[ref.key] = exc
                raise
            except Exception:
                self.metrics.fetches.labels(name, role, "failed").inc()
                raise
            publisher.flip(name, role, dirname)
            result = "reused" if reused else "published"
        duration = time.monotonic() - started
        self.metrics.fetches.labels(name, role, result).inc()
        self.metrics.fetch_seconds.labels(name).observe(duration)
        self.metrics.fetch_bytes.labels(name).inc(size)
        log.info(
            "%s %s version %s (%s)", role, name, ref.version, result,
            extra={**extra, "event": result, "duration": round(duration, 3), "bytes": size,
                   "directory": dirname, "source": ref.source},
        )  # fmt: skip
        return result

    def _fetch_and_install(
        self, name: str, role: str, ref: VersionRef, rollout: Rollout | None, dirname: str
    ) -> tuple[str, int, bool]:
        assert ref.sha256 is not None
        publisher = self.publisher
        manifest = Manifest(
            name=name,
            version=ref.version,
            sha256=ref.sha256,
            size=ref.size or 0,
            source=ref.source,
            run_id=ref.run_id,
            stage=ref.stage,
            alias=ref.alias,
            fetched_at=datetime.now(UTC).isoformat(timespec="seconds"),
            role=role,
            rollout=rollout.raw if rollout else None,
        )
        with publisher.scratch(name) as scratch:
            staged = scratch / "version"
            published = publisher.find_published(name, ref.version, ref.sha256)
            if published is not None:
                copy_tree(versions_dir(publisher.volume, name) / published, staged)
                size, reused = 0, True
            else:
                log.info(
                    "fetching %s version %s", name, ref.version,
                    extra={"event": "fetch", "model": name, "version": ref.version,
                           "role": role, "source": ref.source},
                )  # fmt: skip
                downloaded = self.fetcher.fetch(ref, scratch / "download")
                arrange(ref, downloaded, staged)
                size, reused = (
                    sum(p.stat().st_size for p in staged.rglob("*") if p.is_file()),
                    False,
                )
            publisher.seal(staged, manifest, expected_size=ref.size)
            return publisher.install(name, staged, dirname), size, reused

    # -- the loop ----------------------------------------------------------------------------

    def run_once(self) -> bool:
        self.clean_leftovers()
        return self.sync_all()

    def run(self) -> None:
        """Poll until :meth:`stop`; a wake-up checks at once, a failure backs off."""
        self.clean_leftovers()
        while not self._stop.is_set():
            self._wake.clear()
            ok = self.sync_all()
            self.failures = 0 if ok else self.failures + 1
            self.metrics.consecutive_failures.set(self.failures)
            if ok:
                delay = self.settings.interval
            else:
                delay = backoff_delay(
                    self.failures,
                    initial=self.settings.backoff_initial,
                    maximum=self.settings.backoff_max,
                )
                log.info(
                    "backing off %.1fs after %d failed cycle(s)", delay, self.failures,
                    extra={"event": "backoff", "delay": round(delay, 3), "failures": self.failures},
                )  # fmt: skip
            self._wake.wait(delay)
