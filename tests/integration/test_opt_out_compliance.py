"""The opt-out footer and suppression lists on a real Airflow 3, checked from what the sandbox received.

The recipients come from a SQLite table; the suppression list from an upstream task's XCom (numbers in
other spellings than the rows') and from a query on another table of the same database. Every text the
sandbox received must end with the footer on its own line, no suppressed number may have received
anything, and the receipt, the outcomes table and the rendered-fields view must say what happened.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from tests.helpers import connection_env

pytestmark = pytest.mark.integration

FOOTER = "لغو۱۱"
#: Twelve customers; the numbers of C-02 and C-05 are opted out (XCom), C-07's too (the opt-out table).
CUSTOMERS = [(f"C-{i:02d}", f"0912300{i:04d}", f"name{i}") for i in range(12)]
#: The same numbers, spelled as the opt-out data spells them: international, Persian digits, spaces.
OPTED_OUT_XCOM = ["+98 912 300 0002", "۰۹۱۲۳۰۰۰۰۰۵", "not a number"]
OPTED_OUT_TABLE = ["989123000007"]

BODY = """
@task
def opt_outs():
    return {opted_out!r}

send = P2PSmsOperator(
    task_id="send",
    sms_conn_id="{gateway}_default",
    sql="SELECT customer_id, phone, name FROM customers",
    sql_conn_id="crm",
    key_field="customer_id",
    message="سلام {{{{ row.name }}}}، تخفیف امروز",
    opt_out_footer={footer!r},
    exclude=opt_outs(),
    exclude_sql="SELECT phone FROM opt_outs",
    outcomes_conn_id="crm",
)
"""


def _database(tmp_path: Path) -> Path:
    path = tmp_path / "crm.db"
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE customers (customer_id TEXT, phone TEXT, name TEXT)")
        connection.executemany("INSERT INTO customers VALUES (?, ?, ?)", CUSTOMERS)
        connection.execute("CREATE TABLE opt_outs (phone TEXT)")
        connection.executemany("INSERT INTO opt_outs VALUES (?)", [(number,) for number in OPTED_OUT_TABLE])
    return path


@pytest.mark.parametrize("gateway", ["ippanel", "bitel"])
def test_footer_and_suppression_reach_the_gateway_and_the_outcomes(
    run_dag, sandbox, tmp_path: Path, gateway: str
) -> None:
    path = _database(tmp_path)
    env = {**connection_env(sandbox), "AIRFLOW_CONN_CRM": json.dumps({"conn_type": "sqlite", "host": str(path)})}
    result = run_dag(BODY.format(gateway=gateway, footer=FOOTER, opted_out=OPTED_OUT_XCOM), env)
    assert result.returncode == 0 and result.state("send") == "success", result.output[-4000:]

    received = {message["recipient"][-10:]: message["text"] for message in sandbox.messages()}
    suppressed = {"9123000002", "9123000005", "9123000007"}
    assert suppressed < {phone[1:] for _, phone, _ in CUSTOMERS}
    assert set(received) == {phone[1:] for _, phone, _ in CUSTOMERS} - suppressed
    for text in received.values():
        body, footer = text.rsplit("\n", 1)
        assert footer == FOOTER and body.startswith("سلام name")

    receipt = result.xcom("send")
    assert receipt["counts"]["excluded"] == 3
    assert receipt["counts"]["sent"] == 9 and receipt["counts"]["invalid"] == 0
    # Each text and its footer fit in one UCS-2 SMS (70 characters).
    assert receipt["counts"]["parts"] == 9
    assert "1 entries are not mobile numbers" in result.output

    with sqlite3.connect(path) as connection:
        statuses = dict(connection.execute("SELECT row_key, status FROM p2psms_outcomes").fetchall())
    assert {key for key, status in statuses.items() if status == "excluded"} == {"C-02", "C-05", "C-07"}
    assert len(statuses) == 12

    rendered = json.dumps(result.rendered("send"), ensure_ascii=False)
    assert "912 300 0002" not in rendered and "۰۹۱۲۳۰۰۰۰۰۵" not in rendered
    assert "not shown" in rendered


def test_the_footer_counts_toward_max_parts(run_dag, sandbox) -> None:
    # 70 Persian characters fill one UCS-2 SMS exactly; the footer's line makes it two parts.
    text = "ب" * 70
    body = f"""
send = P2PSmsOperator(
    task_id="send",
    sms_conn_id="ippanel_default",
    recipients=["09121234567"],
    message={text!r},
    opt_out_footer={FOOTER!r},
    max_parts=1,
    on_empty="succeed",
)
"""
    result = run_dag(body, connection_env(sandbox))
    assert result.state("send") == "success", result.output[-4000:]
    receipt = result.xcom("send")
    assert receipt["counts"]["invalid"] == 1 and receipt["counts"]["sent"] == 0
    assert "needs 2 SMS parts" in " ".join(receipt["problems"])
    assert sandbox.messages() == []
