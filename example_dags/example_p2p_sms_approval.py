"""
A campaign a person approves before it goes out: dry run, approval, send, wait for delivery.

1. ``dry_run`` reads, renders and checks every recipient and sends nothing. Its receipt has the counts
   (rows, messages to send, invalid, duplicate, excluded), the estimated cost when the gateway prices texts
   before sending, the message template and three sample texts with their numbers masked.
2. ``approve`` (Airflow's human-in-the-loop ``ApprovalOperator``) shows that summary and waits for
   "Approve" or "Reject", in the UI's Required Actions page or through the REST API
   (``PATCH /api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/approve/-1/hitlDetails``). It texts the
   approver that a campaign is waiting. "Reject" skips the send.
3. ``send`` is given the approved receipt: it reads and checks every row again before the first text and
   sends nothing if the campaign moved more than ``approval_tolerance`` since the approval (rows added or
   removed between the dry run and the send), or if its template or connection is not the one approved.
4. ``wait_for_delivery`` follows the texts until they are final.

Connections and variables (the demo sets them by environment variable):

* ``p2psms_demo_db``: any common-sql database; the demo uses SQLite with a ``customers`` table
  (``phone``, ``name``, ``code``, ``active``).
* ``p2psms_gateway``: the SMS gateway, a ``bitel`` or an ``ippanel`` connection.
* the Variable ``p2psms_approver_phone``: the mobile number of the person who approves campaigns.
"""

from __future__ import annotations

import datetime

import pendulum
from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.sdk import DAG

from airflow_provider_p2psms.campaign.approval import approval_summary
from airflow_provider_p2psms.notifications.p2p_sms import P2PSmsNotifier
from airflow_provider_p2psms.operators.p2p_sms import P2PSmsOperator
from airflow_provider_p2psms.sensors.p2p_sms import P2PSmsDeliverySensor

# What the dry run checks and the send sends: one definition, so that the two cannot drift apart.
CAMPAIGN = {
    "sms_conn_id": "p2psms_gateway",
    "sql_conn_id": "p2psms_demo_db",
    "sql": "SELECT id, phone, name, code FROM customers WHERE active = 1 ORDER BY id",
    "key_field": "id",
    "message": "سلام {{ row.name }}، کد تخفیف شما {{ row.code }} است.",
}

with DAG(
    dag_id="example_p2p_sms_approval",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="Asia/Tehran"),
    catchup=False,
    tags=["example", "sms"],
    doc_md=__doc__,
    # The approval's body calls it: {{ approval_summary(receipt) }}.
    user_defined_macros={"approval_summary": approval_summary},
):
    dry_run = P2PSmsOperator(task_id="dry_run", dry_run=True, **CAMPAIGN)

    approve = ApprovalOperator(
        task_id="approve",
        subject="Send the campaign of {{ dag.dag_id }} (run {{ run_id }})?",
        body="{{ approval_summary(ti.xcom_pull(task_ids='dry_run')) }}",
        notifiers=[
            P2PSmsNotifier(
                sms_conn_id="p2psms_gateway",
                phone_numbers="{{ var.value.p2psms_approver_phone }}",
                message="Airflow: {{ ti.xcom_pull(task_ids='dry_run')['counts']['dry_run'] }} texts of "
                "{{ dag.dag_id }} wait for your approval (Required Actions).",
            )
        ],
        response_timeout=datetime.timedelta(hours=8),
    )

    send = P2PSmsOperator(
        task_id="send",
        approved_dry_run=dry_run.output,
        approval_tolerance=0.05,
        retries=2,
        **CAMPAIGN,
    )

    wait = P2PSmsDeliverySensor(
        task_id="wait_for_delivery",
        receipt=send.output,
        min_delivered_ratio=0.6,
        poke_interval=2,
        timeout=300,
    )

    dry_run >> approve >> send
