"""
Recipients from an upstream task's XCom, sent through IPPanel, delivery awaited in the triggerer.

The ``extract`` task stands for whatever produces your rows (an API call, a pandas step...): it
returns a list of dicts. The sensor is deferrable, so waiting costs no worker slot.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, task

from airflow_provider_p2psms.operators.p2p_sms import P2PSmsOperator
from airflow_provider_p2psms.sensors.p2p_sms import P2PSmsDeliverySensor

with DAG(
    dag_id="example_p2p_sms_xcom",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="Asia/Tehran"),
    catchup=False,
    tags=["example", "sms"],
    doc_md=__doc__,
):

    @task
    def extract() -> list[dict[str, str]]:
        return [
            {"mobile": "0912 123 4567", "name": "نازنین", "amount": "۱۲۰٬۰۰۰"},
            {"mobile": "+98 935 765 4321", "name": "Reza", "amount": "80,000"},
            {"mobile": "۰۹۱۳۵۵۵۱۲۱۲", "name": "مهسا", "amount": "45,000"},
        ]

    send = P2PSmsOperator(
        task_id="send_reminders",
        sms_conn_id="ippanel_default",
        recipients=extract(),
        phone_field="mobile",
        message="{{ row.name }} عزیز، قسط {{ row.amount }} تومانی شما سررسید {{ ds }} است.",
        retries=2,
    )

    P2PSmsDeliverySensor(
        task_id="wait_for_delivery",
        receipt=send.output,
        deferrable=True,
        poke_interval=2,
        timeout=300,
    )
