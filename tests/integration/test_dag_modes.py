"""Sources, sensor modes, dry runs, scheduling, partial delivery and empty input, on a real Airflow 3."""

from __future__ import annotations

import datetime
import json
import sqlite3

import pytest

from tests.helpers import GATEWAYS, connection_env

pytestmark = pytest.mark.integration

CUSTOMERS = [
    ("0912 123 4567", "نازنین", "A1", 1),
    ("+98 935 765 4321", "Reza", "B2", 1),
    ("۰۹۱۳۵۵۵۱۲۱۲", "مهسا", "C3", 1),
    ("02112345678", "Office", "D4", 1),
    ("09121230009", "Inactive", "E5", 0),
]


@pytest.fixture
def customers_db(tmp_path):
    path = tmp_path / "customers.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, phone TEXT, name TEXT, code TEXT, active INT)")
        db.executemany("INSERT INTO customers (phone, name, code, active) VALUES (?, ?, ?, ?)", CUSTOMERS)
    (tmp_path / "recipients.sql").write_text(
        "SELECT phone, name, code FROM customers WHERE active = :active ORDER BY id"
    )
    return path


@pytest.mark.parametrize("gateway", GATEWAYS)
def test_sql_source_with_poke_reschedule_and_deferrable_sensors(run_dag, sandbox, customers_db, gateway):
    env = {
        **connection_env(sandbox),
        "AIRFLOW_CONN_RECIPIENTS_DB": json.dumps({"conn_type": "sqlite", "host": str(customers_db)}),
    }
    result = run_dag(
        f"""
        send = P2PSmsOperator(
            task_id="send",
            sms_conn_id="{gateway}_default",
            sql="recipients.sql",
            sql_conn_id="recipients_db",
            parameters={{"active": 1}},
            fetch_size=2,
            message="{{{{ row.name }}}}: {{{{ row.code }}}} ({{{{ params.campaign }}}})",
        )
        for mode, deferrable in (("poke", False), ("reschedule", False), ("poke", True)):
            P2PSmsDeliverySensor(
                task_id=f"wait_{{mode}}_{{deferrable}}",
                receipt=send.output,
                mode=mode,
                deferrable=deferrable,
                poke_interval=0.5,
                timeout=120,
            )
        """,
        env,
        dag_kwargs=f", template_searchpath=[{str(customers_db.parent)!r}], params={{'campaign': 'nowruz'}}",
    )
    assert result.returncode == 0, result.output[-3000:]
    for task_id in ("send", "wait_poke_False", "wait_reschedule_False", "wait_poke_True"):
        assert result.state(task_id) == "success", task_id

    texts = sorted(m["text"] for m in sandbox.messages())
    assert texts == ["Reza: B2 (nowruz)", "مهسا: C3 (nowruz)", "نازنین: A1 (nowruz)"]
    receipt = result.xcom("send")
    assert receipt["counts"] == {
        "requested": 4,
        "sent": 3,
        "resumed": 0,
        "invalid": 1,
        "duplicate": 0,
        "excluded": 0,
        "uncertain": 0,
        "rejected": 0,
        "dry_run": 0,
        "parts": 3,
        "price": None,
    }
    assert receipt["problems"] == [
        "Row 4: field 'phone' 0211*****78 is a landline; SMS needs a mobile number (09xx...)."
    ]
    for task_id in ("wait_poke_False", "wait_reschedule_False", "wait_poke_True"):
        report = result.xcom(task_id)
        assert report["counts"]["delivered"] == 3, task_id
        assert {m[2] for m in report["messages"]} == {"delivered"}
        assert all("***" in m[1] for m in report["messages"])
    assert "Pausing task as DEFERRED" in result.output
    assert "0211*****78" in result.output and "02112345678" not in result.output


