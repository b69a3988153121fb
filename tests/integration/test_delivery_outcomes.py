"""Delivery statuses in the outcomes table, on a real Airflow 3 run (``airflow dags test``).

Each send task plays the operator: it sends through the sandbox, writes one ``pending`` row per message
into the outcomes table (``OutcomesTable.upsert``) and returns a receipt naming its task instance and the
table. Its sensor, in poke, reschedule or deferrable mode, then writes the statuses into those rows. The
table is a SQLite file or a real PostgreSQL database (``tests/postgres.py``), behind the Airflow connection
``crm_db`` set by environment variable, as a user would. One number of each send never becomes final
(the sandbox's ``0009``), so each wait gives up (or times out), and that row says why.
"""

from __future__ import annotations

import json
import re
import sqlite3
import uuid
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_p2psms.campaign.delivery_outcomes import END_REASONS
from airflow_provider_p2psms.campaign.tracking import GAVE_UP, TIMEOUT
from tests.helpers import connection_env

pytestmark = pytest.mark.integration

#: Delivered in two parts, delivery failed, blacklisted, never final.
NUMBERS = ["09351234567", "09121230001", "09121230002", "09121230009"]
TEXTS = ["س" * 100, "Hi", "Hi", "Hi"]
FIELDS = ("row_key", "status", "parts", "price", "reason", "final_at")

#: The send task (a stand-in for P2PSmsOperator with an outcomes table) and a sensor per mode.
BODY = """
@task
def send_and_record(gateway, table, numbers, texts, **context):
    import dataclasses
    from datetime import datetime, timezone

    from airflow_provider_p2psms.campaign.outcomes import Outcome, OutcomesTable, SendTaskKey
    from airflow_provider_p2psms.hooks.factory import get_sms_hook
    from airflow_provider_p2psms.models import OutgoingSms

    hook = get_sms_hook(f"{gateway}_default")
    messages = [OutgoingSms(hook.normalize_number(n), t) for n, t in zip(numbers, texts)]
    receipts = hook.send_batch(messages)
    task = SendTaskKey.from_context(context)
    with OutcomesTable("crm_db", table) as outcomes:
        outcomes.ensure()
        outcomes.upsert(
            task,
            [
                Outcome(
                    f"customer-{row}", "pending", recipient=r.recipient, gateway=gateway,
                    message_id=r.message_id, sent_at=datetime.now(timezone.utc),
                )
                for row, r in enumerate(receipts, start=1)
            ],
        )
    return {
        "version": 1, "provider": gateway, "sms_conn_id": f"{gateway}_default",
        "counts": {"requested": len(numbers), "sent": len(receipts), "uncertain": 0, "rejected": 0},
        "messages": "\\n".join(f"{r.message_id} {r.recipient}" for r in receipts),
        "problems": [], "task": dataclasses.asdict(task), "outcomes": {"conn_id": "crm_db", "table": table},
    }

WAITS = {
    "poke": ("bitel", dict(mode="poke", give_up_after=3)),
    "reschedule": ("bitel", dict(mode="reschedule", give_up_after=3)),
    "deferrable": ("bitel", dict(deferrable=True, give_up_after=3)),
    "deferrable_ippanel": ("ippanel", dict(deferrable=True, give_up_after=3)),
    "timeout_reschedule": ("bitel", dict(mode="reschedule", timeout=3)),
    "timeout_deferrable": ("bitel", dict(deferrable=True, timeout=3)),
}
for name, (gateway, mode) in WAITS.items():
    send = send_and_record.override(task_id=f"send_{name}")(gateway, __TABLE__, __NUMBERS__, __TEXTS__)
    P2PSmsDeliverySensor(
        task_id=f"wait_{name}", receipt=send, poke_interval=0.3, min_delivered_ratio=0.25, **{"timeout": 60, **mode}
    )
"""
ENDINGS = {
    "poke": GAVE_UP,
    "reschedule": GAVE_UP,
    "deferrable": GAVE_UP,
    "deferrable_ippanel": GAVE_UP,
    "timeout_reschedule": TIMEOUT,
    "timeout_deferrable": TIMEOUT,
}
#: What each gateway's sandbox says of the rows: status, parts, price (150 a part when charged), reason.
EXPECTED = {
    "bitel": [
        ("delivered", 2, 300.0, None),
        ("failed", 1, 150.0, "the gateway reported 4 DELIVERY_FAILED"),
        ("blacklisted", 1, 0.0, "the gateway reported 5 BLACKLIST"),
        ("sent", 1, None, "<ending>"),
    ],
    # No price per message in IPPanel's reports.
    "ippanel": [
        ("delivered", 2, None, None),
        ("failed", 1, None, "the gateway reported 3 not delivered"),
        ("blacklisted", 1, None, "the gateway reported 4 blacklisted"),
        ("sent", 1, None, "<ending>"),
    ],
}


