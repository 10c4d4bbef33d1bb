"""Benchmark the server against the Node.js gateway (Fastify + onnxruntime-node) with wrk.

``make bench`` runs it. For a tiny (16->64->4) and a medium MLP, batch 1 and 32, concurrency
1 and 32, it drives both servers with wrk (keep-alive) on loopback, interleaved round by round in
the same session, beside in-process onnxruntime on the same model, prints req/s, p50 and p99,
checks the bar of issue 5 and writes docs/benchmarks.md.

Environment: BENCH_DURATION (seconds per wrk run, default 5), BENCH_ROUNDS (default 3),
BENCH_WORKERS (processes per server, default 2), BENCH_OUTPUT (default docs/benchmarks.md),
BENCH_SERVERS (default python,node,python-uvicorn), BENCH_BASELINE (a git revision: its server
runs too, as "python-<revision>", interleaved with the others, to compare commits on one machine).
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import httpx
import numpy as np
import onnx
import onnxruntime as ort

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.server.volume import publish_version  # noqa: E402
from tests.support.onnx_models import mlp_model  # noqa: E402
from tests.support.processes import Process, free_port, python_module  # noqa: E402

NODE_DIR = ROOT / "bench" / "node"
LUA = ROOT / "bench" / "post.lua"
DURATION = int(os.environ.get("BENCH_DURATION", "5"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
WORKERS = int(os.environ.get("BENCH_WORKERS", "2"))
OUTPUT = Path(os.environ.get("BENCH_OUTPUT", ROOT / "docs" / "benchmarks.md"))
KEPT_HEADING = "## Measured by hand"
"""The section of the output from this heading on is hand-written: each run keeps it as it is."""

MODELS = {
    "tiny": {"n_inputs": 16, "hidden": 64, "n_outputs": 4},
    "medium": {"n_inputs": 256, "hidden": 1024, "n_outputs": 16},
}
BATCHES = (1, 32)
CONCURRENCIES = (1, 32)


DESIGN_NOTES = """
## What makes the difference

Measured on this machine while building it (same wrk settings, tiny model, batch 1):

- A Falcon WSGI app under gunicorn sync workers (stdlib json, no keep-alive) reaches about half
  of the Node gateway; Falcon ASGI under uvicorn's gunicorn worker (uvloop + httptools, orjson)
  about matches it. A do-nothing ASGI app under uvicorn's worker is itself only about as fast as
  the Node gateway serving the model, so no work inside the app can reach 1.25x behind it.
- `server.worker.HttpWorker` (the default worker class) replaces uvicorn's protocol: httptools on
  uvloop, one write per answer, TCP_NODELAY, keep-alive and pipelining, and `/predict` handed
  straight to the request pipeline (`server.pipeline`: auth, validation, routing, batching,
  metrics, errors) without the framework. Every other route goes to the Falcon app (one buffered
  ASGI call), whose resources call the same pipeline.
  `SERVER_WORKER_CLASS=uvicorn_worker.UvicornWorker` runs the same app on uvicorn; the tests run
  the contract on both.
- Dynamic batching (`server.batcher`, the one road to inference): the predictions of one model
  that reach it in one event-loop turn are joined into one onnxruntime call (no timer, so nothing
  waits at concurrency 1); models slower than `SERVER_INLINE_MAX_US` run in a thread, joining
  what arrives while the previous call runs.
- No per-request work that can be done at load: input metadata, V2 metadata, the output names and
  the metrics' label children are computed when a version loads; metrics are counted in plain
  Python and pushed to prometheus_client's multiprocess files once a second.
