"""Resuming without duplicates: checkpoints after accepted batches, retries that skip them, cleanup.

In-process tests run the operator's ``execute`` twice with the same checkpoint store, as two tries of
one task instance would; the DAG test does the same through a genuine Airflow retry.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import textwrap
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from airflow_provider_p2psms.campaign import marking
from airflow_provider_p2psms.campaign.ledger import SendLedger
from airflow_provider_p2psms.campaign.recipients import MessageBuilder
from airflow_provider_p2psms.campaign.stores import TaskStateKeyValueStore, checkpoint_store
from airflow_provider_p2psms.exceptions import SmsConfigurationError, SmsGatewayUnavailable
from airflow_provider_p2psms.hooks.factory import get_sms_hook
from airflow_provider_p2psms.models import message_key, receipt_messages
from airflow_provider_p2psms.operators.p2p_sms import P2PSmsOperator
from airflow_provider_p2psms.sandbox import DEFAULT_BITEL_TOKEN
from tests.helpers import GATEWAYS, needs_dags_test_retries
from tests.reliability.support import (
    RETRY_CALLBACK_SOURCE,
    STATE_VALUE_LIMIT,
    MemoryTaskState,
    gateway_conn_env,
    people,
    phone,
    read_ledger,
    record,
    run_success_callbacks,
    sent_counts,
    sqlite_conn_env,
    state_store_keys,
    task_context,
    write_people_db,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from airflow_provider_p2psms.hooks.base import P2PSmsHook
    from airflow_provider_p2psms.sandbox import SandboxServer

MESSAGE = "Hi {{ row.name }}, your code is {{ row.code }}"


def make_operator(**kwargs: Any) -> P2PSmsOperator:
    arguments: dict[str, Any] = {
        "task_id": "send",
        "sms_conn_id": "bitel_default",
        "message": MESSAGE,
        "max_concurrency": 3,
    }
    return P2PSmsOperator(**{**arguments, **kwargs})


def wire(gateway: str, number: str) -> str:
    """``number`` (local form) as the gateway's wire format."""
    return number if gateway == "bitel" else f"+98{number[1:]}"


def batches(server: SandboxServer) -> list[list[str]]:
    """The recipients of each accepted send request, in request order."""
    grouped: dict[int, list[str]] = {}
    for message in server.messages():
        grouped.setdefault(message["request_seq"], []).append(message["recipient"])
    return list(grouped.values())


def checkpoint_files(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.rglob("*.json"))


@pytest.mark.parametrize("gateway", GATEWAYS)
@pytest.mark.parametrize("store", ["task_state_store", "object_storage"])
def test_retry_in_reverse_order_sends_only_the_rest_and_merges_the_receipt(connect, tmp_path, gateway, store):
    sandbox = connect(batch_size=10)
    rows = people(95)
    state = MemoryTaskState() if store == "task_state_store" else None
    folder = tmp_path / "checkpoints"
    checkpoint_path = None if state is not None else f"file://{folder}"

    sandbox.configure(fail_sends_after=4)
    # One request at a time, so that the four accepted batches are the first four.
    first = make_operator(
        sms_conn_id=f"{gateway}_default", recipients=rows, checkpoint_path=checkpoint_path, max_concurrency=1
    )
    with pytest.raises(SmsGatewayUnavailable, match="did not answer"):
        first.execute(task_context(state, try_number=1))

    accepted_first = [m["recipient"] for m in sandbox.messages()]
    assert len(accepted_first) == 40
    # Receipts of the accepted batches, nothing in flight: refused batches were released.
    values = state.values if state is not None else {path.stem: path.read_text() for path in folder.rglob("*.json")}
    between = read_ledger(values)
    assert sorted(recipient for _, recipient in between.sent.values()) == sorted(accepted_first)
    assert between.uncertain == set()

    sandbox.configure(fail_sends_after=None)
    second = make_operator(
        sms_conn_id=f"{gateway}_default", recipients=list(reversed(rows)), checkpoint_path=checkpoint_path
    )
    context = task_context(state, try_number=2)
    receipt = second.execute(context)

    counts = sent_counts(sandbox)
    assert sorted(counts) == sorted(wire(gateway, row["phone"]) for row in rows)
    assert set(counts.values()) == {1}
    assert receipt["counts"]["sent"] == 95
    assert receipt["counts"]["resumed"] == 40
    assert receipt["counts"]["uncertain"] == 0
    assert sorted(receipt_messages(receipt["messages"])) == sorted(
        [m["id"], m["recipient"]] for m in sandbox.messages()
    )
    # Each try batched the rows in the order it read them: the retry's batches run backwards.
    assert sorted(batches(sandbox)) == sorted(
        [[wire(gateway, phone(i)) for i in range(start, start + 10)] for start in range(0, 40, 10)]
        + [[wire(gateway, phone(i)) for i in range(stop - 1, max(stop - 11, 39), -1)] for stop in range(95, 40, -10)]
    )
    # Until Airflow has stored the receipt, the checkpoint holds every message: a retry sends nothing.
    values = state.values if state is not None else {path.stem: path.read_text() for path in folder.rglob("*.json")}
    assert len(read_ledger(values).sent) == 95
    # Then the success callbacks run, and the checkpoint is gone.
    run_success_callbacks(second, context)
    if state is not None:
        assert state.values == {}
    else:
        assert checkpoint_files(folder) == []


