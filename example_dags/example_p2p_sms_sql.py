"""
Recipients from a SQL query, one personal text each, then wait until they are delivered.

Connections (the demo sets them by environment variable):

* ``p2psms_demo_db``: any common-sql database; the demo uses SQLite with a ``customers`` table
  (``phone``, ``name``, ``code``, ``active``).
* ``p2psms_gateway``: the SMS gateway, a ``bitel`` or an ``ippanel`` connection: its type picks the
  gateway, so switching gateways is switching this connection.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG

from airflow_provider_p2psms.operators.p2p_sms import P2PSmsOperator
from airflow_provider_p2psms.sensors.p2p_sms import P2PSmsDeliverySensor

with DAG(
    dag_id="example_p2p_sms_sql",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="Asia/Tehran"),
    catchup=False,
    tags=["example", "sms"],
    doc_md=__doc__,
):
    send = P2PSmsOperator(
        task_id="send_codes",
        sms_conn_id="p2psms_gateway",
        sql_conn_id="p2psms_demo_db",
        sql="SELECT phone, name, code FROM customers WHERE active = :active ORDER BY id",
        parameters={"active": 1},
        message="سلام {{ row.name }}، کد تخفیف شما {{ row.code }} است.",
        retries=2,
    )

    wait = P2PSmsDeliverySensor(
        task_id="wait_for_delivery",
        receipt=send.output,
        min_delivered_ratio=0.6,
        poke_interval=2,
        timeout=300,
    )
