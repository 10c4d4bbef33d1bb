"""models.yaml's breaking_change_acknowledged: a reason, located when it is not one."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler import spec
from reconciler.errors import SpecError

ENTRY = """models:
  - name: m
    versions:
      - source: m.onnx
        sha256: {sha}
        stage: Production
        breaking_change_acknowledged: {value}
"""


@pytest.mark.parametrize("value", ["true", '""', "[a, b]"])
def test_anything_but_a_reason_is_located(tmp_path: Path, value: str) -> None:
    path = tmp_path / "models.yaml"
    path.write_text(ENTRY.format(sha="a" * 64, value=value))
    with pytest.raises(SpecError) as raised:
        spec.load(path, check_files=False)
    assert [str(problem) for problem in raised.value.problems] == [
        f"{path}:7: models[0].versions[0].breaking_change_acknowledged: give the reason clients "
        "are ready, as text (it is shown in the plan)"
    ]


def test_a_reason_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "models.yaml"
    path.write_text(ENTRY.format(sha="a" * 64, value="app 2.4 sends five features"))
    (version,) = spec.load(path, check_files=False).file.models[0].versions
    assert version.breaking_change_acknowledged == "app 2.4 sends five features"
