"""A real Airflow deployment for the tests: ``airflow standalone`` with LocalExecutor, started and stopped here.

Unlike ``airflow dags test``, the tasks run through the scheduler's executor in their own processes,
with retries, and triggers run in a real triggerer, as in production.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psutil


@dataclass
class Deployment:
    """A running ``airflow standalone``, and every process of its tree seen so far."""

    process: subprocess.Popen[bytes]
    env: dict[str, str]
    home: Path
    log: Path
    seen: dict[int, psutil.Process] = field(default_factory=dict)

    @property
    def db(self) -> Path:
        return self.home / "airflow.db"

    def descendants(self) -> list[psutil.Process]:
        """The live descendants of ``airflow standalone``, remembered so that none outlives the test."""
        try:
            found = psutil.Process(self.process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []
        for child in found:
            self.seen.setdefault(child.pid, child)
        return found

    def airflow(self, *args: str) -> None:
        subprocess.run(
            [sys.executable, "-m", "airflow", *args], env=self.env, check=True, capture_output=True, timeout=120
        )

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    def log_lines(self) -> list[str]:
        """The lines ``airflow standalone`` (all its components) has written so far."""
        return self.log.read_text(errors="replace").splitlines()

    def task_logs(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted((self.home / "logs").rglob("*")) if p.is_file())


@contextmanager
def standalone(
    tmp_path: Path, dag_id: str, dag_source: str, extra_env: dict[str, str], *, own_checkpoint_path: bool = True
) -> Iterator[Deployment]:
    """
    ``airflow standalone`` with LocalExecutor (scheduler, DAG processor, triggerer, API server), its DAG parsed.

    :param own_checkpoint_path: keep the ``[p2psms] checkpoint_path`` the test session sets; if false,
        checkpoints go where a deployment without it keeps them (before Airflow 3.3,
        ``$AIRFLOW_HOME/p2psms_checkpoints``).
    """
    home = tmp_path / "airflow"
    (home / "dags").mkdir(parents=True)
    (home / "dags" / f"{dag_id}.py").write_text(dag_source)
    port = free_port()
    env = {
        **os.environ,
        **extra_env,
        # standalone starts each component as an `airflow` command found on PATH
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
    }
    if not own_checkpoint_path:
        env.pop("AIRFLOW__P2PSMS__CHECKPOINT_PATH", None)
    log = tmp_path / "standalone.log"
    with log.open("w") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "airflow", "standalone"],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        deployment = Deployment(process, env, home, log)
        try:
            deadline = time.monotonic() + 240
            while not query(deployment.db, "SELECT dag_id FROM dag WHERE dag_id = ?", dag_id):
                assert process.poll() is None, deployment.log_tail()
                assert time.monotonic() < deadline, "the DAG processor never registered the DAG"
                deployment.descendants()
                time.sleep(1)
            while not healthy(port):
                assert time.monotonic() < deadline, "the API server never became healthy"
                time.sleep(1)
            yield deployment
        finally:
            stop(deployment)


def stop(deployment: Deployment) -> None:
    """SIGTERM the process group, then SIGKILL, by pid, whatever of the tree outlived it (even outside the group)."""
    deployment.descendants()
    tree = [psutil.Process(deployment.process.pid), *deployment.seen.values()]
    with contextlib.suppress(ProcessLookupError):
        os.killpg(deployment.process.pid, signal.SIGTERM)
    _, alive = psutil.wait_procs(tree, timeout=30)
    for process in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()  # psutil checks the pid still names the same process
    _, alive = psutil.wait_procs(alive, timeout=10)
    with contextlib.suppress(subprocess.TimeoutExpired):
        deployment.process.wait(timeout=10)
    left = [p for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    if left and sys.exc_info()[0] is None:
        raise AssertionError(f"processes of the deployment still run: {[(p.pid, p.cmdline()) for p in left]}")


def run_to_the_end(deployment: Deployment, dag_id: str, timeout: float) -> tuple[str, dict[str, str]]:
    """Trigger ``dag_id`` and wait until its run succeeds or fails: the run's state and its tasks' states."""
    deployment.airflow("dags", "trigger", dag_id)
    deadline = time.monotonic() + timeout
    state = None
    while state not in ("success", "failed"):
        assert time.monotonic() < deadline, f"the run of {dag_id} did not finish; last state {state}"
        time.sleep(2)
        rows = query(deployment.db, "SELECT state FROM dag_run WHERE dag_id = ?", dag_id)
        state = rows[0][0] if rows else None
    states = dict(query(deployment.db, "SELECT task_id, state FROM task_instance WHERE dag_id = ?", dag_id))
    return str(state), states


def query(db: Path, sql: str, *args: object) -> list[tuple]:
    """Rows of ``sql`` on the deployment's SQLite metadata DB; none while it is busy or not created yet."""
    try:
        with sqlite3.connect(db, timeout=5) as connection:
            return connection.execute(sql, args).fetchall()
    except sqlite3.OperationalError:
        return []


def healthy(port: int) -> bool:
    """Whether the API server on ``port`` answers its health check."""
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v2/monitor/health", timeout=5) as answer:
            return answer.status == 200
    except OSError:
        return False


def free_port() -> int:
    """A TCP port nothing listens on now."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
