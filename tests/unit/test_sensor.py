"""P2PSmsDeliverySensor in process: its arguments, the ratio's denominator, its poke state, its store check."""

from __future__ import annotations

import datetime
import json
from typing import Any

import pytest

from airflow_provider_p2psms.exceptions import SmsConfigurationError, SmsDeliveryFailed
from airflow_provider_p2psms.hooks.factory import get_sms_hook
from airflow_provider_p2psms.models import OutgoingSms
from airflow_provider_p2psms.sensors.p2p_sms import P2PSmsDeliverySensor
from airflow_provider_p2psms.version_compat import AIRFLOW_V_3_3_PLUS
from tests.reliability.support import MemoryTaskState


class RecordingTaskInstance:
    """The part of a task instance the sensor uses, remembering what it pushed."""

    dag_id = "sensor_unit"
    run_id = "manual__1"
    task_id = "wait"
    map_index = -1

    def __init__(self, try_number: int = 1) -> None:
        self.try_number = try_number
        self.xcoms: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcoms[key] = json.loads(json.dumps(value))

    def get_first_reschedule_date(self, context: Any) -> None:
        return None


def context(state: MemoryTaskState | None = None, try_number: int = 1) -> dict[str, Any]:
    found: dict[str, Any] = {"ti": RecordingTaskInstance(try_number)}
    if state is not None:
        found["task_state_store"] = state
    return found


def receipt(messages: str = "", **counts: int) -> dict[str, Any]:
    base = {"requested": 0, "sent": 0, "resumed": 0, "invalid": 0, "duplicate": 0, "uncertain": 0, "dry_run": 0}
    return {
        "version": 1,
        "provider": "bitel",
        "sms_conn_id": "bitel_default",
        "counts": {**base, **counts},
        "messages": messages,
        "problems": [],
    }


def sent(numbers: list[str]) -> str:
    hook = get_sms_hook("bitel_default")
    receipts = hook.send_batch([OutgoingSms(hook.normalize_number(n), "Hi") for n in numbers])
    return "\n".join(f"{r.message_id} {r.recipient}" for r in receipts)


# --------------------------------------------------------------------------- arguments


@pytest.mark.parametrize("give_up_after", [60, 61, datetime.timedelta(minutes=2), 0, -1])
def test_give_up_after_must_be_shorter_than_the_timeout(give_up_after):
    with pytest.raises(SmsConfigurationError) as caught:
        P2PSmsDeliverySensor(task_id="wait", receipt={}, timeout=60, give_up_after=give_up_after)
    text = str(caught.value)
    assert "P2PSmsDeliverySensor 'wait': give_up_after" in text
    assert "shorter than timeout (60 s)" in text


def test_give_up_after_takes_seconds_or_a_timedelta():
    assert P2PSmsDeliverySensor(task_id="a", receipt={}, timeout=60, give_up_after=30).give_up_after == 30.0
    sensor = P2PSmsDeliverySensor(task_id="b", receipt={}, timeout=600, give_up_after=datetime.timedelta(minutes=5))
    assert sensor.give_up_after == 300.0
    assert P2PSmsDeliverySensor(task_id="c", receipt={}).give_up_after is None
    assert P2PSmsDeliverySensor(task_id="d", receipt={}).fail_early is True


def test_a_dag_with_a_bad_give_up_after_does_not_parse():
    from airflow.sdk import DAG

    with pytest.raises(SmsConfigurationError), DAG(dag_id="bad_give_up", schedule=None):
        P2PSmsDeliverySensor(task_id="wait", receipt={}, timeout=10, give_up_after=10)


# --------------------------------------------------------------------------- the ratio's denominator


def test_an_all_uncertain_send_does_not_pass():
    """Nothing was confirmed sent, so nothing can be delivered: a 90% target fails, with the report."""
    sensor = P2PSmsDeliverySensor(task_id="wait", receipt=receipt(requested=3, uncertain=3), min_delivered_ratio=0.9)
    ctx = context()
    with pytest.raises(SmsDeliveryFailed) as caught:
        sensor.poke(ctx)
    assert "Delivery below target: 0.0% delivered, min_delivered_ratio is 90.0%" in str(caught.value)
    assert "3 were uncertain and 0 rejected at send" in str(caught.value)
    report = ctx["ti"].xcoms["return_value"]
    assert (report["attempted"], report["total"], report["uncertain_at_send"]) == (3, 0, 3)
    assert report["delivered_ratio"] == 0.0


