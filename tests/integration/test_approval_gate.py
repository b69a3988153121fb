"""The approval gate in a real deployment: the shipped example DAG, approved by a person through the REST API.

``airflow standalone`` (LocalExecutor: scheduler, DAG processor, triggerer, API server) runs
``example_dags/example_p2p_sms_approval.py`` as it ships. The dry run's summary is what the approval task
shows; the approver signs in (``POST /auth/token``, the simple auth manager's users) and answers through
``PATCH .../taskInstances/approve/-1/hitlDetails``. On Airflow 3.3+ the approval task waits in the
``awaiting_input`` state, before it deferred to a trigger in the triggerer: both are exercised, by whichever
Airflow runs the tests.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_p2psms.sandbox import SandboxServer
from airflow_provider_p2psms.version_compat import AIRFLOW_V_3_3_PLUS
from tests.helpers import connection_env
from tests.integration.deployment import Deployment, query, standalone

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).resolve().parents[2] / "example_dags" / "example_p2p_sms_approval.py"
DAG_ID = "example_p2p_sms_approval"
APPROVER = "approver"
APPROVER_PHONE = "09123334455"
CUSTOMERS = [("09121234567", "نازنین", "A1", 1), ("09351234567", "Reza", "B2", 1), ("09131112233", "Old", "C3", 0)]
#: What the approval task waits in: its own state on Airflow 3.3+, a trigger in the triggerer before.
WAITING = "awaiting_input" if AIRFLOW_V_3_3_PLUS else "deferred"


class Api:
    """The deployment's REST API, as the approver uses it: a token from ``/auth/token``, then ``/api/v2``."""

    def __init__(self, port: int, password: str) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.token = self._call("POST", "/auth/token", {"username": APPROVER, "password": password})["access_token"]

    def __call__(self, method: str, path: str, body: Any = None) -> Any:
        return self._call(method, f"/api/v2{path}", body, {"Authorization": f"Bearer {self.token}"})

    def _call(self, method: str, path: str, body: Any, headers: dict[str, str] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.base + path, data=data, method=method, headers={"Content-Type": "application/json", **(headers or {})}
        )
        with urllib.request.urlopen(request, timeout=30) as answer:
            return json.loads(answer.read() or b"null")


@pytest.fixture(scope="module")
def gateway() -> Any:
    with SandboxServer(delivery_seconds=0.6) as server:
        yield server


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory, gateway: SandboxServer) -> Any:
    """One deployment for the module: the example DAG, its SQLite customers, an approver who can sign in."""
    root = tmp_path_factory.mktemp("approval")
    database = root / "customers.db"
    with sqlite3.connect(database) as db:
        db.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, phone TEXT, name TEXT, code TEXT, active INT)")
        db.executemany("INSERT INTO customers (phone, name, code, active) VALUES (?, ?, ?, ?)", CUSTOMERS)
    password = secrets.token_urlsafe(16)
    passwords = root / "passwords.json"
    passwords.write_text(json.dumps({APPROVER: password}))
    connections = connection_env(gateway)
    env = {
        **connections,
        "AIRFLOW_CONN_P2PSMS_GATEWAY": connections["AIRFLOW_CONN_BITEL_DEFAULT"],
        "AIRFLOW_CONN_P2PSMS_DEMO_DB": json.dumps({"conn_type": "sqlite", "host": str(database)}),
        "AIRFLOW_VAR_P2PSMS_APPROVER_PHONE": APPROVER_PHONE,
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{APPROVER}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
    }
    with standalone(root, DAG_ID, EXAMPLE.read_text(), env, own_checkpoint_path=False) as running:
        api = Api(int(running.env["AIRFLOW__API__PORT"]), password)
        yield running, api, database


def trigger(api: Api) -> str:
    return str(api("POST", f"/dags/{DAG_ID}/dagRuns", {"logical_date": None})["dag_run_id"])


def task_state(api: Api, run_id: str, task_id: str) -> str | None:
    return api("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{task_id}")["state"]


def wait_for(what: str, check: Any, deployment: Deployment, timeout: float = 180) -> Any:
    deadline = time.monotonic() + timeout
    while not (found := check()):
        assert time.monotonic() < deadline, f"{what} never happened:\n{deployment.log_tail()}"
        time.sleep(1)
    return found


