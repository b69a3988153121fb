"""The main job on a real Airflow 3: send personal texts, then wait for delivery, for both gateways."""

from __future__ import annotations

import pytest

from airflow_provider_p2psms.models import receipt_messages
from tests.helpers import GATEWAYS, connection_env


@pytest.mark.integration
@pytest.mark.parametrize("gateway", GATEWAYS)
def test_xcom_rows_are_sent_one_text_each_and_delivered(run_dag, sandbox, gateway):
    result = run_dag(
        f"""
        @task
        def extract():
            return [
                {{"phone": "0912 123 4567", "name": "نازنین", "code": "A1"}},
                {{"phone": "+989351234567", "name": "Reza", "code": "{{{{ 7*7 }}}}"}},
            ]

        send = P2PSmsOperator(
            task_id="send",
            sms_conn_id="{gateway}_default",
            recipients=extract(),
            message="سلام {{{{ row.name }}}}، کد شما {{{{ row.code }}}}",
        )
        P2PSmsDeliverySensor(task_id="wait", receipt=send.output, poke_interval=0.5, timeout=60)
        """,
        connection_env(sandbox),
    )
    assert result.returncode == 0, result.output[-3000:]
    assert result.state("send") == "success"
    assert result.state("wait") == "success"

    received = sorted((m["recipient"], m["text"]) for m in sandbox.messages())
    local = gateway == "bitel"
    assert received == sorted(
        [
            ("09121234567" if local else "+989121234567", "سلام نازنین، کد شما A1"),
            ("09351234567" if local else "+989351234567", "سلام Reza، کد شما {{ 7*7 }}"),
        ]
    )
    receipt = result.xcom("send")
    assert receipt["provider"] == gateway
    assert receipt["counts"]["sent"] == 2
    assert {m[1] for m in receipt_messages(receipt["messages"])} == {r for r, _ in received}
    report = result.xcom("wait")
    assert report["counts"]["delivered"] == 2
    assert report["delivered_ratio"] == 1.0
