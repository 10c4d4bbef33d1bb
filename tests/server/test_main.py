"""``python -m server`` refuses bad settings before it execs gunicorn: a usage error, exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.__main__ import main


@pytest.mark.parametrize(
    ("env", "args", "expected"),
    [
        ({"SERVER_PORT": "abc"}, [], "SERVER_PORT: Input should be a valid integer"),
        ({}, ["--workers", "0"], "--workers 0: Input should be greater than or equal to 1"),
        ({}, ["--port", "70000"], "--port 70000: Input should be less than or equal to 65535"),
        ({"SERVER_WORKERS": "0"}, [], "SERVER_WORKERS: Input should be greater than or equal"),
        (
            {"SERVER_MAX_BODY_BYTES": "-1"},
            [],
            "invalid settings: SERVER_MAX_BODY_BYTES: Input should be greater than 0",
        ),
        # An empty token used to disable auth silently; a non-ASCII one could never match.
        ({"SERVER_AUTH_TOKEN": ""}, [], "SERVER_AUTH_TOKEN: Value error, is empty"),
        ({"SERVER_AUTH_TOKEN": "töken"}, [], "SERVER_AUTH_TOKEN: Value error, must be"),
        ({"SERVER_AUTH_TOKEN": "two words"}, [], "printable ASCII without spaces"),
    ],
)
def test_bad_settings_are_a_usage_error(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    env: dict[str, str],
    args: list[str],
    expected: str,
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit) as exited:
        main(["--volume", str(tmp_path), *args])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert expected in err
    assert "Traceback" not in err


def test_kubernetes_service_links_do_not_break_explicit_options(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A Service named ``server`` makes Kubernetes inject SERVER_PORT=tcp://IP:8000 into every
    pod of the namespace; ``--port`` on the command line must win without parsing it."""
    monkeypatch.setenv("SERVER_PORT", "tcp://10.245.0.5:8000")
    monkeypatch.setenv("SERVER_SERVICE_PORT", "8000")
    monkeypatch.setenv("SERVER_VOLUME", str(tmp_path))
    with pytest.raises(SystemExit) as exited:  # stop before the exec: an invalid setting
        main(["--volume", str(tmp_path), "--port", "8000", "--workers", "0"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "--workers 0: Input should be greater than or equal to 1" in err
    assert "tcp://" not in err


def test_a_mistyped_variable_is_named_and_does_not_stop_the_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """One settings policy (contracts.settings): SERVER_WORKER=4 (for SERVER_WORKERS) is named in
    a warning, and the server still starts with what it understood."""
    started: list[dict[str, str]] = []

    def execve(path: str, command: list[str], env: dict[str, str]) -> None:
        started.append(env)

    monkeypatch.setattr("os.execve", execve)
    monkeypatch.setenv("SERVER_WORKER", "4")
    monkeypatch.setenv("SERVER_WORKERS", "3")
    main(["--volume", str(tmp_path)])
    assert [env["SERVER_WORKERS"] for env in started] == ["3"]
    err = capsys.readouterr().err
    assert "ignoring SERVER_WORKER: not settings of the server" in err
    assert "SERVER_WORKERS" not in err.split("ignoring", 1)[1].split("\n", 1)[0]
