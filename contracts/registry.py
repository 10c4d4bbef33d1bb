"""The MLflow contract between the control plane (reconciler) and the data plane (sidecar).

The reconciler writes these tags; the sidecar (and any other reader) reads them. Nothing else
is shared between the two: they never import each other.
"""

from __future__ import annotations

from enum import StrEnum

TAG_PREFIX = "mlgitops."

# On every model version the reconciler registers (its identity: MLflow numbers versions itself).
SHA256_TAG = f"{TAG_PREFIX}sha256"
"""Hex sha256 of the version's ONNX file (model.onnx)."""
SIZE_TAG = f"{TAG_PREFIX}size"
"""Size in bytes of the ONNX file."""
SOURCE_TAG = f"{TAG_PREFIX}source"
"""The source as written in models.yaml (audit)."""
MANAGED_TAG = f"{TAG_PREFIX}managed"
"""Present ("true") on versions and registered models the reconciler owns."""
GIT_COMMIT_TAG = f"{TAG_PREFIX}git-commit"
APPLIED_BY_TAG = f"{TAG_PREFIX}applied-by"

BREAKING_CHANGE_ACKNOWLEDGED_TAG = f"{TAG_PREFIX}breaking-change-acknowledged"
"""models.yaml's ``breaking_change_acknowledged`` on a version: why its clients are ready for its
signature. The sidecar copies it into the manifest; a server swaps in a version whose inputs or
outputs differ from the one it serves only with it (or with ``SERVER_ALLOW_SCHEMA_CHANGE``)."""

STAGE_TAG = f"{TAG_PREFIX}stage"
"""Mirrors the version's stage. MLflow sends no webhook for a stage transition but does for a
tag set, so the reconciler writes this tag after every transition: the sidecar hears of a
promotion at once."""

# On registered models: progressive delivery (canary / shadow), see RolloutSpec in the reconciler.
ROLLOUT_TAG = f"{TAG_PREFIX}rollout"
"""JSON: {"candidate_version": "7", "mode": "canary"|"shadow", "weight": 10}. Absent: no rollout."""

APPLY_LOCK_MODEL = "mlgitops-apply-lock"
"""The registered model an apply creates as its lock (creation is atomic) and deletes at the end:
a reserved name, never a model of models.yaml (the next apply would delete it with its versions).
"""

ONNX_FILE_NAME = "model.onnx"
"""Name of the ONNX file inside an artifact directory (MLflow's onnx flavor uses it too)."""


class Stage(StrEnum):
    """MLflow's model version stages (deprecated by MLflow in favour of aliases, still served)."""

    NONE = "None"
    STAGING = "Staging"
    PRODUCTION = "Production"
    ARCHIVED = "Archived"
