"""Bulk sending from a TaskFlow task: ``send_messages`` and ``send_rows`` against the sandbox on a real socket.

Both stream: one ``BatchResult`` per batch as its answer comes, reading the input only a few batches
ahead (``campaign/marking.py``: the feeder builds at most ``2 * max_concurrency`` batches ahead of marking,
and at most ``2 * max_concurrency`` batches are marked, on the wire or ready, at once).
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

import pytest

from airflow_provider_p2psms.campaign.ledger import SendLedger, _parse_entry
from airflow_provider_p2psms.campaign.stores import TaskStateKeyValueStore
from airflow_provider_p2psms.exceptions import (
    InvalidPhoneNumber,
    SmsAuthenticationError,
    SmsGatewayUnavailable,
    SmsInputError,
)
from airflow_provider_p2psms.hooks.factory import get_sms_hook
from airflow_provider_p2psms.models import BatchResult, message_key
from airflow_provider_p2psms.sandbox import DEFAULT_BITEL_GATEWAY, DEFAULT_IPPANEL_SENDER
from tests.helpers import GATEWAYS, connection_env
from tests.hooks import ScriptedServer, use_connection
from tests.reliability.support import MemoryTaskState, dropped_recipients, people, phone, read_ledger

if TYPE_CHECKING:
    from collections.abc import Iterator

    from airflow_provider_p2psms.hooks.base import P2PSmsHook

SENDERS = {"bitel": DEFAULT_BITEL_GATEWAY, "ippanel": DEFAULT_IPPANEL_SENDER}
#: The send path on the wire, and as the hook names it in an uncertain batch's reason.
SEND_PATHS = {"bitel": "/api/v2/sms/batch/p2p", "ippanel": "/v1/api/send"}
CALL_PATHS = {"bitel": "/api/v2/sms/batch/p2p", "ippanel": "/api/send"}
PERSIAN_DIGITS = str.maketrans("0123456789", "۰۱۲۳۴۵۶۷۸۹")


@pytest.fixture(params=GATEWAYS)
def gateway(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def connect(sandbox, monkeypatch, gateway):
    """Point ``bitel_default`` and ``ippanel_default`` at the sandbox with these extras; return ``gateway``'s hook."""
    hooks: list[P2PSmsHook] = []

    def connect(**extra: object) -> P2PSmsHook:
        for name, value in connection_env(sandbox, **extra).items():
            monkeypatch.setenv(name, value)
        hooks.append(get_sms_hook(f"{gateway}_default"))
        return hooks[-1]

    yield connect
    for hook in hooks:
        hook.close()


def wire(gateway: str, number: str) -> str:
    """A local ``09...`` number in ``gateway``'s wire format."""
    return number if gateway == "bitel" else f"+98{number[1:]}"


def spelled(index: int) -> str:
    """``phone(index)`` as users type it: with spaces, in international form, or in Persian digits."""
    number = phone(index)
    return [
        f"{number[:4]} {number[4:7]} {number[7:]}",
        f"+98{number[1:]}",
        number.translate(PERSIAN_DIGITS),
    ][index % 3]


def pairs(count: int) -> list[tuple[str, str]]:
    return [(phone(i), f"code {i}") for i in range(count)]


def send_requests(sandbox) -> list[dict[str, Any]]:
    return [r for r in sandbox.requests() if r["kind"] == "send"]


def sandbox_batches(sandbox) -> list[frozenset[tuple[str, str]]]:
    """The (recipient, text) pairs of each accepted send request."""
    grouped: dict[int, set[tuple[str, str]]] = {}
    for m in sandbox.messages():
        grouped.setdefault(m["request_seq"], set()).add((m["recipient"], m["text"]))
    return [frozenset(group) for group in grouped.values()]


def result_batch(result: BatchResult) -> frozenset[tuple[str, str]]:
    return frozenset((m.recipient, m.text) for m in result.messages)


def memory_ledger() -> tuple[MemoryTaskState, SendLedger]:
    state = MemoryTaskState()
    ledger = SendLedger(TaskStateKeyValueStore(state))
    ledger.load()
    return state, ledger


def marked_keys(state: MemoryTaskState) -> set[int]:
    """Every key any ledger entry marked in flight (whether released or sent later)."""
    marks: set[int] = set()
    for name, value in state.values.items():
        marks.update(_parse_entry(json.loads(value), name)[0])
    return marks


# ---------------------------------------------------------------- send_messages


