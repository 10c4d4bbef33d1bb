"""Optional bearer-token authentication for the inference routes (health and metrics stay open)."""

from __future__ import annotations

import hmac

import falcon.asgi

from server.errors import UnauthorizedError
from server.metrics import record_failure

OPEN_PREFIXES = ("/v2/health/", "/metrics")


class BearerToken:
    """The check itself, shared by the Falcon middleware and the fast worker."""

    def __init__(self, token: str) -> None:
        self._expected = f"Bearer {token}".encode()

    def check(self, path: str, authorization: str | None) -> None:
        """Raise UnauthorizedError unless ``path`` is open or the header carries the token."""
        if path.startswith(OPEN_PREFIXES):
            return
        given = (authorization or "").encode()
        if not hmac.compare_digest(given, self._expected):
            record_failure("", 401)
            raise UnauthorizedError


class BearerTokenAuth:
    """Falcon middleware, installed only when a token is configured."""

    def __init__(self, token: BearerToken) -> None:
        self._token = token

    async def process_request(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        self._token.check(req.path, req.get_header("Authorization"))
