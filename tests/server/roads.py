"""The server's app reached three ways inside the test process, one ``Road`` interface for all.

- ``falcon``: ``falcon.testing.ASGIConductor`` calling the ASGI app directly (no socket).
- ``lean-worker``: ``server.worker.HttpWorker``, built the way gunicorn builds a worker, serving
  a loopback socket from a thread.
- ``uvicorn-worker``: ``uvicorn_worker.UvicornWorker``'s uvicorn configuration serving a loopback
  socket from a thread.

The app comes from ``server.app.get_app()`` with the settings in the environment, as gunicorn's
workers get it. Only the main thread may install signal handlers, so the worker threads run
without them: their stop is asked for by setting the flag each worker polls.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
from collections.abc import Callable, Coroutine, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol
from unittest import mock

import falcon.testing
import orjson
import uvloop

from tests.support.waiting import GiveUp, wait_until

Headers = Sequence[tuple[str, str]]

ROADS = ["falcon", "lean-worker", "uvicorn-worker"]
"""Every road the contract suite runs on; the last two are the gunicorn worker classes."""
WORKER_ROADS = {
    "lean-worker": "server.worker.HttpWorker",
    "uvicorn-worker": "uvicorn_worker.UvicornWorker",
}


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]
    """Lower-case names; several headers of one name joined by ", "."""
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)

    def __str__(self) -> str:
        return f"{self.status} {self.headers} {self.body[:400]!r}"


class Road(Protocol):
    name: str

    def request(
        self, method: str, path: str, body: bytes | None = None, headers: Headers = ()
    ) -> Reply: ...


def app_from_env(env: Mapping[str, str]) -> Any:
    """``get_app()`` with exactly ``env``'s ``SERVER_*`` settings (others removed meanwhile)."""
    from server.app import get_app

    cleared = {key: value for key, value in os.environ.items() if not key.startswith("SERVER_")}
    with mock.patch.dict(os.environ, {**cleared, **env}, clear=True):
        return get_app()


class FalconRoad:
    """``falcon.testing.ASGIConductor`` on the ASGI app, on an event loop of its own thread:
    what every route does without an HTTP server. The app's lifespan runs once, as under a
    worker (``falcon.testing.TestClient`` would run it around every request)."""

    def __init__(
        self, name: str, conductor: Any, loop: asyncio.AbstractEventLoop, port: int | None
    ) -> None:
        self.name = name
        self._conductor = conductor
        self._loop = loop
        self._port = port

    def request(
        self, method: str, path: str, body: bytes | None = None, headers: Headers = ()
    ) -> Reply:
        return self.request_on(self._port, method, path, body, headers)

    def request_on(
        self,
        port: int | None,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: Headers = (),
    ) -> Reply:
        """The request as if it arrived on ``port`` (the ASGI scope's server port)."""
        path, _, query = path.partition("?")
        if body is None and method == "POST":
            body = b""
        call = self._conductor.simulate_request(
            method, path, query_string=query or None, headers=list(headers), body=body,
            port=port,
        )  # fmt: skip
        result = asyncio.run_coroutine_threadsafe(call, self._loop).result(timeout=30)
        joined = {name.lower(): value for name, value in result.headers.items()}
        return Reply(result.status_code, joined, result.content)


