"""Faults on the wire: 5xx, 429, dropped connections and timeouts, on sends and on status reads.

The invariant everywhere: a recipient is either accepted exactly once, or reported uncertain; a
message the gateway may have taken is never sent again unless ``on_uncertain="resend"`` asks for it.
"""

from __future__ import annotations

import json
import re
import textwrap
import threading
from collections import Counter
from typing import Any

import pytest

from airflow_provider_p2psms.exceptions import SmsAuthenticationError, SmsGatewayUnavailable
from airflow_provider_p2psms.hooks.factory import get_sms_hook
from airflow_provider_p2psms.models import SmsReceipt, receipt_messages
from airflow_provider_p2psms.operators.p2p_sms import P2PSmsOperator
from airflow_provider_p2psms.sandbox import DEFAULT_BITEL_TOKEN, DEFAULT_IPPANEL_KEY
from airflow_provider_p2psms.sensors.p2p_sms import P2PSmsDeliverySensor
from airflow_provider_p2psms.utils.phone import mask_phone
from tests.helpers import GATEWAYS, needs_dags_test_retries
from tests.reliability.support import (
    RETRY_CALLBACK_SOURCE,
    MemoryTaskState,
    dropped_recipients,
    gateway_conn_env,
    people,
    phone,
    read_ledger,
    run_success_callbacks,
    send_statuses,
    sent_counts,
    sqlite_conn_env,
    state_store_keys,
    task_context,
    write_people_db,
)

MESSAGE = "Hi {{ row.name }}, your code is {{ row.code }}"
MASKED = re.compile(r"\S{4}\*{5,}\d{2}")


def wire(gateway: str, number: str) -> str:
    return number if gateway == "bitel" else f"+98{number[1:]}"


def uncertain_in(problems: list[str]) -> list[str]:
    """The masked numbers the receipt's problems report as uncertain."""
    return [found.group(0) for p in problems if p.startswith("Uncertain") and (found := MASKED.search(p))]


def dag_source(constants: dict[str, Any], tasks: str) -> str:
    return (
        RETRY_CALLBACK_SOURCE
        + "".join(f"{name} = {value!r}\n" for name, value in constants.items())
        + textwrap.dedent(tasks)
    )


# --------------------------------------------------------------------------- random faults, real Airflow


@needs_dags_test_retries
@pytest.mark.integration
def test_random_faults_over_3000_recipients_lose_and_duplicate_nobody(run_dag, sandbox, tmp_path):
    """
    10% 503, 5% 429 and 2% dropped-after-accept answers, while every send also fails for good once
    60 batches are in (until the retry callback heals it), and a send that meets two faults in a row
    gives up (``max_retries=1``), failing the try. Airflow retries until all is sent.
    """
    count = 3000
    rows = people(count)
    database = write_people_db(tmp_path / "recipients.db", rows)
    sandbox.configure(
        send_5xx_rate=0.10,
        send_429_rate=0.05,
        send_drop_rate=0.02,
        retry_after_seconds=0.01,
        seed=12,
        fail_sends_after=60,
    )
    env = {
        **gateway_conn_env(
            "ippanel_default",
            "ippanel",
            sandbox,
            DEFAULT_IPPANEL_KEY,
            batch_size=25,
            max_retries=1,
            retry_backoff=0.01,
        ),
        **sqlite_conn_env("recipients_db", database),
    }
    tasks = """
    P2PSmsOperator(
        task_id="send",
        sms_conn_id="ippanel_default",
        sql="SELECT phone, name, code FROM people",
        sql_conn_id="recipients_db",
        message=MESSAGE,
        max_concurrency=4,
        retries=12,
        retry_delay=datetime.timedelta(seconds=0),
        on_retry_callback=heal(URL, {"fail_sends_after": None}, SNAPSHOT),
    )
    """
    constants = {"MESSAGE": MESSAGE, "URL": sandbox.url, "SNAPSHOT": str(tmp_path / "snapshot.json")}
    result = run_dag(dag_source(constants, tasks), env, timeout=400)

    assert result.state("send") == "success", result.output[-4000:]
    assert result.try_number("send") >= 2
    faults = send_statuses(sandbox)
    assert faults["503"] > 0 and faults["429"] > 0 and faults["dropped"] >= 2, faults

    everyone = {wire("ippanel", row["phone"]) for row in rows}
    counts = sent_counts(sandbox)
    assert max(counts.values()) == 1, "somebody got the text twice"
    dropped = set(dropped_recipients(sandbox))
    receipt = result.xcom("send")
    accepted = {recipient for _, recipient in receipt_messages(receipt["messages"])}
    assert len(receipt_messages(receipt["messages"])) == len(accepted)
    assert accepted.isdisjoint(dropped)
    assert accepted | dropped == everyone, f"{len(everyone - accepted - dropped)} recipients lost"
    assert set(counts) == everyone
    ids = {m["recipient"]: m["id"] for m in sandbox.messages()}
    assert all(ids[recipient] == message_id for message_id, recipient in receipt_messages(receipt["messages"]))
    assert receipt["counts"]["sent"] == count - len(dropped)
    assert receipt["counts"]["uncertain"] == len(dropped)
    assert sorted(uncertain_in(receipt["problems"])) == sorted(mask_phone(number) for number in dropped)

    assert state_store_keys(result.db, result.dag_id) == []
    assert "exceeds configured max_value_storage_bytes" not in result.output
    leaked = [
        row["phone"] for row in rows if row["phone"] in result.output or wire("ippanel", row["phone"]) in result.output
    ]
    assert leaked == []


