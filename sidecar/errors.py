"""The sidecar's errors: one root, structured subclasses that build their own message."""

from __future__ import annotations


class SidecarError(Exception):
    """Root of every error the sidecar raises on purpose."""

    temporary = True
    """Worth retrying (MLflow down, S3 error, disk full) versus permanent (bad checksum)."""


class NothingToServeError(SidecarError):
    """The registry has no version for the selector (no Production version, unknown alias)."""

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

    def __init__(self, model: str, version: str, what: str, expected: object, actual: object):
        self.model = model
        self.version = version
        self.what = what
        super().__init__(
            f"model {model!r} version {version}: {what} mismatch (tag says {expected}, "
            f"downloaded {actual}); not published, the current model stays in place"
        )


class ArtifactLayoutError(SidecarError):
    """The artifact holds no ONNX file the sidecar can find."""

    temporary = False

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

    def __init__(self, model: str, value: str, detail: str) -> None:
        self.model = model
        super().__init__(
            f"model {model!r}: rollout tag {value!r} is invalid ({detail}); expected "
            f'{{"candidate_version": "7", "mode": "canary"|"shadow", "weight": 10}}'
        )


_REMOTE_ERROR_MODULES = ("mlflow.", "requests.", "urllib3.", "botocore.", "boto3.", "s3transfer.")


def is_expected(exc: BaseException) -> bool:
    """An error the sidecar expects in operation (MLflow or S3 down, disk full): no traceback."""
    if isinstance(exc, SidecarError | OSError | TimeoutError):
        return True
    return any(cls.__module__.startswith(_REMOTE_ERROR_MODULES) for cls in type(exc).__mro__)
