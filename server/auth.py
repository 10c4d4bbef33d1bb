"""Optional bearer-token authentication (the request pipeline checks it on every route but
health and metrics)."""

from __future__ import annotations

import hmac

from server.errors import UnauthorizedError


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
    def __init__(self, token: str) -> None:
        self._expected = token.encode("latin-1")  # printable ASCII (ServerSettings checks)

    def check(self, authorization: str | None) -> None:
        """Raise UnauthorizedError unless the Authorization header carries the token."""
        given = bearer_credentials(authorization)
        if given is None or not hmac.compare_digest(given, self._expected):
            raise UnauthorizedError
