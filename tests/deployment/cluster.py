"""
A multi-machine-style Airflow deployment for the tests: CeleryExecutor, PostgreSQL metadata, Redis broker.

Unlike ``airflow standalone`` (``tests/integration/deployment.py``), every component is its own process
started here, and the "machines" share nothing on disk:

* a control home runs the scheduler (with the Celery executor), the DAG processor, the triggerer and the
  API server (one uvicorn worker, for a 2-core machine);
* each Celery worker has its own ``AIRFLOW_HOME`` with its own copy of the DAG file and its own task logs,
  its own log-server port (``[logging] worker_log_server_port``), its own Celery hostname, and its own
  hostname as Airflow records it (``[core] hostname_callable``, a one-line module on that worker's
  ``PYTHONPATH``), so the metadata database tells which worker ran which try.

They share what the machines of a real deployment share: the metadata database, the broker, the
configuration that must agree (Fernet key, JWT secret, API URL) and the connections (``AIRFLOW_CONN_*``).
Each component runs in its own process group (its own session); :meth:`CeleryDeployment.stop` ends the
groups and every process of their trees seen on the way, including task processes in groups of their own.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from tests.integration.deployment import free_port

#: Environment variables of the test process that must not leak into the components' configuration.
_OWN_PREFIXES = ("AIRFLOW_", "AIRFLOW__")


@dataclass
class Component:
    """One Airflow process of the deployment (``airflow scheduler``, ``airflow celery worker``...)."""

    name: str
    command: list[str]
    env: dict[str, str]
    home: Path
    log: Path
    process: subprocess.Popen[bytes] | None = None
    seen: dict[int, psutil.Process] = field(default_factory=dict)

    def start(self) -> None:
        with self.log.open("ab") as output:
            self.process = subprocess.Popen(
                self.command,
                env=self.env,
                cwd=self.home,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        assert self.process is not None, f"{self.name} was never started"
        return self.process.pid

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def tree(self) -> list[psutil.Process]:
        """The component's main process and its live descendants, remembered so that none outlives the test."""
        if not self.running():
            return []
        try:
            main = psutil.Process(self.pid)
            found = [main, *main.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []
        for process in found:
            self.seen.setdefault(process.pid, process)
        return found

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def log_tail(self, size: int = 4000) -> str:
        return self.log_text()[-size:]


@dataclass(frozen=True)
class Worker:
    """A Celery worker "machine": its home, its names and its log-server port."""

    name: str
    home: Path
    hostname: str
    celery_hostname: str
    log_server_port: int
    component: Component

    def task_logs(self) -> list[Path]:
        return sorted(path for path in (self.home / "logs").rglob("*") if path.is_file())


def fernet_key() -> str:
    """A new Fernet key (32 random bytes, url-safe base64), as ``[core] fernet_key`` takes it."""
    return base64.urlsafe_b64encode(os.urandom(32)).decode()


class CeleryDeployment:
    """
    Scheduler, DAG processor, triggerer, API server and Celery workers, each in its own process group.

    :param root: a folder for the homes and the component logs.
    :param dag_id: the DAG the test runs; its file is copied into the control home and every worker home.
    :param dag_source: that DAG file's source.
    :param metadata_url: the SQLAlchemy URL of the PostgreSQL metadata database.
    :param broker_url: the Redis URL of the Celery broker.
    :param env: more configuration every component gets (connections, scheduler settings).
    :param workers: the names of the Celery workers, each on a home of its own.
    """

    def __init__(
        self,
        root: Path,
        dag_id: str,
        dag_source: str,
        *,
        metadata_url: str,
        broker_url: str,
        env: dict[str, str],
        workers: Iterable[str] = ("worker-a", "worker-b"),
    ) -> None:
        self.root = root
        self.dag_id = dag_id
        self.api_port = free_port()
        self.fernet_key = fernet_key()
        base = {name: value for name, value in os.environ.items() if not name.startswith(_OWN_PREFIXES)}
        bin_folder = str(Path(sys.executable).parent)
        self.shared_env = {
            **base,
            "PATH": f"{bin_folder}{os.pathsep}{base.get('PATH', '')}",
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": metadata_url,
            "AIRFLOW__CELERY__BROKER_URL": broker_url,
            "AIRFLOW__CELERY__RESULT_BACKEND": f"db+{metadata_url}",
            "AIRFLOW__CORE__FERNET_KEY": self.fernet_key,
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
            "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(self.api_port),
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{self.api_port}",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{self.api_port}/execution/",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
            # Not the default ports: other Airflows may run on this machine at the same time.
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
            **env,
        }
        self.control_home = self._home("control", dag_source)
        control_env = self._env(self.control_home)
        python = [sys.executable, "-m", "airflow"]
        self.control_env = control_env
        self.components: list[Component] = [
            self._component("scheduler", [*python, "scheduler"], control_env, self.control_home),
            self._component("dag-processor", [*python, "dag-processor"], control_env, self.control_home),
            self._component("triggerer", [*python, "triggerer"], control_env, self.control_home),
            self._component("api-server", [*python, "api-server"], control_env, self.control_home),
        ]
        self.workers: list[Worker] = []
        machine = socket.gethostname()
        for name in workers:
            home = self._home(name, dag_source)
            site = home / "site"
            site.mkdir()
            # What this "machine" is called in the metadata database (task_instance.hostname).
            (site / "p2psms_deployment_host.py").write_text(f"def hostname():\n    return {name!r}\n")
            port = free_port()
            worker_env = {
                **self._env(home),
                "PYTHONPATH": os.pathsep.join(filter(None, [str(site), base.get("PYTHONPATH")])),
                "AIRFLOW__CORE__HOSTNAME_CALLABLE": "p2psms_deployment_host.hostname",
                "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(port),
            }
            celery_hostname = f"{name}@{machine}"
            command = [*python, "celery", "worker", "--concurrency", "1", "--celery-hostname", celery_hostname]
            component = self._component(name, command, worker_env, home)
            self.components.append(component)
            self.workers.append(Worker(name, home, name, celery_hostname, port, component))

    # ------------------------------------------------------------------ set-up

    def _home(self, name: str, dag_source: str) -> Path:
        home = self.root / name
        (home / "dags").mkdir(parents=True)
        (home / "dags" / f"{self.dag_id}.py").write_text(dag_source)
        return home

    def _env(self, home: Path) -> dict[str, str]:
        return {
            **self.shared_env,
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
        }

    def _component(self, name: str, command: list[str], env: dict[str, str], home: Path) -> Component:
        return Component(name, command, env, home, self.root / f"{name}.log")

    def airflow(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """Run an ``airflow`` command on the control home; fail naming its output if it fails."""
        result = subprocess.run(
            [sys.executable, "-m", "airflow", *args],
            env=self.control_env,
            cwd=self.control_home,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        if result.returncode != 0:
            output = result.stdout[-3000:] + result.stderr[-3000:]
            raise AssertionError(f"airflow {' '.join(args)} failed ({result.returncode}):\n{output}")
        return result

    def start(self) -> None:
        for component in self.components:
            component.start()

    def component(self, name: str) -> Component:
        return next(component for component in self.components if component.name == name)

    def worker(self, name: str) -> Worker:
        return next(worker for worker in self.workers if worker.name == name)

    def watch(self) -> None:
        """Remember every process of every component's tree now (task processes come and go)."""
        for component in self.components:
            component.tree()

    def check_running(self, *, except_for: Iterable[str] = ()) -> None:
        """Fail naming the component that exited, with its log, unless it is one of ``except_for``."""
        for component in self.components:
            if component.name in except_for or component.process is None:
                continue
            code = component.process.poll()
            if code is not None:
                raise AssertionError(f"{component.name} exited with {code}:\n{component.log_tail()}")

    def health(self) -> dict[str, Any] | None:
        """The API server's health answer (metadatabase, scheduler, triggerer, dag_processor), if it answers."""
        try:
            url = f"http://127.0.0.1:{self.api_port}/api/v2/monitor/health"
            with urllib.request.urlopen(url, timeout=5) as answer:
                return json.loads(answer.read()) if answer.status == 200 else None
        except (OSError, ValueError):
            return None

    def wait_ready(self, dag_registered: Callable[[], bool], timeout: float) -> float:
        """
        Wait until the API server reports every component healthy, the DAG is registered and each Celery
        worker is ready; return the seconds it took.
        """
        began = time.monotonic()
        deadline = began + timeout
        waiting: list[str] = []
        while True:
            self.check_running()
            self.watch()
            health = self.health() or {}
            waiting = [
                part
                for part in ("metadatabase", "scheduler", "triggerer", "dag_processor")
                if (health.get(part) or {}).get("status") != "healthy"
            ]
            if not dag_registered():
                waiting.append(f"the DAG processor to register {self.dag_id}")
            waiting += [
                f"{worker.name} (celery {worker.celery_hostname}) to be ready"
                for worker in self.workers
                if f"{worker.celery_hostname} ready" not in worker.component.log_text()
            ]
            if not waiting:
                return time.monotonic() - began
            if time.monotonic() > deadline:
                raise AssertionError(f"the deployment was not ready after {timeout:g} s; still waiting for {waiting}")
            time.sleep(1)

    # ------------------------------------------------------------------ tear-down

    def stop(self) -> list[str]:
        """
        SIGTERM every component's process group; after 30 s SIGKILL the groups whose leader still runs and,
        by pid, every remembered process still alive (task processes run in groups of their own); return
        what still ran after that, if anything.

        The leaders are waited for through their ``Popen`` (so their exit status stays known), the other
        processes through psutil, which checks that a pid still names the process it remembered.
        """
        self.watch()
        for component in self.components:
            if component.running():
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(component.pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        for component in self.components:
            if component.process is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    component.process.wait(timeout=max(0.1, deadline - time.monotonic()))
        others = [
            process
            for component in self.components
            for pid, process in component.seen.items()
            if component.process is not None and pid != component.process.pid
        ]
        _, alive = psutil.wait_procs(others, timeout=max(0.1, deadline - time.monotonic()))
        for component in self.components:
            if component.running():  # the leader is not reaped, so its group is still this component's
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(component.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    component.process.wait(timeout=10)  # type: ignore[union-attr]
        for process in alive:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()
        _, alive = psutil.wait_procs(alive, timeout=10)
        left = [f"{component.name} {component.pid}" for component in self.components if component.running()]
        for process in alive:
            with contextlib.suppress(psutil.NoSuchProcess):
                if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                    left.append(f"{process.pid} {' '.join(process.cmdline())}")
        return left

    def dump(self, size: int = 4000) -> str:
        """The tail of every component's log and of every task log in every home, for a failure report."""
        parts = []
        for component in self.components:
            code = None if component.process is None else component.process.poll()
            parts.append(
                f"===== {component.name} (pid {component.process and component.process.pid}, "
                f"{'running' if code is None else f'exit {code}'}) {component.log} =====\n{component.log_tail(size)}"
            )
        for home in [self.control_home, *(worker.home for worker in self.workers)]:
            for path in sorted(p for p in (home / "logs").rglob("*") if p.is_file() and "dag_id=" in str(p)):
                text = path.read_text(errors="replace")
                parts.append(f"===== task log {path.relative_to(self.root)} =====\n{text[-size:]}")
        return "\n".join(parts)
