"""The operator with refused numbers, and resending what an earlier try left uncertain.

A refused number is reported as ``rejected`` with the gateway's reason and never sinks the campaign; a
retry sends nothing twice. Messages resent after an uncertain attempt travel in batches of their own, so
IPPanel's duplicate guard (429 to a copy of a request it accepted within 40 s) says "uncertain" about
them and about nobody else.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from typing import Any

import pytest

from airflow_provider_p2psms.exceptions import P2PSmsError, SmsGatewayUnavailable, SmsRecipientsRefused
from airflow_provider_p2psms.operators.p2p_sms import P2PSmsOperator
from airflow_provider_p2psms.sandbox import SUFFIX_REFUSED
from airflow_provider_p2psms.utils.phone import mask_phone
from tests.helpers import GATEWAYS
from tests.reliability.support import (
    MemoryTaskState,
    people,
    read_ledger,
    run_success_callbacks,
    sent_counts,
    task_context,
)

MESSAGE = "Hi {{ row.name }}, your code is {{ row.code }}"
REFUSED_ROWS = (37, 251)


def make_operator(**kwargs: Any) -> P2PSmsOperator:
    arguments: dict[str, Any] = {"task_id": "send", "sms_conn_id": "bitel_default", "message": MESSAGE}
    return P2PSmsOperator(**{**arguments, **kwargs})


def wire(gateway: str, number: str) -> str:
    return number if gateway == "bitel" else f"+98{number[1:]}"


def rows_with_refused(count: int) -> list[dict[str, Any]]:
    rows = people(count)
    for n, index in enumerate(REFUSED_ROWS):
        rows[index]["phone"] = f"0912{n:02d}{SUFFIX_REFUSED}"
    return rows


def send_requests(sandbox) -> list[dict[str, Any]]:
    return [r for r in sandbox.requests() if r["kind"] == "send"]


@pytest.mark.parametrize("gateway", GATEWAYS)
def test_two_refused_numbers_among_300_are_rejected_and_everyone_else_texted_once(connect, gateway):
    sandbox = connect()
    rows = rows_with_refused(300)
    refused = [wire(gateway, rows[i]["phone"]) for i in REFUSED_ROWS]
    state = MemoryTaskState()
    operator = make_operator(sms_conn_id=f"{gateway}_default", recipients=rows)

    receipt = operator.execute(task_context(state))

    counts = sent_counts(sandbox)
    assert sorted(counts) == sorted(
        wire(gateway, row["phone"]) for row in rows if not row["phone"].endswith(SUFFIX_REFUSED)
    )
    assert set(counts.values()) == {1}
    assert receipt["counts"] | {"sent": 298, "rejected": 2, "uncertain": 0} == receipt["counts"]
    rejected = [p for p in receipt["problems"] if p.startswith("Rejected:")]
    assert sorted(re.search(r"Rejected: (\S+) ", p)[1] for p in rejected) == sorted(mask_phone(n) for n in refused)
    reason = "InvalidPhoneNumber" if gateway == "bitel" else "HTTP 422, 400-2"
    assert all(reason in p for p in rejected), rejected
    assert not any(n in json.dumps(receipt) for n in refused)  # masked everywhere

    # A retry (Airflow failed to store the receipt, say): nothing is sent twice; the two are refused again.
    before = len(send_requests(sandbox))
    context = task_context(state, try_number=2)
    again = make_operator(sms_conn_id=f"{gateway}_default", recipients=rows).execute(context)
    run_success_callbacks(operator, context)
    assert sent_counts(sandbox) == counts
    assert again["counts"] | {"sent": 298, "resumed": 298, "rejected": 2} == again["counts"]
    # Only the two refused messages went out again, in one batch: Bitel takes it apart, IPPanel names them.
    assert len(send_requests(sandbox)) - before == (3 if gateway == "bitel" else 1)


@pytest.mark.parametrize("gateway", GATEWAYS)
def test_on_rejected_fail_fails_the_task_at_the_first_refusal(connect, gateway):
    sandbox = connect(batch_size=50)
    state = MemoryTaskState()
    operator = make_operator(
        sms_conn_id=f"{gateway}_default", recipients=rows_with_refused(300), on_rejected="fail", max_concurrency=1
    )
    with pytest.raises(SmsRecipientsRefused):
        operator.execute(task_context(state))
    assert len(sandbox.messages()) == 0  # row 37 is in the first batch
    assert read_ledger(state.values).uncertain == set()


def test_on_rejected_is_checked():
    with pytest.raises(P2PSmsError, match="on_rejected must be one of 'isolate', 'fail', not 'skip'"):
        make_operator(recipients=["09121234567"], on_rejected="skip")


def test_a_resend_after_an_uncertain_try_goes_in_batches_of_its_own_and_meets_the_duplicate_guard(connect):
    """
    Try 1: the first batch is accepted but its answer lost (uncertain), then the gateway fails for good.
    Try 2, within IPPanel's 40 s, with ``on_uncertain="resend"`` and the rows in another order: the ten
    uncertain messages go in a batch of their own, marked as a resend; the gateway's duplicate guard
    answers 429, which now means "uncertain", so nobody gets a second text and the rest all go out.
    """
    sandbox = connect(batch_size=10, max_retries=1)
    rows = people(40)
    state = MemoryTaskState()
    sandbox.configure(send_drop_rate=1.0, fail_sends_after=1)
    first = make_operator(sms_conn_id="ippanel_default", recipients=rows, max_concurrency=1, on_uncertain="resend")
    with pytest.raises(SmsGatewayUnavailable):
        first.execute(task_context(state))
    uncertain = {m["recipient"] for m in sandbox.messages()}
    assert len(uncertain) == 10
    assert len(read_ledger(state.values).uncertain) == 10

    sandbox.configure(send_drop_rate=0.0, fail_sends_after=None)
    tried = len(send_requests(sandbox))
    shuffled = rows[1::2] + rows[::2]  # the uncertain rows (0..9) spread among the others
    second = make_operator(sms_conn_id="ippanel_default", recipients=shuffled, max_concurrency=2, on_uncertain="resend")
    with pytest.raises(P2PSmsError, match="10 messages are uncertain and on_uncertain='resend'"):
        second.execute(task_context(state, try_number=2))

    # Nobody got two texts: the guard refused the copy of the accepted batch.
    assert set(sent_counts(sandbox).values()) == {1}
    assert len(sent_counts(sandbox)) == 40
    # Every send request of try 2 held only resent messages, or none.
    for request in send_requests(sandbox)[tried:]:
        recipients = {r for group in json.loads(request["body"])["params"] for r in group["recipients"]}
        assert recipients <= uncertain or not recipients & uncertain, request
    answers = Counter(r["status"] for r in send_requests(sandbox)[tried:])
    assert answers == Counter({200: 3, 429: 1}), answers  # the 429 was not retried
    left = read_ledger(state.values)
    assert len(left.sent) == 30
    assert {recipient for _, recipient in left.sent.values()}.isdisjoint(uncertain)
    assert len(left.uncertain) == 10  # still unknown: a later try may resend them once the guard has passed
