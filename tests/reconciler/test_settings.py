"""ReconcilerSettings in main(): the one settings policy (contracts.settings)."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.cli import main
from tests.reconciler.logging_fixture import restore_logging  # noqa: F401 (autouse)


def test_a_variable_naming_no_setting_is_named_in_a_warning_and_never_stops_a_run(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("RECONCILER_RETRYS", "9")
    monkeypatch.setenv("RECONCILER_RETRIES", "1")
    (tmp_path / "models.yaml").write_text("models: []\n")
    assert main(["validate", "--file", str(tmp_path / "models.yaml")]) == 0
    err = capsys.readouterr().err
    assert "ignoring RECONCILER_RETRYS: not settings of the reconciler (a typo?)" in err
    assert "RECONCILER_RETRIES" not in err
