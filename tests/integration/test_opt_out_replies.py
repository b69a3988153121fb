"""Opt-out replies collected on a real Airflow 3 run (``airflow dags test``) into a real database.

Replies reach the sandbox's IPPanel inbox through its control (``POST /__sandbox__/inbox``), as people
would answer a campaign. The DAG runs twice: the second run starts from the cursor the first one saved in
its Airflow Variable, reads only the replies that came since, and upserts without duplicating a number.
The table is a SQLite file or a real PostgreSQL database (``tests/postgres.py``), behind the connection
``crm_db`` set by environment variable, as a user would. The crash test runs the operator in this process,
with the Variable in a dictionary, to fail a write between two pages.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import requests

from airflow_provider_p2psms.campaign.opt_out_table import OptOutTable
from airflow_provider_p2psms.exceptions import P2PSmsError
from airflow_provider_p2psms.hooks import ippanel_inbox
from airflow_provider_p2psms.operators.opt_out_replies import P2PSmsOptOutRepliesOperator
from airflow_provider_p2psms.sandbox.ippanel_inbox import FIRST_INBOX_ID
from tests.conftest import DagResult
from tests.helpers import connection_env

pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).resolve().parents[2] / "example_dags"
INBOX_ROUTE = "/v1/api/report/messages-inbox"
FIELDS = ("number", "gateway", "line", "keyword", "first_seen", "last_seen", "last_reply_id")
T = 1769846400  # 2026-01-31T08:00:00Z

BODY = """
from airflow_provider_p2psms.operators.opt_out_replies import P2PSmsOptOutRepliesOperator

P2PSmsOptOutRepliesOperator(task_id="collect", sms_conn_id="ippanel_default", sql_conn_id="crm_db", table=__TABLE__)
"""

FIRST_REPLIES = [
    {"from": "+989121234567", "text": "۱۱", "time": T},
    {"from": "+989351234567", "text": "سلام، ممنون", "time": T + 1},
    {"from": "0912 765 4321", "text": "لغو ۱۱", "time": T + 2},
    {"from": "+982188881234", "text": "stop", "time": T + 3},  # a landline: not a number to suppress
    {"from": "+989121234567", "text": "11", "time": T + 4},  # the same number again, later
]
SECOND_REPLIES = [
    {"from": "+989121234567", "text": "لغو", "time": T + 60},
    {"from": "۰۹۱۳۱۱۱۲۲۳۳", "text": "STOP", "time": T + 61},
    {"from": "+989351234567", "text": "کی ارسال می شود؟", "time": T + 62},
]


def receive(sandbox: Any, replies: list[dict[str, Any]]) -> None:
    answer = requests.post(f"{sandbox.url}/__sandbox__/inbox", json=replies, timeout=5)
    assert answer.status_code == 200, answer.text


def iso(epoch: int) -> str:
    from datetime import datetime, timezone

    return datetime.fromtimestamp(epoch, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def rerun(result: DagResult, env: dict[str, str]) -> DagResult:
    """Run the DAG of ``result`` again, as its next scheduled run would."""
    done = subprocess.run(
        [sys.executable, "-m", "airflow", "dags", "test", result.dag_id],
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, **env},
        stdin=subprocess.DEVNULL,
    )
    return DagResult(result.dag_id, done.returncode, done.stdout + done.stderr, result.db)


class Table:
    """The opt-out table behind ``crm_db``, read back through the connection's own hook."""

    def __init__(self, name: str) -> None:
        self.name = name

    def rows(self) -> dict[str, dict[str, Any]]:
        from airflow.sdk import BaseHook

        records = (
            BaseHook.get_connection("crm_db").get_hook().get_records(f"SELECT {', '.join(FIELDS)} FROM {self.name}")
        )
        return {record[0]: dict(zip(FIELDS, record, strict=True)) for record in records}


@pytest.fixture(params=["sqlite", "postgres"])
def crm_db(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, Table]:
    if request.param == "sqlite":
        connection = json.dumps({"conn_type": "sqlite", "host": str(tmp_path / "crm.db")})
    else:
        connection = request.getfixturevalue("postgres").connection_json()
    monkeypatch.setenv("AIRFLOW_CONN_CRM_DB", connection)
    return connection, Table(f"opt_outs_{uuid.uuid4().hex[:8]}")


