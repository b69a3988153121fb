"""Fixtures of the reliability tests: a second sandbox, and in-process connections to both."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from airflow_provider_p2psms.sandbox import DEFAULT_BITEL_TOKEN, DEFAULT_IPPANEL_KEY, SandboxServer
from tests.reliability.support import gateway_conn_env

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

#: Connection extras that keep in-process retries fast.
FAST = {"retry_backoff": 0.01, "max_retries": 2}


@pytest.fixture
def other_sandbox() -> Iterator[SandboxServer]:
    """A second sandbox, for a DAG whose tasks need faults of their own."""
    with SandboxServer(delivery_seconds=0.6) as server:
        yield server


@pytest.fixture
def connect(sandbox: SandboxServer, monkeypatch: pytest.MonkeyPatch) -> Callable[..., SandboxServer]:
    """
    Point ``bitel_default`` and ``ippanel_default`` at the sandbox in this process, with fast retries.

    Call it with more connection extras (``batch_size=10``...); it returns the sandbox.
    """
    sandbox.configure(retry_after_seconds=0.01)

    def connect(**extra: Any) -> SandboxServer:
        for conn_id, conn_type, token in (
            ("bitel_default", "bitel", DEFAULT_BITEL_TOKEN),
            ("ippanel_default", "ippanel", DEFAULT_IPPANEL_KEY),
        ):
            for name, value in gateway_conn_env(conn_id, conn_type, sandbox, token, **{**FAST, **extra}).items():
                monkeypatch.setenv(name, value)
        return sandbox

    return connect