def test_messages_rejected_at_send_count_as_not_delivered(sms_connections):
    sms_connections.configure(delivery_seconds=0)
    messages = sent(["09121234567", "09351234567", "09131234567"])
    sensor = P2PSmsDeliverySensor(
        task_id="wait", receipt=receipt(messages, requested=4, sent=3, rejected=1), min_delivered_ratio=0.8
    )
    ctx = context()
    with pytest.raises(SmsDeliveryFailed, match=r"75\.0% delivered, min_delivered_ratio is 80\.0%"):
        sensor.poke(ctx)
    report = ctx["ti"].xcoms["return_value"]
    assert (report["attempted"], report["rejected_at_send"], report["counts"]["delivered"]) == (4, 1, 3)
    assert report["delivered_ratio"] == 0.75

    lenient = P2PSmsDeliverySensor(
        task_id="wait", receipt=receipt(messages, requested=4, sent=3, rejected=1), min_delivered_ratio=0.75
    )
    outcome = lenient.poke(context())
    assert outcome and outcome.xcom_value["delivered_ratio"] == 0.75


def test_a_send_that_attempted_nothing_passes_and_says_so():
    sensor = P2PSmsDeliverySensor(task_id="wait", receipt=receipt(requested=2, invalid=2))
    outcome = sensor.poke(context())
    assert outcome
    report = outcome.xcom_value
    assert report["ending"] == "nothing_attempted"
    assert report["attempted"] == 0
    assert report["delivered_ratio"] is None


# --------------------------------------------------------------------------- rescheduled pokes


def test_rescheduled_pokes_keep_a_small_state_with_the_deadline(sms_connections):
    """Each rescheduled poke is a fresh sensor object; they share the state store, and the deadline in it."""
    sms_connections.configure(delivery_seconds=0)
    messages = sent(["09121230009"] + [f"0912{5001000 + index:07d}" for index in range(99)])
    state = MemoryTaskState()

    def poke(try_number: int = 1) -> Any:
        sensor = P2PSmsDeliverySensor(
            task_id="wait", receipt=receipt(messages), mode="reschedule", timeout=60, give_up_after=30
        )
        return sensor.poke(context(state, try_number))

    assert poke() is False
    saved = state.get("p2psms.delivery")
    assert set(saved) == {"state", "polls", "parts", "price", "deadline", "try"}
    assert state.largest < 300
    first_deadline = saved["deadline"]
    assert poke() is False
    assert state.get("p2psms.delivery")["deadline"] == first_deadline
    assert state.get("p2psms.delivery")["state"].count("d") == 99
    # A new try has a deadline of its own, and keeps what the earlier one learnt.
    assert poke(try_number=2) is False
    assert state.get("p2psms.delivery")["deadline"] > first_deadline
    assert state.get("p2psms.delivery")["state"].count("d") == 99


def test_the_state_of_rescheduled_pokes_is_gone_when_the_wait_ends(sms_connections):
    sms_connections.configure(delivery_seconds=0)
    state = MemoryTaskState()
    sensor = P2PSmsDeliverySensor(task_id="wait", receipt=receipt(sent(["09121234567"])), mode="reschedule")
    assert sensor.poke(context(state))
    assert state.values == {}


@pytest.mark.skipif(AIRFLOW_V_3_3_PLUS, reason="Airflow 3.3+ has the task state store, which every worker reaches")
@pytest.mark.parametrize("soft_fail", [False, True])
def test_rescheduled_pokes_on_remote_workers_without_shared_storage_fail_before_polling(
    sms_connections, monkeypatch, soft_fail
):
    """
    Without the task state store (Airflow < 3.3), a rescheduled poke may run on another machine than the
    one before: with no checkpoint_path and a non-local executor, the sensor fails before its first poke.
    A set-up error is not a delivery failure: ``soft_fail`` does not turn it into a skip.
    """
    monkeypatch.delenv("AIRFLOW__P2PSMS__CHECKPOINT_PATH")
    monkeypatch.setenv("AIRFLOW__CORE__EXECUTOR", "CeleryExecutor")
    sensor = P2PSmsDeliverySensor(
        task_id="wait",
        receipt=receipt("a" * 32 + " 09121234567"),
        mode="reschedule",
        poke_interval=1,
        soft_fail=soft_fail,
    )
    with pytest.raises(SmsConfigurationError) as caught:
        sensor.execute(context())
    assert "runs CeleryExecutor" in str(caught.value)
    assert "set checkpoint_path on the task, or [p2psms] checkpoint_path" in str(caught.value)
    assert sms_connections.requests() == []
