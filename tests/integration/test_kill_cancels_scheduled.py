"""A scheduled IPPanel campaign killed by Airflow on a real Airflow 3: ``on_kill`` cancels what it scheduled.

The task's ``execution_timeout`` runs out in the middle of the send (batches of 10, the sandbox answering
each request after 20 ms, one at a time), so Airflow's task runner interrupts ``execute`` and calls
``on_kill``, as it does for a task killed from the UI. The sandbox's request log proves that every send it
accepted was cancelled.
"""

from __future__ import annotations

import json

import pytest

from tests.helpers import connection_env

pytestmark = pytest.mark.integration

BODY = """
send = P2PSmsOperator(
    task_id="send",
    sms_conn_id="ippanel_default",
    recipients=[f"0912{2 * i + 1:07d}" for i in range(3000)],
    message="Your code is {{ row.phone[-4:] }}",
    send_time="{{ (macros.datetime.utcnow() + macros.timedelta(hours=1)).isoformat() }}",
    max_concurrency=1,
    execution_timeout=datetime.timedelta(seconds=3),
)
"""


def test_a_killed_scheduled_send_is_cancelled_at_the_gateway(run_dag, sandbox) -> None:
    sandbox.configure(latency_ms=20)
    result = run_dag(BODY, connection_env(sandbox, batch_size=10))
    assert result.state("send") == "failed", result.output[-4000:]
    assert "Killed: cancelling the" in result.output

    accepted = {int(message["id"]) for message in sandbox.messages()}
    assert 0 < len(accepted) < 3000
    cancels = {
        json.loads(entry["body"])["message_outbox_id"]: entry["status"]
        for entry in sandbox.requests()
        if entry["path"] == "/v1/api/send/cancel"
    }
    # Every accepted send was cancelled: the ones on the wire at the timeout were answered before on_kill.
    said = [line[:250] for line in result.output.splitlines() if "cancel" in line.lower() or "Timeout" in line]
    assert set(cancels) == accepted and set(cancels.values()) == {200}, said
    assert f"Cancelled {len(accepted)} of the {len(accepted)} scheduled sends." in result.output
