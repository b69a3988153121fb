"""P2PSmsDeliverySensor writes delivery statuses into the send's outcomes table: a real SQLite file, in process.

The send side is played by the test, as the operator does it: messages sent to the sandbox, one ``pending``
row per message in the table, and a receipt naming the send task instance (``task``) and the table
(``outcomes``). The table is the user's, behind an Airflow ``sqlite`` connection set by environment
variable. A SQLite trigger records every row the sensor's updates really changed, so a test can tell a
status written once from one written at every poll.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_p2psms.campaign.delivery_outcomes import END_REASONS, DeliveryOutcomes
from airflow_provider_p2psms.campaign.outcomes import Outcome, OutcomesTable, SendTaskKey
from airflow_provider_p2psms.campaign.tracking import GAVE_UP, TIMEOUT
from airflow_provider_p2psms.exceptions import P2PSmsError, SmsConfigurationError
from airflow_provider_p2psms.hooks.factory import get_sms_hook
from airflow_provider_p2psms.models import OutgoingSms
from airflow_provider_p2psms.sensors.p2p_sms import P2PSmsDeliverySensor
from airflow_provider_p2psms.version_compat import AirflowSensorTimeout
from tests.reliability.support import MemoryTaskState

SEND_TASK = {"dag_id": "campaign", "run_id": "manual__2026-01-31", "task_id": "send", "map_index": -1}
TABLE = "sms_outcomes"
#: Delivered in two parts, delivery failed, blacklisted, never final. The sandbox makes them final after
#: 0.6 s (the last never), and charges 150 a part for what the operator took (delivered, delivery failed).
NUMBERS = ["09351234567", "09121230001", "09121230002", "09121230009"]
TEXTS = ["س" * 100, "Hi", "Hi", "Hi"]
FIELDS = ("row_key", "status", "parts", "price", "reason", "final_at")


class TaskInstance:
    """The part of a task instance the sensor uses, remembering what it pushed."""

    dag_id, run_id, task_id, map_index = "campaign", "manual__2026-01-31", "wait", -1

    def __init__(self, try_number: int = 1) -> None:
        self.try_number = try_number
        self.xcoms: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcoms[key] = json.loads(json.dumps(value))


def context(state: MemoryTaskState | None = None, try_number: int = 1) -> dict[str, Any]:
    found: dict[str, Any] = {"ti": TaskInstance(try_number)}
    if state is not None:
        found["task_state_store"] = state
    return found


class CrmDb:
    """The user's SQLite file behind connection ``crm_db``, with a log of the rows updates changed."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def send(self, *tables: str) -> dict[str, Any]:
        """Send :data:`NUMBERS`, write their rows as the operator does (into each table); the receipt."""
        table, *_ = tables or (TABLE,)
        hook = get_sms_hook("bitel_default")
        messages = [OutgoingSms(hook.normalize_number(n), text) for n, text in zip(NUMBERS, TEXTS, strict=True)]
        receipts = hook.send_batch(messages)
        rows = [
            Outcome(
                str(row),
                "pending",
                recipient=r.recipient,
                gateway="bitel",
                message_id=r.message_id,
                sent_at=datetime.now(timezone.utc),
            )
            for row, r in enumerate(receipts, start=1)
        ]
        for name in tables or (TABLE,):
            with OutcomesTable("crm_db", name) as outcomes:
                outcomes.ensure()
                outcomes.upsert(SendTaskKey(**SEND_TASK), rows)
            with sqlite3.connect(self.path) as db:
                db.execute("CREATE TABLE IF NOT EXISTS changed (tbl TEXT, row_key TEXT, status TEXT)")
                db.execute(
                    f"CREATE TRIGGER {name}_changed AFTER UPDATE ON {name} BEGIN "
                    f"INSERT INTO changed VALUES ('{name}', new.row_key, new.status); END"
                )
        return {
            "version": 1,
            "provider": "bitel",
            "sms_conn_id": "bitel_default",
            "counts": {"requested": 4, "sent": 4, "uncertain": 0, "rejected": 0},
            "messages": "\n".join(f"{r.message_id} {r.recipient}" for r in receipts),
            "problems": [],
            "task": SEND_TASK,
            "outcomes": {"conn_id": "crm_db", "table": table},
        }

    def rows(self, table: str = TABLE) -> dict[str, dict[str, Any]]:
        with sqlite3.connect(self.path) as db:
            records = db.execute(f"SELECT {', '.join(FIELDS)} FROM {table} ORDER BY row_key").fetchall()
        return {record[0]: dict(zip(FIELDS, record, strict=True)) for record in records}

    def changed(self, table: str = TABLE) -> dict[str, list[str]]:
        """Per row, the statuses the updates wrote to it, in order."""
        found: dict[str, list[str]] = {}
        with sqlite3.connect(self.path) as db:
            for row_key, status in db.execute(
                "SELECT row_key, status FROM changed WHERE tbl = ? ORDER BY rowid", [table]
            ):
                found.setdefault(row_key, []).append(status)
        return found


