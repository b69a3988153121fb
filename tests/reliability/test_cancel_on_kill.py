"""``on_kill`` of a scheduled IPPanel campaign: the send stops, and every send it scheduled is cancelled.

The operator runs in a thread against the sandbox (each request answered after 50 ms, one at a time);
the test kills it as Airflow's task runner does on SIGTERM, by calling ``on_kill`` while ``execute`` runs.
The sandbox's request log proves what was cancelled; a send the gateway does not know is reported.
"""

from __future__ import annotations

import datetime
import json
import threading
import time

import pytest

from airflow_provider_p2psms.exceptions import P2PSmsError
from airflow_provider_p2psms.operators.p2p_sms import P2PSmsOperator
from tests.reliability.support import MemoryTaskState, people, task_context

CANCEL_ROUTE = "/v1/api/send/cancel"


def _cancels(sandbox) -> dict[int, int | None]:
    return {
        json.loads(entry["body"])["message_outbox_id"]: entry["status"]
        for entry in sandbox.requests()
        if entry["path"] == CANCEL_ROUTE
    }


def _run_until_killed(operator: P2PSmsOperator, sandbox, killed_at: int) -> tuple[BaseException | None, int]:
    outcome: list[BaseException | None] = [None]

    def run() -> None:
        try:
            operator.execute(task_context(MemoryTaskState()))
        except BaseException as error:
            outcome[0] = error

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.monotonic() + 60
    while len(sandbox.messages()) < killed_at and time.monotonic() < deadline and thread.is_alive():
        time.sleep(0.02)
    operator.on_kill()
    at_kill = len(sandbox.messages())
    thread.join(timeout=60)
    assert not thread.is_alive()
    return outcome[0], at_kill


def test_on_kill_stops_the_send_and_cancels_what_it_scheduled(connect, capfd) -> None:
    sandbox = connect()
    sandbox.configure(latency_ms=50)
    send_time = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1)
    operator = P2PSmsOperator(
        task_id="send",
        sms_conn_id="ippanel_default",
        recipients=people(3000),
        message="Hi {{ row.name }}",
        send_time=send_time.isoformat(),
        max_concurrency=1,
    )
    error, at_kill = _run_until_killed(operator, sandbox, killed_at=300)

    assert isinstance(error, P2PSmsError) and "killed" in str(error)
    accepted = {int(message["id"]) for message in sandbox.messages()}
    # Nothing left after the kill but the one batch that was on the wire.
    assert 300 <= len(accepted) <= at_kill + 100 < 3000
    cancels = _cancels(sandbox)
    assert set(cancels) <= accepted and all(status == 200 for status in cancels.values())
    # Everything answered before the kill was cancelled; only the batch on the wire may not have been.
    assert len(cancels) >= at_kill - 100, (len(cancels), at_kill)
    assert f"Cancelled {len(cancels)} of the {len(cancels)} scheduled sends." in capfd.readouterr().out


def test_a_send_that_cannot_be_cancelled_is_named(connect, capfd) -> None:
    connect()
    send_time = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1)
    operator = P2PSmsOperator(
        task_id="send",
        sms_conn_id="ippanel_default",
        recipients=people(3),
        message="Hi {{ row.name }}",
        send_time=send_time.isoformat(),
    )
    receipt = operator.execute(task_context(MemoryTaskState()))
    assert receipt["counts"]["sent"] == 3
    operator._scheduled.ids.add(424242)  # an id the gateway never gave
    capfd.readouterr()
    operator.on_kill()
    log = capfd.readouterr().out
    assert "Cancelled 3 of the 4 scheduled sends." in log
    assert "1 scheduled sends could not be cancelled: 424242: the gateway does not know it (404)" in log
    # A second kill finds them cancelled already: the gateway says so, and the log names each.
    operator.on_kill()
    log = capfd.readouterr().out
    assert "Cancelled 0 of the 4 scheduled sends." in log and "not cancellable" in log


@pytest.mark.parametrize("conn_id", ["bitel_default"])
def test_an_unscheduled_send_has_nothing_to_cancel(connect, conn_id: str) -> None:
    sandbox = connect()
    operator = P2PSmsOperator(task_id="send", sms_conn_id=conn_id, recipients=people(2), message="Hi")
    operator.execute(task_context(MemoryTaskState()))
    operator.on_kill()
    assert operator._scheduled is None and _cancels(sandbox) == {}