def test_a_try_stopped_between_batches_leaves_nothing_uncertain(connect):
    """
    A timeout (or SIGTERM) raised while batches wait to be sent: only sent batches may stay in flight.

    Airflow's ``execution_timeout`` raises in the task's main thread from a SIGALRM handler; a batch
    that was marked in flight but never handed to the gateway must be released, or the retry would
    take it for uncertain and nobody in it would ever get a text.
    """
    sandbox = connect(batch_size=5)
    sandbox.configure(latency_ms=150)
    rows = people(60)
    state = MemoryTaskState()

    class Timeout(Exception):
        pass

    def expire(signum: int, frame: Any) -> None:
        raise Timeout

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, 0.4)
    try:
        with pytest.raises(Timeout):
            make_operator(recipients=rows, max_concurrency=1).execute(task_context(state))
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)

    accepted_first = len(sandbox.messages())
    assert 0 < accepted_first < 60
    left = read_ledger(state.values).uncertain
    assert left == set(), f"{len(left)} messages left in flight, though every sent batch was answered"

    sandbox.configure(latency_ms=0)
    receipt = make_operator(recipients=rows, max_concurrency=1).execute(task_context(state, try_number=2))
    assert receipt["counts"] | {"sent": 60, "resumed": accepted_first, "uncertain": 0} == receipt["counts"]
    counts = sent_counts(sandbox)
    assert len(counts) == 60
    assert set(counts.values()) == {1}


def test_receipts_of_rows_gone_from_the_input_are_still_merged(connect):
    """Rows an earlier try sent but the retry no longer reads (the table changed) stay in the receipt."""
    sandbox = connect(batch_size=10)
    rows = people(50)
    state = MemoryTaskState()
    sandbox.configure(fail_sends_after=2)
    with pytest.raises(SmsGatewayUnavailable):
        make_operator(recipients=rows, max_concurrency=1).execute(task_context(state))
    sandbox.configure(fail_sends_after=None)

    receipt = make_operator(recipients=rows[10:], max_concurrency=1).execute(task_context(state, try_number=2))

    assert len(sandbox.messages()) == 50
    assert sorted(receipt_messages(receipt["messages"])) == sorted(
        [m["id"], m["recipient"]] for m in sandbox.messages()
    )
    assert receipt["counts"]["sent"] == 50
    assert receipt["counts"]["resumed"] == 20


def sender_for(state: MemoryTaskState, max_concurrency: int) -> tuple[P2PSmsHook, Callable[[list[Any]], None]]:
    """The ``bitel_default`` hook, and a function sending rows through its bulk send, ledger in ``state``."""
    hook = get_sms_hook("bitel_default")
    ledger = SendLedger(TaskStateKeyValueStore(state))
    ledger.load()
    builder = MessageBuilder(
        template=make_operator(recipients=[]).get_template_env().from_string(MESSAGE),
        context={},
        normalize=hook.normalize_number,
        phone_field="phone",
        max_parts=8,
        fail_on_invalid=False,
    )

    def send_all(rows: list[Any]) -> None:
        messages = (message for _, message in builder.build(rows))
        for _ in hook.send_messages(messages, max_concurrency=max_concurrency, ledger=ledger):
            pass

    return hook, send_all


