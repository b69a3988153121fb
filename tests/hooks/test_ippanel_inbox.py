"""IPPanelHook reading the inbox of the sandbox on a real socket: pages, the cursor, arrivals meanwhile, errors."""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone
from typing import Any

import pytest
import requests

from airflow_provider_p2psms.exceptions import P2PSmsError, SmsAuthenticationError, SmsConfigurationError
from airflow_provider_p2psms.hooks import ippanel_inbox
from airflow_provider_p2psms.hooks.bitel import BitelHook
from airflow_provider_p2psms.hooks.inbox import InboxReader, IncomingSms, inbox_reader
from airflow_provider_p2psms.hooks.ippanel import IPPanelHook
from airflow_provider_p2psms.sandbox import DEFAULT_IPPANEL_SENDER
from airflow_provider_p2psms.sandbox.ippanel_inbox import FIRST_INBOX_ID
from tests.hooks import SECRET_TOKEN, ScriptedServer, use_connection

INBOX_ROUTE = "/v1/api/report/messages-inbox"
SENDER = DEFAULT_IPPANEL_SENDER


def receive(sandbox: Any, replies: list[dict[str, Any]]) -> list[dict[str, Any]]:
    answer = requests.post(f"{sandbox.url}/__sandbox__/inbox", json=replies, timeout=5)
    assert answer.status_code == 200, answer.text
    rows: list[dict[str, Any]] = answer.json()
    return rows


def replies(count: int, start: int = 0) -> list[dict[str, Any]]:
    return [
        {"from": f"+98912{n:07d}", "text": f"reply {n}", "time": 1747808125 + n} for n in range(start, start + count)
    ]


def inbox_bodies(sandbox: Any) -> list[dict[str, Any]]:
    return [json.loads(r["body"]) for r in sandbox.requests() if r["route"] == INBOX_ROUTE]


@pytest.fixture
def hook(sms_connections: Any) -> Any:
    hook = IPPanelHook()
    yield hook
    hook.close()


def test_the_hook_reads_every_page_once_and_then_only_what_came_after_the_cursor(hook, sandbox):
    receive(sandbox, replies(250))
    pages = list(hook.inbox_pages())
    assert [len(page) for page in pages] == [100, 100, 50]
    messages = [message for page in pages for message in page]
    assert [m.inbox_id for m in messages] == list(range(FIRST_INBOX_ID + 249, FIRST_INBOX_ID - 1, -1))  # newest first
    newest = messages[0]
    assert (newest.sender, newest.line, newest.text) == ("+989120000249", "+983000505", "reply 249")
    assert newest.received_at == datetime.fromtimestamp(1747808125 + 249, tz=timezone.utc)
    assert inbox_bodies(sandbox) == [{"page": page, "per_page": 100} for page in (1, 2, 3)]

    cursor = max(m.inbox_id for m in messages)
    assert list(hook.inbox_pages(cursor)) == []  # nothing new
    receive(sandbox, replies(3, start=250))
    again = [m for page in hook.inbox_pages(cursor) for m in page]
    assert [m.text for m in again] == ["reply 252", "reply 251", "reply 250"]
    assert inbox_bodies(sandbox)[-1] == {"page": 1, "per_page": 100, "filters": {"from_id": cursor}}


def test_replies_arriving_while_the_pages_are_read_are_neither_lost_nor_repeated(hook, sandbox, monkeypatch):
    monkeypatch.setattr(ippanel_inbox, "INBOX_PAGE_SIZE", 3)
    receive(sandbox, replies(7))
    reading = hook.inbox_pages()
    first = next(reading)
    assert [m.text for m in first] == ["reply 6", "reply 5", "reply 4"]
    receive(sandbox, replies(4, start=7))  # newest first: the older replies move 4 places down
    rest = [m for page in reading for m in page]
    read = [*first, *rest]
    ids = [m.inbox_id for m in read]
    assert len(ids) == len(set(ids))
    assert {f"reply {n}" for n in range(7)} <= {m.text for m in read}
    # The next run starts after the greatest id read, and finds every arrival this one did not read.
    later = [m for page in hook.inbox_pages(max(ids)) for m in page]
    assert sorted(m.text for m in [*read, *later]) == sorted(f"reply {n}" for n in range(11))
    assert not {m.inbox_id for m in later} & set(ids)


def test_inbox_reads_are_retried_like_reports(hook, sandbox):
    receive(sandbox, replies(5))
    sandbox.configure(status_5xx_rate=0.5, seed=7)
    assert len([m for page in hook.inbox_pages() for m in page]) == 5
    statuses = [r["status"] for r in sandbox.requests() if r["route"] == INBOX_ROUTE]
    assert 503 in statuses
    assert statuses[-1] == 200


def test_a_refused_key_names_the_connection_and_never_the_key(sandbox, monkeypatch, caplog):
    use_connection(
        monkeypatch, "ippanel_default", "ippanel", password=SECRET_TOKEN, host=sandbox.ippanel_url, sender=SENDER
    )
    hook = IPPanelHook()
    with caplog.at_level(logging.DEBUG), pytest.raises(SmsAuthenticationError) as raised:
        list(hook.inbox_pages(5))
    assert "ippanel_default" in str(raised.value)
    assert SECRET_TOKEN not in str(raised.value)
    assert SECRET_TOKEN not in caplog.text
    hook.close()


def test_an_answer_that_is_not_an_inbox_page_is_an_error_naming_the_connection(monkeypatch):
    with ScriptedServer({INBOX_ROUTE: (200, {"data": None, "meta": {"status": True}}, {})}) as server:
        use_connection(
            monkeypatch, "ippanel_default", "ippanel", password=SECRET_TOKEN, host=f"{server.url}/v1", sender=SENDER
        )
        hook = IPPanelHook()
        with pytest.raises(P2PSmsError, match="without a list of messages") as raised:
            list(hook.inbox_pages())
        assert "ippanel_default" in str(raised.value)
        hook.close()
    broken_row = {"data": [{"from": "+989121234567", "message": "11"}], "meta": {"last_page": 1}}
    with ScriptedServer({INBOX_ROUTE: (200, broken_row, {})}) as server:
        use_connection(
            monkeypatch, "ippanel_default", "ippanel", password=SECRET_TOKEN, host=f"{server.url}/v1", sender=SENDER
        )
        with pytest.raises(P2PSmsError, match="no messages_inbox_id"):
            list(IPPanelHook().inbox_pages())


def test_only_hooks_with_an_inbox_are_inbox_readers(sms_connections):
    ippanel = IPPanelHook()
    assert isinstance(ippanel, InboxReader)
    assert inbox_reader(ippanel) is ippanel
    with pytest.raises(SmsConfigurationError) as raised:
        inbox_reader(BitelHook())
    assert "'bitel_default' is a Bitel connection" in str(raised.value)
    assert "(IPPanel)" in str(raised.value)


def test_a_message_shows_neither_its_sender_nor_its_text_in_its_repr():
    message = IncomingSms(7, "+989121234567", "+983000505", "my address is ...")
    assert "9121234567" not in repr(message)
    assert "address" not in repr(message)
    assert "inbox_id=7" in repr(message)
