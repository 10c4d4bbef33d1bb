"""The Falcon resources: each hands its request to the pipeline and writes back its answer."""

from __future__ import annotations

import falcon.asgi

from server.pipeline import Answer, Kind, Pipeline, Route


class _Endpoint:
    def __init__(self, pipeline: Pipeline, kind: Kind) -> None:
        self._pipeline = pipeline
        self._kind = kind

    async def _answer(
        self,
        req: falcon.asgi.Request,
        resp: falcon.asgi.Response,
        params: dict[str, str],
        body: bytes | None,
    ) -> None:
        port = None
        if self._kind is Kind.METRICS:  # served on one port only, with SERVER_METRICS_PORT
            local = req.scope.get("server")
            port = tuple(local)[1] if local else None
        route = Route(self._kind, params.get("name"), params.get("version"), port)
        answer: Answer = await self._pipeline(
            route, req.get_header, req.stream.read if body is None else body
        )
        resp.status = answer.status
        for name, value in answer.headers:
            resp.set_header(name.decode("latin-1"), value.decode("latin-1"))
        resp.data = answer.body


class GetResource(_Endpoint):
    """``GET`` on one kind of route (health, metadata, models, metrics)."""

    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, **params: str
    ) -> None:
        await self._answer(req, resp, params, b"")


class PostResource(_Endpoint):
    """``POST`` of an inference route (``/predict``, ``/models/{name}/predict``, V2 infer)."""

    async def on_post(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, **params: str
    ) -> None:
        await self._answer(req, resp, params, None)
