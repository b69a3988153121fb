"""The data loop on a real Airflow 3: rows from the user's table, one outcome row per input row back in it.

Each DAG run reads its recipients from a real database (the same SQLite file it writes its outcomes to, or
a real PostgreSQL server), sends through the sandbox API on a loopback port, fails its first try after
``execute()`` (so that Airflow retries it and the retry resumes from the ledger), and waits with the
delivery sensor in reschedule mode, which writes the final statuses into the rows. The sandbox fails
delivery to numbers ending in ``0001`` and never makes ``0009`` final.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import connection_env

pytestmark = pytest.mark.integration

#: 30 customers: 26 delivered, one delivery failure, one never final, one landline, one key seen twice.
CUSTOMERS = [(f"C-{i:03d}", f"0912{2000 + i:07d}", f"name{i}") for i in range(26)] + [
    ("C-fail", "09121230001", "fail"),
    ("C-late", "09121230009", "late"),
    ("C-land", "02112345678", "land"),
    ("C-000", "09351234567", "again"),  # the key of the first row again: invalid, not sent
]

SEND_AND_WAIT = """
def fail_first_try(context, result=None):
    if context["ti"].try_number == 1:
        raise RuntimeError("the first try fails after sending (its XCom push, say)")

send = P2PSmsOperator(
    task_id="send",
    sms_conn_id="bitel_default",
    sql="SELECT customer_id, phone, name FROM {source}",
    sql_conn_id="crm",
    key_field="customer_id",
    message="Hi {{{{ row.name }}}}",
    outcomes_conn_id="crm",
    outcomes_table="{table}",
    retries=1,
    retry_delay=datetime.timedelta(seconds=0),
    post_execute=fail_first_try,
)
wait = P2PSmsDeliverySensor(
    task_id="wait",
    receipt=send.output,
    mode="reschedule",
    poke_interval=1,
    give_up_after=6,
    timeout=120,
    min_delivered_ratio=0.8,
)
send >> wait
"""


def _prepare(kind: str, tmp_path: Path, postgres_fixture: Any) -> tuple[dict[str, str], Any, str, str]:
    source, table = f"customers_{uuid.uuid4().hex[:6]}", f"sms_outcomes_{uuid.uuid4().hex[:6]}"
    if kind == "sqlite":
        path = tmp_path / "crm.db"
        with sqlite3.connect(path) as connection:
            connection.execute(f"CREATE TABLE {source} (customer_id TEXT, phone TEXT, name TEXT)")
            connection.executemany(f"INSERT INTO {source} VALUES (?, ?, ?)", CUSTOMERS)
        env = {"AIRFLOW_CONN_CRM": json.dumps({"conn_type": "sqlite", "host": str(path)})}

        def query(sql: str) -> list[tuple[Any, ...]]:
            with sqlite3.connect(path) as connection:
                return connection.execute(sql).fetchall()

        return env, query, source, table
    server = postgres_fixture
    import psycopg

    def query(sql: str) -> list[tuple[Any, ...]]:
        options = {"host": server.host, "port": server.port, "dbname": server.database}
        with psycopg.connect(**options, user=server.login, password=server.password) as connection:
            cursor = connection.execute(sql)
            return cursor.fetchall() if cursor.description else []

    query(f"CREATE TABLE {source} (customer_id TEXT, phone TEXT, name TEXT)")
    values = ", ".join(f"('{key}', '{number}', '{name}')" for key, number, name in CUSTOMERS)
    query(f"INSERT INTO {source} VALUES {values}")
    return {"AIRFLOW_CONN_CRM": server.connection_json()}, query, source, table


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_a_campaign_from_a_table_comes_back_as_one_outcome_row_per_input_row(
    run_dag, sandbox, tmp_path: Path, request: pytest.FixtureRequest, kind: str
) -> None:
    postgres = request.getfixturevalue("postgres") if kind == "postgres" else None
    env, query, source, table = _prepare(kind, tmp_path, postgres)
    result = run_dag(
        SEND_AND_WAIT.format(source=source, table=table),
        {**connection_env(sandbox), **env},
        timeout=300,
    )
    assert result.try_number("send") == 2, result.output[-4000:]
    assert result.state("send") == "success" and result.state("wait") == "success", result.output[-4000:]

    # Nothing sent twice, though the send ran twice.
    recipients = Counter(message["recipient"] for message in sandbox.messages())
    assert set(recipients.values()) == {1} and len(recipients) == 28

    rows = query(f"SELECT row_key, status, message_id, parts, price, reason, sent_at, final_at FROM {table}")
    outcomes = {row[0]: row[1:] for row in rows}
    assert len(rows) == len(outcomes) == 29  # one per input row; the repeated key C-000 is the first row's
    statuses = Counter(status for status, *_ in outcomes.values())
    assert statuses == {"delivered": 26, "failed": 1, "invalid": 1, "pending": 1} or statuses == {
        "delivered": 26,
        "failed": 1,
        "invalid": 1,
        "sent": 1,
    }, statuses
    status, message_id, parts, price, _, sent_at, final_at = outcomes["C-000"]
    assert (status, parts) == ("delivered", 1) and message_id and sent_at and final_at
    assert price is not None and price > 0  # Bitel prices a message once it is processed
    assert outcomes["C-fail"][0] == "failed" and outcomes["C-fail"][6]
    assert outcomes["C-land"][0] == "invalid" and "landline" in outcomes["C-land"][4]
    assert outcomes["C-late"][4] and "gave up" in outcomes["C-late"][4], outcomes["C-late"]

    receipt, report = result.xcom("send"), result.xcom("wait")
    assert receipt["counts"]["sent"] == 28 and receipt["counts"]["resumed"] == 28
    assert report["counts"]["delivered"] == statuses["delivered"]
    assert report["counts"]["failed"] == statuses["failed"]
    assert report["parts"] == sum(row[2] for row in outcomes.values() if row[1])
    priced = [row[3] for row in outcomes.values() if row[3] is not None]
    assert report["price"] == pytest.approx(sum(priced))
