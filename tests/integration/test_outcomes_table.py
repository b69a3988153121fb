"""The outcomes table on real databases: a SQLite file and a real PostgreSQL server (``tests/postgres.py``).

Each test sets up an Airflow connection the way a user would (``AIRFLOW_CONN_CRM_DB``), writes through
:class:`OutcomesTable`, and reads the table back through the connection's own common-sql hook.
"""

from __future__ import annotations

import json
import sqlite3
import tracemalloc
import uuid
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_p2psms.campaign.outcome_schema import COLUMNS, upsert_sql
from airflow_provider_p2psms.campaign.outcomes import (
    OUTCOMES_DDL,
    DeliveryUpdate,
    Outcome,
    OutcomesTable,
    SendTaskKey,
    outcomes_ddl,
)
from airflow_provider_p2psms.campaign.recipients import iter_rows
from airflow_provider_p2psms.exceptions import P2PSmsError, SmsConfigurationError, SmsInputError

TASK = SendTaskKey("crm_campaign", "manual__2026-01-31T08:00:00+00:00", "send_codes")
SENT_AT = datetime(2026, 1, 31, 8, 30, tzinfo=timezone.utc)
FINAL_AT = SENT_AT + timedelta(minutes=2)
FIELDS = ("row_key", "recipient", "message_id", "status", "parts", "price", "reason", "sent_at", "final_at")


@dataclass
class Database:
    """A user's database behind the Airflow connection ``crm_db``, and a fresh table name in it."""

    kind: str
    conn_id: str
    table: str
    path: Path | None = None  # the SQLite file

    def outcomes(self, **kwargs: Any) -> OutcomesTable:
        return OutcomesTable(self.conn_id, self.table, **kwargs)

    def hook(self) -> Any:
        from airflow.sdk import BaseHook

        return BaseHook.get_connection(self.conn_id).get_hook()

    def run(self, sql: str) -> None:
        self.hook().run(sql)

    def rows(self, task: SendTaskKey = TASK) -> dict[str, dict[str, Any]]:
        """The task instance's rows by row key, as the database returns them."""
        placeholder = "?" if self.kind == "sqlite" else "%s"
        records = self.hook().get_records(
            f"SELECT {', '.join(FIELDS)} FROM {self.table} WHERE dag_id = {placeholder} AND run_id = "
            f"{placeholder} AND task_id = {placeholder} AND map_index = {placeholder}",
            parameters=(task.dag_id, task.run_id, task.task_id, task.map_index),
        )
        return {record[0]: dict(zip(FIELDS, record, strict=True)) for record in records}

    def columns(self) -> list[str]:
        with closing(self.hook().get_conn()) as connection, closing(connection.cursor()) as cursor:
            cursor.execute(f"SELECT * FROM {self.table} WHERE 1 = 0")
            return [str(column[0]).lower() for column in cursor.description]

    def count(self) -> int:
        return int(self.hook().get_first(f"SELECT COUNT(*) FROM {self.table}")[0])


