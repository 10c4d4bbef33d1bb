"""Soak: steady load on the whole pipeline with a promotion every few seconds (issue 6).

Starts a real ``mlflow server``, applies models.yaml with the reconciler (as CI does) to flip the
Production version between two models over and over, while client threads call ``/predict``
through a sidecar and a server sharing a volume. Prints failed requests (goal 0), p50/p99 latency
during swaps against steady state, swap latency (end of apply -> first answer from the new
version), and the server's memory (master + workers RSS) at the start and the end.

    .venv/bin/python bench/soak.py [--duration 120] [--threads 8] [--pause 3]
                                   [--backend sqlite|postgres]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.load import LoadGenerator, Outcome  # noqa: E402
from tests.support.onnx_models import write_mlp  # noqa: E402
from tests.support.pipeline import DeclaredVersion, Pipeline  # noqa: E402
from tests.support.postgres import sqlalchemy_url, temporary_database  # noqa: E402
from tests.support.processes import MlflowServer  # noqa: E402
from tests.support.waiting import wait_until  # noqa: E402


def rss_kib(pid: int) -> int:
    """Resident memory of ``pid`` and its children (gunicorn master + workers), KiB."""
    total = 0
    pids = [pid]
    with contextlib.suppress(OSError):
        pids += [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    for each in pids:
        try:
            for line in Path(f"/proc/{each}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total


def promoted_at(pipe: Pipeline, name: str, version: str) -> float:
    """When MLflow last changed the version (its Production transition and stage tag), as a
    ``time.monotonic()`` value comparable with the load generator's."""
    info = httpx.get(
        f"{pipe.mlflow.url}/api/2.0/mlflow/model-versions/get",
        params={"name": name, "version": version},
        timeout=10,
    ).json()["model_version"]
    wall = int(info["last_updated_timestamp"]) / 1000
    return time.monotonic() - (time.time() - wall)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=120.0, help="seconds of promotions")
    parser.add_argument("--threads", type=int, default=8, help="client threads")
    parser.add_argument("--pause", type=float, default=3.0, help="seconds between promotions")
    parser.add_argument("--interval", type=float, default=1.0, help="sidecar poll seconds")
    parser.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="mlgitops-soak-"))
    cleanup = contextlib.ExitStack()
    backend = None
    if args.backend == "postgres":
        backend = sqlalchemy_url(cleanup.enter_context(temporary_database("mlgitops_soak")))
    mlflow = MlflowServer(workdir / "mlflow", backend_store_uri=backend).start()
    pipe = Pipeline(mlflow, workdir / "pipeline", interval=args.interval)
    name = "soak-model"
    builds = [write_mlp(workdir / f"m{seed}.onnx", seed=seed) for seed in (101, 102)]
    sources = [pipe.add_file(b.path) for b in builds]

    def declare(production: int) -> None:
        pipe.declare(
            {
                name: [
                    DeclaredVersion(src, b.sha256, "Production" if i == production else "Archived")
                    for i, (src, b) in enumerate(zip(sources, builds, strict=True))
                ]
            }
        )

    swaps: list[tuple[float, float | None]] = []  # (end of apply, first answer of new version)
    reactions: list[float] = []  # promotion recorded in MLflow -> first answer of new version
    try:
        declare(0)
        pipe.apply()
        pipe.start_sidecar("--model", name)
        server = pipe.start_server()
        version_of = {0: wait_until(lambda: pipe.served_version(name), what="first version")}
        body = {"data": [0.25] * builds[0].n_inputs}
        load = LoadGenerator(f"{pipe.server_url}/models/{name}/predict", body, threads=args.threads)
        load.start()
        time.sleep(3.0)  # steady state before the first swap
        memory_start = rss_kib(server.pid)
        began = time.monotonic()
        target = 0
        while time.monotonic() - began < args.duration:
            target = 1 - target
            declare(target)
            pipe.apply()
            applied = time.monotonic()
            deadline = applied + 60
            first: Outcome | None = None
            while first is None and time.monotonic() < deadline:
                served = pipe.served_version(name)
                if served and served != version_of.get(1 - target):
                    version_of[target] = served
                    first = load.first_answer_from(served, applied)
                time.sleep(0.05)
            swaps.append((applied, first.finished if first else None))
            if first is not None:
                promoted = promoted_at(pipe, name, version_of[target])
                from_mlflow = load.first_answer_from(version_of[target], promoted)
                if from_mlflow is not None:
                    reactions.append(from_mlflow.finished - promoted)
            time.sleep(args.pause)
        time.sleep(3.0)
        memory_end = rss_kib(server.pid)
        load.stop()
    finally:
        pipe.stop()
        mlflow.stop()
        cleanup.close()

    outcomes = load.snapshot()
    failures = [o for o in outcomes if o.status != 200]
    windows = [(start, (end or start) + 1.0) for start, end in swaps]

    def in_swap(o: Outcome) -> bool:
        return any(start <= o.finished and o.started <= end for start, end in windows)

    swap_lat = [(o.finished - o.started) * 1000 for o in outcomes if o.status == 200 and in_swap(o)]
    steady_lat = [
        (o.finished - o.started) * 1000 for o in outcomes if o.status == 200 and not in_swap(o)
    ]
    reaction = [end - start for start, end in swaps if end is not None]
    print(f"soak: {args.duration:.0f}s, {args.threads} client threads, backend {args.backend}")
    print(f"promotions: {len(swaps)} ({len(reaction)} reached clients)")
    print(f"requests: {len(outcomes)}  failed: {len(failures)}")
    if failures:
        print(f"  first failures: {failures[:3]}")
    print(
        f"latency steady  p50 {percentile(steady_lat, 50):.1f} ms  "
        f"p99 {percentile(steady_lat, 99):.1f} ms  (n={len(steady_lat)})"
    )
    print(
        f"latency in swap p50 {percentile(swap_lat, 50):.1f} ms  "
        f"p99 {percentile(swap_lat, 99):.1f} ms  (n={len(swap_lat)})"
    )
    if reaction:
        print(
            f"end of apply -> first answer from new version: median "
            f"{statistics.median(reaction):.2f} s, max {max(reaction):.2f} s "
            f"(sidecar poll interval {args.interval:.1f} s)"
        )
    if reactions:
        print(
            f"promotion recorded in MLflow -> first answer from it: median "
            f"{statistics.median(reactions):.2f} s, max {max(reactions):.2f} s"
        )
    print(
        f"server RSS (master + workers): start {memory_start / 1024:.1f} MiB, "
        f"end {memory_end / 1024:.1f} MiB, growth {(memory_end - memory_start) / 1024:+.1f} MiB"
    )
    return 1 if failures or len(reaction) < len(swaps) else 0


if __name__ == "__main__":
    sys.exit(main())