def test_two_runs_read_each_reply_once_and_upsert_each_number_once(run_dag, sandbox, crm_db):
    connection, table = crm_db
    env = {**connection_env(sandbox), "AIRFLOW_CONN_CRM_DB": connection}
    receive(sandbox, FIRST_REPLIES)

    first = run_dag(BODY.replace("__TABLE__", repr(table.name)), env)
    assert first.returncode == 0, first.output[-3000:]
    assert first.state("collect") == "success"
    report = first.xcom("collect")
    assert report["counts"] == {"read": 5, "opt_outs": 3, "new_numbers": 2, "not_mobile": 1}
    assert (report["previous_cursor"], report["cursor"]) == (None, FIRST_INBOX_ID + 4)
    assert report["cursor_variable"] == f"p2psms_opt_out_cursor.{first.dag_id}.collect.ippanel_default"
    assert (report["sql_conn_id"], report["table"]) == ("crm_db", table.name)
    rows = table.rows()
    assert rows == {
        "+989121234567": {
            "number": "+989121234567",
            "gateway": "ippanel",
            "line": "+983000505",
            "keyword": "11",
            "first_seen": iso(T),
            "last_seen": iso(T + 4),
            "last_reply_id": str(FIRST_INBOX_ID + 4),
        },
        "+989127654321": {
            "number": "+989127654321",
            "gateway": "ippanel",
            "line": "+983000505",
            "keyword": "لغو11",  # the configured spelling of the word it matched, not the reply
            "first_seen": iso(T + 2),
            "last_seen": iso(T + 2),
            "last_reply_id": str(FIRST_INBOX_ID + 2),
        },
    }

    receive(sandbox, SECOND_REPLIES)
    second = rerun(first, env)
    assert second.returncode == 0, second.output[-3000:]
    report = second.xcom("collect")
    assert report["counts"] == {"read": 3, "opt_outs": 2, "new_numbers": 1, "not_mobile": 0}
    assert (report["previous_cursor"], report["cursor"]) == (FIRST_INBOX_ID + 4, FIRST_INBOX_ID + 7)
    bodies = [json.loads(r["body"]) for r in sandbox.requests() if r["route"] == INBOX_ROUTE]
    assert bodies == [
        {"page": 1, "per_page": 100},
        {"page": 1, "per_page": 100, "filters": {"from_id": FIRST_INBOX_ID + 4}},
    ]
    rows = table.rows()
    assert sorted(rows) == ["+989121234567", "+989127654321", "+989131112233"]
    again = rows["+989121234567"]
    assert (again["keyword"], again["first_seen"], again["last_seen"]) == ("لغو", iso(T), iso(T + 60))
    assert again["last_reply_id"] == str(FIRST_INBOX_ID + 5)
    assert rows["+989131112233"]["keyword"] == "stop"

    # No row value reaches the task's log: neither a number nor a reply.
    for run in (first, second):
        for value in ("9121234567", "9127654321", "9131112233", "2188881234", "سلام", "لغو"):
            assert value not in run.output
        assert "opt-outs written" in run.output


