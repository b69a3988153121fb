"""
The services a deployment test starts beside Airflow: a Redis server (the Celery broker) and the sandbox gateway.

:func:`running_redis` starts Debian's ``redis-server`` (``scripts/install-redis.sh``) on a free loopback
port, without persistence, in a temporary folder, and stops it at the end. When the binary is missing the
test is skipped locally and fails in CI (``CI`` set), like the PostgreSQL tests (``tests/postgres.py``).

:func:`running_sandbox` runs the sandbox gateway as its own process, the way a staging deployment runs it
(``python -m airflow_provider_p2psms.sandbox``), and reads and changes it through its control endpoints.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import pytest

from tests.integration.deployment import free_port


def missing_service(what: str, remedy: str) -> NoReturn:
    """Skip the test locally; fail it in CI, where a skipped deployment test would hide a missing install step."""
    message = f"{what}; {remedy}"
    if os.environ.get("CI"):
        pytest.fail(f"CI needs this for the deployment test: {message}", pytrace=False)
    pytest.skip(message)


def stop_group(process: subprocess.Popen[Any], timeout: float = 20) -> None:
    """SIGTERM the process group ``process`` leads, then SIGKILL it if it outlives ``timeout``."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
    # Whatever else of the group is left (children that ignored SIGTERM).
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


@dataclass(frozen=True)
class RedisServer:
    """A running throwaway Redis server: its URL for Celery's ``broker_url``, and its version."""

    url: str
    version: str


@contextmanager
def running_redis() -> Iterator[RedisServer]:
    """Start ``redis-server`` on a free loopback port, without persistence; yield it; stop it and remove its folder."""
    binary = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None
    )
    if binary is None:
        missing_service("no redis-server on PATH", "run scripts/install-redis.sh (Debian's redis-server, as root).")
    try:
        import redis
    except ImportError:
        missing_service("the redis client is not installed", "install the package's test extra (make venv).")
    version = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30).stdout.strip()
    folder = Path(tempfile.mkdtemp(prefix="p2psms-redis-"))
    port = free_port()
    command = [
        binary,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--dir",
        str(folder),
        "--save",
        "",
        "--appendonly",
        "no",
        "--daemonize",
        "no",
        "--protected-mode",
        "yes",
        "--logfile",
        str(folder / "redis.log"),
    ]
    process = subprocess.Popen(
        command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True
    )
    url = f"redis://127.0.0.1:{port}/0"
    try:
        client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        deadline = time.monotonic() + 30
        while True:
            try:
                if client.ping():
                    break
            except redis.RedisError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                log = (
                    (folder / "redis.log").read_text(errors="replace")[-2000:]
                    if (folder / "redis.log").exists()
                    else ""
                )
                raise RuntimeError(f"redis-server did not answer PING on port {port} (exit {process.poll()}):\n{log}")
            time.sleep(0.1)
        client.close()
        yield RedisServer(url=url, version=version)
    finally:
        stop_group(process)
        shutil.rmtree(folder, ignore_errors=True)


@dataclass
class SandboxProcess:
    """The sandbox gateway running as its own process, driven through its ``/__sandbox__/`` endpoints."""

    process: subprocess.Popen[bytes]
    url: str
    log: Path

    def _call(self, endpoint: str, body: dict[str, Any] | None = None, timeout: float = 60) -> Any:
        request = urllib.request.Request(
            f"{self.url}/__sandbox__/{endpoint}",
            data=None if body is None else json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            method="GET" if body is None else "POST",
        )
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return json.loads(answer.read())

    def stats(self) -> dict[str, Any]:
        """Request counts, accepted sends and accepted messages (``GET /__sandbox__/stats``)."""
        return self._call("stats", timeout=10)

    def accepted(self) -> int:
        """How many messages the sandbox has accepted so far."""
        return int(self.stats()["messages"])

    def configure(self, **changes: Any) -> dict[str, Any]:
        """Change configuration fields at run time (``POST /__sandbox__/config``)."""
        return self._call("config", changes, timeout=10)

    def messages(self) -> list[dict[str, Any]]:
        """Every accepted message, oldest first: ``{provider, id, recipient, text, ...}``."""
        return self._call("messages", timeout=300)

    def log_tail(self, size: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-size:] if self.log.exists() else ""


@contextmanager
def running_sandbox(folder: Path, *options: str) -> Iterator[SandboxProcess]:
    """``python -m airflow_provider_p2psms.sandbox --port 0 <options>`` until the end of the block."""
    port_file, log = folder / "sandbox.port", folder / "sandbox.log"
    with log.open("w") as output:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "airflow_provider_p2psms.sandbox",
                "--port",
                "0",
                "--port-file",
                str(port_file),
                *options,
            ],
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 60
        while not port_file.exists():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the sandbox did not start (exit {process.poll()}):\n{log.read_text()[-2000:]}")
            time.sleep(0.1)
        yield SandboxProcess(process, f"http://127.0.0.1:{int(port_file.read_text())}", log)
    finally:
        stop_group(process)
