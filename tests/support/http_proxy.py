"""A loopback HTTP proxy that counts requests and can answer some with a fault (e.g. 503)."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}


class CountingProxy:
    """Forwards everything to ``upstream``; ``fault(n, method, path)`` may return a status code
    to answer request number ``n`` with instead (None: forward it)."""

    def __init__(
        self, upstream: str, fault: Callable[[int, str, str], int | None] | None = None
    ) -> None:
        self.counts: Counter[str] = Counter()
        self.faults = 0
        self.total = 0
        self.lock = threading.Lock()
        client = httpx.Client(base_url=upstream, timeout=120.0)
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                path = self.path.split("?")[0]
                with proxy.lock:
                    proxy.total += 1
                    number = proxy.total
                    proxy.counts[f"{self.command} {path}"] += 1
                status = fault(number, self.command, path) if fault else None
                if status is not None:
                    with proxy.lock:
                        proxy.faults += 1
                    self.send_response(status)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                answer = client.request(self.command, self.path, content=body, headers=headers)
                self.send_response(answer.status_code)
                for key, value in answer.headers.items():
                    if key.lower() not in HOP_BY_HOP | {"content-encoding"}:
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

            do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = _forward

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def take(self) -> Counter[str]:
        """The counts since the last take, reset."""
        with self.lock:
            counts, self.counts = self.counts, Counter()
        return counts

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
