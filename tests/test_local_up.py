"""deploy/local/up.py (`make up`) without starting anything: its port check."""

from __future__ import annotations

import importlib.util
import socket
import sys
from pathlib import Path
from types import ModuleType

import pytest

UP = Path(__file__).resolve().parents[1] / "deploy" / "local" / "up.py"


@pytest.fixture(scope="module")
def up() -> ModuleType:
    spec = importlib.util.spec_from_file_location("local_up", UP)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["local_up"] = module
    spec.loader.exec_module(module)
    return module


def test_a_port_is_taken_while_something_listens_and_free_in_time_wait(up: ModuleType) -> None:
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    accepted, _ = listener.accept()
    assert not up.port_is_free(port)
    accepted.close()  # the server side closes first: its end of the connection waits (TIME_WAIT)
    listener.close()
    client.close()
    assert up.port_is_free(port)  # `make up` again right after Ctrl-C: nothing listens there