def test_send_messages_sends_each_message_once_in_batches_with_matching_receipts(connect, sandbox, gateway):
    hook = connect()
    messages = [(spelled(i), f"Your code is C{i:05d}") for i in range(1050)]

    results = list(hook.send_messages(messages))

    expected = {(wire(gateway, phone(i)), f"Your code is C{i:05d}") for i in range(1050)}
    received = Counter((m["recipient"], m["text"]) for m in sandbox.messages())
    assert set(received) == expected
    assert set(received.values()) == {1}
    # One request per batch, none larger than the hook's batch size, and no resends.
    assert hook.batch_size == 100
    assert sorted(len(r.messages) for r in results) == [50] + [100] * 10
    assert len(send_requests(sandbox)) == 11
    assert all(len(batch) <= hook.batch_size for batch in sandbox_batches(sandbox))
    # Each result is one batch the gateway accepted, as the gateway accepted it.
    assert all(r.accepted and r.uncertain is None for r in results)
    assert sorted(map(sorted, map(result_batch, results))) == sorted(map(sorted, sandbox_batches(sandbox)))
    message_id = {(m["recipient"], m["text"]): m["id"] for m in sandbox.messages()}
    for result in results:
        assert len(result.receipts) == len(result.messages) == len(result.keys)
        assert [r.recipient for r in result.receipts] == [m.recipient for m in result.messages]
        assert [r.message_id for r in result.receipts] == [message_id[(m.recipient, m.text)] for m in result.messages]
        assert list(result.keys) == [message_key(m.recipient, m.text) for m in result.messages]


def test_send_messages_is_a_stream_that_reads_only_a_few_batches_ahead(connect, sandbox, gateway):
    hook = connect(batch_size=10)
    sandbox.configure(latency_ms=300)  # time for the feeder to read as far ahead as it ever does
    pulled = 0
    exhausted = False

    def source() -> Iterator[tuple[str, str]]:
        nonlocal pulled, exhausted
        for number, text in pairs(3000):
            pulled += 1
            yield number, text
        exhausted = True

    results = hook.send_messages(source(), max_concurrency=2)
    assert pulled == 0  # nothing happens before the first result is asked for

    first = next(results)
    at_first_result = pulled
    results.close()
    after_close = pulled
    time.sleep(0.2)

    # Batches of 10, two senders: 4 marked (2 on the wire, 2 ready), 4 built, and the feeder's own two
    # (the one it builds, and one waiting for room).
    marked, most = 2 * 2 * 10, (2 * 2 + 2 * 2 + 2) * 10
    assert marked <= at_first_result <= most
    assert at_first_result <= after_close <= most
    assert pulled == after_close  # closed: the input is no longer read
    assert not exhausted
    assert first.accepted
    assert len(first.messages) == 10
    # Two requests were in flight when the first answer came; closing waited for the other one.
    assert len(send_requests(sandbox)) == 2
    assert len(sandbox.messages()) == 20


@pytest.mark.parametrize("max_concurrency", [1, 3])
def test_max_concurrency_bounds_the_send_requests_in_flight(connect, sandbox, monkeypatch, gateway, max_concurrency):
    hook = connect(batch_size=5)
    latency = 0.08
    sandbox.configure(latency_ms=latency * 1000)
    lock = threading.Lock()
    in_flight = peak = 0
    send_batch = hook.send_batch

    def counted_send_batch(messages: Any, **kwargs: Any) -> Any:
        nonlocal in_flight, peak
        with lock:
            in_flight += 1
            peak = max(peak, in_flight)
        try:
            return send_batch(messages, **kwargs)
        finally:
            with lock:
                in_flight -= 1

    monkeypatch.setattr(hook, "send_batch", counted_send_batch)
    started = time.monotonic()
    results = list(hook.send_messages(pairs(60), max_concurrency=max_concurrency))
    elapsed = time.monotonic() - started

    assert peak == max_concurrency
    assert len(results) == 12
    assert all(r.accepted for r in results)
    assert len(sandbox.messages()) == 60
    # The sandbox saw no more than max_concurrency requests at a time: 12 requests of 80 ms each.
    assert elapsed >= 12 / max_concurrency * latency * 0.9


def test_a_number_that_is_not_a_mobile_raises_masked_and_its_batch_is_not_sent(connect, sandbox, gateway):
    hook = connect(batch_size=5)
    messages = pairs(40)
    messages[33] = ("021 1234 5678", "code 33")  # a Tehran landline, in batch 30..34
    results = []

    with pytest.raises(InvalidPhoneNumber) as caught:
        for result in hook.send_messages(messages, max_concurrency=1):
            results.append(result)

    assert str(caught.value) == "0211*****78: is a landline; SMS needs a mobile number (09xx...)"
    assert "12345678" not in str(caught.value)
    sent = sorted(int(m["text"].removeprefix("code ")) for m in sandbox.messages())
    # What went out are whole batches read before the bad number, each reported; none of its batch.
    assert not set(sent) & set(range(30, 35))
    assert 0 < len(sent) <= 30
    assert sent == list(range(len(sent)))
    assert len(sent) % 5 == 0
    assert sorted(int(m.text.removeprefix("code ")) for r in results for m in r.messages) == sent
    assert all(r.accepted for r in results)


