"""The send's side of the outcomes table: one row per input row, keyed by the user's own row key.

The operator runs in this process against the sandbox API on a loopback port, reading its recipients
from a real database and writing its outcomes to a real database (a SQLite file, and a real PostgreSQL
server from ``tests/postgres.py``), both through Airflow connections set as a user sets them.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_p2psms.exceptions import SmsConfigurationError, SmsInputError
from airflow_provider_p2psms.operators.p2p_sms import P2PSmsOperator
from airflow_provider_p2psms.sandbox import SUFFIX_REFUSED
from tests.helpers import GATEWAYS
from tests.reliability.support import MemoryTaskState, people, sent_counts, task_context

MESSAGE = "Hi {{ row.name }}, your code is {{ row.code }}"
FIELDS = ("row_key", "recipient", "gateway", "message_id", "status", "parts", "price", "reason", "sent_at")


def customers(count: int) -> list[dict[str, Any]]:
    """Rows with a customer id, as a CRM table would hold them."""
    return [{"customer_id": f"C-{i:04d}", **row} for i, row in enumerate(people(count))]


def write_customers(path: Path, rows: list[dict[str, Any]]) -> None:
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE customers (customer_id TEXT, phone TEXT, name TEXT, code TEXT)")
        connection.executemany("INSERT INTO customers VALUES (:customer_id, :phone, :name, :code)", rows)


def outcome_rows(conn_id: str, table: str, kind: str = "sqlite") -> dict[str, dict[str, Any]]:
    from airflow.sdk import BaseHook

    placeholder = "?" if kind == "sqlite" else "%s"
    records = (
        BaseHook.get_connection(conn_id)
        .get_hook()
        .get_records(
            f"SELECT {', '.join(FIELDS)}, dag_id, run_id, task_id, map_index FROM {table} "
            f"WHERE task_id = {placeholder}",
            parameters=("send",),
        )
    )
    rows = {record[0]: dict(zip(FIELDS, record[: len(FIELDS)], strict=True)) for record in records}
    assert len(rows) == len(records)
    assert {tuple(record[len(FIELDS) :]) for record in records} <= {("reliability", "manual__1", "send", -1)}
    return rows


def make_operator(**kwargs: Any) -> P2PSmsOperator:
    arguments: dict[str, Any] = {"task_id": "send", "sms_conn_id": "bitel_default", "message": MESSAGE}
    return P2PSmsOperator(**{**arguments, **kwargs})


@pytest.fixture
def crm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A SQLite file behind the connection ``crm_db``: the recipients' source and the outcomes' sink."""
    path = tmp_path / "crm.db"
    monkeypatch.setenv("AIRFLOW_CONN_CRM_DB", json.dumps({"conn_type": "sqlite", "host": str(path)}))
    return path


def test_an_outcomes_table_without_key_field_is_refused_when_the_dag_is_parsed() -> None:
    with pytest.raises(SmsConfigurationError, match="an outcomes table needs key_field"):
        make_operator(recipients=[], outcomes_conn_id="crm_db")
    with pytest.raises(SmsConfigurationError, match="outcomes_table needs outcomes_conn_id"):
        make_operator(recipients=[], outcomes_table="sms_outcomes", key_field="customer_id")
    with pytest.raises(SmsConfigurationError, match="not a plain SQL identifier"):
        make_operator(recipients=[], outcomes_conn_id="crm_db", outcomes_table="x; DROP TABLE y", key_field="id")
    # Given alone, the table is on the recipients' database.
    operator = make_operator(sql="SELECT 1", sql_conn_id="crm_db", outcomes_table="sms_outcomes", key_field="id")
    assert (operator.outcomes_conn_id, operator.outcomes_table) == ("crm_db", "sms_outcomes")
    assert make_operator(recipients=[], outcomes_conn_id="crm_db", key_field="id").outcomes_table == "p2psms_outcomes"


@pytest.mark.parametrize("gateway", GATEWAYS)
def test_one_outcome_row_per_input_row_from_and_to_the_same_sqlite_file(connect, crm: Path, gateway: str) -> None:
    sandbox = connect()
    rows = customers(250)
    rows[3]["phone"] = "02112345678"  # a landline: invalid
    rows[7]["customer_id"] = rows[6]["customer_id"]  # a key seen twice: invalid, never sent
    rows[9] = {**rows[8], "customer_id": "C-dup"}  # the same number and text as row 9: sent once
    rows[20]["phone"] = f"091200{SUFFIX_REFUSED}"  # well formed, refused by the gateway
    rows[30]["customer_id"] = None  # no key: invalid, and no outcome row can name it
    write_customers(crm, rows)

    operator = make_operator(
        sms_conn_id=f"{gateway}_default",
        sql="SELECT customer_id, phone, name, code FROM customers ORDER BY rowid",
        sql_conn_id="crm_db",
        key_field="customer_id",
        outcomes_conn_id="crm_db",
        outcomes_table="sms_outcomes",
    )
    receipt = operator.execute(task_context(MemoryTaskState()))

    outcomes = outcome_rows("crm_db", "sms_outcomes")
    # Every row but the one without a key, and the second row with key C-0006 (the first one's row is its).
    assert len(outcomes) == 248
    statuses: dict[str, list[str]] = {}
    for key, row in outcomes.items():
        statuses.setdefault(row["status"], []).append(key)
    assert sorted(statuses) == ["duplicate", "invalid", "pending", "rejected"]
    assert sorted(statuses["invalid"]) == ["C-0003"]
    assert outcomes["C-0006"]["status"] == "pending"
    assert statuses["duplicate"] == ["C-dup"]
    assert statuses["rejected"] == ["C-0020"]
    assert "refused" in outcomes["C-0020"]["reason"]
    assert "landline" in outcomes["C-0003"]["reason"] or "mobile" in outcomes["C-0003"]["reason"]
    assert len(statuses["pending"]) == 245
    counts = receipt["counts"]
    assert (counts["requested"], counts["sent"], counts["invalid"], counts["duplicate"], counts["rejected"]) == (
        250,
        245,
        3,
        1,
        1,
    )
    # The receipt's messages and the outcome rows agree, id for id.
    from airflow_provider_p2psms.models import receipt_messages

    pending = {(row["message_id"], row["recipient"]) for row in outcomes.values() if row["status"] == "pending"}
    assert pending == {tuple(pair) for pair in receipt_messages(receipt["messages"])}
    assert all(
        row["gateway"] == gateway and row["parts"] == 1 and row["sent_at"]
        for row in outcomes.values()
        if row["status"] == "pending"
    )
    assert counts["parts"] == 245
    assert receipt["task"] == {"dag_id": "reliability", "run_id": "manual__1", "task_id": "send", "map_index": -1}
    assert receipt["outcomes"] == {"conn_id": "crm_db", "table": "sms_outcomes"}
    # Problem lines name rows by number and key; the second C-0006 is the duplicate key.
    problems = "\n".join(receipt["problems"])
    assert "Row 8 (key 'C-0006'): duplicate key" in problems
    assert "Row 4 (key 'C-0003'): field 'phone'" in problems
    assert "in row 21 (key 'C-0020')" in problems
    assert "Row 31: has no key" in problems
    assert set(sent_counts(sandbox).values()) == {1}


