"""Optional bearer-token authentication for the inference routes (health and metrics stay open)."""

from __future__ import annotations

import hmac

import falcon
import falcon.asgi

from server.metrics import record_failure

OPEN_PREFIXES = ("/v2/health/", "/metrics")


class BearerTokenAuth:
    """Falcon middleware, installed only when a token is configured."""

    def __init__(self, token: str) -> None:
        self._expected = f"Bearer {token}".encode()

    async def process_request(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        if req.path.startswith(OPEN_PREFIXES):
            return
        given = (req.get_header("Authorization") or "").encode()
        if not hmac.compare_digest(given, self._expected):
            record_failure("", 401)
            raise falcon.HTTPUnauthorized(
                title="Authentication required",
                description="send the configured token as 'Authorization: Bearer <token>'",
                challenges=["Bearer"],
            )
