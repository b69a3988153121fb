"""Shared fixtures: a throwaway Airflow home, the sandbox API, and a way to run DAGs for real.

Airflow reads its configuration when it is first imported, so the environment below is set at
import time of this file, before any test module (or the provider) imports Airflow.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

_HOME = Path(tempfile.mkdtemp(prefix="p2psms-airflow-home-"))
(_HOME / "dags").mkdir()
os.environ.update(
    {
        "AIRFLOW_HOME": str(_HOME),
        "AIRFLOW__CORE__DAGS_FOLDER": str(_HOME / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{_HOME / 'airflow.db'}",
        "AIRFLOW__CORE__DAGBAG_IMPORT_ERROR_TRACEBACKS": "True",
        "AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE": "False",
    }
)
for _name in [name for name in os.environ if name.startswith("AIRFLOW_CONN_")]:
    del os.environ[_name]

from airflow_provider_p2psms.sandbox import SandboxServer  # noqa: E402
from tests.helpers import connection_env  # noqa: E402
from tests.postgres import PostgresServer, running_postgres  # noqa: E402

AIRFLOW_HOME = _HOME


@pytest.fixture(autouse=True)
def own_checkpoint_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """
    Resume checkpoints kept outside the task state store go to this test's own folder.

    The operator deletes them from a success callback, which a test calling ``execute()`` directly does not
    run; in the shared default folder they would then be resumed by the next test with the same task ids.
    """
    folder = tmp_path / "p2psms_checkpoints"
    monkeypatch.setenv("AIRFLOW__P2PSMS__CHECKPOINT_PATH", f"file://{folder}")
    return folder


@pytest.fixture
def sandbox() -> Iterator[SandboxServer]:
    """A fresh sandbox API on a loopback port; messages become final after 0.6 s."""
    with SandboxServer(delivery_seconds=0.6) as server:
        yield server


@pytest.fixture
def sms_connections(sandbox: SandboxServer, monkeypatch: pytest.MonkeyPatch) -> SandboxServer:
    """``bitel_default`` and ``ippanel_default`` point at the sandbox, in this process's environment."""
    for name, value in connection_env(sandbox).items():
        monkeypatch.setenv(name, value)
    return sandbox


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A real PostgreSQL server on loopback for the session (``tests/postgres.py``); skipped locally, and
    failed in CI, when its binaries are missing."""
    with running_postgres() as server:
        yield server


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """The metadata database of the throwaway Airflow home, migrated once per session."""
    result = subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"], capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return _HOME / "airflow.db"


@dataclass
class DagResult:
    """What ``airflow dags test`` left behind: its exit code, its output, task states and XComs."""

    dag_id: str
    returncode: int
    output: str
    db: Path

    def _rows(self, query: str, *args: Any) -> list[tuple[Any, ...]]:
        with sqlite3.connect(self.db) as connection:
            return connection.execute(query, args).fetchall()

    def state(self, task_id: str) -> str | None:
        rows = self._rows(
            "SELECT state FROM task_instance WHERE dag_id = ? AND task_id = ? ORDER BY start_date DESC",
            self.dag_id,
            task_id,
        )
        return rows[0][0] if rows else None

    def try_number(self, task_id: str) -> int:
        rows = self._rows("SELECT try_number FROM task_instance WHERE dag_id = ? AND task_id = ?", self.dag_id, task_id)
        return int(rows[0][0]) if rows else 0

    def xcom(self, task_id: str, key: str = "return_value") -> Any:
        rows = self._rows(
            "SELECT value FROM xcom WHERE dag_id = ? AND task_id = ? AND key = ? ORDER BY timestamp DESC",
            self.dag_id,
            task_id,
            key,
        )
        return json.loads(rows[0][0]) if rows else None

    def rendered(self, task_id: str) -> Any:
        rows = self._rows(
            "SELECT rendered_fields FROM rendered_task_instance_fields WHERE dag_id = ? AND task_id = ?",
            self.dag_id,
            task_id,
        )
        return json.loads(rows[0][0]) if rows else None


DAG_HEADER = """
from __future__ import annotations

import datetime
import pendulum
from airflow.sdk import DAG, task
from airflow_provider_p2psms.operators.p2p_sms import P2PSmsOperator
from airflow_provider_p2psms.sensors.p2p_sms import P2PSmsDeliverySensor

with DAG(dag_id={dag_id!r}, schedule=None, start_date=pendulum.datetime(2026, 1, 1), catchup=False{dag_kwargs}):
"""


@pytest.fixture
def run_dag(airflow_db: Path) -> Any:
    """
    Write a DAG file and run it with ``airflow dags test`` in a subprocess, as a user would.

    Call it with the DAG body (indented code inside ``with DAG(...)``), the environment to add
    (connections), and optionally ``conf`` for the run and ``dag_kwargs`` for the DAG.
    """

    def run(
        body: str,
        env: dict[str, str],
        *,
        conf: dict[str, Any] | None = None,
        dag_kwargs: str = "",
        timeout: float = 240,
    ) -> DagResult:
        dag_id = f"test_{uuid.uuid4().hex[:10]}"
        source = DAG_HEADER.format(dag_id=dag_id, dag_kwargs=dag_kwargs) + textwrap.indent(
            textwrap.dedent(body).strip("\n"), "    "
        )
        (AIRFLOW_HOME / "dags" / f"{dag_id}.py").write_text(source + "\n")
        command = [sys.executable, "-m", "airflow", "dags", "test", dag_id]
        if conf is not None:
            command += ["-c", json.dumps(conf)]
        result = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, **env},
            stdin=subprocess.DEVNULL,
        )
        return DagResult(dag_id, result.returncode, result.stdout + result.stderr, airflow_db)

    return run
