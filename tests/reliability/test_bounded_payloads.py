"""Payloads stay small whatever the campaign: the receipt, the trigger's arguments and event, the report.

A large campaign's per-message detail goes where every worker and the triggerer can read it: the outcomes
table when the send writes one, else a detail file under ``[p2psms] detail_path``, removed once the
sensor is done with it. The operator and the sensor run in this process against the sandbox on a
loopback port, with real SQLite files behind Airflow connections.
"""

from __future__ import annotations

import asyncio
import json
import random
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_p2psms.campaign.detail import INLINE_LIMIT, OUTCOMES_REF
from airflow_provider_p2psms.campaign.receipt_detail import iter_receipt_messages
from airflow_provider_p2psms.campaign.tracking import DeliveryTracker, pack_state
from airflow_provider_p2psms.exceptions import SmsConfigurationError, SmsInputError
from airflow_provider_p2psms.operators.p2p_sms import P2PSmsOperator
from airflow_provider_p2psms.sensors.p2p_sms import P2PSmsDeliverySensor
from airflow_provider_p2psms.sensors.progress import STATE_KEY, Progress, load_progress, save_progress
from tests.reliability.support import MemoryTaskState, people, task_context

#: The bound every payload must keep, as ``len(json.dumps(value))``.
BOUND = 64 * 1024


class SensorTaskInstance:
    """The part of a task instance the sensor uses, remembering what it pushed."""

    dag_id = "reliability"
    run_id = "manual__1"
    task_id = "wait"
    map_index = -1

    def __init__(self, try_number: int = 1, max_tries: int = 0) -> None:
        self.try_number = try_number
        self.max_tries = max_tries
        self.xcoms: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcoms[key] = json.loads(json.dumps(value))

    def get_first_reschedule_date(self, context: Any) -> None:
        return None


def size(value: Any) -> int:
    return len(json.dumps(value))


#: The sandbox reports this number failed.
FAILING = "09121230001"


