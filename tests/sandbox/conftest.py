"""The sandbox tests' fixtures: one server per test module, reset before each test, and an HTTP session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests

from airflow_provider_p2psms.sandbox import SandboxServer

#: Seconds from acceptance to a final state in these tests' server.
DELIVERY_SECONDS = 0.2


@pytest.fixture(scope="module")
def server() -> Iterator[SandboxServer]:
    with SandboxServer(delivery_seconds=DELIVERY_SECONDS) as sandbox:
        yield sandbox


@pytest.fixture
def sandbox(server: SandboxServer) -> SandboxServer:
    server.reset()
    return server


@pytest.fixture
def session() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session
