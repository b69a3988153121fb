"""One refused number never sinks a campaign: the bulk send isolates what the gateway refuses.

The sandbox refuses a whole send request holding a number ending in ``00666`` (Bitel: 400
``InvalidPhoneNumber``, naming nobody; IPPanel: 422 naming the recipient's place in the request, or only
``recipients`` when ``ippanel_names_refused`` is off). The hook splits such a batch: by the recipients the
gateway names, else by halves.
"""

from __future__ import annotations

import math
from collections import Counter

import pytest

from airflow_provider_p2psms.campaign.isolation import WHOLLY_REFUSED_MIN
from airflow_provider_p2psms.campaign.ledger import SendLedger
from airflow_provider_p2psms.campaign.stores import TaskStateKeyValueStore
from airflow_provider_p2psms.exceptions import SmsRecipientsRefused
from airflow_provider_p2psms.hooks.factory import get_sms_hook
from airflow_provider_p2psms.models import message_key
from airflow_provider_p2psms.sandbox import SUFFIX_REFUSED
from tests.helpers import connection_env
from tests.reliability.support import MemoryTaskState, phone, read_ledger

#: (gateway, whether IPPanel names the refused recipient)
MODES = [("bitel", False), ("ippanel", True), ("ippanel", False)]
MODE_IDS = ["bitel", "ippanel-named", "ippanel-unnamed"]


def refused_number(index: int) -> str:
    return f"0912{index % 100:02d}{SUFFIX_REFUSED}"


def wire(gateway: str, number: str) -> str:
    return number if gateway == "bitel" else f"+98{number[1:]}"


def campaign(count: int, refused_at: tuple[int, ...]) -> list[tuple[str, str]]:
    numbers = [refused_number(i) if i in refused_at else phone(i) for i in range(count)]
    return [(number, f"code {i}") for i, number in enumerate(numbers)]


@pytest.fixture
def hook_for(sandbox, monkeypatch):
    hooks = []

    def hook_for(gateway: str, names_refused: bool = True, **extra: object):
        sandbox.configure(ippanel_names_refused=names_refused)
        for name, value in connection_env(sandbox, **extra).items():
            monkeypatch.setenv(name, value)
        hooks.append(get_sms_hook(f"{gateway}_default"))
        return hooks[-1]

    yield hook_for
    for hook in hooks:
        hook.close()


def empty_ledger() -> tuple[MemoryTaskState, SendLedger]:
    state = MemoryTaskState()
    ledger = SendLedger(TaskStateKeyValueStore(state))
    ledger.load()
    return state, ledger


def send_requests(sandbox) -> list[dict]:
    return [r for r in sandbox.requests() if r["kind"] == "send"]


@pytest.mark.parametrize(("gateway", "names_refused"), MODES, ids=MODE_IDS)
@pytest.mark.parametrize("refused_at", [(37, 251), (37, 61)], ids=["apart", "same-batch"])
def test_two_refused_numbers_among_300_cost_a_few_requests_and_nobody_else(
    sandbox, hook_for, gateway, names_refused, refused_at
):
    hook = hook_for(gateway, names_refused)
    messages = campaign(300, refused_at)
    state, ledger = empty_ledger()

    results = list(hook.send_messages(messages, max_concurrency=4, ledger=ledger))

    refused = {wire(gateway, messages[i][0]) for i in refused_at}
    everyone_else = {(wire(gateway, number), text) for number, text in messages} - {
        (wire(gateway, messages[i][0]), messages[i][1]) for i in refused_at
    }
    received = Counter((m["recipient"], m["text"]) for m in sandbox.messages())
    assert set(received) == everyone_else
    assert set(received.values()) == {1}
    rejected = [r for r in results if r.rejected is not None]
    assert {m.recipient for r in rejected for m in r.messages} == refused
    assert all(not r.accepted and r.receipts == () and r.uncertain is None for r in rejected)
    reason = "InvalidPhoneNumber" if gateway == "bitel" else "HTTP 422, 400-2"
    assert all(reason in r.rejected for r in rejected), [r.rejected for r in rejected]
    accepted = [r for r in results if r.accepted]
    assert sum(len(r.receipts) for r in accepted) == 298
    # Isolating costs O(k log n) requests: at most 2 per halving for each refused message, not n.
    requests = len(send_requests(sandbox))
    if gateway == "ippanel" and names_refused:
        assert requests == 3 + len({i // 100 for i in refused_at})  # each refused batch: the rest once more
    else:
        assert requests <= 3 + len(refused_at) * 2 * math.ceil(math.log2(100)), requests
    assert requests < 300 / 4
    # The ledger: the 298 accepted, the refused released (a retry tries them again), nothing in flight.
    reread = read_ledger(state.values)
    assert len(reread.sent) == 298
    assert reread.uncertain == set()
    assert not {message_key(wire(gateway, messages[i][0]), messages[i][1]) for i in refused_at} & set(reread.sent)


@pytest.mark.parametrize(("gateway", "names_refused"), MODES, ids=MODE_IDS)
def test_on_rejected_fail_stops_at_the_first_refusal(sandbox, hook_for, gateway, names_refused):
    hook = hook_for(gateway, names_refused, batch_size=10)
    state, ledger = empty_ledger()
    results = []
    with pytest.raises(SmsRecipientsRefused):
        for result in hook.send_messages(campaign(100, (5,)), max_concurrency=1, ledger=ledger, on_rejected="fail"):
            results.append(result)
    assert results == []  # the first batch held the refused number; nothing after it was sent
    assert sandbox.messages() == []
    reread = read_ledger(state.values)
    assert reread.sent == {} and reread.uncertain == set()  # released: a retry sends it


def test_a_batch_refused_message_by_message_stops_the_send(sandbox, hook_for):
    """When every message of a large refused batch is refused on its own, the refusal is about the request."""
    count = WHOLLY_REFUSED_MIN + 2
    hook = hook_for("bitel", batch_size=count)
    messages = [(refused_number(i), "hi") for i in range(count)] + [(phone(i), "hi") for i in range(300)]
    results = []
    with pytest.raises(SmsRecipientsRefused):
        for result in hook.send_messages(messages, max_concurrency=1):
            results.append(result)
    assert sum(len(r.messages) for r in results if r.rejected) == count
    assert sandbox.messages() == []
    assert len(send_requests(sandbox)) == 2 * count - 1  # every part of the first batch, nothing after


def test_a_small_batch_of_refused_numbers_is_just_rejected(sandbox, hook_for):
    hook = hook_for("bitel")
    results = list(hook.send_messages([(refused_number(i), "hi") for i in range(3)]))
    assert sorted(m.recipient for r in results for m in r.messages) == [refused_number(i) for i in range(3)]
    assert all(r.rejected for r in results)