def test_dry_run_renders_and_validates_but_sends_nothing(run_dag, sandbox):
    result = run_dag(
        """
        P2PSmsOperator(
            task_id="send",
            sms_conn_id="bitel_default",
            recipients=["09121234567", "0935 123 4567", "not a number", "09121234567"],
            message="Hello {{ row.phone }}",
            dry_run=True,
        )
        """,
        connection_env(sandbox),
    )
    assert result.returncode == 0, result.output[-3000:]
    assert sandbox.messages() == []
    assert [r["kind"] for r in sandbox.requests()] == []
    receipt = result.xcom("send")
    assert receipt["counts"]["dry_run"] == 2
    assert receipt["counts"]["invalid"] == 1
    assert receipt["counts"]["duplicate"] == 1
    assert receipt["counts"]["sent"] == 0
    assert receipt["messages"] == ""
    assert "Dry run sample: 0912*****67 <- 'Hello 09121234567'" not in result.output
    assert "Dry run sample: 0912*****67" in result.output
    assert "Nothing was sent" in result.output


def test_send_time_schedules_on_ippanel_and_is_refused_on_bitel(run_dag, sandbox):
    when = (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=2)).replace(microsecond=0)
    tehran = when.astimezone(datetime.timezone(datetime.timedelta(hours=3, minutes=30)))
    result = run_dag(
        f"""
        for gateway in ("ippanel", "bitel"):
            P2PSmsOperator(
                task_id=f"send_{{gateway}}",
                sms_conn_id=f"{{gateway}}_default",
                recipients=["09121234567"],
                message="Scheduled",
                send_time={tehran.isoformat()!r},
            )
        """,
        connection_env(sandbox),
    )
    assert result.state("send_ippanel") == "success"
    assert result.state("send_bitel") == "failed"
    assert "Bitel (connection 'bitel_default') cannot schedule a send" in result.output
    assert "use a connection of a gateway that can schedule: IPPanel." in result.output
    messages = sandbox.messages()
    assert [(m["provider"], m["send_time"]) for m in messages] == [("ippanel", when.strftime("%Y-%m-%d %H:%M:%S"))]


def test_partial_delivery_fails_below_the_ratio_and_passes_above(run_dag, sandbox):
    result = run_dag(
        """
        send = P2PSmsOperator(
            task_id="send",
            sms_conn_id="bitel_default",
            recipients=["09121234567", "09351234567", "09121230001", "09121230002"],
            message="Hi",
        )
        P2PSmsDeliverySensor(task_id="strict", receipt=send.output, poke_interval=0.5, timeout=60)
        P2PSmsDeliverySensor(task_id="lenient", receipt=send.output, poke_interval=0.5, timeout=60,
                             min_delivered_ratio=0.5)
        P2PSmsDeliverySensor(task_id="soft", receipt=send.output, poke_interval=0.5, timeout=60, soft_fail=True)
        """,
        connection_env(sandbox),
    )
    assert result.state("send") == "success"
    assert result.state("strict") == "failed"
    assert result.state("lenient") == "success"
    assert result.state("soft") == "skipped"
    assert "Delivery below target: 50.0% delivered, min_delivered_ratio is 100.0%" in result.output
    assert "0912*****01 (failed)" in result.output and "0912*****02 (blacklisted)" in result.output
    report = result.xcom("lenient")
    assert report["counts"]["delivered"] == 2
    assert report["counts"]["failed"] == 1
    assert report["counts"]["blacklisted"] == 1


def test_no_recipients_skips_by_default_and_fails_when_asked(run_dag, sandbox):
    result = run_dag(
        """
        @task
        def nobody():
            return []

        rows = nobody()
        send = P2PSmsOperator(task_id="send", sms_conn_id="bitel_default", recipients=rows, message="Hi")
        P2PSmsDeliverySensor(task_id="wait", receipt=send.output, poke_interval=0.5, timeout=60)
        P2PSmsOperator(task_id="strict", sms_conn_id="bitel_default", recipients=rows, message="Hi", on_empty="fail")
        P2PSmsOperator(task_id="fine", sms_conn_id="bitel_default", recipients=rows, message="Hi", on_empty="succeed")
        """,
        connection_env(sandbox),
    )
    assert result.state("send") == "skipped"
    assert result.state("wait") == "skipped"
    assert result.state("strict") == "failed"
    assert result.state("fine") == "success"
    assert "Nothing to send: 0 rows, 0 invalid, 0 duplicate. on_empty='fail'." in result.output
    assert result.xcom("fine")["counts"]["requested"] == 0
    assert sandbox.messages() == []