def test_every_batch_is_marked_in_flight_before_it_is_sent(connect, monkeypatch):
    connect(batch_size=10)
    state = MemoryTaskState()
    hook, send_all = sender_for(state, max_concurrency=3)
    marked_before_sending = []
    send_batch = hook.send_batch

    def checked_send_batch(messages: Any, **kwargs: Any) -> Any:
        marks = read_ledger(state.values).uncertain
        marked_before_sending.append(all(message_key(m.recipient, m.text) in marks for m in messages))
        return send_batch(messages, **kwargs)

    monkeypatch.setattr(hook, "send_batch", checked_send_batch)
    send_all(people(95))

    assert marked_before_sending == [True] * 10
    after = read_ledger(state.values)
    assert len(after.sent) == 95
    assert after.uncertain == set()


def test_checkpoint_values_stay_under_the_state_store_limit(connect):
    """5,000 messages at 16 requests in flight: no checkpoint value reaches 64 KB, and it all reads back."""
    sandbox = connect(batch_size=100, max_concurrency=16)
    state = MemoryTaskState()
    _, send_all = sender_for(state, max_concurrency=16)
    send_all(people(5000))

    assert len(sandbox.messages()) == 5000
    assert 0 < state.largest <= STATE_VALUE_LIMIT
    # An append-only log: every entry written once, none rewritten.
    assert sorted(state.values) == sorted(f"p2psms.log.{n}" for n in range(len(state.values)))
    assert state.sets == len(state.values) > 1
    reread = SendLedger(TaskStateKeyValueStore(state))
    reread.load()
    assert len(reread.sent) == 5000
    assert reread.uncertain == set()
    key = message_key(phone(0), "Hi user0, your code is C00000")
    assert reread.sent[key][1] == phone(0)


class SlowStore(MemoryTaskState):
    """A store whose writes take as long as the task state store's under ``airflow dags test``."""

    def set(self, key: str, value: Any) -> None:
        time.sleep(0.3)
        super().set(key, value)


def test_a_refused_try_with_a_slow_store_leaves_only_the_unanswered_uncertain(connect, monkeypatch):
    """
    Batches marked ahead of the senders and released when the gateway refuses: each release must land
    after its marks, however late the marks' write comes, or the retry would skip those messages.
    """
    # The refusal comes while the marks of the batches ready ahead are still being written.
    monkeypatch.setattr(marking, "FLUSH_SECONDS", 0.0)
    sandbox = connect(batch_size=10, max_retries=0)
    sandbox.configure(fail_sends_after=1)
    state = SlowStore()
    with pytest.raises(SmsGatewayUnavailable):
        make_operator(recipients=people(400), max_concurrency=1).execute(task_context(state))

    left = read_ledger(state.values)
    assert len(left.sent) == len(sandbox.messages()) == 10
    assert left.uncertain == set()


class DyingStore(MemoryTaskState):
    """A store whose worker dies after a number of further writes."""

    writes_left: int | None = None

    def set(self, key: str, value: Any) -> None:
        if self.writes_left is not None:
            if self.writes_left == 0:
                raise SystemExit("worker died")
            self.writes_left -= 1
        super().set(key, value)


def empty_ledger() -> tuple[MemoryTaskState, SendLedger]:
    """A ledger on a new in-memory store, loaded."""
    state = MemoryTaskState()
    ledger = SendLedger(TaskStateKeyValueStore(state))
    ledger.load()
    return state, ledger


def random_receipts(count: int) -> dict[int, list[str]]:
    """Receipts with 32-hex-digit ids that look random, so they compress as badly as Bitel's."""
    return {key: [f"{message_key(str(key), 'id'):016x}{key:016x}", phone(key % 9000)] for key in range(1, count + 1)}


