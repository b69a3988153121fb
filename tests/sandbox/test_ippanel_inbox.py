"""The sandbox's IPPanel inbox over raw HTTP: the control that puts replies in it, and the endpoint."""

from __future__ import annotations

from typing import Any

import requests

from airflow_provider_p2psms.sandbox import SandboxServer
from airflow_provider_p2psms.sandbox.ippanel_inbox import FIRST_INBOX_ID

IPPANEL_AUTH = {"Authorization": "sandbox-ippanel-key"}


def receive(session: requests.Session, sandbox: SandboxServer, replies: Any) -> requests.Response:
    return session.post(f"{sandbox.url}/__sandbox__/inbox", json=replies, timeout=5)


def inbox(
    session: requests.Session, sandbox: SandboxServer, body: Any, headers: dict[str, str] = IPPANEL_AUTH
) -> requests.Response:
    return session.post(f"{sandbox.ippanel_url}/api/report/messages-inbox", json=body, headers=headers, timeout=5)


def test_the_control_puts_replies_in_the_inbox_and_answers_their_rows(session, sandbox):
    answer = receive(
        session,
        sandbox,
        [
            {"from": "+989121234567", "text": "۱۱", "time": 1747808125},
            {"from": "09351234567", "text": "سلام", "to": "+9810001234"},
        ],
    )
    assert answer.status_code == 200, answer.text
    first, second = answer.json()
    assert first == {
        "messages_inbox_id": FIRST_INBOX_ID,
        "from": "+989121234567",
        "number": "+983000505",  # the account's first sender line
        "message": "۱۱",
        "type": "normal",
        "time": 1747808125,
        "seen": "0",
    }
    assert (second["messages_inbox_id"], second["from"], second["number"]) == (
        FIRST_INBOX_ID + 1,
        "09351234567",  # kept as given
        "+9810001234",
    )
    assert isinstance(second["time"], int)


def test_the_endpoint_lists_newest_first_after_from_id_with_pagination(session, sandbox):
    receive(session, sandbox, [{"from": f"+98912000{n:04d}", "text": str(n)} for n in range(7)])
    page = inbox(session, sandbox, {"page": 1, "per_page": 3, "filters": {"from_id": FIRST_INBOX_ID + 1}})
    assert page.status_code == 200, page.text
    payload = page.json()
    assert [row["message"] for row in payload["data"]] == ["6", "5", "4"]
    meta = payload["meta"]
    assert (meta["current_page"], meta["last_page"], meta["per_page"], meta["total"]) == (1, 2, 3, 5)
    assert (meta["status"], meta["message_code"]) == (True, "200-1")
    last = inbox(session, sandbox, {"page": 2, "per_page": 3, "filters": {"from_id": FIRST_INBOX_ID + 1}}).json()
    assert [row["message"] for row in last["data"]] == ["3", "2"]
    beyond = inbox(session, sandbox, {"page": 3, "per_page": 3, "filters": {"from_id": FIRST_INBOX_ID + 1}}).json()
    assert beyond["data"] == []
    everything = inbox(session, sandbox, {}).json()  # no filter: all of it, the default page size
    assert [row["message"] for row in everything["data"]] == ["6", "5", "4", "3", "2", "1", "0"]
    assert everything["meta"]["per_page"] == 10
    assert inbox(session, sandbox, {"filters": {"from_id": FIRST_INBOX_ID + 6}}).json()["data"] == []


def test_bad_paging_and_filters_answer_422_under_their_field(session, sandbox):
    for body, field in [
        ({"page": 0}, "page"),
        ({"per_page": "x"}, "per_page"),
        ({"filters": {"from_id": -1}}, "filters.from_id"),
        ({"filters": {"from_id": "abc"}}, "filters.from_id"),
        ({"filters": [1]}, "filters"),
        ([], "body"),
    ]:
        answer = inbox(session, sandbox, body)
        assert answer.status_code == 422, body
        assert field in answer.json()["meta"]["errors"], body
        assert answer.json()["meta"]["message_code"] == "400-2"


def test_the_endpoint_needs_the_key_and_its_route_is_counted(session, sandbox):
    assert inbox(session, sandbox, {}, headers={"Authorization": "wrong"}).status_code == 401
    assert inbox(session, sandbox, {}).status_code == 200
    assert session.get(f"{sandbox.ippanel_url}/api/report/messages-inbox", headers=IPPANEL_AUTH).status_code == 405
    assert sandbox.stats()["by_route"]["POST /v1/api/report/messages-inbox"] == 2


def test_report_faults_apply_to_the_inbox(session, sandbox):
    sandbox.configure(status_5xx_rate=1.0)
    assert inbox(session, sandbox, {}).status_code == 503


def test_bad_replies_are_refused_whole(session, sandbox):
    for replies in [
        {"from": "+989121234567", "text": "11"},
        [{"text": "11"}],
        [{"from": "+989121234567"}],
        [{"from": "+989121234567", "text": "11", "time": "soon"}],
        [{"from": "+989121234567", "text": "11", "colour": "red"}],
        [{"from": "+989121234567", "text": "11"}, "not an object"],
    ]:
        answer = receive(session, sandbox, replies)
        assert answer.status_code == 400, replies
        assert "error" in answer.json()
    assert inbox(session, sandbox, {}).json()["data"] == []


def test_a_reset_empties_the_inbox_and_restarts_its_ids(session, sandbox):
    receive(session, sandbox, [{"from": "+989121234567", "text": "11"}])
    sandbox.reset()
    assert inbox(session, sandbox, {}).json()["data"] == []
    (row,) = receive(session, sandbox, [{"from": "+989121234567", "text": "11"}]).json()
    assert row["messages_inbox_id"] == FIRST_INBOX_ID
