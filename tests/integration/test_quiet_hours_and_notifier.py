"""Quiet hours and the SMS notifier, on a real Airflow 3 against the sandbox."""

from __future__ import annotations

import pendulum
import pytest

from airflow_provider_p2psms.version_compat import AIRFLOW_V_3_2_PLUS
from tests.helpers import connection_env

pytestmark = pytest.mark.integration


def test_outside_the_window_the_operator_defers_until_it_opens(run_dag, sandbox):
    # The window is computed when the run starts, so that Airflow's start-up time does not matter:
    # it opens 10 seconds after the upstream task, and stays open two hours.
    result = run_dag(
        """
        @task
        def window():
            now = pendulum.now("Asia/Tehran")
            return [now.add(seconds=10).format("HH:mm:ss"), now.add(hours=2).format("HH:mm:ss")]

        bounds = ("{{ ti.xcom_pull('window')[0] }}", "{{ ti.xcom_pull('window')[1] }}")
        modes = (("schedule", "ippanel_default", "schedule"), ("send", "bitel_default", "defer"))
        tasks = [
            P2PSmsOperator(
                task_id=task_id,
                sms_conn_id=conn_id,
                recipients=["09121234567"],
                message="Good morning",
                send_window=bounds,
                timezone="Asia/Tehran",
                outside_window=outside,
            )
            for task_id, conn_id, outside in modes
        ]
        window() >> tasks[0] >> tasks[1]
        """,
        connection_env(sandbox),
    )
    assert result.returncode == 0, result.output[-3000:]
    assert result.state("send") == "success"
    assert result.state("schedule") == "success"
    assert "Outside the send window" in result.output
    assert "Pausing task as DEFERRED" in result.output
    today = pendulum.now("Asia/Tehran")
    opens = pendulum.parse(result.xcom("window")[0], tz="Asia/Tehran").set(
        year=today.year, month=today.month, day=today.day
    )
    sent = {m["provider"]: m for m in sandbox.messages()}
    assert sent["bitel"]["accepted_at"] >= opens.timestamp()
    assert sent["ippanel"]["send_time"] == opens.in_timezone("UTC").strftime("%Y-%m-%d %H:%M:%S")


def test_notifier_texts_on_failure_and_on_success(run_dag, sandbox):
    # Failure callbacks get the exception in their context from Airflow 3.2 on.
    reason = "{{ exception }}" if AIRFLOW_V_3_2_PLUS else "{{ ti.state.value }}"
    result = run_dag(
        """
        from airflow_provider_p2psms.notifications.p2p_sms import P2PSmsNotifier, send_p2p_sms_notification

        @task(
            on_failure_callback=P2PSmsNotifier(
                sms_conn_id="ippanel_default",
                phone_numbers=["0912 123 4567", "not-a-number"],
                message="{{ dag.dag_id }}.{{ ti.task_id }} failed: REASON",
            )
        )
        def breaks():
            raise ValueError("disk full")

        @task(
            on_success_callback=send_p2p_sms_notification(
                sms_conn_id="bitel_default", phone_numbers="09351234567", message="{{ ti.task_id }} ok on {{ ds }}"
            )
        )
        def works():
            return 1

        breaks()
        works()
        """.replace("REASON", reason),
        connection_env(sandbox),
    )
    assert result.state("breaks") == "failed"
    assert result.state("works") == "success"
    texts = {(m["provider"], m["recipient"]): m["text"] for m in sandbox.messages()}
    expected = "disk full" if AIRFLOW_V_3_2_PLUS else "failed"
    assert texts[("ippanel", "+989121234567")] == f"{result.dag_id}.breaks failed: {expected}"
    assert texts[("bitel", "09351234567")].startswith("works ok on 20")
    assert len(texts) == 2
    assert "SMS notification: leaving out" in result.output
