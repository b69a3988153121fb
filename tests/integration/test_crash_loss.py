"""A send task SIGKILLed half-way through a 20,000-recipient campaign, in a real deployment.

``airflow standalone`` runs with LocalExecutor, started as in ``test_real_deployment``. The send task
reads its recipients from a SQLite table and sends through the sandbox, which answers every request
after 50 ms. Once about half the messages are accepted, the task's own process is SIGKILLed: no
``finally``, no flush, no callback runs. Airflow retries the task and the retry resumes from the
checkpoint the killed try left (task state store on Airflow 3.3+, files under
``$AIRFLOW_HOME/p2psms_checkpoints`` before).

Finding the process: LocalExecutor's worker process runs the task supervisor, titled
``airflow worker -- LocalExecutor: ...``. The supervisor forks the task runner, which retitles itself
``airflow worker -- <task instance id>`` (``setproctitle`` in ``task_runner.startup``) before it runs the
operator. The test reads the id of the ``send`` task instance from the metadata database and looks,
among the descendants of the ``airflow standalone`` process, for the process with exactly that title
whose parent is a LocalExecutor supervisor. Killing that process and not the supervisor is a crash of
the task that its supervisor survives to report: the task instance goes up for retry.
"""

from __future__ import annotations

import contextlib
import json
import signal
import sqlite3
import time
import uuid
from pathlib import Path
from typing import Any

import psutil
import pytest

from airflow_provider_p2psms.campaign.receipt import MAX_PROBLEMS
from airflow_provider_p2psms.models import receipt_messages
from airflow_provider_p2psms.version_compat import AIRFLOW_V_3_3_PLUS
from tests.helpers import connection_env
from tests.integration.deployment import Deployment, query, standalone
from tests.reliability.support import people, sent_counts, sqlite_conn_env, state_store_keys, write_people_db

pytestmark = pytest.mark.integration

DAG_ID = "crash_loss"
RECIPIENTS = 20_000
MAX_CONCURRENCY = 4
#: Messages per send request (IPPanel's largest, set on the connection so that the bound below holds it).
BATCH_SIZE = 100
#: The most messages a killed try may leave uncertain: two windows of batches in flight.
UNCERTAIN_BOUND = 2 * MAX_CONCURRENCY * BATCH_SIZE
LATENCY_MS = 50
KILL_AT = RECIPIENTS // 2

DAG = f'''
from __future__ import annotations

import datetime

import pendulum
from airflow.sdk import DAG
from airflow_provider_p2psms.operators.p2p_sms import P2PSmsOperator

with DAG(dag_id="{DAG_ID}", schedule=None, start_date=pendulum.datetime(2026, 1, 1), catchup=False):
    P2PSmsOperator(
        task_id="send",
        sms_conn_id="ippanel_default",
        sql="SELECT phone, name FROM people ORDER BY rowid",
        sql_conn_id="recipients_db",
        message="سلام {{{{ row.name }}}}",
        max_concurrency={MAX_CONCURRENCY},
        retries=2,
        retry_delay=datetime.timedelta(seconds=2),
    )
'''


def _send_instance(db: Path) -> tuple[str, str | None, int] | None:
    """``(id, state, try_number)`` of the ``send`` task instance, its id as ``str(UUID)``."""
    rows = query(db, "SELECT id, state, try_number FROM task_instance WHERE dag_id = ? AND task_id = 'send'", DAG_ID)
    if not rows:
        return None
    ti_id, state, try_number = rows[0]
    return str(uuid.UUID(ti_id if isinstance(ti_id, str) else bytes(ti_id).hex())), state, int(try_number or 0)


def _task_runner(deployment: Deployment, ti_id: str) -> psutil.Process | None:
    """The process running task instance ``ti_id``'s code: titled after it, forked by a LocalExecutor supervisor."""
    for process in deployment.descendants():
        try:
            if " ".join(process.cmdline()).strip() != f"airflow worker -- {ti_id}":
                continue
            parent = process.parent()
            if parent is not None and " ".join(parent.cmdline()).startswith("airflow worker -- LocalExecutor"):
                return process
        except psutil.Error:
            continue
    return None


def _checkpoint(deployment: Deployment) -> list[Any]:
    """The send task's resume checkpoint entries where this Airflow keeps them."""
    if not AIRFLOW_V_3_3_PLUS:
        return sorted(str(p) for p in (deployment.home / "p2psms_checkpoints").rglob("*.json"))
    for _ in range(20):
        try:
            return state_store_keys(deployment.db, DAG_ID)
        except sqlite3.OperationalError:  # the metadata database is busy
            time.sleep(0.25)
    return []


def _log_events(logs: str, text: str) -> list[str]:
    """The messages of task log lines (JSON, one a line) that contain ``text``."""
    events = []
    for line in logs.splitlines():
        if text in line:
            with contextlib.suppress(ValueError, AttributeError):
                line = json.loads(line).get("event", line)
            events.append(line.strip())
    return events