def test_a_crash_between_two_writes_of_one_flush_never_loses_a_mark():
    """Entries are written in order and never rewritten, so a crash leaves everything before it intact."""
    state = DyingStore()
    ledger = SendLedger(TaskStateKeyValueStore(state))
    ledger.load()
    first = list(range(1, 6001, 2))
    ledger.mark_in_flight(first)
    record(ledger, {key: ["id", "0912"] for key in first[:2000]})
    unanswered = set(first[2000:])

    # 6,000 marks take two entries (4,000 keys each at most): the worker dies writing the second.
    state.writes_left = 1
    with pytest.raises(SystemExit):
        ledger.mark_in_flight(range(2, 12002, 2))

    reread = read_ledger(state.values)
    assert reread.uncertain == unanswered | set(range(2, 8002, 2))
    assert reread.sent.keys() == set(first[:2000])


def test_staged_receipts_ride_along_with_the_next_marks():
    """Accepted and released messages wait for the next write; marks are written at once."""
    state, ledger = empty_ledger()
    ledger.mark_in_flight([1, 2, 3])
    ledger.mark_in_flight([4, 5])
    ledger.stage({1: ["id-1", "0912"], 2: ["id-2", "0912"]}, released=[3])
    assert ledger.staged == 2
    assert state.sets == 2
    ledger.mark_in_flight([6, 7])  # carries 1, 2 and 3 as well
    assert (state.sets, ledger.staged) == (3, 0)
    record(ledger, {4: ["id-4", "0912"], 6: ["id-6", "0912"]})
    ledger.flush()  # nothing staged: nothing written
    assert state.sets == 4

    reread = read_ledger(state.values)
    assert reread.uncertain == {5, 7}
    assert sorted(reread.sent) == [1, 2, 4, 6]
    assert reread.sent[4] == ["id-4", "0912"]


def test_marks_are_written_after_everything_staged_before_them():
    """
    Receipts that do not fit beside the next marks go in entries of their own, ahead of the marks: a log
    cut short after any entry holds fewer messages in flight than the whole one, never more.
    """
    state, ledger = empty_ledger()
    accepted = random_receipts(3000)
    ledger.mark_in_flight(accepted)
    ledger.stage(accepted)
    assert ledger.pending == 3000
    written = ledger.mark_in_flight(range(5001, 6601))
    assert written == 3000
    assert ledger.staged == ledger.pending == 0
    assert state.sets > 2  # the receipts take more than one entry
    # Cut after each entry: the new marks appear only in the last one, and until then the messages in
    # flight only decrease.
    new_marks = set(range(5001, 6601))
    cuts = [
        read_ledger({f"p2psms.log.{n}": state.values[f"p2psms.log.{n}"] for n in range(end)})
        for end in range(1, state.sets + 1)
    ]
    in_flight = [len(cut.uncertain) for cut in cuts]
    assert all(not cut.uncertain & new_marks for cut in cuts[:-1])
    assert in_flight[:-1] == sorted(in_flight[:-1], reverse=True)
    assert in_flight[0] == 3000
    assert in_flight[-1] == 1600
    reread = read_ledger(state.values)
    assert reread.sent == accepted
    assert reread.uncertain == set(range(5001, 6601))


def test_receipts_that_do_not_fit_one_value_are_split():
    state, ledger = empty_ledger()
    accepted = random_receipts(5000)
    ledger.mark_in_flight(accepted)
    record(ledger, accepted)
    assert 2 < state.sets < 8
    assert 0 < state.largest <= STATE_VALUE_LIMIT
    assert read_ledger(state.values).sent == accepted


@pytest.mark.parametrize(
    "value",
    [
        {"00000000000000ff": ["id", "0912"]},
        "00000000000000ff",
        "AAAAAAAAAP8=:AAAAAAAAAP8=:not zlib",
        "AAAAAP8=::",
    ],
)
def test_a_checkpoint_of_another_format_is_refused_with_what_to_do(value):
    state = MemoryTaskState()
    state.set("p2psms.log.0", value)
    with pytest.raises(SmsConfigurationError, match=r"'p2psms.log.0' cannot be read.*clear the task's state"):
        read_ledger(state.values)


class FailingDeletes(MemoryTaskState):
    """A store that stops deleting after a number of deletes."""

    deletes_left = 1

    def delete(self, key: str) -> None:
        if self.deletes_left == 0:
            raise RuntimeError("state store unavailable")
        self.deletes_left -= 1
        super().delete(key)


