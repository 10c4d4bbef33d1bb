"""Error texts: what they may show (a repository file's digest) and what they never do."""

from __future__ import annotations

from reconciler.errors import ChecksumMismatchError, RegistryUnavailableError

A, B = "a" * 64, "b" * 64


def test_a_repository_file_s_digest_is_shown_to_fix_models_yaml() -> None:
    assert str(ChecksumMismatchError("models/m.onnx", A, B)) == (
        f"sha256 mismatch for models/m.onnx: models.yaml declares {A}, the source has {B}. Fix "
        "the sha256 in models.yaml (add-version computes it where the source can be read) or "
        "the source."
    )


def test_a_uri_source_s_digest_is_never_shown() -> None:
    """s3://other-team/secret could be any object CI may read: no sha256 oracle for it."""
    for uri in ("s3://other-team/secret", "runs:/abc/model", "models:/m-1", "mlflow-artifacts:/x"):
        error = ChecksumMismatchError(uri, A, B)
        assert B not in str(error)
        assert "the source has different bytes" in str(error)
        assert error.actual == B


def test_every_error_masks_credentials_when_built() -> None:
    cause = ConnectionError("http://alice:s3cret@mlflow:5000/api/2.0/mlflow/runs/get failed")
    error = RegistryUnavailableError("reading a run", 1, cause)
    assert "s3cret" not in str(error)
    assert "http://***@mlflow:5000/api/2.0/mlflow/runs/get" in str(error)