@contextmanager
def serving_in_process(app: Any, *, port: int | None = None) -> Iterator[FalconRoad]:
    """``app`` behind an ``ASGIConductor`` (lifespan started, then stopped on exit); requests
    carry ``port`` as the server's port in the ASGI scope."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="falcon-conductor", daemon=True)
    thread.start()
    conductor = falcon.testing.ASGIConductor(app)
    try:
        asyncio.run_coroutine_threadsafe(conductor.__aenter__(), loop).result(timeout=30)
        try:
            yield FalconRoad("falcon", conductor, loop, port)
        finally:
            exit_ = conductor.__aexit__(None, None, None)
            asyncio.run_coroutine_threadsafe(exit_, loop).result(timeout=30)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
        loop.close()


def http_request(
    method: str,
    path: str,
    body: bytes | None = None,
    headers: Headers = (),
    *,
    host: str = "test",
    version: str = "1.1",
) -> bytes:
    """The bytes of one request: Host, the headers given, Content-Length for a body (and for
    every POST, PUT and PATCH), then the body."""
    lines = [f"{method} {path} HTTP/{version}", f"Host: {host}", *(f"{k}: {v}" for k, v in headers)]
    named = {k.lower() for k, _ in headers}
    with_body = body is not None or method in ("POST", "PUT", "PATCH")
    if with_body and "content-length" not in named:
        lines.append(f"Content-Length: {len(body or b'')}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")


def read_head(
    sock: socket.socket, buffer: bytes = b"", *, interim: bool = False
) -> tuple[int, dict[str, str], bytes]:
    """The status and headers (lower-case names) of one HTTP/1.1 answer off ``sock``, and the
    bytes read past them; interim (1xx) answers are skipped unless ``interim``."""
    while True:
        while b"\r\n\r\n" not in buffer:
            chunk = sock.recv(65536)
            if not chunk:
                raise EOFError(f"the server closed the connection; unread: {buffer[:200]!r}")
            buffer += chunk
        raw_head, buffer = buffer.split(b"\r\n\r\n", 1)
        status_line, *lines = raw_head.split(b"\r\n")
        version, status = status_line.split(b" ", 2)[:2]
        assert version == b"HTTP/1.1", status_line
        if int(status) >= 200 or interim:
            break
    headers: dict[str, str] = {}
    for line in lines:
        name, _, value = line.partition(b":")
        key = name.strip().lower().decode("latin-1")
        text = value.strip().decode("latin-1")
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
    return int(status), headers, buffer


def read_reply(
    sock: socket.socket, buffer: bytes = b"", *, head: bool = False, interim: bool = False
) -> tuple[Reply, bytes]:
    """One HTTP/1.1 answer off ``sock`` and the bytes read past it; interim (1xx) answers are
    skipped unless ``interim``; ``head``: the answer to a HEAD (no body)."""
    status, headers, buffer = read_head(sock, buffer, interim=interim)
    length = 0 if head or status < 200 else int(headers.get("content-length", "0"))
    while len(buffer) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise EOFError(f"closed {length - len(buffer)} bytes before the end of the body")
        buffer += chunk
    return Reply(status, headers, buffer[:length]), buffer[length:]


class Raw:
    """One client connection that writes bytes and reads HTTP/1.1 answers (1xx included) off
    the stream, for the tests of a worker's own HTTP layer."""

    def __init__(self, url: str, timeout: float = 20.0) -> None:
        host, port = url.removeprefix("http://").split(":")
        self.timeout = timeout
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        self.buffer = b""

    def __enter__(self) -> Raw:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def reply(self, *, head: bool = False) -> Reply:
        reply, self.buffer = read_reply(self.sock, self.buffer, head=head, interim=True)
        return reply

    def closed_by_server_within(self, seconds: float) -> bool:
        """True when the server closes the connection within ``seconds`` (the client's pace)."""
        self.sock.settimeout(seconds)
        try:
            return self.closed_by_server()
        finally:
            self.sock.settimeout(self.timeout)

    def closed_by_server(self) -> bool:
        """Block until the server closes (True) or the socket timeout passes (False)."""
        try:
            while chunk := self.sock.recv(65536):
                self.buffer += chunk
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False
        return True


class SocketRoad:
    """A worker serving loopback sockets in this process; one connection per request."""

    def __init__(self, name: str, ports: list[int]) -> None:
        self.name = name
        self.port = ports[0]
        self.ports = ports
        self.url = f"http://127.0.0.1:{self.port}"

    def request(
        self, method: str, path: str, body: bytes | None = None, headers: Headers = ()
    ) -> Reply:
        return self.request_on(self.port, method, path, body, headers)

    def request_on(
        self, port: int, method: str, path: str, body: bytes | None = None, headers: Headers = ()
    ) -> Reply:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.sendall(http_request(method, path, body, headers))
            reply, _ = read_reply(sock, head=method == "HEAD")
        return reply

    def send_raw(self, data: bytes) -> Reply:
        with socket.create_connection(("127.0.0.1", self.port), timeout=30) as sock:
            sock.sendall(data)
            reply, _ = read_reply(sock)
        return reply