def with_one_failing(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows[0]["phone"] = FAILING
    return rows


def send(count: int, **kwargs: Any) -> dict[str, Any]:
    """Send ``count`` rows, the first of them to :data:`FAILING`."""
    operator = P2PSmsOperator(
        task_id="send",
        sms_conn_id="bitel_default",
        message="Hi {{ row.name }}",
        recipients=with_one_failing(people(count)),
        **kwargs,
    )
    return operator.execute(task_context(MemoryTaskState()))


@pytest.fixture
def detail_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "detail"
    monkeypatch.setenv("AIRFLOW__P2PSMS__DETAIL_PATH", f"file://{folder}")
    return folder


def files(folder: Path) -> list[Path]:
    return sorted(path for path in folder.rglob("*") if path.is_file()) if folder.exists() else []


def test_a_small_campaign_keeps_its_messages_inline(sms_connections, detail_path: Path) -> None:
    receipt = send(20)
    assert receipt["messages"].count("\n") == 19
    assert [pair for pair in iter_receipt_messages(receipt)] == [
        tuple(line.split(" ", 1)) for line in receipt["messages"].split("\n")
    ]
    assert files(detail_path) == []


def test_a_large_campaign_without_a_table_keeps_its_messages_in_a_detail_file(
    sms_connections, detail_path: Path
) -> None:
    sms_connections.configure(delivery_seconds=0)
    receipt = send(3000)
    assert receipt["messages"].startswith("detail:file://")
    assert size(receipt) < BOUND
    [written] = files(detail_path)
    assert written.name == "messages-1.zlib" and written.parent.parts[-4:] == ("reliability", "manual__1", "send", "-1")
    pairs = list(iter_receipt_messages(receipt))
    accepted = {message["recipient"] for message in sms_connections.messages()}
    assert len(pairs) == len(accepted) == 3000
    assert {recipient for _, recipient in pairs} == accepted

    ti = SensorTaskInstance()
    sensor = P2PSmsDeliverySensor(
        task_id="wait", receipt=receipt, poke_interval=0.1, timeout=60, min_delivered_ratio=0.99
    )
    report = sensor.execute({"ti": ti})
    assert (report["ending"], report["total"], report["counts"]["delivered"]) == ("all_final", 3000, 2999)
    # 3,000 messages are not listed in the report; a sample of those not delivered is.
    assert report["messages"] == [] and report["messages_listed"] is False
    assert report["not_delivered_sample"] == ["0912*****01 (failed)"]
    assert size(report) < BOUND
    # Once the wait is over for good, the file of full numbers is removed ([p2psms] detail_retention).
    assert files(detail_path) == []
    with pytest.raises(SmsInputError, match="is gone"):
        list(iter_receipt_messages(receipt))


def test_detail_retention_keep_leaves_the_file(sms_connections, detail_path: Path, monkeypatch) -> None:
    sms_connections.configure(delivery_seconds=0)
    monkeypatch.setenv("AIRFLOW__P2PSMS__DETAIL_RETENTION", "keep")
    receipt = send(1000)
    target = {"poke_interval": 0.1, "min_delivered_ratio": 0.99}
    P2PSmsDeliverySensor(task_id="wait", receipt=receipt, **target).execute({"ti": SensorTaskInstance()})
    assert [path.name for path in files(detail_path)] == ["messages-1.zlib"]

    monkeypatch.setenv("AIRFLOW__P2PSMS__DETAIL_RETENTION", "forever")
    with pytest.raises(SmsConfigurationError, match="detail_retention is 'forever'"):
        P2PSmsDeliverySensor(task_id="wait", receipt=receipt, **target).execute({"ti": SensorTaskInstance()})


def test_a_failed_sensor_with_a_retry_left_keeps_the_file(sms_connections, detail_path: Path) -> None:
    sms_connections.configure(delivery_seconds=0)
    receipt = send(1000)
    sensor = P2PSmsDeliverySensor(task_id="wait", receipt=receipt, poke_interval=0.1, retries=1)
    with pytest.raises(Exception, match="Delivery below target"):
        sensor.execute({"ti": SensorTaskInstance(try_number=1, max_tries=1)})
    assert len(files(detail_path)) == 1  # the retry reads it again
    with pytest.raises(Exception, match="Delivery below target"):
        sensor.execute({"ti": SensorTaskInstance(try_number=2, max_tries=1)})
    assert files(detail_path) == []


def test_other_executors_need_shared_detail_storage_before_anything_is_sent(
    sms_connections, monkeypatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("AIRFLOW__CORE__EXECUTOR", "CeleryExecutor")
    monkeypatch.delenv("AIRFLOW__P2PSMS__DETAIL_PATH", raising=False)
    monkeypatch.delenv("AIRFLOW__P2PSMS__CHECKPOINT_PATH", raising=False)
    with pytest.raises(SmsConfigurationError, match=r"Set \[p2psms\] detail_path .* or give the send an outcomes"):
        send(200)
    assert sms_connections.messages() == []
    # A list too short to fill the receipt always stays inline: no storage needed.
    assert "\n" in send(100)["messages"]
    # Checkpoints kept where every worker reads them take the detail too.
    monkeypatch.setenv("AIRFLOW__P2PSMS__CHECKPOINT_PATH", f"file://{tmp_path}/shared")
    receipt = P2PSmsOperator(
        task_id="send", sms_conn_id="bitel_default", message="Hello {{ row.name }}", recipients=people(1000)
    ).execute(task_context(MemoryTaskState()))
    assert receipt["messages"].startswith(f"detail:file://{tmp_path}/shared/detail/reliability/")


@pytest.fixture
def crm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "crm.db"
    monkeypatch.setenv("AIRFLOW_CONN_CRM_DB", json.dumps({"conn_type": "sqlite", "host": str(path)}))
    return path


def table_statuses(path: Path) -> dict[str, int]:
    with sqlite3.connect(path) as connection:
        return dict(connection.execute("SELECT status, COUNT(*) FROM p2psms_outcomes GROUP BY status").fetchall())


def keyed(count: int) -> list[dict[str, Any]]:
    return [{"id": f"K{index}", **row} for index, row in enumerate(people(count))]


def test_with_an_outcomes_table_the_receipt_points_at_it_in_every_sensor_mode(
    sms_connections, crm: Path, monkeypatch
) -> None:
    """Even with CeleryExecutor and no detail_path: the table is the detail, and every worker can read it."""
    monkeypatch.setenv("AIRFLOW__CORE__EXECUTOR", "CeleryExecutor")
    monkeypatch.delenv("AIRFLOW__P2PSMS__DETAIL_PATH", raising=False)
    sms_connections.configure(delivery_seconds=0)
    operator = P2PSmsOperator(
        task_id="send",
        sms_conn_id="bitel_default",
        message="Hi {{ row.name }}",
        recipients=with_one_failing(keyed(2500)),
        key_field="id",
        outcomes_conn_id="crm_db",
    )
    receipt = operator.execute(task_context(MemoryTaskState()))
    assert receipt["messages"] == OUTCOMES_REF
    assert size(receipt) < 4096
    assert len(list(iter_receipt_messages(receipt))) == 2500

    # Rescheduled pokes: the table holds the statuses, the checkpoint only the poll count and the deadline.
    state = MemoryTaskState()
    target = {"mode": "reschedule", "give_up_after": 30, "min_delivered_ratio": 0.99}
    sensor = P2PSmsDeliverySensor(task_id="wait", receipt=receipt, **target)
    ti = SensorTaskInstance()
    done = sensor.poke({"ti": ti, "task_state_store": state})
    if not done:
        assert set(state.get(STATE_KEY)) == {"polls", "deadline", "try"}
        assert state.largest < 200
        done = P2PSmsDeliverySensor(task_id="wait", receipt=receipt, **target).poke(
            {"ti": ti, "task_state_store": state}
        )
    assert done
    assert table_statuses(crm) == {"delivered": 2499, "failed": 1}

    # Deferrable: the trigger's arguments and its event are small; it reads the messages from the table.
    with sqlite3.connect(crm) as connection:
        connection.execute("UPDATE p2psms_outcomes SET status = 'pending', final_at = NULL, price = NULL")
    deferring = P2PSmsDeliverySensor(
        task_id="wait", receipt=receipt, deferrable=True, poke_interval=0.1, min_delivered_ratio=0.99
    )
    with pytest.raises(BaseException) as deferred:
        deferring.execute({"ti": SensorTaskInstance()})
    assert type(deferred.value).__name__ == "TaskDeferred"
    trigger = deferred.value.trigger
    assert size(trigger.serialize()[1]) < 2048

    async def run() -> list[dict[str, Any]]:
        return [event.payload async for event in trigger.run()]

    [event] = asyncio.run(run())
    assert size(event) < 4096 and event["messages"] is None
    report = deferring.execute_complete({"ti": SensorTaskInstance()}, event)
    assert (report["ending"], report["total"], report["counts"]["delivered"]) == ("all_final", 2500, 2499)
    assert report["outcomes"] == {"conn_id": "crm_db", "table": "p2psms_outcomes"}
    assert table_statuses(crm) == {"delivered": 2499, "failed": 1}


def test_a_table_that_lost_rows_is_reported_not_tracked_short(sms_connections, crm: Path) -> None:
    operator = P2PSmsOperator(
        task_id="send",
        sms_conn_id="bitel_default",
        message="Hi {{ row.name }}",
        recipients=keyed(1000),
        key_field="id",
        outcomes_conn_id="crm_db",
    )
    receipt = operator.execute(task_context(MemoryTaskState()))
    with sqlite3.connect(crm) as connection:
        connection.execute("DELETE FROM p2psms_outcomes WHERE row_key IN ('K1', 'K2')")
    with pytest.raises(SmsInputError, match=r"says its send had 1000 messages accepted.* has 998 rows"):
        P2PSmsDeliverySensor(task_id="wait", receipt=receipt).poke({"ti": SensorTaskInstance()})


def test_a_long_rescheduled_state_goes_to_a_detail_file_and_comes_back(tmp_path: Path) -> None:
    """A million messages in mixed states do not compress under the bound: the checkpoint refers to a file."""
    count = 200_000
    rng = random.Random(7)
    letters = "".join(rng.choice("psdfb") for _ in range(count))
    tracker = DeliveryTracker(
        "".join(f"{index} 0912{index:07d}\n" for index in range(count)), state=pack_state(letters), polls=4
    )
    store = MemoryTaskState()
    receipt = {"messages": "detail:file:///unused"}
    save_progress(store, Progress(tracker, None, 1), receipt, lambda: tmp_path / "wait")
    saved = store.get(STATE_KEY)
    assert saved["state"].startswith("detail:") and size(saved) < 1024
    assert len(pack_state(letters)) > INLINE_LIMIT

    class Log:
        def warning(self, *args: Any) -> None:
            raise AssertionError(args)

    resumed = load_progress(
        {"messages": tracker.messages}, None, store, give_up_after=None, try_number=1, log=Log()
    ).tracker
    assert resumed.statuses.codes == tracker.statuses.codes and resumed.polls == 4