# --------------------------------------------------------------------------- uncertain: skip vs resend

UNCERTAIN_TASKS = """
P2PSmsOperator(
    task_id="resend",
    sms_conn_id="bitel_default",
    recipients=ROWS,
    message=MESSAGE,
    max_concurrency=1,
    on_uncertain="resend",
    retries=1,
    retry_delay=datetime.timedelta(seconds=0),
    on_retry_callback=heal(RESEND_URL, {"send_drop_rate": 0.0}, RESEND_SNAPSHOT),
)
P2PSmsOperator(
    task_id="skip",
    sms_conn_id="bitel_other",
    recipients=ROWS,
    message=MESSAGE,
    max_concurrency=1,
    on_uncertain="skip",
    retries=1,
    retry_delay=datetime.timedelta(seconds=0),
    on_retry_callback=heal(SKIP_URL, {"send_drop_rate": 0.0, "fail_sends_after": None}, SKIP_SNAPSHOT),
)
"""


@needs_dags_test_retries
@pytest.mark.integration
def test_a_dropped_batch_is_resent_only_with_on_uncertain_resend(run_dag, sandbox, other_sandbox, tmp_path):
    """
    Three batches of ten, one request at a time; the sandbox's seeded faults drop the second batch
    after accepting it. ``resend`` fails the try and the retry sends that batch again; ``skip`` (its
    try failed for another reason: sends refused after two batches) leaves it out and reports it.
    """
    rows = people(30)
    second_batch = [row["phone"] for row in rows[10:20]]
    # Seed 10's first draws are 0.57, 0.43, 0.58: with a drop rate of 0.5 only the second send drops.
    sandbox.configure(seed=10, send_drop_rate=0.5)
    other_sandbox.configure(seed=10, send_drop_rate=0.5, fail_sends_after=2)
    fast = {"batch_size": 10, "max_retries": 0, "retry_backoff": 0.01}
    env = {
        **gateway_conn_env("bitel_default", "bitel", sandbox, DEFAULT_BITEL_TOKEN, **fast),
        **gateway_conn_env("bitel_other", "bitel", other_sandbox, DEFAULT_BITEL_TOKEN, **fast),
    }
    constants = {
        "ROWS": rows,
        "MESSAGE": MESSAGE,
        "RESEND_URL": sandbox.url,
        "SKIP_URL": other_sandbox.url,
        "RESEND_SNAPSHOT": str(tmp_path / "resend.json"),
        "SKIP_SNAPSHOT": str(tmp_path / "skip.json"),
    }
    result = run_dag(dag_source(constants, UNCERTAIN_TASKS), env)

    assert result.state("resend") == "success", result.output[-4000:]
    assert result.state("skip") == "success", result.output[-4000:]
    assert result.try_number("resend") == 2
    assert result.try_number("skip") == 2
    assert "messages are uncertain and on_uncertain='resend'" in result.output
    # Between the tries the dropped batch was still marked in flight, beside the accepted ones.
    for snapshot, accepted in (("resend.json", 20), ("skip.json", 10)):
        (between,) = json.loads((tmp_path / snapshot).read_text())
        ledger = read_ledger(between["keys"])
        assert len(ledger.uncertain) == 10, between
        assert len(ledger.sent) == accepted, between
        assert not {recipient for _, recipient in ledger.sent.values()} & set(second_batch)

    # resend: everybody got a text; only the dropped batch got two.
    assert dropped_recipients(sandbox) == second_batch
    counts = sent_counts(sandbox)
    assert counts == Counter({row["phone"]: 2 if row["phone"] in second_batch else 1 for row in rows})
    receipt = result.xcom("resend")
    assert receipt["counts"] | {"sent": 30, "resumed": 20, "uncertain": 0} == receipt["counts"]
    latest = {m["recipient"]: m["id"] for m in sandbox.messages()}
    assert sorted(receipt_messages(receipt["messages"])) == sorted([latest[r["phone"]], r["phone"]] for r in rows)

    # skip: the dropped batch was recorded once, never resent, and reported.
    assert dropped_recipients(other_sandbox) == second_batch
    assert sent_counts(other_sandbox) == Counter(row["phone"] for row in rows)
    receipt = result.xcom("skip")
    assert receipt["counts"] | {"sent": 20, "resumed": 10, "uncertain": 10} == receipt["counts"]
    assert {recipient for _, recipient in receipt_messages(receipt["messages"])}.isdisjoint(second_batch)
    assert sorted(uncertain_in(receipt["problems"])) == sorted(mask_phone(n) for n in second_batch)
    assert state_store_keys(result.db, result.dag_id) == []


