"""A real Airflow deployment: scheduler, DAG processor, triggerer and API server, not ``dags test``.

``airflow dags test`` runs triggers inline; here the deferrable sensor's trigger runs in a real
triggerer process, which reads the connection through its supervisor, and the tasks run through the
scheduler's executor, with retries, as they would in production.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import connection_env

pytestmark = pytest.mark.integration

DAG = """
from __future__ import annotations

import pendulum
from airflow.sdk import DAG, task
from airflow_provider_p2psms.operators.p2p_sms import P2PSmsOperator
from airflow_provider_p2psms.sensors.p2p_sms import P2PSmsDeliverySensor

with DAG(dag_id="real_deployment", schedule=None, start_date=pendulum.datetime(2026, 1, 1), catchup=False):
    @task
    def extract():
        return [{"phone": "0912 123 4567", "name": "نازنین"}, {"phone": "09351234567", "name": "Reza"}]

    send = P2PSmsOperator(
        task_id="send", sms_conn_id="ippanel_default", recipients=extract(), message="سلام {{ row.name }}"
    )
    P2PSmsDeliverySensor(task_id="wait", receipt=send.output, deferrable=True, poke_interval=1, timeout=120)
"""


def _query(db: Path, sql: str, *args: object) -> list[tuple]:
    try:
        with sqlite3.connect(db, timeout=5) as connection:
            return connection.execute(sql, args).fetchall()
    except sqlite3.OperationalError:
        return []


def test_deferrable_sensor_in_a_real_triggerer(tmp_path, sandbox, own_checkpoint_folder):
    home = tmp_path / "airflow"
    (home / "dags").mkdir(parents=True)
    (home / "dags" / "real_deployment.py").write_text(DAG)
    db = home / "airflow.db"
    port = _free_port()
    env = {
        **os.environ,
        **connection_env(sandbox),
        # standalone starts each component as an `airflow` command found on PATH
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{db}",
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
    }
    log = (tmp_path / "standalone.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "airflow", "standalone"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 300
        while not _query(db, "SELECT dag_id FROM dag WHERE dag_id = 'real_deployment'"):
            assert process.poll() is None, (tmp_path / "standalone.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the DAG processor never registered the DAG"
            time.sleep(1)
        while not _healthy(port):
            assert time.monotonic() < deadline, "the API server never became healthy"
            time.sleep(1)
        subprocess.run(
            [sys.executable, "-m", "airflow", "dags", "trigger", "real_deployment"],
            env=env,
            check=True,
            capture_output=True,
            timeout=120,
        )
        state = None
        while state not in ("success", "failed"):
            assert time.monotonic() < deadline, f"the run did not finish; last state {state}"
            time.sleep(2)
            rows = _query(db, "SELECT state FROM dag_run WHERE dag_id = 'real_deployment'")
            state = rows[0][0] if rows else None
        states = dict(_query(db, "SELECT task_id, state FROM task_instance WHERE dag_id = 'real_deployment'"))
        assert state == "success", (states, (tmp_path / "standalone.log").read_text()[-3000:])
        assert states == {"extract": "success", "send": "success", "wait": "success"}
        assert _query(db, "SELECT COUNT(*) FROM trigger")[0][0] == 0  # the trigger ran and was cleaned up
        report = json.loads(
            _query(db, "SELECT value FROM xcom WHERE dag_id = 'real_deployment' AND task_id = 'wait'")[0][0]
        )
        assert report["counts"]["delivered"] == 2
        assert sorted(m["recipient"] for m in sandbox.messages()) == ["+989121234567", "+989351234567"]
        logs = "\n".join(p.read_text(errors="replace") for p in (home / "logs").rglob("*") if p.is_file())
        assert "Delivery so far: 2 messages" in logs  # written by the trigger, in the triggerer
        # The send task's resume checkpoint is gone: the operator's success callback ran in the worker
        # (task state store rows on Airflow 3.3+, files under [p2psms] checkpoint_path before).
        assert _query(db, "SELECT task_id, key FROM task_state_store WHERE dag_id = 'real_deployment'") == []
        assert list(own_checkpoint_folder.rglob("*.json")) == []
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
        log.close()


def _healthy(port: int) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v2/monitor/health", timeout=5) as answer:
            return answer.status == 200
    except OSError:
        return False


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
