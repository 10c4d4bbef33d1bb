"""Plan benchmark: N models x V versions in a real MLflow; time and count the HTTP requests.

The reconciler reads MLflow with batched searches (``name IN (...)``), so its requests grow with
the number of models (in steps of 50), never with versions x models. This script proves it by
counting every request in a small proxy between the reconciler and ``mlflow server``.

    .venv/bin/python bench/plan_bench.py [--models 200] [--versions 5] [--tracking-uri URL]

Without --tracking-uri it starts its own ``mlflow server`` (SQLite) in a temporary directory.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from contracts.registry import MANAGED_TAG, SHA256_TAG, STAGE_TAG  # noqa: E402
from tests.support.http_proxy import CountingProxy  # noqa: E402


def digest(model: str, version: int) -> str:
    return hashlib.sha256(f"{model}/{version}".encode()).hexdigest()


def populate(tracking_uri: str, prefix: str, models: int, versions: int) -> list[str]:
    """Register models x versions directly (s3:// sources: nothing to upload)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    names = [f"{prefix}-{index:04d}" for index in range(models)]
    for name in names:
        client.create_registered_model(name, tags={MANAGED_TAG: "true"})
        for version in range(1, versions + 1):
            client.create_model_version(
                name,
                f"s3://bench/{name}/v{version}/model.onnx",
                tags={SHA256_TAG: digest(name, version), STAGE_TAG: "None", MANAGED_TAG: "true"},
                await_creation_for=0,
            )
    return names


def desired_for(names: list[str], versions: int) -> Any:
    from reconciler.spec import ModelsFile

    return ModelsFile.model_validate(
        {
            "models": [
                {
                    "name": name,
                    "versions": [
                        {"source": f"s3://bench/{name}/v{v}/model.onnx", "sha256": digest(name, v)}
                        for v in range(1, versions + 1)
                    ],
                }
                for name in names
            ]
        }
    )


def measure(proxy: CountingProxy, names: list[str], versions: int) -> tuple[float, int, int]:
    from reconciler.plan import make_plan
    from reconciler.registry import MlflowRegistry, RetryPolicy

    registry = MlflowRegistry(proxy.url, RetryPolicy(retries=2), "mlgitops-uploads")
    desired = desired_for(names, versions)
    proxy.take()
    started = time.perf_counter()
    plan = make_plan(desired, registry.read(names))
    elapsed = time.perf_counter() - started
    requests = sum(proxy.take().values())
    return elapsed, requests, len(plan.actionable)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=200)
    parser.add_argument("--versions", type=int, default=5)
    parser.add_argument("--tracking-uri", help="an MLflow to use (default: start one)")
    args = parser.parse_args()

    server = None
    if args.tracking_uri is None:
        from tests.support.processes import MlflowServer

        workdir = Path(tempfile.mkdtemp(prefix="mlgitops-plan-bench-"))
        print(f"starting mlflow server in {workdir} ...", flush=True)
        server = MlflowServer(workdir).start()
        tracking_uri = server.url
    else:
        tracking_uri = args.tracking_uri
    proxy = CountingProxy(tracking_uri)
    try:
        prefix = f"bench-{int(time.time())}"
        started = time.perf_counter()
        many = populate(tracking_uri, f"{prefix}-v{args.versions}", args.models, args.versions)
        one = populate(tracking_uri, f"{prefix}-v1", args.models, 1)
        print(
            f"populated {args.models} x {args.versions} + {args.models} x 1 versions in "
            f"{time.perf_counter() - started:.1f}s",
            flush=True,
        )
        rows = []
        for count in sorted({max(1, args.models // 4), args.models // 2, args.models}):
            for versions, names in ((args.versions, many), (1, one)):
                elapsed, requests, changes = measure(proxy, names[:count], versions)
                rows.append((count, versions, count * versions, requests, elapsed, changes))
        print()
        print("models  versions/model  versions  MLflow requests  plan time  changes")
        for count, versions, total, requests, elapsed, changes in rows:
            print(
                f"{count:6d}  {versions:14d}  {total:8d}  {requests:15d}  "
                f"{elapsed * 1000:7.0f} ms  {changes:7d}"
            )
        full = next(r for r in rows if r[0] == args.models and r[1] == args.versions)
        print(
            f"\nplan of {args.models} models x {args.versions} versions: {full[4]:.2f}s, "
            f"{full[3]} MLflow requests (versions x models would be {full[2]})"
        )
    finally:
        proxy.close()
        if server is not None:
            server.stop()


if __name__ == "__main__":
    main()