def test_a_write_that_fails_leaves_the_cursor_so_the_next_run_reads_it_all_again(
    sms_connections, tmp_path, monkeypatch
):
    monkeypatch.setenv("AIRFLOW_CONN_CRM_DB", json.dumps({"conn_type": "sqlite", "host": str(tmp_path / "crm.db")}))
    variables: dict[str, str] = {"opt_out_cursor": str(FIRST_INBOX_ID - 1)}
    from airflow.sdk import Variable

    monkeypatch.setattr(Variable, "get", lambda key, default=None: variables.get(key, default))
    monkeypatch.setattr(Variable, "set", lambda key, value, description=None: variables.__setitem__(key, value))
    monkeypatch.setattr(ippanel_inbox, "INBOX_PAGE_SIZE", 2)
    receive(sms_connections, [{"from": f"+9891200000{n:02d}", "text": "11", "time": T + n} for n in range(5)])
    operator = P2PSmsOptOutRepliesOperator(
        task_id="collect", sms_conn_id="ippanel_default", sql_conn_id="crm_db", cursor_variable="opt_out_cursor"
    )
    context: Any = {"ti": SimpleNamespace(dag_id="d", task_id="collect", map_index=-1)}

    write = OptOutTable.write
    pages: list[int] = []

    def fail_on_the_second_page(self: OptOutTable, opt_outs: Any) -> int:
        pages.append(len(opt_outs))
        if len(pages) == 2:
            raise P2PSmsError("the database went away")
        return write(self, opt_outs)

    monkeypatch.setattr(OptOutTable, "write", fail_on_the_second_page)
    with pytest.raises(P2PSmsError, match="went away"):
        operator.execute(context)
    assert variables["opt_out_cursor"] == str(FIRST_INBOX_ID - 1)  # not moved
    with sqlite3.connect(tmp_path / "crm.db") as db:
        assert db.execute("SELECT COUNT(*) FROM p2psms_opt_outs").fetchone() == (2,)  # the first page, committed

    monkeypatch.setattr(OptOutTable, "write", write)
    report = operator.execute(context)
    assert report["counts"] == {"read": 5, "opt_outs": 5, "new_numbers": 3, "not_mobile": 0}
    assert report["cursor"] == FIRST_INBOX_ID + 4
    assert variables["opt_out_cursor"] == str(FIRST_INBOX_ID + 4)
    with sqlite3.connect(tmp_path / "crm.db") as db:
        assert db.execute("SELECT COUNT(*), COUNT(DISTINCT number) FROM p2psms_opt_outs").fetchone() == (5, 5)
        first_seen = dict(db.execute("SELECT number, first_seen FROM p2psms_opt_outs").fetchall())
    assert first_seen["+989120000000"] == iso(T)

    # A cursor another run moved further is kept, never moved back.
    variables["opt_out_cursor"] = str(FIRST_INBOX_ID + 100)
    receive(sms_connections, [{"from": "+989120000099", "text": "11"}])
    assert operator.execute(context)["cursor"] == FIRST_INBOX_ID + 100


def test_a_cursor_that_is_not_an_inbox_id_fails_the_task_naming_the_variable(sms_connections, tmp_path, monkeypatch):
    from airflow.sdk import Variable

    from airflow_provider_p2psms.exceptions import SmsConfigurationError

    monkeypatch.setenv("AIRFLOW_CONN_CRM_DB", json.dumps({"conn_type": "sqlite", "host": str(tmp_path / "crm.db")}))
    monkeypatch.setattr(Variable, "get", lambda key, default=None: "last tuesday")
    operator = P2PSmsOptOutRepliesOperator(task_id="collect", sms_conn_id="ippanel_default", sql_conn_id="crm_db")
    with pytest.raises(
        SmsConfigurationError, match=r"Variable 'p2psms_opt_out_cursor\.d\.collect\.ippanel_default\.3'"
    ):
        operator.execute({"ti": SimpleNamespace(dag_id="d", task_id="collect", map_index=3)})


def test_a_gateway_without_an_inbox_fails_the_task_before_anything_is_read(sms_connections, tmp_path, monkeypatch):
    from airflow_provider_p2psms.exceptions import SmsConfigurationError

    monkeypatch.setenv("AIRFLOW_CONN_CRM_DB", json.dumps({"conn_type": "sqlite", "host": str(tmp_path / "crm.db")}))
    operator = P2PSmsOptOutRepliesOperator(task_id="collect", sms_conn_id="bitel_default", sql_conn_id="crm_db")
    with pytest.raises(SmsConfigurationError, match="cannot read the messages Bitel received"):
        operator.execute({"ti": SimpleNamespace(dag_id="d", task_id="collect", map_index=-1)})
    assert not (tmp_path / "crm.db").exists()


def test_the_example_dag_collects_opt_outs_from_the_sandbox(sandbox, airflow_db, tmp_path):
    database = tmp_path / "demo.db"
    receive(sandbox, FIRST_REPLIES)
    env = {
        **os.environ,
        **connection_env(sandbox),
        "AIRFLOW__CORE__DAGS_FOLDER": str(EXAMPLES),
        "AIRFLOW_CONN_P2PSMS_DEMO_DB": json.dumps({"conn_type": "sqlite", "host": str(database)}),
    }
    result = subprocess.run(
        [sys.executable, "-m", "airflow", "dags", "test", "example_p2p_sms_opt_outs"],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert "state=success" in result.stdout + result.stderr
    with sqlite3.connect(database) as db:
        numbers = {row[0] for row in db.execute("SELECT number FROM p2psms_opt_outs")}
    assert numbers == {"+989121234567", "+989127654321"}