@pytest.fixture(params=["sqlite", "postgres"])
def database(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Database:
    if request.param == "sqlite":
        connection = json.dumps({"conn_type": "sqlite", "host": str(tmp_path / "crm.db")})
    else:
        connection = request.getfixturevalue("postgres").connection_json()
    monkeypatch.setenv("AIRFLOW_CONN_CRM_DB", connection)
    return Database(request.param, "crm_db", f"sms_outcomes_{uuid.uuid4().hex[:8]}")


@pytest.fixture
def sqlite_database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Database:
    path = tmp_path / "crm.db"
    monkeypatch.setenv("AIRFLOW_CONN_CRM_DB", json.dumps({"conn_type": "sqlite", "host": str(path)}))
    return Database("sqlite", "crm_db", "sms_outcomes", path)


def sent(row_key: str, recipient: str, message_id: str | int, **fields: Any) -> Outcome:
    values: dict[str, Any] = {"status": "pending", "gateway": "ippanel", "parts": 1, "sent_at": SENT_AT, **fields}
    return Outcome(row_key, recipient=recipient, message_id=message_id, **values)


def test_ensure_creates_the_table_and_its_index_when_missing(database: Database) -> None:
    with database.outcomes() as outcomes:
        outcomes.ensure()
        outcomes.ensure()  # present: checked, left as it is
        assert outcomes.upsert(TASK, [sent("1", "+989121234567", "m1")]) == 1
    assert database.rows()["1"]["status"] == "pending"
    assert database.columns() == list(COLUMNS)
    if database.kind == "sqlite":
        index_sql = f"SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = '{database.table}'"
    else:
        index_sql = f"SELECT indexname FROM pg_indexes WHERE tablename = '{database.table}'"
    indexes = {record[0] for record in database.hook().get_records(index_sql)}
    assert f"{database.table}_by_message" in indexes


def test_ensure_names_the_connection_the_table_and_every_missing_column(database: Database) -> None:
    database.run(
        f"CREATE TABLE {database.table} (dag_id VARCHAR(250), run_id VARCHAR(250), task_id VARCHAR(250), "
        "map_index INTEGER, row_key VARCHAR(250), recipient VARCHAR(32), status VARCHAR(16), reason TEXT)"
    )
    with database.outcomes() as outcomes, pytest.raises(SmsConfigurationError) as error:
        outcomes.ensure()
    message = str(error.value)
    assert f"The outcomes table '{database.table}' on connection 'crm_db' lacks the columns" in message
    for column in ("gateway", "message_id", "parts", "price", "sent_at", "final_at"):
        assert column in message
    assert "outcomes_ddl()" in message


def test_ensure_refuses_a_table_without_the_unique_key(database: Database) -> None:
    statements = outcomes_ddl(database.table, "sqlite" if database.kind == "sqlite" else "postgresql")
    database.run(statements[0].replace(",\n    UNIQUE (dag_id, run_id, task_id, map_index, row_key)", ""))
    with database.outcomes() as outcomes, pytest.raises(SmsConfigurationError) as error:
        outcomes.ensure()
    assert "does not take an upsert" in str(error.value)
    assert "it needs a UNIQUE key on (dag_id, run_id, task_id, map_index, row_key)" in str(error.value)
    fix = str(error.value).partition("made with ")[2].partition(", and the right")[0]
    assert fix.startswith(f"CREATE UNIQUE INDEX {database.table}_key ON {database.table} (")
    database.run(fix)  # what the message says to do works
    with database.outcomes() as outcomes:
        outcomes.ensure()
        assert outcomes.upsert(TASK, [sent("1", "+989121234567", "m1")] * 2) == 2
    assert database.count() == 1


def test_writing_the_same_rows_twice_leaves_one_row_each(database: Database) -> None:
    rows = [
        sent("1", "+989121234567", "m1", price=12.5),
        sent("2", "+989121234568", "m2"),
        Outcome("3", status="invalid", reason="Row 3: field 'phone' 0218*****34 is a landline."),
    ]
    with database.outcomes() as outcomes:
        outcomes.ensure()
        assert outcomes.upsert(TASK, rows) == 3
        assert outcomes.upsert(TASK, rows) == 3
        other_run = SendTaskKey(TASK.dag_id, "manual__2026-02-01", TASK.task_id, map_index=2)
        outcomes.upsert(other_run, rows[:1])
    assert database.count() == 4
    stored = database.rows()
    assert stored["1"] == {
        "row_key": "1",
        "recipient": "+989121234567",
        "message_id": "m1",
        "status": "pending",
        "parts": 1,
        "price": 12.5,
        "reason": None,
        "sent_at": "2026-01-31T08:30:00.000000Z",
        "final_at": None,
    }
    assert stored["3"]["status"] == "invalid" and stored["3"]["recipient"] is None
    assert list(database.rows(other_run)) == ["1"]


def test_a_send_retry_keeps_the_final_status_the_tracking_wrote(database: Database) -> None:
    with database.outcomes() as outcomes:
        outcomes.ensure()
        outcomes.upsert(TASK, [sent("1", "+989121234567", "m1"), sent("2", "+989121234568", "m2")])
        outcomes.update_by_message(
            TASK, [DeliveryUpdate("m1", "+989121234567", "delivered", final_at=FINAL_AT, price=3.0)]
        )
        # The retry resumes what the first try had accepted: the same message ids, written again.
        retry_at = SENT_AT + timedelta(hours=1)
        outcomes.upsert(
            TASK,
            [
                sent("1", "+989121234567", "m1", sent_at=retry_at),
                sent("2", "+989121234568", "m2", sent_at=retry_at, parts=2),
                Outcome("3", status="uncertain", recipient="+989121234569", reason="timed out"),
            ],
        )
        stored = database.rows()
        assert stored["1"]["status"] == "delivered"  # final: the whole row stays
        assert (stored["1"]["message_id"], stored["1"]["sent_at"]) == ("m1", "2026-01-31T08:30:00.000000Z")
        assert (stored["1"]["final_at"], stored["1"]["price"]) == ("2026-01-31T08:32:00.000000Z", 3.0)
        assert (stored["2"]["status"], stored["2"]["parts"]) == ("pending", 2)  # not final: rewritten
        assert stored["2"]["sent_at"] == "2026-01-31T09:30:00.000000Z"
        assert stored["3"]["status"] == "uncertain"

        # A write with a final status of its own does replace one; the columns set are the caller's choice.
        outcomes.upsert(TASK, [Outcome("1", status="rejected", reason="refused")], update=("status", "reason"))
        outcomes.upsert(TASK, [Outcome("2", status="excluded")], update=())
    stored = database.rows()
    assert (stored["1"]["status"], stored["1"]["reason"], stored["1"]["message_id"]) == ("rejected", "refused", "m1")
    assert stored["2"]["status"] == "pending"  # update=(): an existing row is left as it is


def test_a_new_message_for_a_row_starts_it_over_and_nothing_else_does(database: Database) -> None:
    with database.outcomes() as outcomes:
        outcomes.ensure()
        outcomes.upsert(
            TASK,
            [
                Outcome("1", status="rejected", recipient="+989121234567", reason="the gateway refused it"),
                sent("2", "+989121234568", "m2"),
            ],
        )
        outcomes.update_by_message(TASK, [DeliveryUpdate("m2", "+989121234568", "delivered", final_at=FINAL_AT)])
        # A retry sends row 1, which the first try's refusal never sent, and finds row 2 excluded.
        outcomes.upsert(TASK, [sent("1", "+989121234567", "m1"), Outcome("2", status="excluded")])
        stored = database.rows()
        assert (stored["1"]["status"], stored["1"]["message_id"], stored["1"]["reason"]) == ("pending", "m1", None)
        assert (stored["2"]["status"], stored["2"]["message_id"]) == ("delivered", "m2")
        # A cleared task sends afresh: a new message id for a delivered row starts it over.
        outcomes.upsert(TASK, [sent("2", "+989121234568", "m2-rerun")])
        outcomes.update_by_message(TASK, [DeliveryUpdate("m1", "+989121234567", "delivered", final_at=FINAL_AT)])
    stored = database.rows()
    assert (stored["2"]["status"], stored["2"]["message_id"], stored["2"]["final_at"]) == ("pending", "m2-rerun", None)
    assert stored["1"]["status"] == "delivered"


def test_the_tracking_updates_by_message_id_and_recipient(database: Database) -> None:
    # IPPanel: one outbox id for the recipients of one text in a batch.
    with database.outcomes() as outcomes:
        outcomes.ensure()
        outcomes.upsert(
            TASK,
            [
                sent("1", "+989121234567", 7001, parts=2),
                sent("2", "+989121234568", 7001, parts=2),
                sent("3", "+989121234569", 7002),
            ],
        )
        other_task = SendTaskKey(TASK.dag_id, TASK.run_id, "send_reminders")
        outcomes.upsert(other_task, [sent("1", "+989121234567", 7001)])
        applied = outcomes.update_by_message(
            TASK,
            [
                DeliveryUpdate(7001, "+989121234567", "delivered", final_at=FINAL_AT),
                DeliveryUpdate("7001", "+989121234568", "failed", final_at=FINAL_AT, reason="handset off"),
                DeliveryUpdate("7002", "+989121234569", "sent"),
                DeliveryUpdate("9999", "+989121234569", "delivered", final_at=FINAL_AT),  # no such message
            ],
        )
        assert applied == 4
        # A late poll that reads a state which is not final cannot undo a final one.
        outcomes.update_by_message(TASK, [DeliveryUpdate("7001", "+989121234567", "sent")])
    stored = database.rows()
    assert [stored[key]["status"] for key in "123"] == ["delivered", "failed", "sent"]
    assert (stored["2"]["reason"], stored["2"]["final_at"]) == ("handset off", "2026-01-31T08:32:00.000000Z")
    assert stored["1"]["parts"] == 2 and stored["1"]["message_id"] == "7001"  # None kept what the send wrote
    assert stored["3"]["final_at"] is None
    assert database.rows(other_task)["1"]["status"] == "pending"


def campaign(count: int) -> Iterator[Outcome]:
    for number in range(count):
        yield Outcome(
            f"row-{number:06d}",
            status="pending",
            recipient=f"+98912{number:07d}",
            gateway="bitel",
            message_id=uuid.UUID(int=number).hex,
            parts=1,
            sent_at=SENT_AT,
        )


def test_fifty_thousand_rows_are_written_in_chunks_with_bounded_memory(database: Database) -> None:
    count = 50_000
    with database.outcomes(chunk_size=1000) as outcomes:
        outcomes.ensure()
        tracemalloc.start()
        try:
            written = outcomes.upsert(TASK, campaign(count))
            _, streaming_peak = tracemalloc.get_traced_memory()
            tracemalloc.reset_peak()
            baseline = tracemalloc.get_traced_memory()[0]
            held = [(*TASK.params(), *outcome.params()) for outcome in campaign(count)]
            holding_all = tracemalloc.get_traced_memory()[0] - baseline
        finally:
            tracemalloc.stop()
    assert written == count and len(held) == count
    assert database.count() == count
    # Holding the campaign's rows takes tens of MB; streaming takes about one chunk.
    assert holding_all > 15_000_000
    assert streaming_peak < holding_all / 10, (streaming_peak, holding_all)


def test_each_chunk_is_its_own_transaction(database: Database) -> None:
    def failing_after(count: int) -> Iterator[Outcome]:
        yield from campaign(count)
        raise RuntimeError("the source broke")

    with database.outcomes(chunk_size=1000) as outcomes:
        outcomes.ensure()
        with pytest.raises(RuntimeError, match="the source broke"):
            outcomes.upsert(TASK, failing_after(2500))
    assert database.count() == 2000  # two whole chunks committed; the third never reached the database


def test_the_same_sqlite_file_is_the_recipients_source_and_the_outcomes_sink(sqlite_database: Database) -> None:
    path = sqlite_database.path
    assert path is not None
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, phone TEXT, name TEXT)")
        db.executemany(
            "INSERT INTO customers (phone, name) VALUES (?, ?)",
            [(f"0912{number:07d}", f"user{number}") for number in range(5000)],
        )
    with sqlite_database.outcomes(chunk_size=250) as outcomes:
        outcomes.ensure()  # before the read: it switches the file to WAL
        rows = iter_rows(
            recipients=None,
            sql="SELECT id, phone, name FROM customers ORDER BY id",
            sql_conn_id="crm_db",
            parameters=None,
            fetch_size=500,
        )
        # The recipients cursor stays open on its own connection while every chunk is committed.
        written = outcomes.upsert(
            TASK, (Outcome(str(row["id"]), status="pending", recipient=row["phone"]) for row in rows)
        )
    assert written == 5000
    assert sqlite_database.count() == 5000
    assert sqlite_database.rows()["5000"]["recipient"] == "09120004999"
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_bad_input_is_refused_with_what_to_do(sqlite_database: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    with sqlite_database.outcomes() as outcomes:
        outcomes.ensure()
        with pytest.raises(SmsInputError, match=r"status 'bounced' of row '1' is not one of pending, sent"):
            outcomes.upsert(TASK, [Outcome("1", status="bounced")])
        with pytest.raises(SmsInputError, match="sent_at of row '1' is a naive datetime"):
            outcomes.upsert(TASK, [Outcome("1", status="pending", sent_at=datetime(2026, 1, 31, 8, 30))])
        with pytest.raises(SmsInputError, match="the row_key is 251 characters long; the table takes at most 250"):
            outcomes.upsert(TASK, [Outcome("k" * 251, status="pending")])
        with pytest.raises(SmsConfigurationError, match="cannot update row_key, sent"):
            outcomes.upsert(TASK, [], update=("status", "sent", "row_key"))
    assert sqlite_database.count() == 0
    with pytest.raises(SmsConfigurationError, match="is not a plain SQL identifier"):
        OutcomesTable("crm_db", "outcomes; DROP TABLE customers")
    with pytest.raises(SmsConfigurationError, match="SQLite tables take no schema"):
        OutcomesTable("crm_db", "crm.outcomes").ensure()
    monkeypatch.setenv("AIRFLOW_CONN_SMS", json.dumps({"conn_type": "bitel", "password": "token"}))
    with pytest.raises(SmsConfigurationError, match=r"Connection 'sms' .* is not a SQL database connection"):
        OutcomesTable("sms").ensure()


def test_a_failed_chunk_says_what_was_written(sqlite_database: Database) -> None:
    with sqlite_database.outcomes(chunk_size=2) as outcomes:
        outcomes.ensure()
        sqlite_database.run(f"DROP TABLE {sqlite_database.table}")
        with pytest.raises(P2PSmsError, match="Writing outcomes to table 'sms_outcomes' on connection 'crm_db'"):
            outcomes.upsert(TASK, [sent("1", "+989121234567", "m1")])


def test_the_documented_ddl_and_the_mysql_upsert() -> None:
    assert OUTCOMES_DDL.startswith("CREATE TABLE IF NOT EXISTS p2psms_outcomes (")
    assert "UNIQUE (dag_id, run_id, task_id, map_index, row_key)" in OUTCOMES_DDL
    assert "CREATE INDEX IF NOT EXISTS p2psms_outcomes_by_message ON p2psms_outcomes" in OUTCOMES_DDL
    for column in COLUMNS:
        assert f"\n    {column} " in OUTCOMES_DDL
    mysql = outcomes_ddl("sms_outcomes", "mysql")
    assert len(mysql) == 1 and "INDEX sms_outcomes_by_message (" in mysql[0]
    assert "row_key VARCHAR(250) CHARACTER SET utf8mb3 COLLATE utf8mb3_bin NOT NULL" in mysql[0]
    # MySQL assigns left to right: status and message_id are set last, in that order (see upsert_sql).
    statement = upsert_sql("sms_outcomes", "mysql", "%s", ["status", "message_id", "sent_at"])
    assert "ON DUPLICATE KEY UPDATE sent_at = IF(" in statement
    assert statement.index("sent_at = IF(") < statement.index("status = IF(") < statement.index("message_id = IF(")