def test_a_clean_up_that_fails_half_way_leaves_a_readable_prefix_and_does_not_fail(caplog):
    state = FailingDeletes()
    ledger = SendLedger(TaskStateKeyValueStore(state))
    ledger.load()
    for start in range(0, 3000, 1000):
        record(ledger, {key: [f"{key:032x}", phone(key % 9000)] for key in range(start, start + 1000)})
    entries = sorted(state.values)
    assert entries == ["p2psms.log.0", "p2psms.log.1", "p2psms.log.2"]

    with caplog.at_level(logging.WARNING):
        ledger.clear()

    assert sorted(state.values) == entries[:2]
    assert read_ledger(state.values).sent.keys() == set(range(2000))
    assert "Could not delete the resume checkpoint 'p2psms.log.1' (RuntimeError" in caplog.text


def test_a_ledger_cleared_without_being_loaded_deletes_every_entry():
    """The success callback clears a ledger it never read; a store without a bulk clear must still empty."""
    state = MemoryTaskState()
    writer = SendLedger(TaskStateKeyValueStore(state))
    writer.load()
    for start in range(0, 3000, 1000):
        record(writer, {key: [f"{key:032x}", phone(key % 9000)] for key in range(start, start + 1000)})
    state.set("someone.else", 1)
    assert len(state.values) == 4

    SendLedger(TaskStateKeyValueStore(state)).clear()

    assert state.values == {"someone.else": "1"}


def test_the_checkpoint_clean_up_runs_after_the_users_success_callbacks():
    def users(context: Any) -> None:
        pass

    from airflow_provider_p2psms.operators import p2p_sms

    operator = make_operator(recipients=["09121234567"], on_success_callback=users)
    assert operator.on_success_callback == [users, p2p_sms._delete_checkpoint]
    assert make_operator(recipients=["09121234567"]).on_success_callback != []


def test_checkpoints_are_scoped_to_the_task_instance_and_its_map_index(tmp_path):
    contexts = [task_context(MemoryTaskState()) for _ in range(2)]
    for index, context in enumerate(contexts):
        context["ti"].map_index = index
    assert isinstance(checkpoint_store(contexts[0], None), TaskStateKeyValueStore)
    stores = [checkpoint_store(context, f"file://{tmp_path}") for context in contexts]
    ledger = SendLedger(stores[0])
    ledger.load()
    record(ledger, {1: ["id-1", phone(1)]})

    other = SendLedger(stores[1])
    other.load()
    assert other.sent == {}
    again = SendLedger(stores[0])
    again.load()
    assert again.sent == {1: ["id-1", phone(1)]}
    files = sorted(path.relative_to(tmp_path).as_posix() for path in tmp_path.rglob("*.json"))
    assert files == ["reliability/manual__1/send/0/p2psms.log.0.json"]


# --------------------------------------------------------------------------- a real Airflow retry

RESUME_DAG = """
send_state = P2PSmsOperator(
    task_id="send_state",
    sms_conn_id="bitel_default",
    sql=SQL,
    sql_conn_id="recipients_db",
    message=MESSAGE,
    max_concurrency=4,
    retries=2,
    retry_delay=datetime.timedelta(seconds=0),
    on_retry_callback=heal(FIRST_URL, {"fail_sends_after": None}, FIRST_SNAPSHOT),
)
send_files = P2PSmsOperator(
    task_id="send_files",
    sms_conn_id="bitel_other",
    sql=SQL,
    sql_conn_id="recipients_db",
    message=MESSAGE,
    max_concurrency=4,
    checkpoint_path=CHECKPOINTS,
    retries=2,
    retry_delay=datetime.timedelta(seconds=0),
    on_retry_callback=heal(OTHER_URL, {"fail_sends_after": None}, OTHER_SNAPSHOT, FOLDER),
)
P2PSmsDeliverySensor(
    task_id="wait",
    receipt=send_state.output,
    sms_conn_id="bitel_status",
    poke_interval=0.5,
    timeout=120,
)
"""