"""


@dataclass(frozen=True)
class Result:
    rps: float
    p50_us: float
    p99_us: float
    errors: int = 0


def body_for(n_inputs: int, batch: int, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    rows = np.round(rng.standard_normal((batch, n_inputs)), 4).tolist()
    return json.dumps({"data": rows[0] if batch == 1 else rows}).encode()


def wrk(url: str, path: str, body_file: Path, concurrency: int) -> Result:
    threads = 1 if concurrency == 1 else 2
    env = {**os.environ, "WRK_PATH": path, "WRK_BODY_FILE": str(body_file)}
    completed = subprocess.run(
        ["wrk", "-t", str(threads), "-c", str(concurrency), "-d", f"{DURATION}s",
         "--latency", "-s", str(LUA), url],
        env=env, capture_output=True, text=True, check=True, timeout=DURATION + 60,
    )  # fmt: skip
    line = next(x for x in completed.stdout.splitlines() if x.startswith("JSON "))
    data = json.loads(line[5:])
    errors = sum(data[k] for k in data if k.startswith("errors_"))
    return Result(
        rps=data["requests"] / (data["duration_us"] / 1e6),
        p50_us=data["p50_us"],
        p99_us=data["p99_us"],
        errors=errors,
    )


def in_process(model_file: Path, n_inputs: int, batch: int) -> Result:
    """onnxruntime alone, one thread, the same options as the server (no HTTP, no JSON)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(model_file), options, providers=["CPUExecutionProvider"])
    feeds = {"input": np.random.default_rng(0).standard_normal((batch, n_inputs), np.float32)}
    for _ in range(200):
        session.run(None, feeds)
    timings = []
    deadline = time.perf_counter() + min(DURATION, 3.0)
    while time.perf_counter() < deadline:
        tick = time.perf_counter()
        session.run(None, feeds)
        timings.append(time.perf_counter() - tick)
    timings.sort()
    return Result(
        rps=len(timings) / sum(timings),
        p50_us=timings[len(timings) // 2] * 1e6,
        p99_us=timings[int(len(timings) * 0.99)] * 1e6,
    )


def start_python(
    volume: Path, logs: Path, worker_class: str, tree: Path | None = None
) -> tuple[Process, str]:
    """``python -m server``; with ``tree``, the server package of that source tree."""
    port = free_port()
    env = {"SERVER_WORKER_CLASS": worker_class}
    if tree is not None:  # ahead of the editable install of this checkout
        env["PYTHONPATH"] = str(tree)
    process = Process(
        f"python-server-{port}",
        python_module("server", "--volume", str(volume), "--host", "127.0.0.1",
                      "--port", str(port), "--workers", str(WORKERS)),
        env=env,
        cwd=tree,
        log_dir=logs,
    ).start()  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    process.wait_http(f"{url}/v2/health/ready", timeout=120)
    return process, url


def start_node(model_file: Path, name: str, logs: Path) -> tuple[Process, str]:
    port = free_port()
    process = Process(
        f"node-gateway-{port}",
        ["node", str(NODE_DIR / "server.js")],
        env={"MODEL_PATH": str(model_file), "MODEL_NAME": name, "MODEL_VERSION": "1",
             "PORT": str(port), "HOST": "127.0.0.1", "NODE_WORKERS": str(WORKERS)},
        cwd=NODE_DIR,
        log_dir=logs,
    ).start()  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    process.wait_http(f"{url}/health", timeout=60)
    return process, url


def check_same_answer(python_url: str, node_url: str, body: bytes) -> None:
    headers = {"Content-Type": "application/json"}
    ours = httpx.post(f"{python_url}/predict", content=body, headers=headers).json()
    theirs = httpx.post(f"{node_url}/predict", content=body, headers=headers).json()
    np.testing.assert_allclose(ours["prediction"], theirs["prediction"], rtol=1e-4, atol=1e-4)


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for package in ("onnxruntime", "falcon", "gunicorn", "uvicorn", "uvicorn-worker", "uvloop",
                    "httptools", "orjson", "numpy"):  # fmt: skip
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = "missing"
    found["node"] = subprocess.run(
        ["node", "--version"], check=False, capture_output=True, text=True
    ).stdout
    for package in ("fastify", "onnxruntime-node"):
        manifest = NODE_DIR / "node_modules" / package / "package.json"
        found[package] = json.loads(manifest.read_text())["version"] if manifest.exists() else "?"
    wrk_version = subprocess.run(["wrk", "-v"], check=False, capture_output=True, text=True)
    found["wrk"] = (wrk_version.stdout or wrk_version.stderr).split("\n")[0]
    return {key: value.strip() for key, value in found.items()}


def machine() -> str:
    cpu = "unknown CPU"
    with open("/proc/cpuinfo") as handle:
        for line in handle:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} CPUs ({cpu}), {memory:.0f} GiB RAM, Linux {platform.release()}"


def median(results: list[Result]) -> Result:
    return Result(
        rps=statistics.median(r.rps for r in results),
        p50_us=statistics.median(r.p50_us for r in results),
        p99_us=statistics.median(r.p99_us for r in results),
        errors=sum(r.errors for r in results),
    )


@dataclass(frozen=True)
class Row:
    model: str
    batch: int
    concurrency: int
    results: dict[str, Result]
    """Median per server: "python" (fast worker), "python-uvicorn", "node"."""
    local: Result


SERVERS = [s for s in os.environ.get("BENCH_SERVERS", "python,node,python-uvicorn").split(",") if s]
BASELINE = os.environ.get("BENCH_BASELINE", "")
BASELINE_SERVER = f"python-{BASELINE}"


def baseline_tree(revision: str, work: Path) -> Path:
    """The server and contracts packages of ``revision``, extracted under ``work``."""
    tree = work / "baseline"
    tree.mkdir()
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", revision, "server", "contracts"],
        check=True, capture_output=True,
    ).stdout  # fmt: skip
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    return tree


