"""
The DAGs the benchmark suite runs with ``airflow dags test``, each next to its hand-written baseline.

``bench/run.py`` sets the connections (``bench_db``: the SQLite file of recipients it creates;
``bench_bitel`` / ``bench_ippanel``: the sandbox API) and picks the recipients table with
``-c '{"table": "recipients_20000"}'``. The DAGs use the operator and the sensor exactly as a user's
DAG does; the baselines are what a user writes by hand without this provider.

* ``p2psms_bench_send_c4`` / ``_c8`` / ``_c16``: ``P2PSmsOperator`` reading the table, ``max_concurrency`` 4 /
  8 / 16, its defaults otherwise (resume ledger on, no outcomes table).
* ``p2psms_bench_send_rate_c4``: ``p2psms_bench_send_c4`` with ``max_rate=1_000_000``, far above what the
  machine reaches: what a limit that never binds costs.
* ``p2psms_bench_send_outcomes_c4``: the same at concurrency 4, with ``key_field`` and an outcomes table in
  the recipients' own SQLite file (one row per recipient written while sending).
* ``p2psms_bench_naive_send``: a PythonOperator that reads the table and ``requests.post``\\s batches of
  100 to Bitel one after another, without a shared session.
* ``p2psms_bench_track_{bitel,ippanel}``: send, then ``P2PSmsDeliverySensor`` (poke mode, 1 s).
* ``p2psms_bench_naive_track_{bitel,ippanel}``: the same send, then a PythonSensor that asks about every
  message on every poke.
* ``p2psms_bench_track_deferrable_bitel``: send at ``max_concurrency`` 16, then ``P2PSmsDeliverySensor``
  deferred (``dags test`` runs its trigger in the same process), the connection's status concurrency.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import pendulum
from airflow.providers.standard.operators.python import PythonOperator
from airflow.providers.standard.sensors.python import PythonSensor
from airflow.sdk import DAG

from airflow_provider_p2psms.operators.p2p_sms import P2PSmsOperator
from airflow_provider_p2psms.sensors.p2p_sms import P2PSmsDeliverySensor

SQL = "SELECT phone, name, code FROM {{ params.table }} ORDER BY id"
SQL_WITH_KEY = "SELECT id, phone, name, code FROM {{ params.table }} ORDER BY id"
MESSAGE = "سلام {{ row.name }}، کد تخفیف شما {{ row.code }} است."
PARAMS = {"table": "recipients_2000"}
START = pendulum.datetime(2026, 1, 1, tz="UTC")
CONNECTIONS = {"bitel": "bench_bitel", "ippanel": "bench_ippanel"}


def mark_start(context: Any) -> None:
    """``pre_execute`` hook: note when ``execute()`` starts, so rates leave out the task runner's start-up."""
    _mark(context, "start")


def mark_end(context: Any, result: Any = None) -> None:
    """``post_execute`` hook: note when ``execute()`` ended, before Airflow pushes its XCom."""
    _mark(context, "end")


def _mark(context: Any, event: str) -> None:
    path = os.environ.get("P2PSMS_BENCH_MARKS")
    if path:
        ti = context["ti"]
        mark = {"dag_id": ti.dag_id, "run_id": ti.run_id, "task_id": ti.task_id, "event": event, "at": time.time()}
        with open(path, "a", encoding="utf-8") as marks:
            marks.write(json.dumps(mark) + "\n")


def _send(max_concurrency: int, sms_conn_id: str = CONNECTIONS["bitel"], **options: Any) -> P2PSmsOperator:
    return P2PSmsOperator(
        task_id="send",
        sms_conn_id=sms_conn_id,
        sql_conn_id="bench_db",
        sql=SQL_WITH_KEY if "key_field" in options else SQL,
        message=MESSAGE,
        max_concurrency=max_concurrency,
        pre_execute=mark_start,
        post_execute=mark_end,
        **options,
    )


for _concurrency in (4, 8, 16):
    with DAG(dag_id=f"p2psms_bench_send_c{_concurrency}", schedule=None, start_date=START, params=PARAMS):
        _send(_concurrency)

with DAG(dag_id="p2psms_bench_send_rate_c4", schedule=None, start_date=START, params=PARAMS):
    _send(4, max_rate=1_000_000)

with DAG(dag_id="p2psms_bench_send_outcomes_c4", schedule=None, start_date=START, params=PARAMS):
    _send(4, key_field="id", outcomes_conn_id="bench_db", outcomes_table="bench_outcomes")


def naive_send(table: str) -> list[str]:
    """What a user writes by hand: read everything, then post batches of 100 one after another."""
    import re

    import requests
    from airflow.providers.sqlite.hooks.sqlite import SqliteHook
    from airflow.sdk import BaseHook

    connection = BaseHook.get_connection(CONNECTIONS["bitel"])
    url = f"{str(connection.host).rstrip('/')}/api/v2/sms/batch/p2p"
    headers = {"Authorization": f"Bearer {connection.password}"}
    rows = SqliteHook(sqlite_conn_id="bench_db").get_records(f"SELECT phone, name, code FROM {table} ORDER BY id")
    ids: list[str] = []
    for start in range(0, len(rows), 100):
        batch = rows[start : start + 100]
        body = {
            "phoneNumbers": ["0" + re.sub(r"\D", "", str(phone))[-10:] for phone, _, _ in batch],
            "messages": [f"سلام {name}، کد تخفیف شما {code} است." for _, name, code in batch],
            "gatewayNumber": connection.extra_dejson["sender"],
        }
        response = requests.post(url, json=body, headers=headers, timeout=30)
        response.raise_for_status()
        ids.extend(result["id"] for result in response.json()["result"])
    return ids


with DAG(dag_id="p2psms_bench_naive_send", schedule=None, start_date=START, params=PARAMS):
    PythonOperator(
        task_id="send",
        python_callable=naive_send,
        op_kwargs={"table": "{{ params.table }}"},
        pre_execute=mark_start,
        post_execute=mark_end,
    )


def naive_all_delivered(ti: Any) -> bool:
    """A hand-written delivery check: ask about every message of the receipt, final or not, on every poke."""
    from airflow_provider_p2psms.hooks.factory import get_sms_hook
    from airflow_provider_p2psms.models import SmsReceipt, receipt_messages

    receipt = ti.xcom_pull(task_ids="send")
    hook = get_sms_hook(receipt["sms_conn_id"])
    messages = receipt_messages(receipt["messages"])
    states = hook.get_statuses([SmsReceipt(message_id, recipient) for message_id, recipient in messages])
    return all(state.is_final for state in states)


for _gateway, _conn_id in CONNECTIONS.items():
    with DAG(dag_id=f"p2psms_bench_track_{_gateway}", schedule=None, start_date=START, params=PARAMS):
        P2PSmsDeliverySensor(
            task_id="wait",
            receipt=_send(4, _conn_id).output,
            poke_interval=1,
            mode="poke",
            timeout=300,
            deferrable=False,
        )

    with DAG(dag_id=f"p2psms_bench_naive_track_{_gateway}", schedule=None, start_date=START, params=PARAMS):
        _send(4, _conn_id) >> PythonSensor(
            task_id="wait", python_callable=naive_all_delivered, poke_interval=1, mode="poke", timeout=300
        )

with DAG(dag_id="p2psms_bench_track_deferrable_bitel", schedule=None, start_date=START, params=PARAMS):
    P2PSmsDeliverySensor(
        task_id="wait",
        receipt=_send(16).output,
        poke_interval=1,
        timeout=900,
        deferrable=True,
        pre_execute=mark_start,
        post_execute=mark_end,
    )
