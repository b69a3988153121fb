"""
A 100,000-recipient campaign on a multi-worker CeleryExecutor deployment, with a worker SIGKILLed mid-send.

The deployment (``cluster.py``): PostgreSQL metadata database (run as the ``postgres`` OS user), Redis broker,
scheduler, DAG processor, triggerer, API server and two Celery workers, each worker with its own
``AIRFLOW_HOME`` (its own DAG file copy and task logs), log-server port, Celery hostname and hostname.

The DAG reads its recipients from a PostgreSQL table (``sql_conn_id`` a postgres connection, ``key_field``),
sends through the sandbox gateway (Bitel API, a separate process answering each request after
``LATENCY_MS``) with an outcomes table in the same PostgreSQL, then waits with a deferrable
``P2PSmsDeliverySensor`` on ``send.output``.

Once the sandbox has accepted ``KILL_AT`` messages, the worker whose process tree runs the send task is
SIGKILLed whole: its process group (the Celery main process, its pool child, which is the task supervisor,
and the log server) and the group of the task process, which the supervisor puts in a group of its own.
Nothing of that worker survives to report anything: the scheduler finds the task instance without
heartbeat (``[scheduler] task_instance_heartbeat_timeout`` lowered to ``HEARTBEAT_TIMEOUT``), fails try 1,
and after ``retry_delay`` try 2 runs on the other worker, the only one left, which resumes from the
checkpoint in the task state store (Airflow 3.3+: the metadata database, which both workers reach).

What is checked, all of it, and reported together:

* the run succeeds; try 2 of the send ran on the other worker (Airflow's records of both tries, the task
  log files of each worker's home, the process seen under that worker's tree);
* nobody got the same text twice (the sandbox's own record, per recipient and text);
* every input row has its row in the outcomes table, with the status the sandbox's behaviour implies
  (delivered, failed, blacklisted, invalid, duplicate, or uncertain for the batches the killed try had
  marked as going out and never heard back about: some reached the sandbox, some never left), and the
  message id the sandbox gave;
* the sensor ended ``all_final`` with its report;
* every XCom value in the metadata database, the trigger's kwargs (decrypted with the deployment's Fernet
  key and deserialized as Airflow's ``Trigger`` model does; Airflow 3.3 stores them as plain JSON) and the
  trigger's event (the task instance's ``next_kwargs`` while the sensor resumes, else the triggerer's log
  line of it) are at most 64 KB of JSON.
"""

from __future__ import annotations

import ast
import contextlib
import json
import os
import re
import signal
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest

from airflow_provider_p2psms.sandbox import DEFAULT_BITEL_GATEWAY, DEFAULT_BITEL_TOKEN
from tests.deployment.cluster import CeleryDeployment, Worker
from tests.deployment.services import SandboxProcess, missing_service, running_redis, running_sandbox

pytestmark = [pytest.mark.deployment, pytest.mark.timeout(2400)]

DAG_ID = "celery_campaign"
RECIPIENTS = 100_000
MAX_CONCURRENCY = 4
#: Bitel's largest batch, the connection's default.
BATCH_SIZE = 100
#: The most messages a killed try may leave uncertain: two windows of batches in flight.
UNCERTAIN_BOUND = 2 * MAX_CONCURRENCY * BATCH_SIZE
#: Per send request while try 1 runs: 1,000 requests, 4 at a time, make a send of at least 50 s.
LATENCY_MS = 200
#: Accepted messages at which the worker running the send is killed (40%).
KILL_AT = 40_000
HEARTBEAT_TIMEOUT = 20
RETRY_DELAY = 5
#: The sensor polls 100,000 Bitel messages, one request each: 7 min at a load average of 5 on a 2-core machine,
#: 11 min at 10.
SENSOR_TIMEOUT = 1200
#: The bound every XCom value and the trigger's kwargs and event must keep, in bytes of JSON.
XCOM_LIMIT = 64 * 1024
SCHEMA = "crm"
OUTCOMES_TABLE = f"{SCHEMA}.sms_outcomes"
MESSAGE = "سلام {{ row.name }}، کد شما {{ row.code }}"

