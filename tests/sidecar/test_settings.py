"""Settings from the environment (SIDECAR_*, MLFLOW_TRACKING_URI) and the command line."""

from __future__ import annotations

import logging
import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError

from sidecar.cli import COMMAND_LINE_ONLY, build_parser, build_settings, main, parse_args
from sidecar.settings import SidecarSettings


def test_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SIDECAR_VOLUME", str(tmp_path))
    monkeypatch.setenv("SIDECAR_MODELS", "iris, wine")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")
    monkeypatch.setenv("SIDECAR_HTTP_PORT", "0")
    settings = SidecarSettings()
    assert settings.models == ["iris", "wine"]
    assert settings.tracking_uri == "http://mlflow:5000"
    assert settings.http_port == 0
    assert settings.selector == "stage Production"


def test_command_line_wins_over_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("SIDECAR_MODELS", "iris")
    args = parse_args(["--volume", str(tmp_path), "--model", "a", "--model", "b",
                       "--alias", "champion", "--interval", "2", "--once"])  # fmt: skip
    settings = build_settings(args)
    assert settings.models == ["a", "b"]
    assert settings.selector == "alias champion"
    assert settings.interval == 2
    assert settings.once


@pytest.mark.parametrize(
    "kwargs",
    [{"stage": "Prod"}, {"models": ["../etc"]}, {"interval": 0},
     {"backoff_initial": 10, "backoff_max": 1}],
)  # fmt: skip
def test_invalid_settings_are_refused(tmp_path: Path, kwargs: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        SidecarSettings(volume=tmp_path, **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.usefixtures("restore_logging")
def test_main_reports_invalid_settings_without_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--volume", str(tmp_path), "--stage", "Prod"]) == 2
    err = capsys.readouterr().err
    assert "invalid settings: stage (--stage, SIDECAR_STAGE): stage 'Prod' is not one of" in err
    assert "Traceback" not in err


@pytest.mark.usefixtures("restore_logging")
def test_main_refuses_to_run_without_a_tracking_uri(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("SIDECAR_TRACKING_URI", raising=False)
    assert main(["--volume", str(tmp_path), "--once"]) == 2
    assert "set MLFLOW_TRACKING_URI" in capsys.readouterr().err


@pytest.mark.usefixtures("restore_logging")
def test_main_refuses_an_unknown_log_level(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--volume", str(tmp_path), "--once", "--log-level", "LOUD"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "--log-level: 'LOUD' is not one of DEBUG, INFO, WARNING, ERROR" in err
    assert "Traceback" not in err


@pytest.mark.usefixtures("restore_logging")
def test_main_reports_a_volume_it_cannot_create(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:1")
    (tmp_path / "file").write_text("")
    assert main(["--volume", str(tmp_path / "file" / "volume"), "--once"]) == 2
    err = capsys.readouterr().err
    assert "cannot create the volume" in err
    assert "Not a directory" in err
    assert "Traceback" not in err


@pytest.fixture
def restore_signals() -> Iterator[None]:
    """main() installs its own SIGTERM/SIGINT handlers: give pytest its own back."""
    saved = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)


@pytest.mark.usefixtures("restore_logging", "restore_signals")
def test_main_reports_a_port_in_use(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:1")
    monkeypatch.setenv("SIDECAR_HTTP_HOST", "127.0.0.1")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["--volume", str(tmp_path), "--http-port", str(port)]) == 2
    err = capsys.readouterr().err
    assert f"cannot listen on 127.0.0.1:{port}" in err
    assert "Traceback" not in err


def test_unknown_sidecar_variables_are_named() -> None:
    environ = {"SIDECAR_INTERVALL": "5", "SIDECAR_INTERVAL": "5", "SIDECAR_LOG_LEVEL": "INFO",
               "SIDECAR_TRACKING_URI": "http://m", "MLFLOW_TRACKING_URI": "http://m"}  # fmt: skip
    unknown = SidecarSettings.unknown_variables(environ, also=COMMAND_LINE_ONLY.values())
    assert unknown == ["SIDECAR_INTERVALL"]


def test_every_option_sets_the_setting_its_destination_names() -> None:
    # The options feed SidecarSettings by their dest: no second map to keep in step.
    parser = build_parser()
    dests = {action.dest for action in parser._actions if action.option_strings} - {"help"}
    assert dests - set(COMMAND_LINE_ONLY) <= set(SidecarSettings.model_fields)
    every = ["--volume", "v", "--model", "a", "--stage", "Staging", "--interval", "2", "--once",
             "--tracking-uri", "http://m", "--http-port", "0", "--keep-versions", "2"]  # fmt: skip
    settings = build_settings(parser.parse_args(every))
    assert (settings.stage, settings.http_port, settings.keep_versions) == ("Staging", 0, 2)


@pytest.mark.usefixtures("restore_logging")
def test_an_invalid_option_is_named_as_given_with_its_variable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--volume", str(tmp_path), "--model", "../etc"]) == 2
    assert "models (--model, SIDECAR_MODELS): '../etc' cannot be" in capsys.readouterr().err


@pytest.mark.usefixtures("restore_logging")
def test_main_names_the_variable_of_an_invalid_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SIDECAR_WEBHOOK_MAX_AGE", "soon")
    assert main(["--volume", str(tmp_path), "--interval", "0"]) == 2
    err = capsys.readouterr().err
    assert "interval (--interval, SIDECAR_INTERVAL): Input should be greater than 0" in err
    assert "webhook_max_age (SIDECAR_WEBHOOK_MAX_AGE): Input should be a valid number" in err


@pytest.fixture
def answering_version() -> Iterator[str]:
    """A loopback HTTP server answering ``GET /version`` with 2.6.0 (an MLflow too old)."""
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    class Old(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"2.6.0" if self.path == "/version" else b"{}"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Old)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.usefixtures("restore_logging")
def test_main_refuses_an_mlflow_below_the_minimum_at_start_naming_it(
    tmp_path: Path, answering_version: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["--volume", str(tmp_path), "--once", "--tracking-uri", answering_version])
    err = capsys.readouterr().err
    assert code == 2
    assert "MLflow server version 2.6.0 is older than 2.7" in err


@pytest.mark.usefixtures("restore_logging")
def test_main_refuses_a_tracking_uri_that_is_not_http(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["--volume", str(tmp_path), "--once", "--tracking-uri",
                 "sqlite://alice:pw@/mlflow.db"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2
    assert "is not http(s)://" in err
    assert ":pw@" not in err


def test_mlflow_telemetry_is_off_by_default() -> None:
    from sidecar.cli import MLFLOW_DEFAULTS

    assert MLFLOW_DEFAULTS["MLFLOW_DISABLE_TELEMETRY"] == "true"