class _Listener:
    """A bound, listening loopback socket as gunicorn hands it to a worker."""

    def __init__(self, port: int = 0) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(128)
        self.FAMILY = socket.AF_INET
        self.port: int = self.sock.getsockname()[1]

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        self.sock.close()


class _ThreadLoop(uvloop.Loop):  # type: ignore[misc]
    """uvloop for a worker run outside the main thread: signals stay with the main thread."""

    def add_signal_handler(self, sig: int, callback: Callable[..., object], *args: Any) -> None:
        return None

    def remove_signal_handler(self, sig: int) -> bool:
        return False


def _gunicorn_worker(
    worker_class: str,
    app: Any,
    listeners: list[_Listener],
    keepalive: int,
    settings: Mapping[str, str] | None = None,
) -> Any:
    """An instance of ``worker_class`` as gunicorn's arbiter makes one (before its fork);
    ``settings``: more of gunicorn's (``worker_connections``...)."""
    from gunicorn.config import Config
    from gunicorn.glogging import Logger
    from gunicorn.util import load_class

    cfg = Config()
    cfg.set("keepalive", str(keepalive))
    cfg.set("graceful_timeout", "5")
    for name, value in (settings or {}).items():
        cfg.set(name, value)
    cls = load_class(worker_class)
    worker = cls(1, os.getppid(), listeners, None, 30, cfg, Logger(cfg))
    worker.wsgi = app  # what Worker.load_wsgi() sets from the app gunicorn loaded
    return worker


class WorkerServer(SocketRoad):
    """``app`` served by the worker class of ``road`` on loopback sockets, from a thread.

    ``ports``: the ports to listen on (0: any free one); ``start()`` returns once it answers;
    ``stop()`` asks for the graceful stop of SIGTERM, ``join()`` waits for it (several servers
    stop at once: each worker notices within half a second).
    """

    def __init__(
        self,
        road: str,
        app: Any,
        *,
        ports: Sequence[int] = (0,),
        keepalive: int = 5,
        settings: Mapping[str, str] | None = None,
    ):
        self._listeners = [_Listener(port) for port in ports]
        super().__init__(road, [listener.port for listener in self._listeners])
        self._worker = _gunicorn_worker(
            WORKER_ROADS[road], app, self._listeners, keepalive, settings
        )
        self._failure: list[BaseException] = []
        self._server: Any = None
        self._thread = threading.Thread(target=self._main, name=f"{road}-{self.port}", daemon=True)
        if road == "uvicorn-worker":
            import uvicorn

            self._worker.config.app = app
            self._server = uvicorn.Server(self._worker.config)

    def _run(self) -> Coroutine[Any, Any, None]:
        if self._server is None:
            coroutine: Coroutine[Any, Any, None] = self._worker._serve()  # HttpWorker.run()
            return coroutine
        # UvicornWorker._serve() without its SIGQUIT handler
        return self._server.serve(sockets=[listener.sock for listener in self._listeners])  # type: ignore[no-any-return]

    def _main(self) -> None:
        try:
            with asyncio.Runner(loop_factory=_ThreadLoop) as runner:
                runner.run(self._run())
        except BaseException as exc:
            self._failure.append(exc)

    def start(self) -> WorkerServer:
        self._thread.start()
        probe = http_request("GET", "/v2/health/live")

        def answers() -> bool:
            if self._failure or not self._thread.is_alive():
                raise GiveUp(f"the worker thread ended: {self._failure}")
            with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
                sock.sendall(probe)
                return read_reply(sock)[0].status == 200

        wait_until(answers, timeout=30, interval=0.01, what=f"{self.name} on port {self.port}")
        return self

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def stop(self) -> None:
        if self._server is None:
            self._worker.alive = False  # what HttpWorker's SIGTERM handler does
        else:
            self._server.should_exit = True  # what uvicorn's SIGTERM handler does

    def join(self) -> None:
        self._thread.join(30)
        for listener in self._listeners:
            listener.close()
        self._worker.tmp.close()
        assert not self._thread.is_alive(), f"{self.name} did not stop within 30 s"
        assert not self._failure, self._failure


@contextmanager
def serving_worker(road: str, app: Any, **options: Any) -> Iterator[WorkerServer]:
    server = WorkerServer(road, app, **options).start()
    try:
        yield server
    finally:
        server.stop()
        server.join()
