"""The contract suite's servers: one per (world, road), shared by the session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.server.contract import Servers


@pytest.fixture(scope="session")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    pool = Servers(tmp_path_factory.mktemp("contract"))
    yield pool
    pool.close()