@needs_dags_test_retries
@pytest.mark.integration
def test_hard_failure_then_airflow_retry_in_another_order(run_dag, sandbox, other_sandbox, tmp_path):
    """
    Sends fail for good after 4 batches; the retry reads the rows in reverse and finishes the job.

    Two send tasks, one per checkpoint store (the task state store, and ``checkpoint_path`` files),
    each on its own sandbox; the sensor tracks the first one's receipt through flaky status reads.
    """
    count = 500
    rows = people(count)
    database = write_people_db(tmp_path / "recipients.db", rows)
    folder = tmp_path / "checkpoints"
    snapshots = {"state": tmp_path / "state.json", "files": tmp_path / "files.json"}
    for server in (sandbox, other_sandbox):
        server.configure(fail_sends_after=4, retry_after_seconds=0.01)
    sandbox.configure(status_5xx_rate=0.1, status_429_rate=0.1, status_drop_rate=0.05, seed=11)
    fast = {"batch_size": 50, "retry_backoff": 0.01, "max_retries": 2}
    env = {
        **gateway_conn_env("bitel_default", "bitel", sandbox, DEFAULT_BITEL_TOKEN, **fast),
        **gateway_conn_env("bitel_other", "bitel", other_sandbox, DEFAULT_BITEL_TOKEN, **fast),
        **gateway_conn_env("bitel_status", "bitel", sandbox, DEFAULT_BITEL_TOKEN, retry_backoff=0.01, max_retries=12),
        **sqlite_conn_env("recipients_db", database),
        # The receipts' messages are read below, after the sensor has ended.
        "AIRFLOW__P2PSMS__DETAIL_RETENTION": "keep",
    }
    constants = {
        "SQL": "SELECT phone, name, code FROM people ORDER BY {{ 'rowid' if ti.try_number == 1 else 'rowid DESC' }}",
        "MESSAGE": MESSAGE,
        "FIRST_URL": sandbox.url,
        "OTHER_URL": other_sandbox.url,
        "FIRST_SNAPSHOT": str(snapshots["state"]),
        "OTHER_SNAPSHOT": str(snapshots["files"]),
        "CHECKPOINTS": f"file://{folder}",
        "FOLDER": str(folder),
    }
    body = RETRY_CALLBACK_SOURCE + "".join(f"{name} = {value!r}\n" for name, value in constants.items())
    result = run_dag(body + textwrap.dedent(RESUME_DAG), env)

    assert result.returncode == 0, result.output[-4000:]
    for task_id in ("send_state", "send_files", "wait"):
        assert result.state(task_id) == "success", (task_id, result.output[-4000:])
    assert result.try_number("send_state") == 2
    assert result.try_number("send_files") == 2

    # Between the tries, the accepted batches were checkpointed (and nothing left in flight).
    between = json.loads(snapshots["state"].read_text())
    assert [entry["try"] for entry in between] == [1]
    assert all(size <= STATE_VALUE_LIMIT for _, size, _ in between[0]["keys"])
    files = json.loads(snapshots["files"].read_text())[0]["keys"]
    for entries in (between[0]["keys"], files):
        ledger = read_ledger(entries)
        assert ledger.sent and ledger.uncertain == set(), [key for key, *_ in entries]
    # ... and are gone after success.
    assert state_store_keys(result.db, result.dag_id) == []
    assert checkpoint_files(folder) == []

    for task_id, server in (("send_state", sandbox), ("send_files", other_sandbox)):
        messages = server.messages()
        counts = sent_counts(server)
        assert sorted(counts) == sorted(row["phone"] for row in rows), task_id
        assert set(counts.values()) == {1}, task_id
        # The first try batched the rows in table order; the retry batched the rest in reverse order.
        first, retry = batches(server)[:4], batches(server)[4:]
        in_table_order = [[phone(i) for i in range(start, start + 50)] for start in range(0, count, 50)]
        assert all(batch in in_table_order for batch in first), task_id
        done = {number for batch in first for number in batch}
        rest = [phone(i) for i in reversed(range(count)) if phone(i) not in done]
        assert sorted(retry) == sorted(rest[i : i + 50] for i in range(0, len(rest), 50)), task_id
        receipt = result.xcom(task_id)
        assert receipt["counts"]["sent"] == count
        assert receipt["counts"]["resumed"] == 200
        assert sorted(receipt_messages(receipt["messages"])) == sorted([m["id"], m["recipient"]] for m in messages)
        assert "DESC" in result.rendered(task_id)["sql"]

    # The sensor saw every message, through 5xx, 429 and dropped status reads.
    status_answers = [e["status"] for e in sandbox.requests() if e["kind"] == "status"]
    assert {503, 429, None} <= set(status_answers)
    report = result.xcom("wait")
    assert report["total"] == count
    assert report["counts"]["delivered"] == count
    assert "exceeds configured max_value_storage_bytes" not in result.output