def start_servers(
    volume: Path, model_file: Path, name: str, logs: Path, baseline: Path | None
) -> tuple[list[Process], dict[str, str]]:
    processes, urls = [], {}
    for server in SERVERS + ([BASELINE_SERVER] if baseline else []):
        if server == "node":
            process, url = start_node(model_file, name, logs)
        elif server == "python-uvicorn":
            process, url = start_python(volume, logs, "uvicorn_worker.UvicornWorker")
        elif server == "python":
            process, url = start_python(volume, logs, "server.worker.HttpWorker")
        else:
            process, url = start_python(volume, logs, "server.worker.HttpWorker", baseline)
        processes.append(process)
        urls[server] = url
    return processes, urls


def main() -> int:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the servers on the way out
    if shutil.which("wrk") is None:
        print("wrk not found: `apt-get install wrk` (make bench does it)", file=sys.stderr)
        return 1
    if not (NODE_DIR / "node_modules").is_dir():
        print("bench/node/node_modules missing: run `make bench` (npm ci)", file=sys.stderr)
        return 1
    work = Path(tempfile.mkdtemp(prefix="mlgitops-bench-"))
    rows: list[Row] = []
    started = time.time()
    load_before = os.getloadavg()
    baseline = baseline_tree(BASELINE, work) if BASELINE else None
    try:
        for name, shape in MODELS.items():
            model_file = work / f"{name}.onnx"
            onnx.save(mlp_model(seed=1, **shape), model_file)
            volume = work / f"volume-{name}"
            publish_version(volume, name, "1", model_file)
            processes, urls = start_servers(volume, model_file, name, work, baseline)
            try:
                for batch in BATCHES:
                    body_file = work / f"{name}-{batch}.json"
                    body_file.write_bytes(body_for(shape["n_inputs"], batch))
                    for server, url in urls.items():
                        if server != "python":
                            check_same_answer(urls["python"], url, body_file.read_bytes())
                    local = in_process(model_file, shape["n_inputs"], batch)
                    for concurrency in CONCURRENCIES:
                        runs: dict[str, list[Result]] = {server: [] for server in urls}
                        for url in urls.values():  # warm-up
                            wrk(url, "/predict", body_file, concurrency)
                        order = list(urls.items())
                        for round_ in range(ROUNDS):  # interleaved, the order rotating
                            shift = round_ % len(order)
                            for server, url in order[shift:] + order[:shift]:
                                runs[server].append(wrk(url, "/predict", body_file, concurrency))
                        row = Row(
                            name,
                            batch,
                            concurrency,
                            {server: median(results) for server, results in runs.items()},
                            local,
                        )
                        rows.append(row)
                        print_row(row)
            finally:
                for process in processes:
                    process.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    labels = int64_check()
    print("\n" + labels)
    verdict = bar(rows)
    print("\n" + verdict)
    write_report(rows, verdict + "\n\n" + labels, started, load_before)
    print(f"\nwrote {OUTPUT}")
    return 0


def int64_check() -> str:
    """A classifier with an int64 ``label`` output beside float scores: who can serve it?"""
    work = Path(tempfile.mkdtemp(prefix="mlgitops-bench-int64-"))
    try:
        model_file = work / "clf.onnx"
        model = mlp_model(seed=3, with_label=True)
        label_first = [model.graph.output[1], model.graph.output[0]]  # as skl2onnx orders them
        del model.graph.output[:]
        model.graph.output.extend(label_first)
        onnx.save(model, model_file)
        volume = work / "volume"
        publish_version(volume, "clf", "1", model_file)
        python, python_url = start_python(volume, work, "server.worker.HttpWorker")
        node, node_url = start_node(model_file, "clf", work)
        try:
            body = body_for(16, 2)
            headers = {"Content-Type": "application/json"}
            ours = httpx.post(f"{python_url}/predict", content=body, headers=headers)
            theirs = httpx.post(f"{node_url}/predict", content=body, headers=headers)
        finally:
            python.stop()
            node.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    outputs = sorted(ours.json().get("outputs", {})) if ours.status_code == 200 else []
    return (
        f"Classifier with an int64 label output: python answers {ours.status_code} with "
        f"outputs {outputs}; node answers {theirs.status_code}."
    )


def print_row(row: Row) -> None:
    parts = [f"{row.model:6} batch {row.batch:2} c{row.concurrency:<2}"]
    for server, result in row.results.items():
        parts.append(
            f"{server} {result.rps:7.0f}/s p50 {result.p50_us:6.0f}us p99 {result.p99_us:6.0f}us"
            + (f" ERRORS {result.errors}" if result.errors else "")
        )
    parts.append(f"in-process {row.local.rps:7.0f}/s p50 {row.local.p50_us:5.0f}us")
    print(" | ".join(parts), flush=True)


