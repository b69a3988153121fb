"""``max_rate`` on a real Airflow: the pace the sandbox sees, and a gateway whose 429 says "too fast".

Rates are checked on the sandbox's own clock (``received_at`` of each request), not on the sender's.
"""

from __future__ import annotations

import itertools
import re
from collections import Counter
from typing import Any

import pytest
import requests

from airflow_provider_p2psms.exceptions import SmsGatewayUnavailable
from airflow_provider_p2psms.operators.p2p_sms import P2PSmsOperator
from airflow_provider_p2psms.sandbox import DEFAULT_BITEL_GATEWAY, DEFAULT_BITEL_TOKEN, SandboxServer
from tests.helpers import connection_env
from tests.reliability.support import MemoryTaskState, people, read_ledger, task_context

CHANGE = re.compile(r"(slowing down|speeding up) from ([\d.]+) to ([\d.]+) messages/s \(max_rate ([\d.]+)\)")


def accepted_sends(server: SandboxServer) -> list[tuple[float, int]]:
    """``(received_at, messages)`` of every accepted send request, in the order the sandbox got them."""
    per_request = Counter(message["request_seq"] for message in server.messages())
    return [
        (entry["received_at"], per_request[entry["request_seq"]])
        for entry in server.requests()
        if entry["kind"] == "send" and entry["request_seq"] is not None
    ]


def busiest_five_seconds(sends: list[tuple[float, int]]) -> int:
    return max(sum(count for at, count in sends if start <= at < start + 5) for start, _ in sends)


def test_the_sandbox_answers_429_over_its_rate_limit_and_keeps_nothing_of_it():
    with SandboxServer(delivery_seconds=0, bitel_rate_limit=10) as server:
        url = f"{server.bitel_url}/api/v2/sms/batch/p2p"
        headers = {"Authorization": f"Bearer {DEFAULT_BITEL_TOKEN}"}

        def send(count: int, start: int) -> requests.Response:
            numbers = [f"0912{start + i:07d}" for i in range(count)]
            body = {"phoneNumbers": numbers, "messages": ["hi"] * count, "gatewayNumber": DEFAULT_BITEL_GATEWAY}
            return requests.post(url, json=body, headers=headers, timeout=10)

        assert send(8, 0).status_code == 200  # a full bucket takes 8 of its 10
        over = send(8, 100)
        assert over.status_code == 429
        assert 0 < float(over.headers["Retry-After"]) <= 0.6
        assert over.json() == {"result": None, "error": over.json()["error"]}
        assert len(server.messages()) == 8
        server.configure(bitel_rate_limit=None)
        assert send(8, 200).status_code == 200
        assert [entry["status"] for entry in server.requests()] == [200, 429, 200]


@pytest.mark.integration
def test_max_rate_holds_over_every_five_seconds_on_the_gateways_clock(run_dag, sandbox):
    # The connection's extra says 1000 a second: the operator's own max_rate wins.
    result = run_dag(
        """
        P2PSmsOperator(
            task_id="send",
            sms_conn_id="bitel_default",
            recipients=[f"0912{i:07d}" for i in range(600)],
            message="Code {{ row.phone[-4:] }}",
            max_concurrency=4,
            max_rate=50,
        )
        """,
        connection_env(sandbox, max_rate=1000),
    )
    assert result.returncode == 0, result.output[-3000:]
    assert result.xcom("send")["counts"]["sent"] == 600
    sends = accepted_sends(sandbox)
    # Batches hold at most max_rate messages (Bitel takes 100).
    assert {count for _, count in sends} == {50}
    # Five seconds hold five batches; one more fits when the network delays one batch a little more
    # than the next, so the gateway sees them a little closer than they left.
    assert busiest_five_seconds(sends) <= 50 * 5 + 50
    span = sends[-1][0] - sends[0][0]
    assert (600 - sends[-1][1]) / span >= 0.7 * 50
    assert "at most 50/s now" in result.output  # the progress line


@pytest.mark.integration
def test_a_gateway_answering_429_slows_the_send_down_and_every_message_arrives_once(run_dag, sandbox):
    sandbox.configure(ippanel_rate_limit=40)
    # max_rate from the connection's extra, four times what the gateway takes.
    result = run_dag(
        """
        P2PSmsOperator(
            task_id="send",
            sms_conn_id="ippanel_default",
            recipients=[f"0935{i:07d}" for i in range(400)],
            message="Code {{ row.phone[-4:] }}",
            max_concurrency=4,
        )
        """,
        connection_env(sandbox, max_rate=160, batch_size=10),
    )
    assert result.returncode == 0, result.output[-3000:]
    assert result.xcom("send")["counts"]["sent"] == 400
    received = Counter(message["recipient"] for message in sandbox.messages())
    assert len(received) == 400
    assert set(received.values()) == {1}
    answered_429 = [entry for entry in sandbox.requests() if entry["status"] == 429]
    assert answered_429

    changes = [match.groups() for match in CHANGE.finditer(result.output)]
    slowed = [change for change in changes if change[0] == "slowing down"]
    assert slowed, result.output[-3000:]
    assert slowed[0][1:] == ("160", "80", "160")
    # Each change is logged once: each line starts where the one before it ended.
    rates = [(float(before), float(after)) for _, before, after, _ in changes]
    assert all(previous[1] == current[0] for previous, current in itertools.pairwise(rates))
    assert all(
        after == max(before / 2, 1)
        for kind, (before, after) in zip(changes, rates, strict=True)
        if kind[0] == "slowing down"
    )
    # A burst of 429s to batches sent at one rate is one change.
    assert len(slowed) < len(answered_429)


def test_a_gateway_that_refuses_even_one_message_a_second_stops_the_send_with_nothing_lost(monkeypatch):
    with SandboxServer(delivery_seconds=0, send_429_rate=1.0, retry_after_seconds=0.01) as server:
        for name, value in connection_env(server, max_retries=1).items():
            monkeypatch.setenv(name, value)
        state = MemoryTaskState()
        operator = P2PSmsOperator(
            task_id="send", sms_conn_id="bitel_default", recipients=people(6), message="Hi {{ row.name }}", max_rate=2
        )
        with pytest.raises(SmsGatewayUnavailable) as raised:
            operator.execute(task_context(state))
        sends: list[Any] = [(entry["status"], entry["body"][:60]) for entry in server.requests()]
    assert re.search(r"kept answering 429 .* at 1 message/s, 2 times in a row", str(raised.value)), raised.value
    # 2/s, then 1/s twice: three attempts at the first batch, none processed, nothing else sent.
    assert [status for status, _ in sends] == [429, 429, 429], sends
    assert len({body for _, body in sends}) == 1
    assert state.values  # the batch was marked before it left
    ledger = read_ledger(state.values)
    assert not ledger.sent
    assert not ledger.uncertain  # released: the retry sends them