@pytest.fixture
def crm_db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sms_connections: Any) -> CrmDb:
    path = tmp_path / "crm.db"
    monkeypatch.setenv("AIRFLOW_CONN_CRM_DB", json.dumps({"conn_type": "sqlite", "host": str(path)}))
    return CrmDb(path)


def wait(sensor_of: Any, ctx_of: Any, limit: float = 20) -> Any:
    """Poke until the wait ends, with a fresh sensor (and context) per poke when asked; the report."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        outcome = sensor_of().poke(ctx_of())
        if outcome:
            return outcome.xcom_value
        time.sleep(0.15)
    raise AssertionError("the wait did not end")


def assert_final_rows(crm_db: CrmDb, report: dict[str, Any], stuck_reason: str, table: str = TABLE) -> None:
    rows = crm_db.rows(table)
    assert [(r["status"], r["parts"], r["price"]) for r in rows.values()] == [
        ("delivered", 2, 300.0),
        ("failed", 1, 150.0),
        ("blacklisted", 1, 0.0),
        ("sent", 1, None),
    ]
    assert [r["reason"] for r in rows.values()] == [
        None,
        "the gateway reported 4 DELIVERY_FAILED",
        "the gateway reported 5 BLACKLIST",
        stuck_reason,
    ]
    assert all(r["final_at"].endswith("Z") for r in list(rows.values())[:3])
    assert rows["4"]["final_at"] is None
    # The report's totals are the table's.
    assert (report["parts"], report["price"]) == (5, 450.0)
    assert sum(r["parts"] for r in rows.values()) == 5
    assert sum(r["price"] or 0 for r in rows.values()) == 450.0


def assert_each_status_written_once(crm_db: CrmDb, table: str = TABLE) -> None:
    changed = crm_db.changed(table)
    for row_key, final in (("1", "delivered"), ("2", "failed"), ("3", "blacklisted")):
        statuses = changed[row_key]
        assert statuses[-1] == final and len(statuses) == len(set(statuses)) <= 2, (row_key, statuses)
    # The one never final: "sent" once when it changed, and once more at the end, with the reason.
    assert changed["4"] == ["sent", "sent"]


def test_poke_mode_writes_each_status_once_and_the_end_with_a_reason(crm_db):
    receipt = crm_db.send()
    sensor = P2PSmsDeliverySensor(task_id="wait", receipt=receipt, min_delivered_ratio=0.25, give_up_after=2)
    report = wait(lambda: sensor, context)
    assert report["ending"] == GAVE_UP
    assert_final_rows(crm_db, report, END_REASONS[GAVE_UP])
    assert_each_status_written_once(crm_db)


def test_rescheduled_pokes_write_what_changed_since_the_state_they_restored(crm_db):
    receipt = crm_db.send()
    state = MemoryTaskState()

    def sensor() -> P2PSmsDeliverySensor:
        return P2PSmsDeliverySensor(
            task_id="wait", receipt=receipt, mode="reschedule", min_delivered_ratio=0.25, give_up_after=2
        )

    report = wait(sensor, lambda: context(state))
    assert report["ending"] == GAVE_UP
    assert_final_rows(crm_db, report, END_REASONS[GAVE_UP])
    assert_each_status_written_once(crm_db)

    # A re-run (the sensor cleared) reads every status again and writes the same values.
    before = crm_db.rows()
    rerun_state = MemoryTaskState()
    again = wait(sensor, lambda: context(rerun_state, try_number=2))
    after = crm_db.rows()
    assert again["ending"] == GAVE_UP
    for row_key in before:
        assert {k: v for k, v in after[row_key].items() if k != "final_at"} == {
            k: v for k, v in before[row_key].items() if k != "final_at"
        }
        assert (after[row_key]["final_at"] is None) == (before[row_key]["final_at"] is None)


def test_deferrable_the_trigger_writes_as_it_polls_and_writes_the_end(crm_db):
    receipt = crm_db.send()
    sensor = P2PSmsDeliverySensor(
        task_id="wait", receipt=receipt, deferrable=True, min_delivered_ratio=0.25, give_up_after=2, poke_interval=0.2
    )
    with pytest.raises(BaseException) as deferred:  # TaskDeferred: its module differs by version
        sensor.execute(context())
    assert type(deferred.value).__name__ == "TaskDeferred"
    trigger = deferred.value.trigger
    kwargs = trigger.serialize()[1]
    assert (kwargs["outcomes_conn_id"], kwargs["outcomes_table"], kwargs["send_task"]) == ("crm_db", TABLE, SEND_TASK)

    async def run() -> list[dict[str, Any]]:
        return [event.payload async for event in trigger.run()]

    [event] = asyncio.run(run())
    # The event stays small: totals and a sample, no state per message (a campaign this small lists its
    # masked messages, for the report).
    assert set(event) == {"status", "ending", "total", "counts", "polls", "parts", "price", "not_delivered", "messages"}
    assert (event["ending"], event["parts"], event["price"]) == (GAVE_UP, 5, 450.0)
    # The trigger wrote every status as it changed, and the reason of the one still not final at the end.
    assert [r["status"] for r in crm_db.rows().values()] == ["delivered", "failed", "blacklisted", "sent"]
    assert crm_db.rows()["4"]["reason"] == END_REASONS[GAVE_UP]

    resumed = P2PSmsDeliverySensor(
        task_id="wait", receipt=receipt, deferrable=True, min_delivered_ratio=0.25, give_up_after=2
    )
    report = resumed.execute_complete(context(), event)
    assert report["ending"] == GAVE_UP
    assert_final_rows(crm_db, report, END_REASONS[GAVE_UP])
    assert_each_status_written_once(crm_db)


def test_airflow_timeout_in_poke_mode_writes_the_reason(crm_db):
    receipt = crm_db.send()
    sensor = P2PSmsDeliverySensor(
        task_id="wait", receipt=receipt, min_delivered_ratio=0.25, timeout=2, poke_interval=0.2
    )
    ctx = context()
    with pytest.raises(AirflowSensorTimeout):
        sensor.execute(ctx)
    assert ctx["ti"].xcoms["return_value"]["ending"] == TIMEOUT
    assert_final_rows(crm_db, ctx["ti"].xcoms["return_value"], END_REASONS[TIMEOUT])


@pytest.mark.parametrize("soft_fail", [False, True])
def test_a_receipt_without_task_fails_before_polling_saying_what_to_do(crm_db, sms_connections, soft_fail):
    receipt = crm_db.send()
    del receipt["task"]
    for sensor in (
        P2PSmsDeliverySensor(task_id="wait", receipt=receipt, soft_fail=soft_fail),
        P2PSmsDeliverySensor(
            task_id="wait", receipt={**receipt, "outcomes": None}, outcomes_conn_id="crm_db", soft_fail=soft_fail
        ),
    ):
        with pytest.raises(SmsConfigurationError) as caught:
            sensor.execute(context())
        message = str(caught.value)
        assert message.startswith("P2PSmsDeliverySensor 'wait': the receipt does not say which send task instance")
        assert f"outcomes table '{TABLE}'" in message or "outcomes table 'p2psms_outcomes'" in message
        assert "Run the send again with this version, or leave outcomes_conn_id and outcomes_table unset" in message
    assert not [r for r in sms_connections.requests() if r["kind"] == "status"]


def test_the_receipt_names_the_default_table_and_the_sensor_own_settings_win():
    receipt = {"task": SEND_TASK, "outcomes": {"conn_id": "crm_db", "table": "sent_rows"}}
    task = SendTaskKey(**SEND_TASK)
    resolve = DeliveryOutcomes.resolve
    assert resolve(receipt, None, None, "s") == DeliveryOutcomes("crm_db", "sent_rows", task)
    assert resolve(receipt, "other_db", None, "s") == DeliveryOutcomes("other_db", "sent_rows", task)
    assert resolve(receipt, None, "mine", "s") == DeliveryOutcomes("crm_db", "mine", task)
    assert resolve({**receipt, "outcomes": None}, "crm_db", None, "s") == DeliveryOutcomes(
        "crm_db", "p2psms_outcomes", task
    )
    assert resolve({"task": SEND_TASK, "outcomes": None}, None, None, "s") is None
    assert resolve({}, None, None, "s") is None  # an old receipt, no table asked for: nothing to write
    with pytest.raises(SmsConfigurationError, match="outcomes_table is 'mine' but there is no outcomes_conn_id"):
        resolve({"task": SEND_TASK}, None, "mine", "s")


def test_an_explicit_table_is_the_one_updated(crm_db):
    receipt = crm_db.send("sent_rows", "mine")  # the receipt names sent_rows; mine has the same rows
    sensor = P2PSmsDeliverySensor(
        task_id="wait", receipt=receipt, outcomes_table="mine", min_delivered_ratio=0.25, give_up_after=2
    )
    report = wait(lambda: sensor, context)
    assert_final_rows(crm_db, report, END_REASONS[GAVE_UP], table="mine")
    assert {r["status"] for r in crm_db.rows("sent_rows").values()} == {"pending"}
    assert crm_db.changed("sent_rows") == {}


def test_a_table_that_cannot_take_the_writes_ends_the_wait_in_error(crm_db):
    receipt = crm_db.send()
    with sqlite3.connect(crm_db.path) as db:
        db.execute(f"DROP TABLE {TABLE}")
    sensor = P2PSmsDeliverySensor(task_id="wait", receipt=receipt)
    ctx = context()
    with pytest.raises(P2PSmsError, match=f"Writing outcomes to table '{TABLE}' on connection 'crm_db' failed"):
        wait(lambda: sensor, lambda: ctx)
    assert ctx["ti"].xcoms["return_value"]["ending"] == "error"

    deferred = P2PSmsDeliverySensor(task_id="wait", receipt=receipt, deferrable=True, poke_interval=0.2)
    with pytest.raises(BaseException) as caught:  # TaskDeferred: its module differs by version
        deferred.execute(context())

    async def run() -> list[dict[str, Any]]:
        return [event.payload async for event in caught.value.trigger.run()]

    [event] = asyncio.run(run())
    assert event["status"] == "error"
    assert f"Writing outcomes to table '{TABLE}' on connection 'crm_db' failed" in event["message"]