def test_dropped_sends_come_back_uncertain_and_are_never_resent(connect, sandbox, gateway):
    hook = connect(batch_size=10, max_retries=5)
    sandbox.configure(send_drop_rate=0.5, seed=7)

    results = list(hook.send_messages(pairs(200), max_concurrency=3))

    uncertain = [r for r in results if not r.accepted]
    accepted = [r for r in results if r.accepted]
    assert uncertain
    assert accepted
    assert {r.uncertain for r in uncertain} == {"ConnectionError after the request was sent"}
    assert all(r.receipts == () for r in uncertain)
    assert all(len(r.receipts) == len(r.messages) for r in accepted)
    # One request per batch: the gateway took every batch once, dropped or not.
    assert len(send_requests(sandbox)) == len(results) == 20
    received = Counter((m["recipient"], m["text"]) for m in sandbox.messages())
    assert set(received) == {(wire(gateway, number), text) for number, text in pairs(200)}
    assert set(received.values()) == {1}
    # The uncertain batches are exactly those whose connection the sandbox dropped.
    assert sorted(m.recipient for r in uncertain for m in r.messages) == sorted(dropped_recipients(sandbox))


def test_sends_answered_503_are_retried_then_the_stream_raises_unavailable(connect, sandbox, gateway):
    """The sandbox's ``send_5xx_rate`` answers 503, which proves the batch was not taken: it is retried."""
    hook = connect(batch_size=10, max_retries=1)
    sandbox.configure(send_5xx_rate=1)
    results = []

    with pytest.raises(SmsGatewayUnavailable, match=r"after 2 attempts \(last: HTTP 503\)"):
        for result in hook.send_messages(pairs(100), max_concurrency=2):
            results.append(result)

    assert results == []
    assert sandbox.messages() == []
    # The two batches in flight, two attempts each; nothing after the failure was sent.
    assert [r["status"] for r in send_requests(sandbox)] == [503] * 4


def test_sends_answered_500_come_back_uncertain_and_are_never_resent(monkeypatch, gateway):
    with ScriptedServer({SEND_PATHS[gateway]: (500, {"error": "boom"}, {})}) as server:
        host = server.url if gateway == "bitel" else f"{server.url}/v1"
        use_connection(
            monkeypatch,
            "sms_500",
            gateway,
            password="t0ken",
            host=host,
            sender=SENDERS[gateway],
            batch_size=10,
            retry_backoff=0.01,
        )
        hook = get_sms_hook("sms_500")
        try:
            results = list(hook.send_messages(pairs(25), max_concurrency=2))
        finally:
            hook.close()

    assert sorted(len(r.messages) for r in results) == [5, 10, 10]
    assert {(r.accepted, r.uncertain, r.receipts) for r in results} == {
        (False, f"HTTP 500 from POST {CALL_PATHS[gateway]}", ())
    }
    assert len(server.requests) == 3


def test_a_refused_token_is_raised_after_the_batches_in_flight_are_answered(connect, sandbox, gateway):
    hook = connect(batch_size=10)
    sandbox.configure(latency_ms=150)
    state, ledger = memory_ledger()
    results: list[BatchResult] = []

    with pytest.raises(SmsAuthenticationError, match=r"\(HTTP 401\)"):
        for result in hook.send_messages(pairs(100), max_concurrency=2, ledger=ledger):
            if not results:
                # The token is revoked while the second batch waits for its answer.
                sandbox.configure(bitel_tokens=["revoked"], ippanel_tokens=["revoked"])
            results.append(result)

    statuses = [r["status"] for r in send_requests(sandbox)]
    refused = statuses.count(401)
    # Both batches sent before the token was revoked were answered and yielded before the error.
    assert len(results) >= 2
    assert all(r.accepted for r in results)
    assert sorted(map(sorted, map(result_batch, results))) == sorted(map(sorted, sandbox_batches(sandbox)))
    # Only the batches in flight when the first 401 came were refused; nothing was sent after it.
    assert 1 <= refused <= 2
    assert sorted(statuses) == [200] * len(results) + [401] * refused
    # The refused batches were released: a retry sends them, and takes nothing for uncertain.
    reread = read_ledger(state.values)
    assert set(reread.sent) == {key for r in results for key in r.keys}
    assert reread.uncertain == set()


# ---------------------------------------------------------------- with a resume ledger


