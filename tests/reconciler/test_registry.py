"""MlflowRegistry's server detection: the version asked once, too old refused at start."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from packaging.version import Version

from reconciler.registry import MlflowRegistry, RetryPolicy, UnsupportedServerError


@pytest.fixture
def version_endpoint() -> Iterator[tuple[str, list[str], list[str]]]:
    """A loopback HTTP endpoint answering ``GET /version`` with what the test puts in."""
    answer: list[str] = ["2.6.0"]
    paths: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            paths.append(self.path)
            body = answer[0].encode()
            self.send_response(200 if self.path == "/version" else 404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", answer, paths
    finally:
        server.shutdown()
        server.server_close()


def test_a_server_older_than_the_minimum_is_refused_naming_both(
    version_endpoint: tuple[str, list[str], list[str]],
) -> None:
    url, _, paths = version_endpoint
    registry = MlflowRegistry(url, RetryPolicy(retries=0), "uploads")
    with pytest.raises(UnsupportedServerError, match=r"version 2\.6\.0; .* needs MLflow 2\.7"):
        registry.read(["m"])
    assert paths == ["/version"]  # refused before any registry request


def test_the_version_is_asked_once(version_endpoint: tuple[str, list[str], list[str]]) -> None:
    url, answer, paths = version_endpoint
    answer[0] = "2.17.2"
    registry = MlflowRegistry(url, RetryPolicy(retries=0), "uploads")
    assert registry.server_version() == Version("2.17.2")
    answer[0] = "not a version"
    assert registry.server_version() == Version("2.17.2")
    assert paths == ["/version"]
    fresh = MlflowRegistry(url, RetryPolicy(retries=0), "uploads")
    assert fresh.server_version() is None  # unknown: the requests every server understands
