"""The benchmark's plumbing: a throwaway Airflow home, the sandbox API process, and DAG runs measured from outside.

A DAG run is ``airflow dags test`` in a subprocess (``dags test`` runs its tasks in that same
process), wrapped in ``/usr/bin/time`` for the peak RSS. A task's time runs from the start of its
``execute()`` (marked by the DAG's ``pre_execute`` hook) to its task instance's end date in the
metadata database, so Airflow's start-up is left out of every rate.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
DAGS_DIR = BENCH_DIR / "dags"
DAG_FILE = DAGS_DIR / "p2psms_bench.py"
TIME_BIN = "/usr/bin/time"

_NAMES = ("نازنین", "رضا", "Sara", "علی", "Maryam", "حسین", "Parisa", "مهدی")


class BenchError(RuntimeError):
    """A scenario could not be measured (a run failed, or the sandbox got less than was sent)."""


@dataclass
class DagRun:
    """What one ``airflow dags test`` left behind."""

    dag_id: str
    returncode: int
    output: str
    wall_seconds: float
    max_rss_kb: int | None
    rss_samples: list[tuple[float, int]] = field(default_factory=list)
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)

    def task_seconds(self, task_id: str) -> float:
        """
        Wall time of one task: from the start of its ``execute()`` (the DAG's ``pre_execute`` mark) to its
        task instance's end date, which is set once its XCom is pushed.

        The task instance's start date is not used: ``dags test`` sets it before it spends seconds
        starting the in-process execution API, which is Airflow start-up, not the task's work.
        """
        task = self.tasks.get(task_id)
        if not task or task.get("execute_start") is None or not task["end_date"]:
            raise BenchError(f"{self.dag_id}.{task_id} has no execute start mark or end date: {task}")
        return task["end_date"].timestamp() - task["execute_start"]

    def deferred_task_seconds(self, task_id: str) -> float:
        """Wall time of a task that deferred: from its first ``execute()`` start to its end date."""
        task = self.tasks.get(task_id) or {}
        if task.get("first_execute_start") is None or not task.get("end_date"):
            raise BenchError(f"{self.dag_id}.{task_id} has no execute start mark or end date: {task}")
        return task["end_date"].timestamp() - task["first_execute_start"]

    def sampled_peak_rss_kb(self) -> int | None:
        """Peak RSS of the whole run as sampled (when ``/usr/bin/time`` is missing)."""
        return max(rss for _, rss in self.rss_samples) // 1024 if self.rss_samples else None

    def execute_peak_rss_kb(self, task_id: str) -> int | None:
        """Peak RSS sampled while the task's ``execute()`` ran (before Airflow pushes its XCom), or None."""
        task = self.tasks.get(task_id) or {}
        start, end = task.get("execute_start"), task.get("execute_end")
        if start is None or end is None:
            return None
        inside = [rss for at, rss in self.rss_samples if start <= at <= end]
        return max(inside) // 1024 if inside else None

    def check(self, *task_ids: str) -> DagRun:
        """Raise unless the run, and these tasks, succeeded."""
        bad = {task_id: self.tasks.get(task_id, {}).get("state") for task_id in task_ids}
        bad = {task_id: state for task_id, state in bad.items() if state != "success"}
        if self.returncode != 0 or bad:
            raise BenchError(
                f"airflow dags test {self.dag_id} exited {self.returncode}, task states {bad or 'ok'}:\n"
                + self.output[-4000:]
            )
        return self


class AirflowHome:
    """A temporary ``AIRFLOW_HOME`` with a migrated SQLite metadata database and the bench DAGs."""

    def __init__(self, python: str, root: Path) -> None:
        self.python = python
        self.root = root
        self.db = root / "airflow.db"
        self.marks = root / "marks.jsonl"
        self.env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("AIRFLOW_CONN_", "AIRFLOW__", "AIRFLOW_VAR_"))
        }
        self.env.update(
            {
                "AIRFLOW_HOME": str(root),
                "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_DIR),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{self.db}",
                "AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE": "False",
                "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
                # The bench reads receipts' messages after their sensors have ended.
                "AIRFLOW__P2PSMS__DETAIL_RETENTION": "keep",
                "P2PSMS_BENCH_MARKS": str(self.marks),
            }
        )

    def run_python(self, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
        """Run this home's Python with ``args`` in its environment, output captured, no standard input."""
        return subprocess.run(
            [self.python, *args],
            env=self.env,
            cwd=self.root,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )

    def migrate(self) -> None:
        result = self.run_python("-m", "airflow", "db", "migrate", timeout=600)
        if result.returncode != 0:
            raise BenchError("airflow db migrate failed:\n" + (result.stdout + result.stderr)[-4000:])

    def set_connections(self, connections: dict[str, dict[str, Any]]) -> None:
        for conn_id, spec in connections.items():
            self.env[f"AIRFLOW_CONN_{conn_id.upper()}"] = json.dumps(spec)

    def run_dag(self, dag_id: str, conf: dict[str, Any] | None = None, timeout: float = 600) -> DagRun:
        """
        Run one DAG with ``airflow dags test`` under ``/usr/bin/time`` and read back its task instances.

        The process tree's RSS is also sampled every 50 ms, so that the peak inside one task's
        ``execute()`` can be told apart from the peak of the whole run.
        """
        rss_file = self.root / f"time-{dag_id}.txt"
        command = [self.python, "-m", "airflow", "dags", "test", dag_id, "-f", str(DAG_FILE)]
        if conf is not None:
            command += ["-c", json.dumps(conf)]
        if Path(TIME_BIN).exists():
            command = [TIME_BIN, "-v", "-o", str(rss_file), *command]
        started = time.monotonic()
        process = subprocess.Popen(
            command,
            env=self.env,
            # Not the repository: "python -m" puts the working directory first on sys.path, where the
            # package would shadow a --pythonpath copy.
            cwd=self.root,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        samples: list[tuple[float, int]] = []
        sampler = threading.Thread(target=_sample_rss, args=(process, samples), daemon=True)
        sampler.start()
        try:
            output, _ = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            output, _ = process.communicate()
            output += f"\n(bench: killed after {timeout:.0f} s)"
        sampler.join()
        wall = time.monotonic() - started
        run = DagRun(dag_id, process.returncode, output, wall, _max_rss_kb(rss_file), rss_samples=samples)
        run.tasks = self._latest_tasks(dag_id)
        for mark in self._marks():
            task = run.tasks.get(mark["task_id"])
            if mark["dag_id"] == dag_id and task is not None and mark["run_id"] == task["run_id"]:
                task[f"execute_{mark['event']}"] = mark["at"]
                # A deferred task runs execute() again when it resumes: keep its first start too.
                task.setdefault(f"first_execute_{mark['event']}", mark["at"])
        return run

    def _marks(self) -> list[dict[str, Any]]:
        if not self.marks.exists():
            return []
        return [json.loads(line) for line in self.marks.read_text(encoding="utf-8").splitlines() if line.strip()]

    def _latest_tasks(self, dag_id: str) -> dict[str, dict[str, Any]]:
        with sqlite3.connect(self.db) as connection:
            row = connection.execute(
                "SELECT run_id FROM dag_run WHERE dag_id = ? ORDER BY id DESC LIMIT 1", (dag_id,)
            ).fetchone()
            if row is None:
                return {}
            rows = connection.execute(
                "SELECT task_id, state, start_date, end_date, try_number FROM task_instance "
                "WHERE dag_id = ? AND run_id = ?",
                (dag_id, row[0]),
            ).fetchall()
            tasks = {
                task_id: {
                    "state": state,
                    "start_date": _parse_date(start),
                    "end_date": _parse_date(end),
                    "try_number": tries,
                    "run_id": row[0],
                }
                for task_id, state, start, end, tries in rows
            }
        return tasks

    def xcom(self, run: DagRun, task_id: str) -> Any:
        run_id = run.tasks[task_id]["run_id"]
        with sqlite3.connect(self.db) as connection:
            row = connection.execute(
                "SELECT value FROM xcom WHERE dag_id = ? AND run_id = ? AND task_id = ? AND key = 'return_value'",
                (run.dag_id, run_id, task_id),
            ).fetchone()
        return json.loads(row[0]) if row else None


def _parse_date(value: Any) -> datetime | None:
    if value is None:
        return None
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    # Airflow keeps UTC; SQLite hands it back without an offset.
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _sample_rss(process: subprocess.Popen[str], samples: list[tuple[float, int]]) -> None:
    """Append (time, bytes) of the largest RSS in the process tree every 50 ms until it exits."""
    try:
        import psutil
    except ImportError:
        return
    try:
        root = psutil.Process(process.pid)
    except psutil.Error:
        return
    while process.poll() is None:
        try:
            tree = [root, *root.children(recursive=True)]
            samples.append((time.time(), max(member.memory_info().rss for member in tree)))
        except psutil.Error:
            pass
        time.sleep(0.05)


def _max_rss_kb(path: Path) -> int | None:
    if not path.exists():
        return None
    for line in path.read_text().splitlines():
        if "Maximum resident set size" in line:
            return int(line.rsplit(":", 1)[1].strip())
    return None


class Sandbox:
    """The sandbox API as its own process (``python -m airflow_provider_p2psms.sandbox``), on a loopback port."""

    def __init__(self, python: str, workdir: Path, *, latency_ms: float, delivery_seconds: float) -> None:
        self.python = python
        self.port_file = workdir / "sandbox.port"
        self.log_file = workdir / "sandbox.log"
        self.latency_ms = latency_ms
        self.delivery_seconds = delivery_seconds
        self.process: subprocess.Popen[bytes] | None = None
        self.url = ""

    def start(self) -> Sandbox:
        with open(self.log_file, "wb") as log:
            self.process = subprocess.Popen(
                [
                    self.python,
                    "-m",
                    "airflow_provider_p2psms.sandbox",
                    "--port",
                    "0",
                    "--port-file",
                    str(self.port_file),
                    "--latency-ms",
                    str(self.latency_ms),
                    "--delivery-seconds",
                    str(self.delivery_seconds),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + 30
        while not self.port_file.exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise BenchError("the sandbox did not start:\n" + self.log_file.read_text()[-2000:])
            time.sleep(0.05)
        self.url = f"http://127.0.0.1:{int(self.port_file.read_text())}"
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def _call(self, method: str, endpoint: str, body: dict[str, Any] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"{self.url}/__sandbox__/{endpoint}", data=data, method=method)
        request.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(request, timeout=120) as response:
            return json.loads(response.read())

    def reset(self, **changes: Any) -> dict[str, Any]:
        """Forget every message and counter; start configuration changed by ``changes``."""
        return self._call("POST", "reset", changes)

    def stats(self) -> dict[str, Any]:
        return self._call("GET", "stats")

    def requests(self) -> list[dict[str, Any]]:
        return self._call("GET", "requests")

    def messages(self) -> list[dict[str, Any]]:
        """Every message the sandbox accepted since its last reset, oldest first (with its ``id``)."""
        return self._call("GET", "messages")

    def connections(self) -> dict[str, dict[str, Any]]:
        """``bench_bitel`` and ``bench_ippanel`` as a user would write them, pointing at this sandbox."""
        from airflow_provider_p2psms.sandbox import (
            DEFAULT_BITEL_GATEWAY,
            DEFAULT_BITEL_TOKEN,
            DEFAULT_IPPANEL_KEY,
            DEFAULT_IPPANEL_SENDER,
        )

        return {
            "bench_bitel": {
                "conn_type": "bitel",
                "password": DEFAULT_BITEL_TOKEN,
                "host": self.url,
                "extra": {"sender": DEFAULT_BITEL_GATEWAY},
            },
            "bench_ippanel": {
                "conn_type": "ippanel",
                "password": DEFAULT_IPPANEL_KEY,
                "host": f"{self.url}/v1",
                "extra": {"sender": DEFAULT_IPPANEL_SENDER},
            },
        }


def phone_number(index: int) -> str:
    """A distinct mobile number per index, in the spellings users keep; never a sandbox special suffix."""
    national = f"912{index * 10 + 5:07d}"
    spelling = index % 3
    if spelling == 0:
        return f"0{national}"
    if spelling == 1:
        return f"+98 {national[:3]} {national[3:6]} {national[6:]}"
    return national


def make_recipients_db(path: Path, sizes: list[int]) -> None:
    """A SQLite file with one table ``recipients_<n>`` (id, phone, name, code) per size."""
    generator = random.Random(20260101)
    with sqlite3.connect(path) as connection:
        for size in sizes:
            table = f"recipients_{size}"
            connection.execute(f"DROP TABLE IF EXISTS {table}")
            connection.execute(f"CREATE TABLE {table} (id INTEGER PRIMARY KEY, phone TEXT, name TEXT, code TEXT)")
            connection.executemany(
                f"INSERT INTO {table} VALUES (?, ?, ?, ?)",
                (
                    (i, phone_number(i), generator.choice(_NAMES), f"C{generator.randrange(10**8):08d}")
                    for i in range(size)
                ),
            )


def machine_info() -> dict[str, Any]:
    """The machine the numbers were taken on, and how busy it was."""
    model = ""
    with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo", encoding="utf-8") as meminfo:
        total_kb = int(meminfo.readline().split()[1])
    from importlib.metadata import version

    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "memory_gib": round(total_kb / 2**20, 1),
        "python": sys.version.split()[0],
        "airflow": version("apache-airflow"),
        "load_start": os.getloadavg(),
    }


def temporary_root() -> Path:
    return Path(tempfile.mkdtemp(prefix="p2psms-bench-"))


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
