"""The sidecar's errors: one root, structured subclasses that build their own message."""

from __future__ import annotations


class SidecarError(Exception):
    """Root of every error the sidecar raises on purpose."""

    temporary = True
    """Worth retrying (MLflow down, S3 error, disk full) versus permanent (bad checksum)."""
    reason = "internal_error"
    """A short classified reason for /healthz (never the message: it may name hosts, paths)."""


class NothingToServeError(SidecarError):
    """The registry has no version for the selector (no Production version, unknown alias)."""

    reason = "nothing_to_serve"

    def __init__(self, model: str, selector: str) -> None:
        self.model = model
        self.selector = selector
        super().__init__(
            f"model {model!r} has no version for {selector}: promote one in MLflow "
            f"(or fix the sidecar's --stage/--alias)"
        )


class ChecksumMissingError(SidecarError):
    """The version carries no sha256/size tag, so it cannot be verified."""

    temporary = False
    reason = "not_verifiable"

    def __init__(self, model: str, version: str, tag: str) -> None:
        self.model = model
        self.version = version
        super().__init__(
            f"model {model!r} version {version} has no {tag!r} tag: register it with the "
            f"reconciler (it writes the checksum tags), the sidecar never serves unverified files"
        )


class VerificationError(SidecarError):
    """The downloaded file is not what the registry says (size or sha256 mismatch)."""

    temporary = False
    reason = "verification_failed"

    def __init__(self, model: str, version: str, what: str, expected: object, actual: object):
        self.model = model
        self.version = version
        self.what = what
        super().__init__(
            f"model {model!r} version {version}: {what} mismatch (tag says {expected}, "
            f"downloaded {actual}); not published, the current model stays in place"
        )


class ArtifactLayoutError(SidecarError):
    """The artifact holds no ONNX file the sidecar can find, or is beyond the bounds."""

    temporary = False
    reason = "artifact_refused"

    def __init__(self, model: str, version: str, source: str, detail: str) -> None:
        self.model = model
        self.version = version
        super().__init__(
            f"model {model!r} version {version} (source {source}): {detail}; expected a .onnx "
            f"file, a directory holding model.onnx, or an MLflow-logged model (MLmodel)"
        )


class RolloutTagError(SidecarError):
    """The registered model's rollout tag is not the JSON the contract describes."""

    temporary = False
    reason = "rollout_tag_invalid"

    def __init__(self, model: str, value: str, detail: str) -> None:
        self.model = model
        super().__init__(
            f"model {model!r}: rollout tag {value!r} is invalid ({detail}); expected "
            f'{{"candidate_version": "7", "mode": "canary"|"shadow", "weight": 10}}'
        )


class RegistryUnavailableError(SidecarError):
    """MLflow's REST API did not answer, or answered with an error (temporary)."""

    reason = "registry_unavailable"

    def __init__(self, what: str, detail: str) -> None:
        super().__init__(f"MLflow: {what}: {detail} (retrying with backoff)")


class RegistryAnswerError(SidecarError):
    """MLflow answered a request with an error code (not found, invalid parameter)."""

    reason = "registry_error"

    def __init__(self, what: str, status: int, error_code: str, message: str) -> None:
        self.status = status
        self.error_code = error_code
        self.temporary = status >= 500 or status == 429
        super().__init__(f"MLflow: {what}: HTTP {status} {error_code}: {message}")


class ServerTooOldError(SidecarError):
    """The MLflow server is older than the oldest the sidecar supports."""

    temporary = False
    reason = "mlflow_too_old"

    def __init__(self, found: str, minimum: str) -> None:
        self.found = found
        super().__init__(
            f"MLflow server version {found} is older than {minimum}, the oldest the sidecar "
            f"supports: upgrade the tracking server (mlflow>={minimum})"
        )


class CorruptedVolumeError(SidecarError):
    """A published version directory no longer matches its manifest (repaired by re-fetching)."""

    reason = "volume_corrupted"

    def __init__(self, model: str, dirname: str, detail: str) -> None:
        self.model = model
        super().__init__(
            f"model {model!r}: published directory {dirname} changed in the volume ({detail}); "
            f"fetching the version again"
        )


_REMOTE_ERROR_MODULES = (
    "mlflow.", "requests.", "urllib3.", "botocore.", "boto3.", "s3transfer.", "httpx.",
    "httpcore.",
)  # fmt: skip


def reason_of(exc: BaseException) -> str:
    """The short reason /healthz shows for ``exc`` (never its text)."""
    if isinstance(exc, SidecarError):
        return exc.reason
    remote = any(cls.__module__.startswith(_REMOTE_ERROR_MODULES) for cls in type(exc).__mro__)
    if remote or isinstance(exc, TimeoutError | ConnectionError):
        return "remote_unavailable"
    if isinstance(exc, OSError):
        return "storage_error"
    return "internal_error"


def is_expected(exc: BaseException) -> bool:
    """An error the sidecar expects in operation (MLflow or S3 down, disk full): no traceback."""
    if isinstance(exc, SidecarError | OSError | TimeoutError):
        return True
    return any(cls.__module__.startswith(_REMOTE_ERROR_MODULES) for cls in type(exc).__mro__)