DAG = f'''
from __future__ import annotations

import datetime

import pendulum
from airflow.sdk import DAG
from airflow_provider_p2psms.operators.p2p_sms import P2PSmsOperator
from airflow_provider_p2psms.sensors.p2p_sms import P2PSmsDeliverySensor

with DAG(dag_id="{DAG_ID}", schedule=None, start_date=pendulum.datetime(2026, 1, 1), catchup=False):
    send = P2PSmsOperator(
        task_id="send",
        sms_conn_id="bitel_default",
        sql="SELECT customer_id, phone, name, code FROM {SCHEMA}.customers ORDER BY customer_id",
        sql_conn_id="crm_db",
        key_field="customer_id",
        message="{MESSAGE}",
        outcomes_conn_id="crm_db",
        outcomes_table="{OUTCOMES_TABLE}",
        max_concurrency={MAX_CONCURRENCY},
        retries=1,
        retry_delay=datetime.timedelta(seconds={RETRY_DELAY}),
    )
    P2PSmsDeliverySensor(
        task_id="wait",
        receipt=send.output,
        deferrable=True,
        poke_interval=5,
        timeout={SENSOR_TIMEOUT},
        min_delivered_ratio=0.95,
    )
'''


# ---------------------------------------------------------------------------------------------- the campaign


@dataclass(frozen=True)
class Row:
    customer_id: int
    phone: str
    name: str
    code: str
    #: What the row should end as in the outcomes table.
    expected: str

    @property
    def text(self) -> str:
        return f"سلام {self.name}، کد شما {self.code}"


def campaign() -> list[Row]:
    """
    100,000 customers: 100 whose texts fail (number ending 0001), 100 blacklisted (0002), 100 landlines
    (invalid), 50 repeating the row before them (duplicate), the rest delivered (numbers ending 7).
    """
    rows: list[Row] = []
    for i in range(RECIPIENTS):
        kind = i % 1000
        if kind == 0:
            rows.append(Row(i + 1, f"0912{i // 1000:03d}0001", f"user{i}", f"C{i:06d}", "failed"))
        elif kind == 500:
            rows.append(Row(i + 1, f"0912{i // 1000:03d}0002", f"user{i}", f"C{i:06d}", "blacklisted"))
        elif kind == 250:
            rows.append(Row(i + 1, f"021{i:08d}", f"user{i}", f"C{i:06d}", "invalid"))
        elif i % 2000 == 750:
            before = rows[-1]
            rows.append(Row(i + 1, before.phone, before.name, before.code, "duplicate"))
        else:
            rows.append(Row(i + 1, f"0912{i:06d}7", f"user{i}", f"C{i:06d}", "delivered"))
    return rows


def fill_customers(connect: Any, rows: list[Row]) -> None:
    with connect() as connection, connection.cursor() as cursor:
        cursor.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
        cursor.execute(f"CREATE SCHEMA {SCHEMA}")
        cursor.execute(
            f"CREATE TABLE {SCHEMA}.customers (customer_id INTEGER PRIMARY KEY, phone TEXT, name TEXT, code TEXT)"
        )
        with cursor.copy(f"COPY {SCHEMA}.customers (customer_id, phone, name, code) FROM STDIN") as copy:
            for row in rows:
                copy.write_row((row.customer_id, row.phone, row.name, row.code))


# ---------------------------------------------------------------------------------------------- observations


def json_size(value: Any) -> int:
    return len(json.dumps(value))


def decoded(value: Any) -> Any:
    """A JSON column's value as Python: psycopg decodes json/jsonb, a text column holds JSON text."""
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            return json.loads(value)
    return value


def decrypt_trigger_kwargs(stored: str, key: str) -> dict[str, Any]:
    """
    A trigger row's kwargs as Airflow's ``Trigger`` model reads them (``Trigger._decrypt_kwargs``): Fernet
    decryption with ``[core] fernet_key`` unless the text is plain JSON, JSON decoding, then serde.
    """
    from airflow.sdk.serde import deserialize
    from cryptography.fernet import Fernet

    text = stored if stored.startswith("{") else Fernet(key.encode()).decrypt(stored.encode()).decode()
    return deserialize(json.loads(text))