# --------------------------------------------------------------------------- in-process: timeouts, auth


def make_operator(**kwargs: Any) -> P2PSmsOperator:
    arguments: dict[str, Any] = {"task_id": "send", "sms_conn_id": "bitel_default", "message": MESSAGE}
    return P2PSmsOperator(**{**arguments, **kwargs})


@pytest.mark.parametrize("gateway", GATEWAYS)
def test_a_send_that_times_out_is_uncertain_and_never_resent(connect, gateway):
    """The gateway took the batch but answered too late: it is reported, and sent exactly once."""
    sandbox = connect(batch_size=10, timeout=0.1)
    sandbox.configure(latency_ms=300)
    rows = people(20)
    state = MemoryTaskState()

    operator = make_operator(sms_conn_id=f"{gateway}_default", recipients=rows)
    context = task_context(state)
    receipt = operator.execute(context)
    run_success_callbacks(operator, context)

    assert send_statuses(sandbox) == Counter({"200": 2}), "the hook resent a batch that had gone out"
    assert sent_counts(sandbox) == Counter(wire(gateway, row["phone"]) for row in rows)
    assert receipt["counts"] | {"sent": 0, "uncertain": 20} == receipt["counts"]
    assert receipt["messages"] == ""
    assert sorted(uncertain_in(receipt["problems"])) == sorted(mask_phone(wire(gateway, r["phone"])) for r in rows)
    assert all("ReadTimeout" in p for p in receipt["problems"])
    assert state.values == {}


@pytest.mark.parametrize("gateway", GATEWAYS)
def test_uncertain_batches_from_an_earlier_try_are_not_resent_by_default(connect, gateway):
    """Try 1: two batches dropped after acceptance, then sends refused; try 2 sends only the third."""
    sandbox = connect(batch_size=10)
    sandbox.configure(send_drop_rate=1.0, fail_sends_after=2)
    rows = people(30)
    state = MemoryTaskState()
    operator = make_operator(sms_conn_id=f"{gateway}_default", recipients=rows, max_concurrency=1)
    with pytest.raises(SmsGatewayUnavailable):
        operator.execute(task_context(state))
    assert len(sandbox.messages()) == 20

    sandbox.configure(send_drop_rate=0.0, fail_sends_after=None)
    context = task_context(state, try_number=2)
    receipt = operator.execute(context)
    run_success_callbacks(operator, context)

    assert sent_counts(sandbox) == Counter(wire(gateway, row["phone"]) for row in rows)
    assert receipt["counts"] | {"sent": 10, "resumed": 0, "uncertain": 20} == receipt["counts"]
    assert sorted(uncertain_in(receipt["problems"])) == sorted(mask_phone(wire(gateway, r["phone"])) for r in rows[:20])
    assert all("earlier try, not resent" in p for p in receipt["problems"])
    assert state.values == {}


