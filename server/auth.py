"""Optional bearer-token authentication for the inference routes (health and metrics stay open).

One check for every road: the Falcon middleware and the lean worker both call
:meth:`BearerToken.check` with the request's Authorization value, duplicate headers joined with
a comma (as Falcon does), so both judge a request the same.
"""

from __future__ import annotations

import hmac

import falcon.asgi

from server.errors import UnauthorizedError
from server.metrics import record_failure

OPEN_PREFIXES = ("/v2/health/", "/metrics")


def bearer_credentials(authorization: str | None) -> bytes | None:
    """The token of ``Bearer <token>`` (scheme case-insensitive, RFC 9110 11.1), as the raw
    header bytes; None for anything else (another scheme, several headers joined by a comma)."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip(" \t")
    if scheme.lower() != "bearer" or not token or "," in token or " " in token:
        return None
    return token.encode("latin-1", errors="replace")


class BearerToken:
    """The check itself, shared by the Falcon middleware and the fast worker."""

    def __init__(self, token: str) -> None:
        self._expected = token.encode("latin-1")  # printable ASCII (ServerSettings checks)

    def check(self, path: str, authorization: str | None) -> None:
        """Raise UnauthorizedError unless ``path`` is open or the header carries the token."""
        if path.startswith(OPEN_PREFIXES):
            return
        given = bearer_credentials(authorization)
        if given is None or not hmac.compare_digest(given, self._expected):
            record_failure("", 401)
            raise UnauthorizedError


class BearerTokenAuth:
    """Falcon middleware, installed only when a token is configured."""

    def __init__(self, token: BearerToken) -> None:
        self._token = token

    async def process_request(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        self._token.check(req.path, req.get_header("Authorization"))
