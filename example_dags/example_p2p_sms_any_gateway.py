"""
One DAG, either gateway: the SMS connection is a DAG param, so a run picks Bitel or IPPanel.

Trigger it with ``{"sms_conn_id": "ippanel_default"}`` to send through IPPanel; the operator picks
the hook from the connection's type, so nothing else changes.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, Param

from airflow_provider_p2psms.operators.p2p_sms import P2PSmsOperator
from airflow_provider_p2psms.sensors.p2p_sms import P2PSmsDeliverySensor

with DAG(
    dag_id="example_p2p_sms_any_gateway",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="Asia/Tehran"),
    catchup=False,
    tags=["example", "sms"],
    params={
        "sms_conn_id": Param("bitel_default", enum=["bitel_default", "ippanel_default"]),
        "numbers": Param(["09121234567", "09351234567"], type="array"),
    },
    doc_md=__doc__,
):
    send = P2PSmsOperator(
        task_id="send",
        sms_conn_id="{{ params.sms_conn_id }}",
        recipients="{{ params.numbers | tojson }}",
        message="Your Airflow run {{ run_id }} finished.",
    )

    P2PSmsDeliverySensor(task_id="wait_for_delivery", receipt=send.output, poke_interval=2, timeout=300)
