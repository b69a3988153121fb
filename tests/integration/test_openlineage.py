"""OpenLineage events of a send on a real Airflow 3: the source table in, the outcomes table out, the counts.

The openlineage provider is configured the way a user configures it, through ``[openlineage] transport``,
here a file transport; the DAG runs with ``airflow dags test``, reads its recipients from a SQLite file,
sends through the sandbox on a loopback port and writes its outcomes back to the same file. The test reads
the events the provider's listener wrote.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_p2psms.sandbox import DEFAULT_BITEL_TOKEN
from tests.helpers import connection_env

pytestmark = pytest.mark.integration

#: Four rows: three mobiles (one of them twice, by number and text) and a landline, which is invalid.
CUSTOMERS = [
    ("C-1", "09121110001", "Sara"),
    ("C-2", "09121110002", "Reza"),
    ("C-3", "09121110002", "Reza"),
    ("C-4", "02112345678", "Office"),
    ("C-5", "09121110005", "Nima"),
]

SEND = """
P2PSmsOperator(
    task_id="send",
    sms_conn_id="bitel_default",
    sql="SELECT customer_id, phone, name FROM customers WHERE name <> 'nobody'",
    sql_conn_id="crm",
    key_field="customer_id",
    message="Hi {{ row.name }}",
    outcomes_conn_id="crm",
    outcomes_table="campaign_outcomes",
)
"""


def _events(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_a_send_reports_its_source_table_outcomes_table_and_counts(run_dag, sandbox, tmp_path: Path) -> None:
    database = tmp_path / "crm.db"
    with sqlite3.connect(database) as connection:
        connection.execute("CREATE TABLE customers (customer_id TEXT, phone TEXT, name TEXT)")
        connection.executemany("INSERT INTO customers VALUES (?, ?, ?)", CUSTOMERS)
    events_file = tmp_path / "openlineage.jsonl"
    env = {
        **connection_env(sandbox),
        "AIRFLOW_CONN_CRM": json.dumps({"conn_type": "sqlite", "host": str(database)}),
        "AIRFLOW__OPENLINEAGE__NAMESPACE": "crm_campaigns",
        "AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps(
            {"type": "file", "log_file_path": str(events_file), "append": True}
        ),
    }
    result = run_dag(SEND, env)
    assert result.state("send") == "success", result.output[-4000:]
    assert len(sandbox.messages()) == 3

    events = [event for event in _events(events_file) if event["job"]["name"] == f"{result.dag_id}.send"]
    by_type = {event["eventType"]: event for event in events}
    assert {"START", "COMPLETE"} <= set(by_type), [event["eventType"] for event in events]
    namespace = f"sqlite://{database}"
    for event in (by_type["START"], by_type["COMPLETE"]):
        assert [(d["namespace"], d["name"]) for d in event["inputs"]] == [(namespace, "customers")]
        assert [(d["namespace"], d["name"]) for d in event["outputs"]] == [(namespace, "campaign_outcomes")]
        assert "customers" in event["job"]["facets"]["sql"]["query"]

    complete = by_type["COMPLETE"]
    facet = complete["run"]["facets"]["p2psmsSend"]
    names = ("requested", "sent", "invalid", "duplicate", "excluded", "uncertain", "rejected")
    counts = {name: facet[name] for name in names}
    assert counts == {
        "requested": 5,
        "sent": 3,
        "invalid": 1,
        "duplicate": 1,
        "excluded": 0,
        "uncertain": 0,
        "rejected": 0,
    }
    assert facet["parts"] == 3 and facet["resumed"] == 0 and facet["sms_conn_id"] == "bitel_default"
    assert "p2psmsSend" not in by_type["START"]["run"]["facets"]

    # Nothing personal in any event: no number, no name from a row, no token.
    written = events_file.read_text()
    for _, phone, name in CUSTOMERS:
        assert phone not in written and phone[1:] not in written
        assert f'"{name}"' not in written and f"Hi {name}" not in written
    assert DEFAULT_BITEL_TOKEN not in written


def test_a_dry_run_names_no_output_and_reports_no_counts(run_dag, sandbox, tmp_path: Path) -> None:
    database = tmp_path / "crm.db"
    with sqlite3.connect(database) as connection:
        connection.execute("CREATE TABLE customers (customer_id TEXT, phone TEXT, name TEXT)")
        connection.executemany("INSERT INTO customers VALUES (?, ?, ?)", CUSTOMERS)
    events_file = tmp_path / "openlineage.jsonl"
    env = {
        **connection_env(sandbox),
        "AIRFLOW_CONN_CRM": json.dumps({"conn_type": "sqlite", "host": str(database)}),
        "AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps(
            {"type": "file", "log_file_path": str(events_file), "append": True}
        ),
    }
    result = run_dag(SEND.replace('task_id="send",', 'task_id="send", dry_run=True,'), env)
    assert result.state("send") == "success", result.output[-4000:]
    assert sandbox.messages() == []
    complete = next(
        event
        for event in _events(events_file)
        if event["job"]["name"] == f"{result.dag_id}.send" and event["eventType"] == "COMPLETE"
    )
    assert [d["name"] for d in complete["inputs"]] == ["customers"]
    assert complete["outputs"] == []
    assert "p2psmsSend" not in complete["run"]["facets"]


def test_on_postgres_the_datasets_are_named_as_common_sql_names_them(postgres, monkeypatch) -> None:
    """The hook's own OpenLineage naming (namespace ``postgres://host:port``, ``database.schema.table``)."""
    import uuid

    from airflow_provider_p2psms.operators.p2p_sms import P2PSmsOperator

    monkeypatch.setenv("AIRFLOW_CONN_CRM", postgres.connection_json())
    source, outcomes = f"customers_{uuid.uuid4().hex[:6]}", f"outcomes_{uuid.uuid4().hex[:6]}"
    operator = P2PSmsOperator(
        task_id="send",
        sms_conn_id="bitel_default",
        sql=f"SELECT customer_id, phone FROM {source}",
        sql_conn_id="crm",
        key_field="customer_id",
        message="Hi",
        outcomes_conn_id="crm",
        outcomes_table=f"public.{outcomes}",
    )
    operator._lineage_counts = {"requested": 2, "sent": 1, "invalid": 1, "parts": 1, "price": 1250.0}
    lineage = operator.get_openlineage_facets_on_complete(None)

    namespace = f"postgres://{postgres.host}:{postgres.port}"
    assert [(d.namespace, d.name) for d in lineage.inputs] == [(namespace, f"{postgres.database}.public.{source}")]
    assert [(d.namespace, d.name) for d in lineage.outputs] == [(namespace, f"{postgres.database}.public.{outcomes}")]
    facet = lineage.run_facets["p2psmsSend"]
    assert (facet.requested, facet.sent, facet.invalid, facet.duplicate, facet.price) == (2, 1, 1, 0, 1250.0)


def test_importing_the_operator_imports_nothing_of_openlineage() -> None:
    """DAG parsing stays light: the facets' code imports OpenLineage only when the listener calls it."""
    script = """
import sys
import airflow.sdk

before = set(sys.modules)
import airflow_provider_p2psms.operators.p2p_sms

loaded = sorted(m for m in set(sys.modules) - before if "openlineage" in m)
client = sorted(m for m in sys.modules if m == "openlineage" or m.startswith("openlineage."))
print(loaded, client)
sys.exit(1 if loaded or client else 0)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    # The provider is installed: the check above is about this package's imports, not its absence.
    found = subprocess.run(
        [sys.executable, "-c", "import airflow.providers.openlineage.extractors"], capture_output=True, timeout=120
    )
    assert found.returncode == 0, found.stderr[-3000:]
