"""How P2PSmsDeliverySensor's wait ends, on a real Airflow 3, in poke, reschedule and deferrable modes.

Every ending leaves the delivery report as the task's ``return_value``: success, failure by ratio, the
give-up deadline, Airflow's own ``timeout``, and a ``soft_fail`` skip. The sandbox never makes numbers
ending in ``0009`` final, fails delivery to ``0001``, and delivers the rest within 0.6 s.
"""

from __future__ import annotations

import json

import pytest

from airflow_provider_p2psms.utils.phone import mask_phone
from airflow_provider_p2psms.version_compat import AIRFLOW_V_3_3_PLUS
from tests.helpers import connection_env

pytestmark = pytest.mark.integration

MODES = {"poke": 'mode="poke"', "reschedule": 'mode="reschedule"', "deferrable": "deferrable=True"}

#: Three delivered, one delivery failed, one never final: at best 80%, 60% at a deadline.
NUMBERS = ["09121234567", "09351234567", "09131234567", "09121230001", "09121230009"]


@pytest.mark.parametrize("mode", MODES)
def test_every_ending_returns_the_delivery_report(run_dag, sandbox, mode):
    result = run_dag(
        f"""
        send = P2PSmsOperator(task_id="send", sms_conn_id="bitel_default", recipients={NUMBERS!r}, message="Hi")
        common = dict(receipt=send.output, poke_interval=0.3, {MODES[mode]})
        P2PSmsDeliverySensor(task_id="gave_up_met", min_delivered_ratio=0.6, give_up_after=2, timeout=30, **common)
        P2PSmsDeliverySensor(task_id="gave_up_below", min_delivered_ratio=0.7, give_up_after=2, timeout=30, **common)
        P2PSmsDeliverySensor(task_id="unreachable", min_delivered_ratio=0.9, timeout=60, **common)
        P2PSmsDeliverySensor(task_id="unreachable_soft", min_delivered_ratio=0.9, timeout=60, soft_fail=True, **common)
        P2PSmsDeliverySensor(task_id="timed_out", min_delivered_ratio=0.6, timeout=3, **common)
        P2PSmsDeliverySensor(task_id="timed_out_soft", min_delivered_ratio=0.6, timeout=3, soft_fail=True, **common)
        """,
        connection_env(sandbox),
    )
    expected = {
        "gave_up_met": ("success", "gave_up"),
        "gave_up_below": ("failed", "gave_up"),
        "unreachable": ("failed", "unreachable"),
        "unreachable_soft": ("skipped", "unreachable"),
        "timed_out": ("failed", "timeout"),
        "timed_out_soft": ("skipped", "timeout"),
    }
    found = {}
    for task_id in expected:
        report = result.xcom(task_id)
        found[task_id] = (result.state(task_id), report and report["ending"])
    assert found == expected, result.output[-4000:]

    for task_id in expected:
        report = result.xcom(task_id)
        assert report["attempted"] == report["total"] == 5, task_id
        assert report["counts"]["failed"] == 1, task_id
        # The never-final number is still not final: no ending waited for it.
        assert report["final"] == 4 and report["counts"]["sent"] + report["counts"]["pending"] == 1, task_id
        assert report["counts"]["delivered"] == 3, task_id
        assert report["delivered_ratio"] == 0.6, task_id
        assert all("***" in message[1] for message in report["messages"]), task_id

    assert result.state("send") == "success"
    assert (
        "Delivery below target: 60.0% delivered, min_delivered_ratio is 70.0% (gave up after give_up_after=2 s, "
        "with 1 not final counted as not delivered)" in result.output
    )
    assert "Delivery below target: 60.0% delivered, min_delivered_ratio is 90.0% (at most 80.0% can still be" in (
        result.output
    )
    assert f"{mask_phone('09121230001')} (failed)" in result.output
    if mode == "deferrable":
        assert "Pausing task as DEFERRED" in result.output
        assert "Sensor has timed out: its timeout of 3 s passed with 1 of 5 messages not final" in result.output
    else:
        assert "Sensor has timed out; run duration of" in result.output


@pytest.mark.parametrize("mode", ["poke", "deferrable"])
def test_no_success_without_a_confirmed_delivery(run_dag, sandbox, mode):
    """
    Every send request is accepted and then its connection dropped: the receipt holds no message and
    counts both as uncertain. A 90% target fails; only a target of 0 passes. A send whose every row is
    invalid attempted nothing, and passes, saying so.
    """
    sandbox.configure(send_drop_rate=1.0)
    result = run_dag(
        f"""
        send = P2PSmsOperator(
            task_id="send", sms_conn_id="bitel_default", recipients=["09121234567", "09351234567"], message="Hi"
        )
        common = dict(receipt=send.output, poke_interval=0.3, timeout=30, {MODES[mode]})
        P2PSmsDeliverySensor(task_id="wait", min_delivered_ratio=0.9, **common)
        P2PSmsDeliverySensor(task_id="wait_for_nothing", min_delivered_ratio=0.0, **common)
        invalid = P2PSmsOperator(
            task_id="send_invalid",
            sms_conn_id="bitel_default",
            recipients=["not a number", "02112345678"],
            message="Hi",
            on_empty="succeed",
        )
        P2PSmsDeliverySensor(
            task_id="wait_invalid", receipt=invalid.output, poke_interval=0.3, timeout=30, {MODES[mode]}
        )
        """,
        connection_env(sandbox),
    )
    assert result.state("send") == "success", result.output[-4000:]
    assert result.xcom("send")["counts"]["uncertain"] == 2
    assert result.state("wait") == "failed"
    assert result.state("wait_for_nothing") == "success"
    assert result.state("send_invalid") == "success"
    assert result.state("wait_invalid") == "success"

    report = result.xcom("wait")
    assert (report["attempted"], report["total"], report["uncertain_at_send"]) == (2, 0, 2)
    assert report["delivered_ratio"] == 0.0
    assert "Delivery below target: 0.0% delivered, min_delivered_ratio is 90.0%" in result.output
    assert "2 were uncertain and 0 rejected at send: not delivered" in result.output
    assert result.xcom("wait_for_nothing")["delivered_ratio"] == 0.0
    nothing = result.xcom("wait_invalid")
    assert (nothing["ending"], nothing["attempted"], nothing["delivered_ratio"]) == ("nothing_attempted", 0, None)
    assert "The send attempted no message" in result.output