def read_rows(table: str, task: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    """The send task instance's rows, read through the connection's own common-sql hook."""
    from airflow.sdk import BaseHook

    p = "?" if kind == "sqlite" else "%s"
    records = (
        BaseHook.get_connection("crm_db")
        .get_hook()
        .get_records(
            f"SELECT {', '.join(FIELDS)} FROM {table} WHERE dag_id = {p} AND run_id = {p} AND task_id = {p} "
            f"AND map_index = {p} ORDER BY row_key",
            parameters=(task["dag_id"], task["run_id"], task["task_id"], task["map_index"]),
        )
    )
    return {record[0]: dict(zip(FIELDS, record, strict=True)) for record in records}


@pytest.mark.parametrize("database", ["sqlite", "postgres"])
def test_the_sensor_writes_final_statuses_parts_prices_and_why_not(
    run_dag, sandbox, database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
):
    if database == "sqlite":
        crm_db = json.dumps({"conn_type": "sqlite", "host": str(tmp_path / "crm.db")})
    else:
        crm_db = request.getfixturevalue("postgres").connection_json()
    monkeypatch.setenv("AIRFLOW_CONN_CRM_DB", crm_db)
    table = f"sms_outcomes_{uuid.uuid4().hex[:8]}"
    body = (
        BODY.replace("__TABLE__", repr(table)).replace("__NUMBERS__", repr(NUMBERS)).replace("__TEXTS__", repr(TEXTS))
    )
    result = run_dag(body, {**connection_env(sandbox), "AIRFLOW_CONN_CRM_DB": crm_db})

    for name, ending in ENDINGS.items():
        report = result.xcom(f"wait_{name}")
        assert report is not None and report["ending"] == ending, (name, result.output[-4000:])
        gateway = result.xcom(f"send_{name}")["provider"]
        rows = read_rows(table, result.xcom(f"send_{name}")["task"], database)
        reason = END_REASONS[ending]
        expected = [
            (s, parts, price, reason if why == "<ending>" else why) for s, parts, price, why in EXPECTED[gateway]
        ]
        assert [(r["status"], r["parts"], r["price"], r["reason"]) for r in rows.values()] == expected, name
        assert [r["final_at"] is not None for r in rows.values()] == [True, True, True, False], name
        # The report's totals are the rows' sums.
        assert report["parts"] == sum(r["parts"] for r in rows.values()) == 5, name
        prices = [r["price"] for r in rows.values() if r["price"] is not None]
        assert report["price"] == (sum(prices) if prices else None), name

    assert {result.state(f"wait_{name}") for name in ENDINGS if ENDINGS[name] == GAVE_UP} == {"success"}
    assert {result.state(f"wait_{name}") for name in ENDINGS if ENDINGS[name] == TIMEOUT} == {"failed"}
    assert "Pausing task as DEFERRED" in result.output
    # The deferred waits' statuses were written by the trigger, as it polled.
    trigger_writes = [
        line
        for line in result.output.splitlines()
        if "delivery statuses to outcomes table" in line and "Trigger" in line
    ]
    assert len(trigger_writes) >= 3, result.output[-4000:]


REAL_DAG = (
    """
from __future__ import annotations

import pendulum
from airflow.sdk import DAG, task
from airflow_provider_p2psms.sensors.p2p_sms import P2PSmsDeliverySensor

with DAG(dag_id="outcomes_in_a_triggerer", schedule=None, start_date=pendulum.datetime(2026, 1, 1), catchup=False):
"""
    + "\n".join(f"    {line}" for line in BODY.split("WAITS = {")[0].splitlines())
    + """
    send = send_and_record.override(task_id="send")("bitel", "sms_outcomes", __NUMBERS__, __TEXTS__)
    P2PSmsDeliverySensor(
        task_id="wait", receipt=send, deferrable=True, poke_interval=1, timeout=120, give_up_after=8,
        min_delivered_ratio=0.25,
    )
"""
)


def test_a_real_triggerer_writes_through_a_connection_it_reads_from_its_supervisor(tmp_path, sandbox):
    """
    The outcomes connection is in the metadata database, not an environment variable: the trigger's
    write, in a thread of the triggerer, reads it through the triggerer's supervisor, as in production.
    """
    from tests.integration.deployment import run_to_the_end, standalone

    crm_db = tmp_path / "crm.db"
    dag = REAL_DAG.replace("__NUMBERS__", repr(NUMBERS)).replace("__TEXTS__", repr(TEXTS))
    with standalone(tmp_path, "outcomes_in_a_triggerer", dag, connection_env(sandbox)) as deployment:
        deployment.airflow("connections", "add", "crm_db", "--conn-type", "sqlite", "--conn-host", str(crm_db))
        _, states = run_to_the_end(deployment, "outcomes_in_a_triggerer", timeout=300)
        logs = deployment.task_logs()
    assert states == {"send": "success", "wait": "success"}, deployment.log_tail()
    with sqlite3.connect(crm_db) as db:
        rows = db.execute("SELECT status, parts, price, reason FROM sms_outcomes ORDER BY row_key").fetchall()
    assert rows == [
        ("delivered", 2, 300.0, None),
        ("failed", 1, 150.0, "the gateway reported 4 DELIVERY_FAILED"),
        ("blacklisted", 1, 0.0, "the gateway reported 5 BLACKLIST"),
        ("sent", 1, None, END_REASONS[GAVE_UP]),
    ]
    # Only the trigger writes statuses as they change in deferrable mode; the sensor writes the end.
    assert re.search(r"Wrote \d+ delivery statuses to outcomes table 'sms_outcomes'", logs), logs[-4000:]