def test_sigkill_mid_send_texts_nobody_twice_and_reports_everyone_not_texted(tmp_path, sandbox):
    sandbox.configure(latency_ms=LATENCY_MS)
    rows = people(RECIPIENTS)
    expected = {"+98" + row["phone"][1:] for row in rows}  # the IPPanel wire format
    env = {
        **connection_env(sandbox, batch_size=BATCH_SIZE),
        **sqlite_conn_env("recipients_db", write_people_db(tmp_path / "people.db", rows)),
    }
    with standalone(tmp_path, DAG_ID, DAG, env, own_checkpoint_path=False) as deployment:
        db = deployment.db
        deployment.airflow("dags", "trigger", DAG_ID)
        deadline = time.monotonic() + 150

        # The first try's task runner, found before it has sent much.
        runner = None
        while runner is None:
            assert time.monotonic() < deadline, f"the send task never ran; {_send_instance(db)}"
            instance = _send_instance(db)
            if instance is not None and instance[1] == "running" and instance[2] <= 1:
                runner = _task_runner(deployment, instance[0])
            accepted = sandbox.stats()["messages"]
            assert accepted < KILL_AT, f"{accepted} messages were accepted before the task process was found"
            time.sleep(0.02)
        found_at = sandbox.stats()["messages"]

        while (accepted := sandbox.stats()["messages"]) < KILL_AT:
            assert runner.is_running(), f"the task process ended with only {accepted} messages accepted"
            time.sleep(0.002)
        runner.send_signal(signal.SIGKILL)  # psutil checks the pid still names the same process
        runner.wait(timeout=30)
        accepted_at_kill = sandbox.stats()["messages"]
        checkpoint = _checkpoint(deployment)
        where = "task state store" if AIRFLOW_V_3_3_PLUS else "$AIRFLOW_HOME/p2psms_checkpoints"
        assert checkpoint, f"the killed try left no checkpoint in the {where}"

        state = None
        while state not in ("success", "failed"):
            assert time.monotonic() < deadline, f"the run did not finish; last state {state}, {_send_instance(db)}"
            time.sleep(1)
            runs = query(db, "SELECT state FROM dag_run WHERE dag_id = ?", DAG_ID)
            state = runs[0][0] if runs else None
        instance = _send_instance(db)
        values = query(db, "SELECT value FROM xcom WHERE dag_id = ? AND task_id = 'send'", DAG_ID)
        receipt = json.loads(values[0][0]) if values else {"counts": {}, "messages": "", "problems": []}
        logs = deployment.task_logs()

    per_recipient = sent_counts(sandbox)
    duplicates = {recipient: n for recipient, n in per_recipient.items() if n > 1}
    received = set(per_recipient)
    receipted = [recipient for _, recipient in receipt_messages(receipt["messages"])]
    counts = receipt["counts"]
    uncertain = counts.get("uncertain", 0)
    never_texted = expected - received
    uncertain_lines = [problem for problem in receipt["problems"] if problem.startswith("Uncertain")]
    resumed = _log_events(logs, "Resuming: an earlier try had")
    measured = (
        f"Airflow {'3.3+' if AIRFLOW_V_3_3_PLUS else '< 3.3'} ({where}): task process found at {found_at} "
        f"accepted, SIGKILLed at {accepted} accepted, {accepted_at_kill} accepted once it was dead; "
        f"after the retry: {len(received)} recipients texted, {uncertain} uncertain in the receipt "
        f"(bound {UNCERTAIN_BOUND}), {len(never_texted)} never texted, "
        f"{uncertain - len(never_texted)} uncertain yet texted, {len(duplicates)} texted twice; "
        f"receipt counts {counts}; retry log {resumed}; send task (id, state, try) {instance}"
    )
    print(f"\n{measured}")

    # The run ends: the retry resumed and succeeded.
    assert state == "success", f"{measured}\n{deployment.log_tail()}"
    assert instance is not None and instance[1:] == ("success", 2), measured

    # Nobody got the text twice.
    assert not duplicates, f"{len(duplicates)} recipients got the text twice: {measured}"

    # Nobody was silently dropped: each recipient either got the text or is reported uncertain.
    assert received <= expected, measured
    assert set(receipted) <= received, measured  # every message in the receipt went out
    assert len(receipted) == len(set(receipted)) == counts["sent"], measured
    assert counts["sent"] + uncertain == counts["requested"] == RECIPIENTS, measured
    # So the uncertain ones are exactly those outside the receipt, and a recipient never texted is one.
    assert not never_texted & set(receipted), measured
    assert len(received) + uncertain >= RECIPIENTS, measured
    assert len(uncertain_lines) >= min(uncertain, MAX_PROBLEMS), f"{receipt['problems'][:5]}: {measured}"

    # A crash leaves at most two windows of batches uncertain (the sender marks at most that far ahead).
    assert uncertain <= UNCERTAIN_BOUND, f"{uncertain} uncertain, more than {UNCERTAIN_BOUND}: {measured}"
