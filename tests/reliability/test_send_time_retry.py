"""A scheduled send whose time passes between two tries of the task.

The first try sent some batches scheduled for ``send_time`` and died; the retry runs after that
moment. The chosen behaviour: the retry sends what is left at once (the time the user asked for
has come), and says so in the log. A ``send_time`` already past on the first try stays an error.
"""

from __future__ import annotations

import datetime

import pytest

from airflow_provider_p2psms.exceptions import SmsConfigurationError
from airflow_provider_p2psms.operators.p2p_sms import P2PSmsOperator
from tests.reliability.support import MemoryTaskState, people, task_context

PAST = (datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=10)).isoformat()


def operator() -> P2PSmsOperator:
    return P2PSmsOperator(
        task_id="send",
        sms_conn_id="ippanel_default",
        recipients=people(3),
        message="Hi {{ row.name }}",
        send_time=PAST,
    )


def test_a_send_time_in_the_past_on_the_first_try_is_an_error(connect):
    sandbox = connect()
    with pytest.raises(SmsConfigurationError, match="is in the past"):
        operator().execute(task_context(MemoryTaskState(), try_number=1))
    assert sandbox.messages() == []


def test_a_send_time_that_passed_before_a_retry_sends_the_rest_now(connect, capfd):
    sandbox = connect()
    receipt = operator().execute(task_context(MemoryTaskState(), try_number=2))

    assert receipt["counts"]["sent"] == 3
    assert [message.get("send_time") for message in sandbox.messages()] == [None, None, None]
    assert "has passed since the first try: this retry sends what is left now" in "".join(capfd.readouterr())