def test_a_retry_repairs_the_rows_from_the_ledger_and_keeps_final_statuses(connect, crm: Path) -> None:
    sandbox = connect()
    write_customers(crm, customers(120))
    arguments = {
        "sql": "SELECT customer_id, phone, name, code FROM customers ORDER BY random()",
        "sql_conn_id": "crm_db",
        "key_field": "customer_id",
        "outcomes_conn_id": "crm_db",
    }
    state = MemoryTaskState()
    make_operator(**arguments).execute(task_context(state))
    first = outcome_rows("crm_db", "p2psms_outcomes")
    assert len(first) == 120
    # What the sensor would have written, and rows a killed try never wrote.
    with sqlite3.connect(crm) as connection:
        connection.execute("UPDATE p2psms_outcomes SET status = 'delivered', price = 2370 WHERE row_key = 'C-0005'")
        connection.execute("DELETE FROM p2psms_outcomes WHERE row_key IN ('C-0010', 'C-0011')")

    # The task failed after execute() (say, its XCom push), so the checkpoint is still there: a retry.
    receipt = make_operator(**arguments).execute(task_context(state, try_number=2))

    again = outcome_rows("crm_db", "p2psms_outcomes")
    assert len(again) == 120
    assert again["C-0005"]["status"] == "delivered" and again["C-0005"]["price"] == 2370
    assert again["C-0010"] == first["C-0010"] | {"sent_at": again["C-0010"]["sent_at"]}
    assert again["C-0010"]["message_id"] == first["C-0010"]["message_id"]
    assert receipt["counts"]["resumed"] == 120 and receipt["counts"]["parts"] == 120
    assert len(sandbox.messages()) == 120  # nothing sent twice


def test_a_row_key_too_long_for_the_table_names_the_row(connect, crm: Path) -> None:
    connect()
    rows = customers(3)
    rows[1]["customer_id"] = "k" * 300
    write_customers(crm, rows)
    operator = make_operator(
        sql="SELECT * FROM customers", sql_conn_id="crm_db", key_field="customer_id", outcomes_conn_id="crm_db"
    )
    with pytest.raises(SmsInputError, match="row_key is 300 characters long"):
        operator.execute(task_context(MemoryTaskState()))


def test_outcomes_go_to_postgresql_while_recipients_come_from_it(connect, postgres, monkeypatch) -> None:
    sandbox = connect()
    monkeypatch.setenv("AIRFLOW_CONN_CRM_PG", postgres.connection_json())
    from airflow.sdk import BaseHook

    hook = BaseHook.get_connection("crm_pg").get_hook()
    source, table = f"customers_{uuid.uuid4().hex[:8]}", f"sms_outcomes_{uuid.uuid4().hex[:8]}"
    hook.run(f"CREATE TABLE {source} (customer_id INTEGER PRIMARY KEY, phone TEXT, name TEXT, code TEXT)")
    rows = customers(1500)
    hook.insert_rows(source, [(i, r["phone"], r["name"], r["code"]) for i, r in enumerate(rows)])
    hook.run(f"UPDATE {source} SET phone = '123' WHERE customer_id = 42")

    operator = make_operator(
        sms_conn_id="ippanel_default",
        sql=f"SELECT customer_id, phone, name, code FROM {source}",
        sql_conn_id="crm_pg",
        key_field="customer_id",
        outcomes_conn_id="crm_pg",
        outcomes_table=table,
        fetch_size=200,
    )
    receipt = operator.execute(task_context(MemoryTaskState()))

    outcomes = outcome_rows("crm_pg", table, kind="postgres")
    assert len(outcomes) == 1500
    assert outcomes["42"]["status"] == "invalid"
    assert sum(row["status"] == "pending" for row in outcomes.values()) == receipt["counts"]["sent"] == 1499
    # IPPanel gives the recipients of one text in a batch one id: each row here has its own text.
    joined = hook.get_records(
        f"SELECT c.customer_id, o.status FROM {source} c JOIN {table} o ON o.row_key = CAST(c.customer_id AS TEXT) "
        "WHERE o.status = 'pending'"
    )
    assert len(joined) == 1499
    assert len(sandbox.messages()) == 1499