@dataclass
class Observed:
    """What the test saw while the run went on."""

    began: float = field(default_factory=time.monotonic)
    timeline: list[tuple[str, float]] = field(default_factory=list)
    #: trigger id -> (classpath, how the row stores its kwargs, JSON size of the decrypted kwargs, sizes by key)
    triggers: dict[int, tuple[str, str, int, dict[str, int]]] = field(default_factory=dict)
    trigger_errors: list[str] = field(default_factory=list)
    #: The event the trigger fired, where it was read, and its size in bytes of JSON.
    event: Any = None
    event_source: str | None = None
    event_size: int | None = None
    first_worker: str | None = None
    retry_worker_seen: str | None = None
    found_at: int = 0
    killed_at: int = 0
    accepted_after_kill: int = 0
    killed_processes: list[str] = field(default_factory=list)

    def mark(self, what: str) -> None:
        at = time.monotonic() - self.began
        self.timeline.append((what, at))
        print(f"[{at:7.1f} s] {what}", flush=True)

    def timeline_text(self) -> str:
        return ", ".join(f"{what} {at:.0f}s" for what, at in self.timeline)


class Metadata:
    """Queries on the PostgreSQL metadata database (and the campaign's schema in the same database)."""

    def __init__(self, connect: Any) -> None:
        self._connect = connect
        self._connection: Any = None

    def rows(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        import psycopg

        for attempt in range(3):
            try:
                if self._connection is None or self._connection.closed:
                    self._connection = self._connect(autocommit=True)
                with self._connection.cursor() as cursor:
                    cursor.execute(sql, args)
                    return list(cursor.fetchall())
            except psycopg.OperationalError:
                self.close()
                if attempt == 2:
                    raise
                time.sleep(1)
        return []

    def close(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(Exception):
                self._connection.close()
            self._connection = None

    def instance(self, task_id: str) -> tuple[str, str | None, int, str | None] | None:
        """``(id, state, try_number, hostname)`` of a task instance of the run."""
        found = self.rows(
            "SELECT id, state, try_number, hostname FROM task_instance WHERE dag_id = %s AND task_id = %s",
            DAG_ID,
            task_id,
        )
        if not found:
            return None
        ti_id, state, try_number, hostname = found[0]
        return str(ti_id), state, int(try_number or 0), hostname

    def run_state(self) -> str | None:
        found = self.rows("SELECT state FROM dag_run WHERE dag_id = %s", DAG_ID)
        return found[0][0] if found else None


def task_runner(worker: Worker, ti_id: str) -> psutil.Process | None:
    """The process running task instance ``ti_id``'s code in ``worker``'s tree: titled after the instance."""
    title = f"airflow worker -- {ti_id}"
    for process in worker.component.tree():
        with contextlib.suppress(psutil.Error):
            if " ".join(process.cmdline()).strip() == title:
                return process
    return None


def unfinished_tasks(worker: Worker) -> list[str]:
    """Task processes still alive in the worker's tree, and Celery tasks it received but has not finished."""
    found = []
    for process in worker.component.tree():
        with contextlib.suppress(psutil.Error):
            if " ".join(process.cmdline()).startswith("airflow worker -- "):
                found.append(f"process {process.pid}")
    events: dict[str, list[str]] = {}
    for task, what in re.findall(
        r"Task execute_workload\[([^\]]+)\] (received|succeeded|raised)", worker.component.log_text()
    ):
        events.setdefault(task, []).append(what)
    found += [f"celery task {task}" for task, seen in events.items() if seen == ["received"]]
    return found


def kill_worker(worker: Worker, runner: psutil.Process) -> list[str]:
    """
    SIGKILL the worker's whole tree: its process group (Celery main process, pool child = task supervisor,
    log server) and every other group in the tree (the task process runs in a group of its own).
    """
    tree = worker.component.tree()
    if runner not in tree:
        tree.append(runner)
    described = []
    groups = set()
    for process in tree:
        with contextlib.suppress(psutil.Error, ProcessLookupError):
            groups.add(os.getpgid(process.pid))
            described.append(f"{process.pid} (group {os.getpgid(process.pid)}) {' '.join(process.cmdline())[:100]}")
    assert os.getpgrp() not in groups, "the worker shares the test's process group; refusing to kill it"
    for group in sorted(groups):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGKILL)
    for process in tree:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
    # The Celery main process through its Popen (its exit status stays known), the rest through psutil.
    assert worker.component.process is not None
    worker.component.process.wait(timeout=30)
    _, alive = psutil.wait_procs([p for p in tree if p.pid != worker.component.pid], timeout=30)
    still = [p for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert not still, f"processes of {worker.name} survived SIGKILL: {still}"
    return described


def watch_trigger(metadata: Metadata, key: str, observed: Observed) -> None:
    """Measure every delivery trigger row and the event it fired, while they exist."""
    for trigger_id, classpath, stored in metadata.rows("SELECT id, classpath, kwargs FROM trigger"):
        if trigger_id in observed.triggers or "P2PSmsDeliveryTrigger" not in classpath:
            continue
        try:
            kwargs = decrypt_trigger_kwargs(stored, key)
        except Exception as error:
            observed.trigger_errors.append(f"trigger {trigger_id}: {type(error).__name__}: {error}")
            continue
        by_key = {name: json_size(value) for name, value in kwargs.items()}
        form = "plain JSON" if stored.startswith("{") else "a Fernet token"
        observed.triggers[trigger_id] = (classpath, f"{len(stored):,} characters of {form}", json_size(kwargs), by_key)
        observed.mark(f"trigger {trigger_id} measured: {json_size(kwargs):,} bytes of kwargs")
    if observed.event_source is None:
        found = metadata.rows("SELECT next_kwargs FROM task_instance WHERE dag_id = %s AND task_id = 'wait'", DAG_ID)
        if found and found[0][0]:
            from airflow.sdk.serde import deserialize

            # What the triggerer stored for the sensor to resume with: serde of {"event": payload}.
            raw = decoded(found[0][0])
            try:
                next_kwargs = deserialize(raw)
            except Exception:
                next_kwargs = raw
            if isinstance(next_kwargs, dict) and "event" in next_kwargs:
                record_event(observed, next_kwargs["event"], "task_instance.next_kwargs")


def record_event(observed: Observed, event: Any, source: str) -> None:
    observed.event, observed.event_source, observed.event_size = event, source, json_size(event)
    observed.mark(f"trigger event measured from {source}: {observed.event_size:,} bytes")


def event_from_trigger_log(deployment: CeleryDeployment, observed: Observed) -> None:
    """
    The event as the triggerer logged it (``Trigger fired event``, a ``TriggerEvent<{...}>`` repr), for when
    the sensor resumed and cleared ``next_kwargs`` between two looks at the metadata database.
    """
    for path in sorted((deployment.control_home / "logs").rglob("*.trigger.*.log")):
        for line in path.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError, SyntaxError, AttributeError):
                entry = json.loads(line)
                result = str(entry.get("result", ""))
                if entry.get("event") == "Trigger fired event" and result.startswith("TriggerEvent<"):
                    payload = ast.literal_eval(result.removeprefix("TriggerEvent<").removesuffix(">"))
                    record_event(observed, payload, f"the triggerer's log ({path.name})")
                    return


# ---------------------------------------------------------------------------------------------- the test


def test_worker_killed_mid_send_on_a_celery_deployment(tmp_path: Path, postgres: Any) -> None:
    try:
        import airflow.providers.celery  # noqa: F401
    except ImportError:
        missing_service("apache-airflow-providers-celery is not installed", "install the test extra (make venv).")
    import psycopg

    observed = Observed()
    rows = campaign()
    by_key = {str(row.customer_id): row for row in rows}
    sendable = [row for row in rows if row.expected not in ("invalid", "duplicate")]

    def connect(**options: Any) -> Any:
        return psycopg.connect(
            host=postgres.host,
            port=postgres.port,
            dbname=postgres.database,
            user=postgres.login,
            password=postgres.password,
            **options,
        )

    fill_customers(connect, rows)
    observed.mark(f"{len(rows):,} customers in {SCHEMA}.customers (PostgreSQL {postgres.version})")
    metadata_url = (
        f"postgresql+psycopg://{postgres.login}:{postgres.password}@{postgres.host}:{postgres.port}/{postgres.database}"
    )

    with (
        running_redis() as redis_server,
        running_sandbox(tmp_path, "--latency-ms", str(LATENCY_MS), "--delivery-seconds", "1") as sandbox,
    ):
        observed.mark(f"{redis_server.version.split(' sha')[0]} at {redis_server.url}; sandbox at {sandbox.url}")
        connections = {
            "AIRFLOW_CONN_BITEL_DEFAULT": json.dumps(
                {
                    "conn_type": "bitel",
                    "password": DEFAULT_BITEL_TOKEN,
                    "host": sandbox.url,
                    "extra": {"sender": DEFAULT_BITEL_GATEWAY, "retry_backoff": 0.05},
                }
            ),
            "AIRFLOW_CONN_CRM_DB": postgres.connection_json(),
        }
        deployment = CeleryDeployment(
            tmp_path / "deployment",
            DAG_ID,
            DAG,
            metadata_url=metadata_url,
            broker_url=redis_server.url,
            env={
                **connections,
                "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": str(HEARTBEAT_TIMEOUT),
                "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "2",
            },
        )
        metadata = Metadata(connect)
        failed = True
        try:
            deployment.airflow("db", "migrate", timeout=600)
            observed.mark("airflow db migrate on PostgreSQL done")
            deployment.start()
            ready_in = deployment.wait_ready(
                lambda: bool(metadata.rows("SELECT 1 FROM dag WHERE dag_id = %s", DAG_ID)), timeout=300
            )
            observed.mark(f"deployment ready in {ready_in:.0f} s: " + ", ".join(c.name for c in deployment.components))

            deployment.airflow("dags", "trigger", DAG_ID)
            observed.mark("run triggered")
            outcome = run_the_campaign(deployment, metadata, sandbox, observed)
            failed = False
        except BaseException:
            print(f"\n{deployment.dump()}\n===== sandbox =====\n{sandbox.log_tail()}", flush=True)
            raise
        finally:
            left = deployment.stop()
            observed.mark("deployment stopped")
            if left and not failed:
                raise AssertionError(f"processes of the deployment still run after stop: {left}")
        messages = sandbox.messages()
        observed.mark(f"{len(messages):,} messages read back from the sandbox")

    judge(outcome, messages, by_key, sendable, deployment, observed)


@dataclass
class Outcome:
    run_state: str | None
    send: tuple[str, str | None, int, str | None] | None
    wait: tuple[str, str | None, int, str | None] | None
    first_try_hostname: str | None
    receipt: dict[str, Any]
    report: dict[str, Any] | None
    xcom_sizes: list[tuple[str, str, int]]
    outcomes: list[tuple[Any, ...]]


def run_the_campaign(
    deployment: CeleryDeployment, metadata: Metadata, sandbox: SandboxProcess, observed: Observed
) -> Outcome:
    """Kill the worker running the send at ``KILL_AT`` accepted, follow the retry and the sensor to the end."""
    deadline = time.monotonic() + 240
    victim: Worker | None = None
    runner: psutil.Process | None = None
    while runner is None:
        deployment.check_running()
        instance = metadata.instance("send")
        assert time.monotonic() < deadline, f"the send task's process never showed up in a worker; {instance}"
        if instance is not None and instance[1] == "running" and instance[2] <= 1:
            for worker in deployment.workers:
                runner = task_runner(worker, instance[0])
                if runner is not None:
                    victim = worker
                    break
        accepted = sandbox.accepted()
        assert accepted < KILL_AT, f"{accepted:,} messages were accepted before the send's process was found"
        time.sleep(0.05)
    assert victim is not None
    observed.first_worker = victim.name
    observed.found_at = sandbox.accepted()
    observed.mark(f"send try 1 runs on {victim.name} (pid {runner.pid}), {observed.found_at:,} accepted")

    deadline = time.monotonic() + 300
    while (accepted := sandbox.accepted()) < KILL_AT:
        assert runner.is_running(), f"the send's process ended with only {accepted:,} messages accepted"
        assert time.monotonic() < deadline, f"only {accepted:,} messages accepted after 300 s of sending"
        deployment.watch()
        time.sleep(0.02)
    observed.killed_processes = kill_worker(victim, runner)
    observed.killed_at = accepted
    time.sleep(1)
    observed.accepted_after_kill = sandbox.accepted()
    observed.mark(
        f"SIGKILLed {victim.name} ({len(observed.killed_processes)} processes) at {accepted:,} accepted, "
        f"{observed.accepted_after_kill:,} once dead:\n    " + "\n    ".join(observed.killed_processes)
    )
    # The rest goes faster: the retry's sends and the sensor's 100,000 status requests.
    sandbox.configure(latency_ms=0)

    survivor = next(worker for worker in deployment.workers if worker is not victim)
    key = deployment.fernet_key
    deadline = time.monotonic() + HEARTBEAT_TIMEOUT + 240
    while observed.retry_worker_seen is None:
        deployment.check_running(except_for=[victim.name])
        instance = metadata.instance("send")
        assert time.monotonic() < deadline, f"try 2 of the send never ran; the send task instance is {instance}"
        assert instance is None or instance[1] not in ("failed", "success") or instance[2] >= 2, (
            f"try 1 ended as {instance[1]} instead of going up for retry"
        )
        if instance is not None and instance[2] >= 2:
            if instance[1] == "running":
                for worker in deployment.workers:
                    if worker is not victim and task_runner(worker, instance[0]) is not None:
                        observed.retry_worker_seen = worker.name
            elif instance[1] in ("success", "failed"):
                break  # it ran and ended between two looks; the records say where
        time.sleep(0.2)
    observed.mark(f"send try 2 seen running on {observed.retry_worker_seen or 'no worker (it ended first)'}")

    deadline = time.monotonic() + SENSOR_TIMEOUT + 120
    while (state := metadata.run_state()) not in ("success", "failed"):
        deployment.check_running(except_for=[victim.name])
        deployment.watch()
        assert time.monotonic() < deadline, (
            f"the run did not finish; last state {state}, send {metadata.instance('send')}, "
            f"wait {metadata.instance('wait')}, sandbox {sandbox.stats()['by_route']}"
        )
        watch_trigger(metadata, key, observed)
        # Once the trigger is running, look often: the event is in next_kwargs only until the sensor ends.
        time.sleep(0.1 if observed.triggers and observed.event_source is None else 0.5)
    watch_trigger(metadata, key, observed)
    if observed.event_source is None:
        event_from_trigger_log(deployment, observed)
    observed.mark(f"run ended: {state}")
    assert victim.component.process is not None and victim.component.process.poll() is not None, (
        f"{victim.name} came back"
    )
    assert survivor.component.running(), f"{survivor.name} died:\n{survivor.component.log_tail()}"
    # The run's state is final once the last task reported it; its processes may still be finishing.
    deadline = time.monotonic() + 60
    while busy := unfinished_tasks(survivor):
        assert time.monotonic() < deadline, f"{survivor.name} still runs tasks 60 s after the run ended: {busy}"
        time.sleep(0.5)

    send, wait = metadata.instance("send"), metadata.instance("wait")
    history = metadata.rows(
        "SELECT try_number, hostname, state FROM task_instance_history "
        "WHERE dag_id = %s AND task_id = 'send' ORDER BY try_number",
        DAG_ID,
    )
    first_try = next((hostname for try_number, hostname, _ in history if try_number == 1), None)
    xcoms = metadata.rows("SELECT dag_id, task_id, key, value FROM xcom ORDER BY dag_id, task_id, key")
    values = {(task_id, xkey): decoded(value) for _, task_id, xkey, value in xcoms}
    sizes = [(task_id, xkey, json_size(decoded(value))) for _, task_id, xkey, value in xcoms]
    outcomes = metadata.rows(
        f"SELECT row_key, recipient, message_id, status, parts, reason FROM {OUTCOMES_TABLE} "
        "WHERE dag_id = %s AND task_id = 'send'",
        DAG_ID,
    )
    metadata.close()
    return Outcome(
        run_state=state,
        send=send,
        wait=wait,
        first_try_hostname=first_try,
        receipt=values.get(("send", "return_value")) or {},
        report=values.get(("wait", "return_value")),
        xcom_sizes=sizes,
        outcomes=outcomes,
    )


def judge(
    outcome: Outcome,
    messages: list[dict[str, Any]],
    by_key: dict[str, Row],
    sendable: list[Row],
    deployment: CeleryDeployment,
    observed: Observed,
) -> None:
    """Check everything, then fail once listing every check that failed, with the numbers measured."""
    failures: list[str] = []

    def check(ok: bool, what: str) -> None:
        print(f"  {'PASS' if ok else 'FAIL'}  {what}", flush=True)
        if not ok:
            failures.append(what)

    receipt_counts = outcome.receipt.get("counts") or {}
    victim = deployment.worker(observed.first_worker or "")
    survivor = next(worker for worker in deployment.workers if worker is not victim)
    print(f"\nTimeline: {observed.timeline_text()}\nReceipt counts: {receipt_counts}", flush=True)

    # -- the run, and where each try ran
    check(outcome.run_state == "success", f"the run succeeded (state {outcome.run_state})")
    check(
        outcome.send is not None and outcome.send[1:3] == ("success", 2),
        f"the send succeeded on try 2 (state, try, hostname: {outcome.send and outcome.send[1:]})",
    )
    check(
        outcome.first_try_hostname == victim.hostname,
        f"try 1 ran on {victim.name}, the killed worker (task_instance_history hostname {outcome.first_try_hostname})",
    )
    check(
        outcome.send is not None and outcome.send[3] == survivor.hostname,
        f"try 2 ran on the other worker, {survivor.name} (task_instance hostname {outcome.send and outcome.send[3]}; "
        f"its process seen under {observed.retry_worker_seen})",
    )
    attempts = {
        worker.name: sorted(p.name for p in worker.task_logs() if "task_id=send" in str(p))
        for worker in deployment.workers
    }
    check(
        attempts[victim.name] == ["attempt=1.log"] and attempts[survivor.name] == ["attempt=2.log"],
        f"each worker's own home holds the log of the try it ran, and only that one: {attempts}",
    )
    resumed = [
        line
        for path in survivor.task_logs()
        if "task_id=send" in str(path)
        for line in path.read_text(errors="replace").splitlines()
        if "Resuming" in line
    ]
    check(
        receipt_counts.get("resumed", 0) > 0 and bool(resumed),
        f"try 2 resumed what try 1 sent: {receipt_counts.get('resumed')} resumed; log {resumed[:1]}",
    )

    # -- nobody texted twice
    per_text = Counter((message["recipient"], message["text"]) for message in messages)
    twice = {pair: n for pair, n in per_text.items() if n > 1}
    check(not twice, f"no recipient got the same text twice ({len(twice)} did: {list(twice.items())[:3]})")
    per_recipient = Counter(message["recipient"] for message in messages)
    check(max(per_recipient.values(), default=0) <= 1, "no recipient got more than one text")
    wanted = {row.phone: row.text for row in sendable}
    strangers = [m["recipient"] for m in messages if wanted.get(m["recipient"]) != m["text"]]
    check(not strangers, f"every text the sandbox got is the one its recipient's row renders ({len(strangers)} not)")

    # -- the outcomes table: one row per input row, consistent with what the sandbox got
    table = {
        str(row_key): (recipient, message_id, status, parts, reason)
        for row_key, recipient, message_id, status, parts, reason in outcome.outcomes
    }
    check(
        len(outcome.outcomes) == RECIPIENTS and set(table) == set(by_key),
        f"the outcomes table has one row per input row ({len(outcome.outcomes):,} rows, "
        f"{len(set(by_key) - set(table))} input rows missing, {len(set(table) - set(by_key))} unknown)",
    )
    by_id = {str(message["id"]): message for message in messages}
    statuses = Counter(status for _, _, status, _, _ in table.values())
    wrong: list[str] = []
    uncertain_keys = []
    referenced = set()
    for key, row in by_key.items():
        if key not in table:
            continue
        recipient, message_id, status, _, _ = table[key]
        if status == "uncertain":
            uncertain_keys.append(key)
            continue
        if status != row.expected:
            wrong.append(f"row {key}: {status}, expected {row.expected}")
        if row.expected in ("invalid", "duplicate"):
            continue
        message = by_id.get(str(message_id))
        referenced.add(str(message_id))
        if message is None or message["recipient"] != row.phone or recipient != row.phone:
            wrong.append(f"row {key}: message {message_id} to {recipient}, the sandbox has {message}")
    check(not wrong, f"every row's status and message id agree with the sandbox ({len(wrong)} not: {wrong[:3]})")
    texted_uncertain = [m for mid, m in by_id.items() if mid not in referenced]
    uncertain_phones = {by_key[key].phone for key in uncertain_keys}
    check(
        all(m["recipient"] in uncertain_phones for m in texted_uncertain),
        f"every message the sandbox got that no row names went to a row left uncertain "
        f"({len(texted_uncertain)} such messages)",
    )
    check(
        len(uncertain_keys) == receipt_counts.get("uncertain") and len(uncertain_keys) <= UNCERTAIN_BOUND,
        f"uncertain rows: {len(uncertain_keys)} (receipt says {receipt_counts.get('uncertain')}, "
        f"bound {UNCERTAIN_BOUND}), {len(uncertain_phones - set(per_recipient))} of them never texted",
    )
    check(
        receipt_counts.get("requested") == RECIPIENTS
        and receipt_counts.get("invalid") == 100
        and receipt_counts.get("duplicate") == 50
        and receipt_counts.get("sent", 0) + receipt_counts.get("uncertain", 0) == len(sendable),
        f"the receipt counts every row: {receipt_counts}",
    )
    print(f"Outcome statuses: {dict(statuses)}", flush=True)

    # -- the sensor's report
    report = outcome.report or {}
    report_counts = report.get("counts") or {}
    wait_state = outcome.wait and outcome.wait[1]
    check(
        wait_state == "success" and report.get("ending") == "all_final",
        f"the sensor succeeded with its report (state {wait_state}, ending {report.get('ending')})",
    )
    check(
        report.get("total") == receipt_counts.get("sent")
        and report_counts.get("delivered") == statuses.get("delivered")
        and report_counts.get("failed") == statuses.get("failed")
        and report_counts.get("blacklisted") == statuses.get("blacklisted"),
        f"the report agrees with the outcomes table: total {report.get('total')}, counts {report_counts}, "
        f"ratio {report.get('delivered_ratio')}",
    )

    # -- sizes: every XCom value, the trigger's kwargs and its event
    for task_id, xkey, size in outcome.xcom_sizes:
        check(size <= XCOM_LIMIT, f"XCom {task_id}.{xkey} is {size:,} bytes of JSON (limit {XCOM_LIMIT:,})")
    check(bool(outcome.xcom_sizes), f"the metadata database has XComs to measure ({len(outcome.xcom_sizes)})")
    check(not observed.trigger_errors, f"the trigger rows could be decrypted ({observed.trigger_errors})")
    check(bool(observed.triggers), "the delivery trigger's row was seen and measured")
    for trigger_id, (classpath, stored, size, keys) in observed.triggers.items():
        largest = dict(sorted(keys.items(), key=lambda item: -item[1])[:3])
        check(
            size <= XCOM_LIMIT,
            f"trigger {trigger_id} ({classpath.rsplit('.', 1)[-1]}) kwargs are {size:,} bytes of JSON decrypted "
            f"(stored as {stored}; largest {largest}) (limit {XCOM_LIMIT:,})",
        )
    event = observed.event if isinstance(observed.event, dict) else {}
    check(
        observed.event_size is not None and observed.event_size <= XCOM_LIMIT,
        f"the trigger's event is {observed.event_size} bytes of JSON (read from {observed.event_source}; "
        f"sizes by key { ({name: json_size(value) for name, value in event.items()}) }) (limit {XCOM_LIMIT:,})",
    )
    print(
        f"\nMeasured: try 1 on {victim.name}, its process found at {observed.found_at:,} accepted, killed at "
        f"{observed.killed_at:,} ({observed.accepted_after_kill:,} once dead); try 2 on {survivor.name}; "
        f"{len(messages):,} messages in the sandbox; wall time {time.monotonic() - observed.began:.0f} s",
        flush=True,
    )
    if failures:
        print(f"\n{deployment.dump()}", flush=True)
    assert not failures, f"{len(failures)} checks failed:\n" + "\n".join(failures)
