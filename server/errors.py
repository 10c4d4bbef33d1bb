"""Domain errors of the server and their one mapping to HTTP ({"title", "description"})."""

from __future__ import annotations

import logging
from typing import Any

import falcon
import falcon.asgi
import orjson

log = logging.getLogger(__name__)


class ServerError(Exception):
    """Root of the server's errors; ``status`` and ``title`` say how HTTP shows them."""

    status = 500
    title = "Server error"


class ModelNotFoundError(ServerError):
    status, title = 404, "Model not found"

    def __init__(self, name: str, known: list[str]) -> None:
        self.name = name
        listing = ", ".join(known) if known else "none"
        super().__init__(f"no model named {name!r} in the volume (models: {listing})")


class NoDefaultModelError(ServerError):
    status, title = 404, "No default model"

    def __init__(self, known: list[str]) -> None:
        super().__init__(
            f"several models are served ({', '.join(known)}): use POST /models/{{name}}/predict "
            "or set SERVER_DEFAULT_MODEL"
        )


class ModelNotReadyError(ServerError):
    """503. ``reason`` is shown to clients: never a path or a digest (see ``refused``)."""

    status, title = 503, "Model not ready"

    def __init__(self, name: str | None, reason: str = "") -> None:
        self.name = name
        what = f"model {name!r}" if name else "no model"
        detail = f": {reason}" if reason else ""
        super().__init__(f"{what} is not loaded yet{detail}; retry shortly")

    @classmethod
    def refused(cls, name: str) -> ModelNotReadyError:
        """Its published version was refused; the reason is for operators (GET /models, log)."""
        return cls(name, "its published version was refused (GET /models or the log say why)")


class InvalidInputError(ServerError):
    """The request does not match the model's inputs (400)."""

    status, title = 400, "Invalid input"

    def __init__(self, message: str) -> None:
        super().__init__(message)


class VersionNotServedError(ServerError):
    status, title = 404, "Version not served"

    def __init__(self, name: str, version: str, served: list[str]) -> None:
        super().__init__(
            f"model {name!r} has no served version {version!r} (served: {', '.join(served)})"
        )


class UnsupportedMediaTypeError(ServerError):
    status, title = 415, "Unsupported media type"

    def __init__(self, content_type: str | None) -> None:
        super().__init__(
            "send the body as JSON with 'Content-Type: application/json' "
            f"(got {content_type or 'no content type'})"
        )


class BodyTooLargeError(ServerError):
    status, title = 413, "Content too large"

    def __init__(self, length: int | None, limit: int) -> None:
        size = f"has {length} bytes" if length is not None else "is larger"
        super().__init__(
            f"the body {size}; the limit is {limit} bytes (SERVER_MAX_BODY_BYTES): "
            "send fewer rows per request"
        )


class InvalidJsonError(ServerError):
    status, title = 400, "Invalid JSON"

    def __init__(self, reason: str) -> None:
        super().__init__(f"the body is not valid JSON: {reason}")


class UnauthorizedError(ServerError):
    status, title = 401, "Authentication required"

    def __init__(self) -> None:
        super().__init__("send the configured token as 'Authorization: Bearer <token>'")


class InferenceError(ServerError):
    """onnxruntime failed on input that passed the checks (a model bug, not the caller's)."""

    def __init__(self, name: str, version: str, reason: str) -> None:
        super().__init__(f"model {name!r} version {version!r} failed: {reason}")


class ModelLoadError(ServerError):
    """A published version cannot be served (checksum, ONNX, schema, warm-up); not for HTTP."""

    def __init__(self, name: str, version: str, reason: str, kind: str = "invalid") -> None:
        self.model = name
        self.version = version
        self.reason = reason
        self.kind = kind
        """A closed set, the metrics' ``reason`` label: volume, checksum, onnx, type, schema,
        warmup, timeout, invalid."""
        super().__init__(f"cannot load {name} version {version}: {reason}")


def error_body(path: str, title: str, description: str | None) -> bytes:
    """The one error body of every route and worker: the Open Inference Protocol's
    ``{"error": "..."}`` under ``/v2/``, Falcon's ``{"title", "description"}`` elsewhere."""
    if path == "/v2" or path.startswith("/v2/"):
        return orjson.dumps({"error": f"{title}: {description}" if description else title})
    body: dict[str, str] = {"title": title}
    if description:
        body["description"] = description
    return orjson.dumps(body)


def error_headers(exc: ServerError, retry_after: int) -> dict[str, str] | None:
    """Headers an error answer carries (Retry-After on 503, the challenge on 401)."""
    if exc.status == 503:
        return {"Retry-After": str(retry_after)}
    if exc.status == 401:
        return {"WWW-Authenticate": "Bearer"}
    return None


def add_error_handlers(app: falcon.asgi.App[Any, Any], retry_after: int) -> None:
    """Map the domain errors to HTTP statuses on ``app``, and serialise every error (Falcon's
    own 404/405 too) with :func:`error_body`."""

    def serialize(req: falcon.Request, resp: falcon.Response, exc: falcon.HTTPError) -> None:
        resp.content_type = falcon.MEDIA_JSON
        resp.data = error_body(req.path, exc.title or "Error", exc.description)

    app.set_error_serializer(serialize)

    async def handle(
        req: falcon.asgi.Request, resp: falcon.asgi.Response, exc: Exception, params: Any
    ) -> None:
        assert isinstance(exc, ServerError)
        if exc.status >= 500 and exc.status != 503:
            log.error("%s", exc, exc_info=exc)
        headers = error_headers(exc, retry_after)
        raise falcon.HTTPError(
            falcon.code_to_http_status(exc.status),
            title=exc.title,
            description=str(exc),
            headers=headers,
        )

    app.add_error_handler(ServerError, handle)
