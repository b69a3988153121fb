"""
Every 15 minutes, collect the opt-out replies (``11``, ``لغو``, ``لغو ۱۱``...) a campaign received.

Each run reads the IPPanel inbox after the last reply it read (the cursor, kept in an Airflow Variable),
and upserts the numbers that opted out into the table ``p2psms_opt_outs``, created when missing.
Campaigns then leave those numbers out.

Connections (the demo sets them by environment variable):

* ``ippanel_default``: the IPPanel account whose lines receive the replies.
* ``p2psms_demo_db``: any common-sql database (SQLite, PostgreSQL, MySQL) for the opt-out table.
"""

from __future__ import annotations

import datetime

import pendulum
from airflow.sdk import DAG

from airflow_provider_p2psms.operators.opt_out_replies import P2PSmsOptOutRepliesOperator

with DAG(
    dag_id="example_p2p_sms_opt_outs",
    schedule=datetime.timedelta(minutes=15),
    start_date=pendulum.datetime(2026, 1, 1, tz="Asia/Tehran"),
    catchup=False,
    # One run at a time: each run starts from the cursor the previous one saved.
    max_active_runs=1,
    tags=["example", "sms"],
    doc_md=__doc__,
):
    P2PSmsOptOutRepliesOperator(
        task_id="collect_opt_outs",
        sms_conn_id="ippanel_default",
        sql_conn_id="p2psms_demo_db",
        table="p2psms_opt_outs",
        retries=2,
        retry_delay=datetime.timedelta(minutes=1),
    )