FLAKY_XCOM_BACKEND = '''
"""An XCom backend that refuses the first push of each send task's receipt, once."""
import os
from pathlib import Path

from airflow.sdk.bases.xcom import BaseXCom


class FirstPushFails(BaseXCom):
    @staticmethod
    def serialize_value(value, *, key=None, task_id=None, dag_id=None, run_id=None, map_index=None):
        marker = Path(os.environ["P2PSMS_TEST_XCOM_MARKERS"]) / f"{task_id}.failed"
        if key == "return_value" and str(task_id).startswith("send") and not marker.exists():
            marker.write_text("refused once")
            raise RuntimeError("the XCom backend is unreachable (test)")
        return BaseXCom.serialize_value(
            value, key=key, task_id=task_id, dag_id=dag_id, run_id=run_id, map_index=map_index
        )
'''

XCOM_FAILURE_DAG = """
for task_id, extra in (("send_state", {}), ("send_files", {"checkpoint_path": CHECKPOINTS})):
    P2PSmsOperator(
        task_id=task_id,
        sms_conn_id=task_id,
        sql="SELECT phone, name, code FROM people ORDER BY rowid",
        sql_conn_id="recipients_db",
        message=MESSAGE,
        retries=1,
        retry_delay=datetime.timedelta(seconds=0),
        **extra,
    )
"""


@needs_dags_test_retries
@pytest.mark.integration
def test_a_receipt_that_airflow_fails_to_store_is_not_sent_again_by_the_retry(
    run_dag, sandbox, other_sandbox, tmp_path
):
    """
    Everything is accepted, then Airflow cannot push the receipt as XCom and retries the task.

    The retry must find every message in the checkpoint and send nothing again, with either store.
    """
    count = 120
    rows = people(count)
    database = write_people_db(tmp_path / "recipients.db", rows)
    (tmp_path / "modules").mkdir()
    (tmp_path / "modules" / "flaky_xcom.py").write_text(FLAKY_XCOM_BACKEND)
    markers = tmp_path / "markers"
    markers.mkdir()
    folder = tmp_path / "checkpoints"
    env = {
        **gateway_conn_env("send_state", "bitel", sandbox, DEFAULT_BITEL_TOKEN, batch_size=50),
        **gateway_conn_env("send_files", "bitel", other_sandbox, DEFAULT_BITEL_TOKEN, batch_size=50),
        **sqlite_conn_env("recipients_db", database),
        "AIRFLOW__CORE__XCOM_BACKEND": "flaky_xcom.FirstPushFails",
        "P2PSMS_TEST_XCOM_MARKERS": str(markers),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path / "modules"), os.environ.get("PYTHONPATH")])),
    }
    constants = {"MESSAGE": MESSAGE, "CHECKPOINTS": f"file://{folder}"}
    body = "".join(f"{name} = {value!r}\n" for name, value in constants.items())
    result = run_dag(body + textwrap.dedent(XCOM_FAILURE_DAG), env)

    assert result.returncode == 0, result.output[-4000:]
    assert sorted(path.name for path in markers.iterdir()) == ["send_files.failed", "send_state.failed"]
    for task_id, server in (("send_state", sandbox), ("send_files", other_sandbox)):
        assert result.state(task_id) == "success", (task_id, result.output[-4000:])
        assert result.try_number(task_id) == 2, task_id
        counts = sent_counts(server)
        assert sorted(counts) == sorted(row["phone"] for row in rows), task_id
        assert set(counts.values()) == {1}, (task_id, "a recipient got the message twice")
        receipt = result.xcom(task_id)
        assert receipt["counts"]["sent"] == count
        assert receipt["counts"]["resumed"] == count
        assert sorted(receipt_messages(receipt["messages"])) == sorted(
            [m["id"], m["recipient"]] for m in server.messages()
        )
    # The checkpoints are cleaned up once the task has succeeded.
    assert state_store_keys(result.db, result.dag_id) == []
    assert checkpoint_files(folder) == []
