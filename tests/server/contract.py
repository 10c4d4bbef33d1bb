"""The worlds of the contract suite: volumes written as the sidecar writes them, settings, and
one server per (world, road) started on first use and shared by the whole session.

A world is a volume and the ``SERVER_*`` environment the app is built from; a road is how the
request reaches the app (``tests.server.roads``). Every road of a world serves its own app, built
by ``server.app.get_app()`` exactly as a gunicorn worker builds it.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from tests.server.roads import (
    Headers,
    Reply,
    WorkerServer,
    app_from_env,
    serving_in_process,
)
from tests.server.volume import publish_version
from tests.support.onnx_models import every_type, fails_on_batches, write_corrupt, write_mlp
from tests.support.processes import free_port

ROW = [float(i) / 16 for i in range(16)]
JSON: Headers = (("Content-Type", "application/json"),)
LIMIT = 200_000
"""SERVER_MAX_BODY_BYTES of the worlds: above the 64 KiB a body is decoded in a thread."""
TOKEN = "s3cret-token"


def predict_body(data: Any) -> bytes:
    return orjson.dumps({"data": data})


def v2_body(inputs: list[dict[str, Any]] | None = None, **fields: Any) -> bytes:
    """A V2 request; by default one FP32 row for the ``input`` of the MLPs."""
    if inputs is None:
        inputs = [{"name": "input", "shape": [1, 16], "datatype": "FP32", "data": ROW}]
    return orjson.dumps({"inputs": inputs, **fields})


@dataclass(frozen=True)
class World:
    volume: str
    """A key of ``VOLUMES``."""
    env: Mapping[str, str] = field(default_factory=dict)
    """``SERVER_*`` settings besides SERVER_VOLUME; ``{metrics_port}`` is replaced by a port."""


VOLUMES: dict[str, list[tuple[str, str, str, str, dict[str, Any] | None]]] = {
    # name -> (model, version, model file, role, rollout) published in that order
    "main": [
        ("tiny", "1", "tiny", "current", None),
        ("clf", "7", "clf", "current", None),
        ("types", "3", "types", "current", None),
        ("faulty", "1", "faulty", "current", None),
        ("broken", "1", "corrupt", "current", None),
        ("canary", "1", "canary-1", "current", None),
        ("canary", "2", "canary-2", "candidate",
         {"candidate_version": "2", "mode": "canary", "weight": 0}),
        ("full", "1", "canary-1", "current", None),
        ("full", "2", "canary-2", "candidate",
         {"candidate_version": "2", "mode": "canary", "weight": 100}),
        ("shadowed", "1", "canary-1", "current", None),
        ("shadowed", "2", "canary-2", "candidate",
         {"candidate_version": "2", "mode": "shadow", "weight": 0}),
    ],
    "pair": [("tiny", "1", "tiny", "current", None), ("broken", "1", "corrupt", "current", None)],
    "empty": [],
}  # fmt: skip
"""``main``: every kind of model (an MLP, one with an int64 label, one input of every tensor type,
one that fails at run time for batches, one refused, candidates: a canary at weight 0, one at
100, a shadow);
``pair``: one that serves and one refused; ``empty``: nothing published yet."""

WORLDS: dict[str, World] = {
    "main": World("main", {"SERVER_MAX_BODY_BYTES": str(LIMIT)}),
    "guarded": World("pair", {"SERVER_AUTH_TOKEN": TOKEN, "SERVER_DEFAULT_MODEL": "tiny"}),
    "empty": World("empty", {"SERVER_RETRY_AFTER_SECONDS": "7"}),
    "metrics-port": World("pair", {"SERVER_METRICS_PORT": "{metrics_port}"}),
    # readiness: SERVER_REQUIRED_MODELS and SERVER_DEFAULT_MODEL
    "nothing-required": World("pair"),
    "require-tiny": World("pair", {"SERVER_REQUIRED_MODELS": "tiny"}),
    "require-both": World("pair", {"SERVER_REQUIRED_MODELS": " tiny , broken "}),
    "default-refused": World("pair", {"SERVER_DEFAULT_MODEL": "broken"}),
    "default-ghost": World("pair", {"SERVER_DEFAULT_MODEL": "ghost"}),
    "require-ghost": World(
        "pair", {"SERVER_DEFAULT_MODEL": "tiny", "SERVER_REQUIRED_MODELS": "ghost"}
    ),
}


_BUILDERS: dict[str, Callable[[Path], Path]] = {
    "tiny": lambda path: write_mlp(path, seed=1).path,
    "clf": lambda path: write_mlp(path, seed=2, with_label=True).path,
    "types": every_type,
    "faulty": fails_on_batches,
    "corrupt": lambda path: write_corrupt(path).path,
    "canary-1": lambda path: write_mlp(path, seed=3).path,
    "canary-2": lambda path: write_mlp(path, seed=4).path,
}


class Servers:
    """Every (world, road) server of the session, started on first use, all stopped at the end.

    ``road(world, "falcon")`` is the app behind ``falcon.testing``; ``"lean-worker"`` and
    ``"uvicorn-worker"`` are the two gunicorn worker classes on loopback sockets.
    """

    def __init__(self, root: Path) -> None:
        self._root = root
        self._models: dict[str, Path] = {}
        self._volumes: dict[str, Path] = {}
        self._roads: dict[tuple[str, str], Any] = {}
        self._falcon_exits: list[Any] = []
        self._workers: list[WorkerServer] = []
        self.metrics_ports: dict[tuple[str, str], int] = {}
        """(world, road) -> the SERVER_METRICS_PORT it was given."""

    def model_file(self, key: str) -> Path:
        if key not in self._models:
            self._models[key] = _BUILDERS[key](self._root / "models" / f"{key}.onnx")
        return self._models[key]

    def volume(self, key: str) -> Path:
        if key not in self._volumes:
            volume = self._root / "volumes" / key
            volume.mkdir(parents=True)
            for name, version, model, role, rollout in VOLUMES[key]:
                publish_version(
                    volume, name, version, self.model_file(model), role=role, rollout=rollout
                )
            self._volumes[key] = volume
        return self._volumes[key]

    def fresh_volume(self) -> Path:
        """An empty volume of its own (for a world a test changes)."""
        volume = self._root / "volumes" / f"own-{uuid.uuid4().hex[:8]}"
        volume.mkdir(parents=True)
        return volume

    def env(self, world: str, road: str) -> dict[str, str]:
        spec = WORLDS[world]
        env = {"SERVER_VOLUME": str(self.volume(spec.volume))}
        for key, value in spec.env.items():
            if "{metrics_port}" in value:
                port = self.metrics_ports.setdefault((world, road), free_port())
                env[key] = value.replace("{metrics_port}", str(port))
            else:
                env[key] = value
        return env

    def road(self, world: str, road: str) -> Any:
        """The ``tests.server.roads`` road serving ``world`` (started now if not yet)."""
        key = (world, road)
        if key not in self._roads:
            app = app_from_env(self.env(world, road))
            if road == "falcon":
                context = serving_in_process(app, port=8000)
                self._roads[key] = context.__enter__()
                self._falcon_exits.append(context)
            else:
                ports = [0]
                if key in self.metrics_ports:
                    ports.append(self.metrics_ports[key])
                server = WorkerServer(road, app, ports=ports).start()
                self._workers.append(server)
                self._roads[key] = server
        return self._roads[key]

    def close(self) -> None:
        for server in self._workers:
            server.stop()  # all at once: each notices within half a second
        for context in self._falcon_exits:
            context.__exit__(None, None, None)
        for server in self._workers:
            server.join()


def error_text(path: str, reply: Reply) -> str:
    """The error's words, checking the body's shape: the Open Inference Protocol's
    ``{"error"}`` under ``/v2/``, Falcon's ``{"title"[, "description"]}`` elsewhere."""
    assert reply.headers.get("content-type", "").startswith("application/json"), reply
    body = reply.json()
    route = path.partition("?")[0]
    if route == "/v2" or route.startswith("/v2/"):
        assert set(body) == {"error"}, body
        assert isinstance(body["error"], str)
        return str(body["error"])
    assert "title" in body, body
    assert set(body) <= {"title", "description"}, body
    return f"{body['title']}: {body.get('description', '')}"