def bar(rows: list[Row]) -> str:
    by_key = {(r.model, r.batch, r.concurrency): r for r in rows}
    c32 = by_key[("tiny", 1, 32)].results
    c1 = by_key[("tiny", 1, 1)].results
    ratio = c32["python"].rps / c32["node"].rps
    throughput_ok = ratio >= 1.25
    latency_ok = c1["python"].p50_us <= c1["node"].p50_us
    verdict = (
        f"Bar (tiny model, batch 1): req/s at c32 = {ratio:.2f}x Node (need >= 1.25x): "
        f"{'MET' if throughput_ok else 'NOT MET'}; p50 at c1 = {c1['python'].p50_us:.0f}us vs "
        f"Node {c1['node'].p50_us:.0f}us (need <=): {'MET' if latency_ok else 'NOT MET'}"
    )
    return verdict + "".join(against_baseline(row) for row in rows)


def against_baseline(row: Row) -> str:
    """The row's python figures against the baseline commit's (within 5 %: req/s and p50)."""
    before = row.results.get(BASELINE_SERVER)
    if before is None:
        return ""
    now = row.results["python"]
    rps, p50 = now.rps / before.rps, now.p50_us / before.p50_us
    within = rps >= 0.95 and p50 <= 1.05
    return (
        f"\n\n{row.model} batch {row.batch} c{row.concurrency} against {BASELINE}: "
        f"req/s {rps:.2f}x, "
        f"p50 {now.p50_us:.0f} vs {before.p50_us:.0f}us ({p50:.2f}x) (need within 5 %): "
        f"{'MET' if within else 'NOT MET'}"
    )


def write_report(
    rows: list[Row], verdict: str, started: float, load_before: tuple[float, float, float]
) -> None:
    found = versions()
    servers = list(rows[0].results)
    lines = [
        "# Benchmarks: the server against the Node.js gateway",
        "",
        "Written by `make bench` (bench/serve_bench.py); do not edit by hand.",
        "",
        f"- Run: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(started))}, "
        f"{ROUNDS} interleaved rounds of {DURATION} s per cell and server (median shown), "
        f"load average before: {load_before[0]:.2f}, after: {os.getloadavg()[0]:.2f} (a shared "
        "machine: other jobs ran too, so compare within a row, not across runs).",
        f"- Machine: {machine()}. wrk, the servers and in-process runs share these cores.",
        f"- Every server: {WORKERS} processes, onnxruntime with 1 intra-op thread each; "
        'wrk with keep-alive (1 thread at c1, 2 at c32), POST `{"data": ...}` on loopback.',
        "- python: `python -m server` (gunicorn, the package's worker `server.worker.HttpWorker`:"
        " uvloop + httptools, Falcon ASGI app for every route but /predict, orjson, dynamic "
        "batching). python-uvicorn: the same app under `uvicorn_worker.UvicornWorker` (Falcon "
        "answers /predict too). node: bench/node/server.js (Fastify + onnxruntime-node, "
        "node:cluster)."
        + (
            f" {BASELINE_SERVER}: the server package of commit {BASELINE}, same worker class "
            "and settings, from `git archive`."
            if BASELINE
            else ""
        ),
        "- in-process: onnxruntime `session.run` alone in one thread, same model and batch (no "
        "HTTP, no JSON): the floor.",
        "- Versions: " + ", ".join(f"{k} {v}" for k, v in found.items()) + ".",
        "",
    ]
    header = "| model | batch | conc. |"
    rule = "|---|---:|---:|"
    for server in servers:
        header += f" {server} req/s | p50 us | p99 us |"
        rule += "---:|---:|---:|"
    header += " python/node req/s | in-process calls/s | in-process p50 us |"
    rule += "---:|---:|---:|"
    lines += [header, rule]
    for row in rows:
        line = f"| {row.model} | {row.batch} | {row.concurrency} |"
        for server in servers:
            result = row.results[server]
            line += f" {result.rps:.0f} | {result.p50_us:.0f} | {result.p99_us:.0f} |"
        ratio = row.results["python"].rps / row.results["node"].rps
        line += f" {ratio:.2f}x | {row.local.rps:.0f} | {row.local.p50_us:.0f} |"
        lines.append(line)
    errors = sum(result.errors for row in rows for result in row.results.values())
    lines += ["", *(f"- **{part}**" for part in verdict.split("\n\n"))]
    lines += ["", f"Non-200 answers or socket errors in all runs: {errors}."]
    lines += ["", DESIGN_NOTES.strip()]
    previous = OUTPUT.read_text() if OUTPUT.exists() else ""
    kept = previous.find("\n" + KEPT_HEADING)
    if kept >= 0:
        lines += ["", previous[kept:].strip()]
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