def test_rescheduled_pokes_need_storage_every_worker_reads(run_dag, sandbox, tmp_path, monkeypatch):
    """
    ``[core] executor`` names a remote executor (``airflow dags test`` itself runs in process, and accepts
    the setting without Celery installed), and no checkpoint_path is set. Before Airflow 3.3 there is no
    task state store, so the rescheduled sensor fails before its first poke, asking for shared storage,
    even with ``soft_fail``; on 3.3+ it keeps its state in the task state store and waits as usual.
    """
    monkeypatch.delenv("AIRFLOW__P2PSMS__CHECKPOINT_PATH")
    result = run_dag(
        f"""
        send = P2PSmsOperator(
            task_id="send",
            sms_conn_id="bitel_default",
            recipients=["09121234567"],
            message="Hi",
            checkpoint_path={f"file://{tmp_path}"!r},
        )
        common = dict(receipt=send.output, mode="reschedule", poke_interval=0.3, timeout=30)
        P2PSmsDeliverySensor(task_id="wait", **common)
        P2PSmsDeliverySensor(task_id="wait_soft", soft_fail=True, **common)
        """,
        {**connection_env(sandbox), "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor"},
    )
    assert result.state("send") == "success", result.output[-4000:]
    status_requests = [entry for entry in sandbox.requests() if entry["kind"] == "status"]
    if AIRFLOW_V_3_3_PLUS:
        assert (result.state("wait"), result.state("wait_soft")) == ("success", "success")
        assert result.xcom("wait")["counts"]["delivered"] == 1
    else:
        assert (result.state("wait"), result.state("wait_soft")) == ("failed", "failed")
        assert "this Airflow runs CeleryExecutor, so a retry or a rescheduled poke may run on another" in result.output
        assert status_requests == []


REAL_DAG = """
from __future__ import annotations

import pendulum
from airflow.sdk import DAG
from airflow_provider_p2psms.operators.p2p_sms import P2PSmsOperator
from airflow_provider_p2psms.sensors.p2p_sms import P2PSmsDeliverySensor

with DAG(dag_id="sensor_endings", schedule=None, start_date=pendulum.datetime(2026, 1, 1), catchup=False):
    send = P2PSmsOperator(
        task_id="send", sms_conn_id="bitel_default", recipients=["09121234567", "09121230009"], message="Hi"
    )
    P2PSmsDeliverySensor(
        task_id="wait_deferred", receipt=send.output, deferrable=True, poke_interval=1, timeout=15,
        min_delivered_ratio=0.5,
    )
    P2PSmsDeliverySensor(
        task_id="wait_rescheduled", receipt=send.output, mode="reschedule", poke_interval=8, timeout=90,
        give_up_after=10, min_delivered_ratio=0.5,
    )
"""


def test_deadlines_in_a_real_scheduler_and_triggerer(tmp_path, sandbox):
    """
    ``airflow dags test`` never times a deferral out; a scheduler does, here checking every second. The
    trigger ends before that, so the deferred sensor still reports the timeout itself. The rescheduled
    sensor's pokes run in fresh processes, which find the deadline the first one set. (Its pokes are 8 s
    apart: at 1 s, the scheduler can re-queue the task before it has processed the end of the last poke,
    and then fails it, "task state changed externally", an Airflow race that has nothing to do with us
    (apache/airflow#71172); at 4 s it still did once on a loaded two-core machine.)
    """
    from tests.integration.deployment import query, run_to_the_end, standalone

    env = {**connection_env(sandbox), "AIRFLOW__SCHEDULER__TRIGGER_TIMEOUT_CHECK_INTERVAL": "1"}
    with standalone(tmp_path, "sensor_endings", REAL_DAG, env) as deployment:
        _, states = run_to_the_end(deployment, "sensor_endings", timeout=240)
        reports = {
            task_id: json.loads(value)
            for task_id, value in query(
                deployment.db,
                "SELECT task_id, value FROM xcom WHERE dag_id = 'sensor_endings' AND key = 'return_value'",
            )
        }
        reschedules = query(deployment.db, "SELECT COUNT(*) FROM task_reschedule")[0][0]
        logs = deployment.task_logs()
        scheduler_log = deployment.log.read_text(errors="replace")

    assert states == {"send": "success", "wait_deferred": "failed", "wait_rescheduled": "success"}, (
        deployment.log_tail()
    )
    assert reports["wait_deferred"]["ending"] == "timeout"
    assert "Sensor has timed out: its timeout of 15 s passed with 1 of 2 messages not final" in logs
    assert "deferred tasks without fired triggers" not in scheduler_log  # Airflow's deferral timeout never fired
    assert reports["wait_rescheduled"]["ending"] == "gave_up"
    assert reports["wait_rescheduled"]["delivered_ratio"] == 0.5
    assert reschedules >= 2