def waiting_for_approval(api: Api, deployment: Deployment, run_id: str) -> dict[str, Any]:
    """Wait until the approval task waits for its answer; its human-in-the-loop detail."""

    def parked() -> bool:
        state = task_state(api, run_id, "approve")
        assert state not in ("failed", "upstream_failed", "skipped"), deployment.task_logs()[-4000:]
        return state == WAITING

    wait_for("the approval task waiting", parked, deployment)
    if AIRFLOW_V_3_3_PLUS:
        # Airflow 3.3's scheduler fails a task resumed from awaiting_input when the executor's event for the
        # workload that parked it (same try number) comes while the task is queued again: a person never
        # answers that fast, a test does. So the answer waits until the scheduler has seen that workload end.
        finished = f"TaskInstance Finished: dag_id={DAG_ID}, task_id=approve, run_id={run_id},"
        wait_for(
            "the scheduler seeing the approval task parked",
            lambda: any(finished in line and "state=awaiting_input" in line for line in deployment.log_lines()),
            deployment,
        )
    return api("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/approve/-1/hitlDetails")


def approve(api: Api, run_id: str) -> dict[str, Any]:
    path = f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/approve/-1/hitlDetails"
    return api("PATCH", path, {"chosen_options": ["Approve"], "params_input": {}})


def run_end(api: Api, deployment: Deployment, run_id: str) -> str:
    def ended() -> str | None:
        state = api("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}")["state"]
        return state if state in ("success", "failed") else None

    return wait_for("the end of the run", ended, deployment, timeout=240)


def test_an_approved_campaign_is_sent_and_delivered(deployment, gateway):
    running, api, _ = deployment
    gateway.reset()
    run_id = trigger(api)
    detail = waiting_for_approval(api, running, run_id)

    # The approver sees the dry run's summary: counts, template, masked samples, and nothing was sent yet.
    body = detail["body"]
    for line in ("- Rows read: 2", "- Messages to send: 2", "- Invalid rows: 0", "{{ row.name }}", "1. سلام نازنین"):
        assert line in body
    assert "09121234567" not in body and "09351234567" not in body
    assert detail["options"] == ["Approve", "Reject"]
    # ... and was texted about it, by the package's notifier, as the approval's notifier.
    texted = gateway.messages()
    assert [(m["recipient"], m["text"]) for m in texted] == [
        (APPROVER_PHONE, f"Airflow: 2 texts of {DAG_ID} wait for your approval (Required Actions).")
    ]
    triggers = [row[0] for row in query(running.db, "SELECT classpath FROM trigger")]
    if AIRFLOW_V_3_3_PLUS:
        assert triggers == []  # no trigger: a state of its own
    else:
        assert triggers == ["airflow.providers.standard.triggers.hitl.HITLTrigger"]

    answer = approve(api, run_id)
    assert answer["chosen_options"] == ["Approve"]
    assert answer["responded_by"]["name"] == APPROVER

    assert run_end(api, running, run_id) == "success", running.task_logs()[-4000:]
    states = {t: task_state(api, run_id, t) for t in ("dry_run", "approve", "send", "wait_for_delivery")}
    assert set(states.values()) == {"success"}, states
    campaign = sorted(m["recipient"] for m in gateway.messages() if m["recipient"] != APPROVER_PHONE)
    assert campaign == ["09121234567", "09351234567"]
    assert "The campaign is the dry run approved, within 5%: 2 rows, 2 messages to send." in running.task_logs()


def test_rows_added_after_the_dry_run_stop_the_send_once_approved(deployment, gateway):
    running, api, database = deployment
    gateway.reset()
    run_id = trigger(api)
    waiting_for_approval(api, running, run_id)
    added = [("09125556677", "Mina", "D4", 1), ("09127778899", "Ali", "E5", 1)]
    with sqlite3.connect(database) as db:
        db.executemany("INSERT INTO customers (phone, name, code, active) VALUES (?, ?, ?, ?)", added)
    try:
        approve(api, run_id)
        assert run_end(api, running, run_id) == "failed"
    finally:
        with sqlite3.connect(database) as db:
            db.execute("DELETE FROM customers WHERE id > ?", (len(CUSTOMERS),))

    assert task_state(api, run_id, "approve") == "success", running.task_logs()[-4000:]
    assert task_state(api, run_id, "send") == "failed"
    assert task_state(api, run_id, "wait_for_delivery") == "upstream_failed"
    # Only the approver's notice went out: not one text of the campaign.
    assert [m["recipient"] for m in gateway.messages()] == [APPROVER_PHONE]
    logs = running.task_logs()
    assert "The campaign changed since its dry run was approved, beyond the approval tolerance of 5%" in logs
    assert "rows read 2 approved, 4 now (+2; at most ±0.1 allowed)" in logs
    assert "messages to send 2 approved, 4 now (+2; at most ±0.1 allowed)" in logs
    assert "Run the dry run again and approve its new summary" in logs


def test_the_approval_is_refused_to_a_wrong_password(deployment):
    running = deployment[0]
    with pytest.raises(urllib.error.HTTPError) as refused:
        Api(int(running.env["AIRFLOW__API__PORT"]), "not-the-password")
    assert refused.value.code == 401