def test_a_refused_token_sends_nothing_and_leaves_nothing_in_flight(connect, monkeypatch):
    sandbox = connect(batch_size=10)
    for name, value in gateway_conn_env("bitel_default", "bitel", sandbox, "wrong-token", batch_size=10).items():
        monkeypatch.setenv(name, value)
    state = MemoryTaskState()
    with pytest.raises(SmsAuthenticationError, match="refused the API token of connection 'bitel_default'"):
        make_operator(recipients=people(30)).execute(task_context(state))
    assert sandbox.messages() == []
    left = read_ledger(state.values)
    assert left.sent == {}
    assert left.uncertain == set()


# --------------------------------------------------------------------------- status polling under faults


def sent_receipt(gateway: str, count: int) -> dict[str, Any]:
    return make_operator(sms_conn_id=f"{gateway}_default", recipients=people(count)).execute(task_context())


@pytest.mark.parametrize("gateway", GATEWAYS)
def test_status_reads_ride_out_5xx_429_drops_and_timeouts(connect, gateway, capfd):
    """
    Status reads retry 503, 429, dropped connections and read timeouts until the gateway answers.

    The first 0.4 s every answer comes too late (a read timeout); after that a quarter of the reads
    fail one way or another. The sensor's pokes still end with every message delivered.
    """
    sandbox = connect(batch_size=10, timeout=0.1, max_retries=12, retry_backoff=0.05)
    receipt = sent_receipt(gateway, 20)
    sandbox.configure(
        delivery_seconds=0,
        latency_ms=250,
        status_5xx_rate=0.1,
        status_429_rate=0.1,
        status_drop_rate=0.05,
        seed=3,
    )
    timer = threading.Timer(0.4, sandbox.configure, kwargs={"latency_ms": 0})
    timer.start()
    sensor = P2PSmsDeliverySensor(task_id="wait", receipt=receipt, poke_interval=0.1)
    try:
        outcome = None
        for _ in range(20):
            outcome = sensor.poke(task_context())
            if outcome:
                break
    finally:
        timer.cancel()

    assert outcome, "the sensor never finished"
    report = outcome.xcom_value
    assert report["total"] == 20
    assert report["counts"]["delivered"] == 20
    kinds = ("status",) if gateway == "bitel" else ("report",)
    answers = Counter(str(e["status"]) for e in sandbox.requests() if e["kind"] in kinds)
    assert answers["503"] and answers["429"] and answers["None"], answers
    assert ": ReadTimeout (ReadTimeoutError); retrying in" in capfd.readouterr().out


def test_a_status_outage_longer_than_the_hook_retries_does_not_fail_the_sensor_early(connect):
    sandbox = connect(batch_size=10, max_retries=1)
    receipt = sent_receipt("bitel", 5)
    sandbox.configure(status_5xx_rate=1.0)
    sensor = P2PSmsDeliverySensor(task_id="wait", receipt=receipt, poke_interval=0.1, timeout=60)

    assert sensor.poke(task_context()) is False
    sandbox.configure(status_5xx_rate=0.0, delivery_seconds=0)
    outcome = sensor.poke(task_context())
    assert outcome and outcome.xcom_value["counts"]["delivered"] == 5


def test_a_hook_read_keeps_failing_with_a_clear_error(connect):
    """When the gateway never answers usefully, the error names the gateway, the attempts and the fix."""
    sandbox = connect(max_retries=2)
    sandbox.configure(status_429_rate=1.0)
    hook = get_sms_hook("bitel_default")
    with pytest.raises(SmsGatewayUnavailable) as caught:
        hook.get_statuses([SmsReceipt(message_id="0" * 32, recipient=phone(0))])
    text = str(caught.value)
    assert "after 3 attempts (last: HTTP 429)" in text
    assert "max_retries" in text
