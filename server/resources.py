"""The Falcon resources: each hands its request to the pipeline and writes back its answer."""

from __future__ import annotations

from typing import Any

import falcon.asgi

from server.errors import ServerError, is_v2
from server.pipeline import Answer, Body, Kind, Pipeline, Route


def _write(resp: falcon.asgi.Response, answer: Answer) -> None:
    resp.status = answer.status
    for name, value in answer.headers:
        resp.set_header(name.decode("latin-1"), value.decode("latin-1"))
    resp.data = answer.body


class _Endpoint:
    def __init__(self, pipeline: Pipeline, kind: Kind) -> None:
        self.pipeline = pipeline
        self.kind = kind

    async def _answer(
        self,
        req: falcon.asgi.Request,
        resp: falcon.asgi.Response,
        params: dict[str, str],
        body: Body,
    ) -> None:
        port = None
        if self.kind is Kind.METRICS:  # served on one port only, with SERVER_METRICS_PORT
            local = req.scope.get("server")
            port = tuple(local)[1] if local else None
        route = Route(self.kind, params.get("name"), params.get("version"), port)
        _write(resp, await self.pipeline(route, req.get_header, body))


class GetResource(_Endpoint):
    """``GET`` on one kind of route (health, metadata, models, metrics)."""

    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, **params: str
    ) -> None:
        await self._answer(req, resp, params, b"")

    on_head = on_get  # Falcon leaves the body out and keeps its length (RFC 9110 9.3.2)


class PostResource(_Endpoint):
    """``POST`` of an inference route (``/predict``, ``/models/{name}/predict``, V2 infer)."""

    async def on_post(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, **params: str
    ) -> None:
        await self._answer(req, resp, params, req.stream.read)


class UnknownPath(_Endpoint):
    """The sink of every path no route has: 404, after authentication."""

    async def __call__(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response | None, **params: Any
    ) -> None:
        assert resp is not None  # no websockets here
        kind = Kind.UNKNOWN_V2 if is_v2(req.path) else Kind.UNKNOWN
        _write(resp, await self.pipeline(Route(kind), req.get_header, b""))


class MethodNotAllowedAuth:
    """Falcon middleware: a method a route does not take (Falcon's 405) is authenticated by
    the pipeline first, as every guarded route."""

    async def process_resource(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, resource: Any, params: Any
    ) -> None:
        if not isinstance(resource, _Endpoint) or hasattr(resource, f"on_{req.method.lower()}"):
            return  # the pipeline authenticates the request itself
        try:
            resource.pipeline.authorize(resource.kind, req.get_header)
        except ServerError as exc:
            _write(resp, resource.pipeline.error(resource.kind, exc))
            resp.complete = True
