"""Domain errors of the server and their one mapping to HTTP ({"title", "description"})."""

from __future__ import annotations

from typing import Any

import falcon
import falcon.asgi
import orjson


class ServerError(Exception):
    """Root of the server's errors; ``status`` and ``title`` say how HTTP shows them, the
    message (``message`` by default) what to do."""

    status, title, message = 500, "Server error", ""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(self.message if message is None else message)


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
    """503. ``reason`` is shown to clients: never a path or a digest (see ``REFUSED``)."""

    status, title = 503, "Model not ready"

    def __init__(self, name: str | None, reason: str = "") -> None:
        self.name = name
        what = f"model {name!r}" if name else "no model"
        detail = f": {reason}" if reason else ""
        super().__init__(f"{what} is not loaded yet{detail}; retry shortly")

    REFUSED = "its published version was refused (GET /models or the log say why)"
    """The reason when a version was refused: why is for operators, not clients."""


class InvalidInputError(ServerError):
    """The request does not match the model's inputs (400)."""

    status, title = 400, "Invalid input"


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
    message = "send the configured token as 'Authorization: Bearer <token>'"


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


class NotReadyError(ServerError):
    """The pod's readiness (``/v2/health/ready``): a model it must serve does not serve yet."""

    status, title = 503, "Not ready"

    def __init__(self, waiting: list[str]) -> None:
        super().__init__(
            f"models not served yet: {', '.join(waiting)}"
            if waiting
            else "nothing is published in the volume yet"
        )


class NotFoundError(ServerError):
    """No route has this path (after authentication, as every guarded route)."""

    status, title = 404, "404 Not Found"


class MetricsPortOnlyError(ServerError):
    status, title, message = 404, "Not found", "/metrics is served on the metrics port only"


def is_v2(path: str) -> bool:
    """An Open Inference Protocol route: its errors are ``{"error": "..."}``."""
    return path == "/v2" or path.startswith("/v2/")


def error_body(v2: bool, title: str, description: str | None) -> bytes:
    """The one error body of every route and worker: the Open Inference Protocol's
    ``{"error": "..."}`` on ``v2`` routes, Falcon's ``{"title", "description"}`` elsewhere."""
    if v2:
        return orjson.dumps({"error": f"{title}: {description}" if description else title})
    body: dict[str, str] = {"title": title}
    if description:
        body["description"] = description
    return orjson.dumps(body)


def error_headers(exc: ServerError, retry_after: int) -> list[tuple[bytes, bytes]]:
    """The headers of an error answer: its JSON type, Retry-After on 503, the challenge on 401."""
    headers = [(b"content-type", b"application/json")]
    if exc.status == 503:
        headers.append((b"retry-after", b"%d" % retry_after))
    elif exc.status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    return headers


def add_error_serializer(app: falcon.asgi.App[Any, Any]) -> None:
    """Falcon's own errors (404 for an unknown route, 405) in the same body as every other."""

    def serialize(req: falcon.Request, resp: falcon.Response, exc: falcon.HTTPError) -> None:
        resp.content_type = falcon.MEDIA_JSON
        resp.data = error_body(is_v2(req.path), exc.title or "Error", exc.description)

    app.set_error_serializer(serialize)
