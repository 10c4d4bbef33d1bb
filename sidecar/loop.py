"""The sidecar's loop: poll the registry, publish what changed, back off on failure.

A webhook (or anything else) calls :meth:`Sidecar.wake` for an immediate check; polling stays
on as the fallback. A failure never touches ``current``.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import tenacity

from contracts.registry import SHA256_TAG
from contracts.rollout import Rollout
from contracts.volume import (
    CANDIDATE_LINK,
    CURRENT_LINK,
    Manifest,
    is_valid_model_name,
    versions_dir,
)
from sidecar.download import Fetcher, arrange, check_declared_size, copy_tree, verify_artifact
from sidecar.errors import (
    ChecksumMissingError,
    CorruptedVolumeError,
    NothingToServeError,
    ServerTooOldError,
    SidecarError,
    is_expected,
    reason_of,
)
from sidecar.integrity import IntegrityWatch
from sidecar.metrics import Metrics, Status
from sidecar.publish import CANDIDATE_MARK, Publisher
from sidecar.resolve import Registry, VersionRef, check_supported
from sidecar.settings import SidecarSettings

log = logging.getLogger(__name__)


def equal_jitter(initial: float, maximum: float) -> tenacity.wait.wait_base:
    """tenacity's exponential backoff, half of it fixed and half random: after n failures,
    between half and all of ``min(maximum, initial * 2 ** (n - 1))``."""
    return tenacity.wait_exponential(multiplier=initial / 2, max=maximum / 2) + (
        tenacity.wait_random_exponential(multiplier=initial / 2, max=maximum / 2)
    )


def delay_after(wait: tenacity.wait.wait_base, failures: int) -> float:
    """What the tenacity ``wait`` strategy says after ``failures`` in a row (none: 0).

    The loop waits on its wake-up event (a webhook ends the wait) and a refused version waits
    across cycles, so the strategies are read here rather than run by ``tenacity.Retrying``.
    """
    if failures <= 0:
        return 0.0
    state = tenacity.RetryCallState(tenacity.Retrying(), None, (), {})
    state.attempt_number = failures
    return float(wait(state))


def rollout_digest(rollout: Rollout) -> str:
    return hashlib.sha256(rollout.to_json().encode()).hexdigest()[:12]


def _version_number(version: str) -> float:
    try:
        return float(int(version))
    except ValueError:
        return float("nan")


@dataclass(slots=True)
class Refusal:
    """A version refused for good reason; tried again after a growing delay, not at once."""

    key: tuple[str, str, str | None]
    error: SidecarError
    attempts: int
    retry_at: float


class Sidecar:
    """Keeps ``DIR/<model>/current`` (and ``candidate``) on what the registry says."""

    def __init__(
        self,
        settings: SidecarSettings,
        registry: Registry,
        fetcher: Fetcher,
        publisher: Publisher | None = None,
        metrics: Metrics | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.fetcher = fetcher
        self.publisher = publisher or Publisher(settings.volume, settings.keep_versions)
        self.metrics = metrics or Metrics()
        self.status = Status(expected=list(settings.models))
        self.clock = clock
        self.integrity = IntegrityWatch(settings.verify_interval, clock)
        self.server_version: str | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._refused: dict[tuple[str, str], Refusal] = {}
        self._managed: dict[str, bool] = {}
        self._unmanaged_logged: set[str] = set()
        self._skipped: set[str] = set()
        self.failures = 0
        # Between failed cycles; before a refused version is tried again (doubling, no jitter).
        self._backoff = equal_jitter(settings.backoff_initial, settings.backoff_max)
        self._refusal_wait = tenacity.wait_exponential(
            multiplier=settings.refusal_retry, max=settings.refusal_retry_max
        )

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

    def detect_server(self) -> None:
        """Read the MLflow server's version once; refuse one older than the minimum.

        Raises:
            ServerTooOldError: the server is below :data:`sidecar.resolve.MINIMUM_MLFLOW`.
        """
        if self.server_version is not None:
            return
        try:
            version = self.registry.server_version()
        except ServerTooOldError:
            raise
        except Exception as exc:  # unreachable now: the next cycle asks again
            log.warning(
                "cannot read the MLflow server version: %s", exc,
                extra={"event": "check_failed", "reason": reason_of(exc)},
            )  # fmt: skip
            return
        check_supported(version)
        self.server_version = version
        log.info("MLflow server %s", version, extra={"event": "mlflow", "version": version})

    def models(self) -> list[str]:
        if self.settings.models:
            return list(self.settings.models)
        listed = [m for m in self.registry.registered_models() if is_valid_model_name(m.name)]
        self._managed = {m.name: m.managed for m in listed}
        return [m.name for m in listed]

    def sync_all(self) -> bool:
        """Check every model once; True if all ended published (or unchanged).

        Raises:
            ServerTooOldError: the MLflow server is too old to follow (the sidecar stops).
        """
        self.detect_server()
        ok = True
        listed = True
        try:
            names = self.models()
        except Exception as exc:
            log.warning("cannot list registered models: %s", exc, extra={"event": "check_failed"})
            ok, listed, names = False, False, []
        self._skipped = set()
        for name in names:
            ok = self.sync_model(name) and ok
        if listed:  # what readiness waits for, set once per cycle (no flapping mid-cycle)
            self.status.expected = [n for n in names if n not in self._skipped]
            self.status.listed_at = time.time()
            if not self.settings.models:  # forget models deleted from the registry
                self._unmanaged_logged &= set(names)
                self.status.keep_only(set(names) - self._unmanaged_logged)
        self.status.unmanaged = len(self._unmanaged_logged)
        self.metrics.unmanaged_models.set(len(self._unmanaged_logged))
        self.integrity.keep_only(self._linked_directories())
        self.status.last_cycle_at = time.time()
        self.status.last_cycle_ok = ok
        return ok

    def _linked_directories(self) -> list[Path]:
        found = []
        for name in self.status.models:
            for role in (CURRENT_LINK, CANDIDATE_LINK):
                dirname = self.publisher.linked_dir(name, role)
                if dirname:
                    found.append(versions_dir(self.settings.volume, name) / dirname)
        return found

    def _skip(self, name: str) -> None:
        """Following every model: ``name`` is not waited for (nothing to serve, not managed)."""
        self._skipped.add(name)

    def _is_unmanaged(self, name: str, ref: VersionRef) -> bool:
        """Following every model: no checksum tag on the version and no managed tag on the
        registered model (registered by hand, another team's): left alone."""
        return not self.settings.models and ref.sha256 is None and not self._managed.get(name)

    def sync_model(self, name: str) -> bool:
        """Check one model; never raises (errors are logged, counted, kept for /healthz)."""
        try:
            try:
                ref = self.registry.target(
                    name, stage=self.settings.stage, alias=self.settings.alias
                )
            except NothingToServeError:
                if self.settings.models:  # named on purpose: nothing to serve is an error
                    raise
                # Following every registered model: one without a version to serve is skipped.
                self._skip(name)
                log.debug("nothing to serve for %s", name, extra={"event": "skip", "model": name})
                return True
            if self._is_unmanaged(name, ref):
                self._skip(name)
                if name not in self._unmanaged_logged:
                    self._unmanaged_logged.add(name)
                    log.info(
                        "skipping %s: not managed by mlgitops (no %s tag on version %s)",
                        name, SHA256_TAG, ref.version,
                        extra={"event": "unmanaged", "model": name, "version": ref.version},
                    )  # fmt: skip
                return True
            self._unmanaged_logged.discard(name)
            status = self.status.model(name)
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
            status = self.status.model(name)
            temporary = not isinstance(exc, SidecarError) or exc.temporary
            status.last_error = reason_of(exc)
            status.last_error_at = time.time()
            self.metrics.checks.labels(name, "failed").inc()
            if is_expected(exc):
                log.warning("%s", exc, extra={"event": "check_failed", "model": name})
            else:
                log.exception(
                    "check failed: %s", exc, extra={"event": "check_failed", "model": name}
                )
            if not temporary and not self.settings.models and status.current is None:
                self._skip(name)  # following every model: one refused version blocks no other
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

    def _intact(self, name: str, dirname: str, manifest: Manifest) -> bool:
        """The published directory still holds what its manifest lists (else: log, count)."""
        directory = versions_dir(self.settings.volume, name) / dirname
        problem = self.integrity.problem(directory, manifest)
        if problem is None:
            return True
        error = CorruptedVolumeError(name, dirname, problem)
        log.warning("%s", error, extra={"event": "corrupted", "model": name, "directory": dirname})
        self.metrics.volume_repairs.labels(name).inc()
        return False

    def _check_refusal(self, name: str, role: str, ref: VersionRef) -> None:
        """Raise the cached refusal of ``ref`` until its retry time has come."""
        refusal = self._refused.get((name, role))
        if refusal is None:
            return
        if refusal.key != ref.key:  # another version (or checksum) now: try it at once
            del self._refused[(name, role)]
        elif self.clock() < refusal.retry_at:
            raise refusal.error

    def _refuse(self, name: str, role: str, ref: VersionRef, error: SidecarError) -> None:
        previous = self._refused.get((name, role))
        attempts = previous.attempts + 1 if previous and previous.key == ref.key else 1
        delay = delay_after(self._refusal_wait, attempts)
        self._refused[(name, role)] = Refusal(ref.key, error, attempts, self.clock() + delay)

    def _publish(self, name: str, role: str, ref: VersionRef, rollout: Rollout | None) -> str:
        """Make ``<name>/<role>`` point at ``ref``; returns unchanged, reused or published."""
        if ref.sha256 is None:
            raise ChecksumMissingError(name, ref.version, SHA256_TAG)
        publisher = self.publisher
        dirname = ref.version
        if rollout is not None:
            dirname = f"{ref.version}{CANDIDATE_MARK}{rollout_digest(rollout)}"

        def matching(directory: str | None) -> Manifest | None:
            manifest = publisher.manifest(name, directory) if directory else None
            if (
                manifest is not None
                and manifest.version == ref.version
                and manifest.sha256 == ref.sha256
                and manifest.role == role
                and manifest.rollout == rollout
                and manifest.breaking_change_acknowledged == ref.breaking_change_acknowledged
            ):
                return manifest
            return None

        linked = publisher.linked_dir(name, role)
        corrupted: str | None = None
        manifest = matching(linked)
        if linked is not None and manifest is not None:
            if self._intact(name, linked, manifest):
                return "unchanged"
            corrupted = linked
        self._check_refusal(name, role, ref)
        started = time.monotonic()
        extra = {"model": name, "version": ref.version, "role": role}
        reusable = matching(dirname) if dirname != corrupted else None
        if reusable is not None and self._intact(name, dirname, reusable):
            publisher.flip(name, role, dirname)
            result, size = "reused", 0
        else:
            try:
                dirname, size, reused = self._fetch_and_install(
                    name, role, ref, rollout, dirname, avoid=corrupted
                )
            except SidecarError as exc:
                result = "failed" if exc.temporary else "refused"
                self.metrics.fetches.labels(name, role, result).inc()
                if not exc.temporary:
                    self._refuse(name, role, ref, exc)
                raise
            except Exception:
                self.metrics.fetches.labels(name, role, "failed").inc()
                raise
            publisher.flip(name, role, dirname)
            result = "reused" if reused else "published"
        self._refused.pop((name, role), None)
        if corrupted is not None and corrupted != dirname:
            publisher.discard(name, corrupted)
            result = "repaired"
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
        self, name: str, role: str, ref: VersionRef, rollout: Rollout | None, dirname: str,
        *, avoid: str | None,
    ) -> tuple[str, int, bool]:  # fmt: skip
        """Stage the version (hard links from an intact published copy, or a verified
        download), seal and install it; returns (directory name, bytes downloaded, reused)."""
        assert ref.sha256 is not None
        publisher = self.publisher
        template = Manifest(
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
            rollout=rollout,
            breaking_change_acknowledged=ref.breaking_change_acknowledged,
        )
        with publisher.scratch(name) as scratch:
            staged = scratch / "version"
            published = publisher.find_published(name, ref.version, ref.sha256)
            source = publisher.manifest(name, published) if published else None
            if published is not None and published != avoid and source is not None:
                copy_tree(versions_dir(publisher.volume, name) / published, staged)
                manifest = replace(
                    template, size=source.size, files=source.files, model_file=source.model_file
                )
                try:
                    publisher.seal(staged, manifest, check=True)
                except CorruptedVolumeError as exc:
                    log.warning("%s", exc, extra={"event": "corrupted", "model": name})
                    shutil.rmtree(staged)
                else:
                    installed = publisher.install(name, staged, dirname)
                    self.integrity.record(versions_dir(publisher.volume, name) / installed)
                    return installed, 0, True
            settings = self.settings
            check_declared_size(ref, max_bytes=settings.max_artifact_bytes)
            log.info(
                "fetching %s version %s", name, ref.version,
                extra={"event": "fetch", "model": name, "version": ref.version,
                       "role": role, "source": ref.source},
            )  # fmt: skip
            downloaded = self.fetcher.fetch(ref, scratch / "download")
            artifact = verify_artifact(
                ref, downloaded,
                max_bytes=settings.max_artifact_bytes, max_files=settings.max_artifact_files,
            )  # fmt: skip
            arrange(artifact, staged)
            manifest = replace(
                template, size=artifact.size, files=artifact.files, model_file=artifact.model_file
            )
            publisher.seal(staged, manifest)
            installed = publisher.install(name, staged, dirname)
            self.integrity.record(versions_dir(publisher.volume, name) / installed)
            return installed, artifact.size, False

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
                delay = delay_after(self._backoff, self.failures)
                log.info(
                    "backing off %.1fs after %d failed cycle(s)", delay, self.failures,
                    extra={"event": "backoff", "delay": round(delay, 3), "failures": self.failures},
                )  # fmt: skip
            self._wake.wait(delay)