@pytest.mark.parametrize("drop_rate", [0.0, 0.3])
def test_the_ledger_holds_every_accepted_message_and_only_dropped_ones_uncertain(connect, sandbox, gateway, drop_rate):
    hook = connect(batch_size=10)
    sandbox.configure(send_drop_rate=drop_rate, seed=3)
    state, ledger = memory_ledger()

    results = list(hook.send_messages(pairs(150), max_concurrency=3, ledger=ledger))

    reread = read_ledger(state.values)
    accepted = {
        key: [receipt.message_id, receipt.recipient]
        for r in results
        if r.accepted
        for key, receipt in zip(r.keys, r.receipts, strict=True)
    }
    uncertain = {key for r in results if not r.accepted for key in r.keys}
    assert len(accepted) + len(uncertain) == 150
    assert reread.sent == accepted
    assert reread.uncertain == uncertain
    if drop_rate:
        assert accepted
        assert uncertain
        assert sorted(recipient for _, recipient in reread.sent.values()) == sorted(
            m["recipient"] for m in sandbox.messages() if m["recipient"] not in dropped_recipients(sandbox)
        )
    else:
        assert uncertain == set()
        assert reread.sent == {
            message_key(m["recipient"], m["text"]): [m["id"], m["recipient"]] for m in sandbox.messages()
        }


def test_closing_the_stream_early_leaves_the_ledger_exact(connect, sandbox, gateway):
    hook = connect(batch_size=10)
    sandbox.configure(latency_ms=200)
    state, ledger = memory_ledger()

    results = hook.send_messages(pairs(1000), max_concurrency=2, ledger=ledger)
    for _ in results:
        break
    results.close()

    reread = read_ledger(state.values)
    accepted = {message_key(m["recipient"], m["text"]): [m["id"], m["recipient"]] for m in sandbox.messages()}
    # The two batches in flight were answered before close() returned, and written down.
    assert len(accepted) == 20
    assert reread.sent == accepted
    assert reread.uncertain == set()
    # Batches marked ready that never went out were released, not left uncertain.
    assert len(marked_keys(state)) > len(accepted)


# ---------------------------------------------------------------- send_rows


def test_send_rows_renders_each_row_sends_values_as_data_and_duplicates_once(connect, sandbox, gateway):
    hook = connect(batch_size=10)
    rows = [
        *people(30),
        {"phone": "0935 765 4321", "name": "{{ 7*7 }}"},
        {"phone": phone(0), "name": "user0"},  # the same (number, text) as row 1
        {"phone": "+98" + phone(1)[1:], "name": "user1"},  # row 2 again, spelled differently
        {"phone": phone(0), "name": "again"},  # the same number, another text
    ]

    results = list(hook.send_rows(rows, "Hi {{ row.name }}"))

    received = Counter((m["recipient"], m["text"]) for m in sandbox.messages())
    assert received == Counter(
        [(wire(gateway, phone(i)), f"Hi user{i}") for i in range(30)]
        + [
            (wire(gateway, "09357654321"), "Hi {{ 7*7 }}"),
            (wire(gateway, phone(0)), "Hi again"),
        ]
    )
    assert all(r.accepted for r in results)
    assert sum(len(r.messages) for r in results) == 32
    assert all(len(r.messages) <= 10 for r in results)


def test_send_rows_names_the_row_with_an_undefined_field_and_sends_nothing_of_its_batch(connect, sandbox, gateway):
    hook = connect(batch_size=5)
    rows = people(40)
    rows[32] = {"phone": phone(32), "code": "C00032"}  # row 33 has no name
    results = []

    with pytest.raises(SmsInputError, match=r"^Row 33: the message template uses an undefined value") as caught:
        for result in hook.send_rows(rows, "Hi {{ row.name }}", max_concurrency=1):
            results.append(result)

    assert "The row's fields are: phone, code." in str(caught.value)
    sent = sorted(int(m["text"].removeprefix("Hi user")) for m in sandbox.messages())
    assert not set(sent) & set(range(30, 35))
    assert 0 < len(sent) <= 30
    assert sent == list(range(len(sent)))
    assert sum(len(r.messages) for r in results) == len(sent)


def test_send_rows_names_a_row_with_a_bad_number_and_sends_nothing(connect, sandbox, gateway):
    hook = connect()
    rows = [*people(2), {"phone": "021 1234 5678", "name": "Office"}]

    with pytest.raises(SmsInputError) as caught:
        list(hook.send_rows(rows, "Hi {{ row.name }}"))

    assert str(caught.value).startswith("Row 3: field 'phone' 0211*****78 is a landline")
    assert "12345678" not in str(caught.value)
    assert sandbox.messages() == []
    assert send_requests(sandbox) == []
