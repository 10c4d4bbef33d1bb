"""gunicorn configuration shipped with the package (``python -m server`` passes it with -c).

Binds, workers and worker class from ``ServerSettings`` (the lean server.worker.HttpWorker or
uvicorn's), no preload (each worker opens its own onnxruntime session after the fork), no
control socket (gunicorn 26 shares one per user), prometheus_client's multiprocess directory
created here (the one place) and cleaned on exit.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from typing import Any

from server.logs import LOGCONFIG
from server.settings import METRICS_DIR_CREATED, ServerSettings

_settings = ServerSettings()  # type: ignore[call-arg,unused-ignore]
bind = _settings.binds
workers = _settings.workers
worker_class = _settings.worker_class
preload_app = False
control_socket_disable = True
keepalive = 75  # seconds an idle keep-alive connection stays open (load balancers: 60)
timeout = 60
graceful_timeout = 20
accesslog = None
logconfig_dict = LOGCONFIG


def _metrics_directory() -> None:
    """Set PROMETHEUS_MULTIPROC_DIR now, before anything imports prometheus_client (gunicorn
    imports the worker class in the master, and the client picks its mode at import)."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not directory:
        directory = tempfile.mkdtemp(prefix="mlgitops-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
        os.environ[METRICS_DIR_CREATED] = directory
        return
    os.makedirs(directory, exist_ok=True)
    for entry in os.listdir(directory):  # stale values of an earlier run
        if entry.endswith(".db"):
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(directory, entry))


_metrics_directory()


def child_exit(server: Any, worker: Any) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]


def on_exit(server: Any) -> None:
    created = os.environ.get(METRICS_DIR_CREATED)
    if created and created == os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        shutil.rmtree(created, ignore_errors=True)
