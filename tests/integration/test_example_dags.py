"""The shipped example DAGs import cleanly and run end to end against the sandbox."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import connection_env

pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).resolve().parents[2] / "example_dags"


@pytest.fixture
def example_env(tmp_path, sandbox, airflow_db):
    database = tmp_path / "customers.db"
    with sqlite3.connect(database) as db:
        db.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, phone TEXT, name TEXT, code TEXT, active INT)")
        db.executemany(
            "INSERT INTO customers (phone, name, code, active) VALUES (?, ?, ?, ?)",
            [("09121234567", "نازنین", "A1", 1), ("09351234567", "Reza", "B2", 1), ("09131112233", "Old", "C3", 0)],
        )
    connections = connection_env(sandbox)
    return {
        **os.environ,
        **connections,
        "AIRFLOW__CORE__DAGS_FOLDER": str(EXAMPLES),
        "AIRFLOW_CONN_P2PSMS_GATEWAY": connections["AIRFLOW_CONN_BITEL_DEFAULT"],
        "AIRFLOW_CONN_P2PSMS_DEMO_DB": json.dumps({"conn_type": "sqlite", "host": str(database)}),
    }


def airflow(env, *args, timeout=240):
    return subprocess.run(
        [sys.executable, "-m", "airflow", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def test_example_dags_import_without_errors(example_env):
    errors = airflow(example_env, "dags", "list-import-errors", "--local", "-o", "json")
    assert errors.returncode == 0, errors.stderr[-2000:]
    assert json.loads(errors.stdout.strip().splitlines()[-1] or "[]") == []
    listed = airflow(example_env, "dags", "list", "--local", "-o", "json")
    assert listed.returncode == 0, listed.stderr[-2000:]
    dag_ids = {dag["dag_id"] for dag in json.loads(listed.stdout.strip().splitlines()[-1])}
    assert {"example_p2p_sms_sql", "example_p2p_sms_xcom", "example_p2p_sms_any_gateway"} <= dag_ids
    # Waits for a person's approval, so 'dags test' cannot run it: tests/integration/test_approval_gate.py does.
    assert "example_p2p_sms_approval" in dag_ids


@pytest.mark.parametrize(
    ("dag_id", "conf", "expected"),
    [
        ("example_p2p_sms_sql", None, {("bitel", "09121234567"), ("bitel", "09351234567")}),
        (
            "example_p2p_sms_xcom",
            None,
            {("ippanel", "+989121234567"), ("ippanel", "+989357654321"), ("ippanel", "+989135551212")},
        ),
        (
            "example_p2p_sms_any_gateway",
            {"sms_conn_id": "ippanel_default"},
            {("ippanel", "+989121234567"), ("ippanel", "+989351234567")},
        ),
    ],
)
def test_example_dag_runs_against_the_sandbox(example_env, sandbox, dag_id, conf, expected):
    args = ["dags", "test", dag_id] + (["-c", json.dumps(conf)] if conf else [])
    result = airflow(example_env, *args)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert "state=success" in result.stdout + result.stderr
    assert {(m["provider"], m["recipient"]) for m in sandbox.messages()} == expected
