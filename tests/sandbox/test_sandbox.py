"""The sandbox API server, exercised over a real loopback socket with raw HTTP."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import requests

from airflow_provider_p2psms.sandbox import (
    FIRST_OUTBOX_ID,
    MARKER_NO_CREDIT,
    MARKER_REJECT,
    SandboxConfig,
    SandboxServer,
)
from tests.sandbox.conftest import DELIVERY_SECONDS

if TYPE_CHECKING:
    pass

REPO_ROOT = Path(__file__).resolve().parents[2]
BITEL_AUTH = {"Authorization": "Bearer sandbox-bitel-token"}
IPPANEL_AUTH = {"Authorization": "sandbox-ippanel-key"}
SENDER = "+983000505"
IPPANEL_UNAUTHORIZED = {
    "data": None,
    "meta": {
        "status": False,
        "message": "اطلاعات وارد شده صحیح نمی باشد",
        "message_parameters": [],
        "message_code": "400-1",
        "errors": {},
    },
}


def bitel_post(
    session: requests.Session, sandbox: SandboxServer, path: str, body: object, headers: dict[str, str] = BITEL_AUTH
) -> requests.Response:
    return session.post(f"{sandbox.bitel_url}/api/v2/sms/{path}", json=body, headers=headers, timeout=5)


def bitel_status(session: requests.Session, sandbox: SandboxServer, message_id: str) -> requests.Response:
    return session.get(f"{sandbox.bitel_url}/api/v2/sms/status/{message_id}", headers=BITEL_AUTH, timeout=5)


def ippanel_send(session: requests.Session, sandbox: SandboxServer, body: object) -> requests.Response:
    return session.post(f"{sandbox.ippanel_url}/api/send", json=body, headers=IPPANEL_AUTH, timeout=5)


def p2p(params: list[Any], **extra: object) -> dict[str, object]:
    return {"sending_type": "peer_to_peer", "from_number": SENDER, "params": params, **extra}


def ippanel_get(
    session: requests.Session, sandbox: SandboxServer, report: str, **query: int | str
) -> requests.Response:
    return session.get(f"{sandbox.ippanel_url}/api/{report}", params=query, headers=IPPANEL_AUTH, timeout=5)


def send_one_bulk(session: requests.Session, sandbox: SandboxServer, recipients: list[str], message: str = "hi") -> int:
    response = ippanel_send(session, sandbox, p2p([{"recipients": recipients, "message": message}]))
    assert response.status_code == 200, response.text
    outbox_id: int = response.json()["data"]["message_outbox_ids"][0]
    return outbox_id


def sleep_until(moment: float) -> None:
    time.sleep(max(0.0, moment - time.time()))


def utc_in(seconds: float) -> str:
    return (datetime.now(timezone.utc) + timedelta(seconds=seconds)).strftime("%Y-%m-%d %H:%M:%S")


# --- auth -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "sandbox-bitel-token"},
        {"Authorization": "Bearer wrong"},
        {"Authorization": "Basic sandbox-bitel-token"},
    ],
    ids=["missing", "no-bearer", "wrong-token", "wrong-scheme"],
)
def test_bitel_rejects_bad_credentials(
    session: requests.Session, sandbox: SandboxServer, headers: dict[str, str]
) -> None:
    body = {"phoneNumber": "09121234567", "message": "hi"}
    response = bitel_post(session, sandbox, "single", body, headers=headers)
    assert response.status_code == 401
    assert response.json() == {"result": None, "error": "Unauthorized"}
    assert sandbox.messages() == []
    assert sandbox.requests()[-1]["auth_ok"] is False


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer sandbox-ippanel-key"}, {"Authorization": "wrong"}],
    ids=["missing", "bearer-prefix", "wrong-key"],
)
def test_ippanel_rejects_bad_credentials(
    session: requests.Session, sandbox: SandboxServer, headers: dict[str, str]
) -> None:
    response = session.get(f"{sandbox.ippanel_url}/api/payment/credit/mine", headers=headers, timeout=5)
    assert response.status_code == 401
    assert response.json() == IPPANEL_UNAUTHORIZED


def test_credentials_are_configurable_and_never_recorded(session: requests.Session, sandbox: SandboxServer) -> None:
    sandbox.configure(bitel_tokens=["other-token"], ippanel_tokens=["other-key"])
    body = {"phoneNumber": "09121234567", "message": "hi"}
    assert bitel_post(session, sandbox, "single", body).status_code == 401
    headers = {"Authorization": "Bearer other-token"}
    assert bitel_post(session, sandbox, "single", body, headers=headers).status_code == 200
    key = {"Authorization": "other-key"}
    assert session.get(f"{sandbox.ippanel_url}/api/payment/credit/mine", headers=key).status_code == 200
    logged = json.dumps(sandbox.requests())
    assert "other-token" not in logged and "other-key" not in logged
    assert [entry["auth_ok"] for entry in sandbox.requests()] == [False, True, True]


# --- Bitel ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "code"),
    [
        ("batch/p2p", ["not", "an", "object"], "InvalidRequest"),
        ("batch/p2p", {"phoneNumbers": ["09121234567"]}, "InvalidRequest"),
        ("batch/p2p", {"messages": "hi", "phoneNumbers": ["09121234567"]}, "InvalidRequest"),
        ("batch/p2p", {"messages": [1], "phoneNumbers": ["09121234567"]}, "InvalidRequest"),
        ("batch/p2p", {"messages": ["hi"], "phoneNumbers": [9121234567]}, "InvalidRequest"),
        ("batch/p2p", {"messages": [], "phoneNumbers": []}, "InvalidRequest"),
        ("batch/p2p", {"messages": [""], "phoneNumbers": ["09121234567"]}, "InvalidRequest"),
        ("batch/p2p", {"messages": ["a", "b"], "phoneNumbers": ["09121234567"]}, "InvalidRequest"),
        ("batch/p2p", {"messages": ["a"] * 101, "phoneNumbers": ["09121234567"] * 101}, "InvalidRequest"),
        ("batch/p2p", {"messages": ["a"], "phoneNumbers": ["09121234567"], "gatewayNumber": 1}, "InvalidRequest"),
        ("batch/p2p", {"messages": ["a"], "phoneNumbers": ["+989121234567"]}, "InvalidPhoneNumber"),
        ("batch/p2p", {"messages": ["a"], "phoneNumbers": ["0912123456"]}, "InvalidPhoneNumber"),
        ("batch/p2p", {"messages": ["a"], "phoneNumbers": ["09121234567\n"]}, "InvalidPhoneNumber"),
        ("batch/p2p", {"messages": ["a"], "phoneNumbers": ["09121234567"], "gatewayNumber": "1"}, "InvalidGateway"),
        ("single", {"phoneNumber": "09121234567"}, "InvalidRequest"),
        ("single", {"phoneNumber": "9121234567", "message": "a"}, "InvalidPhoneNumber"),
        ("single", {"phoneNumber": "09121234567", "message": "a", "gatewayNumber": "2"}, "InvalidGateway"),
        ("batch", {"message": "a", "phoneNumbers": []}, "InvalidRequest"),
        ("batch", {"message": "a", "phoneNumbers": ["09121234567", "0912"]}, "InvalidPhoneNumber"),
    ],
)
def test_bitel_validation(
    session: requests.Session, sandbox: SandboxServer, path: str, body: object, code: str
) -> None:
    response = bitel_post(session, sandbox, path, body)
    assert response.status_code == 400
    assert response.json() == {"result": None, "error": code}
    assert sandbox.messages() == []


def test_bitel_rejects_a_body_that_is_not_json(session: requests.Session, sandbox: SandboxServer) -> None:
    response = session.post(
        f"{sandbox.bitel_url}/api/v2/sms/batch/p2p", data=b"{not json", headers=BITEL_AUTH, timeout=5
    )
    assert response.status_code == 400
    assert response.json() == {"result": None, "error": "InvalidRequest"}


def test_bitel_p2p_answers_one_result_per_message_in_order(session: requests.Session, sandbox: SandboxServer) -> None:
    texts = ["hello", "a" * 160, "a" * 161, "س" * 70, "س" * 71, "€" * 81, "b" * 400]
    phone_numbers = [f"0912123{index:04d}" for index in range(10, 10 + len(texts))]
    before = int(time.time())
    response = bitel_post(session, sandbox, "batch/p2p", {"messages": texts, "phoneNumbers": phone_numbers})
    assert response.status_code == 200
    body = response.json()
    assert body["error"] is None
    results = body["result"]
    assert [result["phoneNumber"] for result in results] == phone_numbers
    assert [result["message"] for result in results] == texts
    assert [result["partCount"] for result in results] == [1, 1, 2, 1, 2, 2, 3]
    for result in results:
        assert set(result) == {
            "id",
            "gatewayNumber",
            "phoneNumber",
            "message",
            "requestDate",
            "status",
            "statusText",
            "partCount",
            "price",
        }
        assert len(result["id"]) == 32 and int(result["id"], 16) >= 0 and result["id"] == result["id"].lower()
        assert result["gatewayNumber"] == "10009909"
        assert (result["status"], result["statusText"], result["price"]) == (0, "Waiting", 0.0)
        assert before <= result["requestDate"] <= time.time()
    assert len({result["id"] for result in results}) == len(results)
    messages = sandbox.messages()
    assert [(m["provider"], m["id"], m["recipient"], m["text"]) for m in messages] == [
        ("bitel", r["id"], r["phoneNumber"], r["message"]) for r in results
    ]
    assert {m["sender"] for m in messages} == {"10009909"}
    assert {m["request_seq"] for m in messages} == {1}


def test_bitel_single_and_batch(session: requests.Session, sandbox: SandboxServer) -> None:
    sandbox.configure(bitel_gateways=["10009909", "30001234"])
    single = bitel_post(
        session, sandbox, "single", {"phoneNumber": "09121234567", "message": "one", "gatewayNumber": "30001234"}
    )
    assert single.status_code == 200
    assert single.json()["result"]["gatewayNumber"] == "30001234"
    assert single.json()["result"]["phoneNumber"] == "09121234567"
    batch = bitel_post(session, sandbox, "batch", {"message": "all", "phoneNumbers": ["09121234567", "09351234567"]})
    assert batch.status_code == 200
    assert [result["phoneNumber"] for result in batch.json()["result"]] == ["09121234567", "09351234567"]
    assert [m["request_seq"] for m in sandbox.messages()] == [1, 2, 2]


def test_bitel_status_lifecycle(session: requests.Session, sandbox: SandboxServer) -> None:
    sandbox.configure(delivery_seconds=0.6)
    sent = bitel_post(session, sandbox, "single", {"phoneNumber": "09121234567", "message": "hi"}).json()["result"]
    accepted_at = sandbox.messages()[0]["accepted_at"]
    assert isinstance(accepted_at, float)
    waiting = bitel_status(session, sandbox, sent["id"]).json()["result"]
    assert (waiting["statusCode"], waiting["status"], waiting["price"]) == (0, "WAITING", 0.0)
    sleep_until(accepted_at + 0.4)
    checked = bitel_status(session, sandbox, sent["id"]).json()["result"]
    assert (checked["statusCode"], checked["status"], checked["price"]) == (2, "CHECK_OK", 0.0)
    sleep_until(accepted_at + 0.65)
    response = bitel_status(session, sandbox, sent["id"])
    assert response.status_code == 200
    assert response.json() == {
        "result": {
            "id": sent["id"],
            "gatewayNumber": "10009909",
            "message": "hi",
            "phoneNumber": "09121234567",
            "requestDate": sent["requestDate"],
            "smsCount": 1,
            "price": 150.0,
            "statusCode": 1,
            "status": "DELIVERED",
        },
        "error": None,
    }


@pytest.mark.parametrize(
    ("phone_number", "code", "name", "charged"),
    [
        ("09121230001", 4, "DELIVERY_FAILED", True),
        ("09121230002", 5, "BLACKLIST", False),
        ("09121230003", 9, "ERROR", False),
        ("09121230004", 10, "CHECK_ERROR", False),
        ("09121230009", 2, "CHECK_OK", False),
        ("09121230005", 1, "DELIVERED", True),
    ],
)
def test_bitel_special_numbers(
    session: requests.Session, sandbox: SandboxServer, phone_number: str, code: int, name: str, charged: bool
) -> None:
    sandbox.configure(delivery_seconds=0)
    sent = bitel_post(session, sandbox, "single", {"phoneNumber": phone_number, "message": "x" * 200}).json()["result"]
    result = bitel_status(session, sandbox, sent["id"]).json()["result"]
    assert (result["statusCode"], result["status"]) == (code, name)
    assert result["price"] == (300.0 if charged else 0.0)


def test_bitel_v2_status_shape(session: requests.Session, sandbox: SandboxServer) -> None:
    sandbox.configure(delivery_seconds=0, bitel_status_shape="v2")
    sent = bitel_post(session, sandbox, "single", {"phoneNumber": "09121230002", "message": "hi"}).json()["result"]
    result = bitel_status(session, sandbox, sent["id"]).json()["result"]
    assert (result["status"], result["statusText"]) == (5, "Blacklist")
    assert "statusCode" not in result


def test_bitel_unknown_id_is_not_found(session: requests.Session, sandbox: SandboxServer) -> None:
    response = bitel_status(session, sandbox, "0" * 32)
    assert response.status_code == 404
    assert response.json() == {"result": None, "error": "NotFound"}


def test_unknown_routes_use_each_gateway_envelope(session: requests.Session, sandbox: SandboxServer) -> None:
    bitel = session.get(f"{sandbox.bitel_url}/api/v2/nothing", headers=BITEL_AUTH)
    assert (bitel.status_code, bitel.json()) == (404, {"result": None, "error": "NotFound"})
    wrong_method = session.get(f"{sandbox.bitel_url}/api/v2/sms/batch/p2p", headers=BITEL_AUTH)
    assert (wrong_method.status_code, wrong_method.json()["error"]) == (405, "MethodNotAllowed")
    ippanel = session.get(f"{sandbox.ippanel_url}/api/nothing", headers=IPPANEL_AUTH)
    assert (ippanel.status_code, ippanel.json()["meta"]["status"]) == (404, False)


# --- IPPanel ----------------------------------------------------------------------------


def test_ippanel_send_answers_one_outbox_id_per_params_element(
    session: requests.Session, sandbox: SandboxServer
) -> None:
    body = p2p(
        [
            {"recipients": ["+989120000000", "+989350000000"], "message": "پیام اول"},
            {"recipients": ["+989130000000"], "message": "پیام دوم"},
        ]
    )
    response = ippanel_send(session, sandbox, body)
    assert response.status_code == 200
    assert response.json() == {
        "data": {"message_outbox_ids": [FIRST_OUTBOX_ID, FIRST_OUTBOX_ID + 1]},
        "meta": {
            "status": True,
            "message": "انجام شد",
            "message_parameters": [],
            "message_code": "200-1",
            "errors": {},
        },
    }
    second = ippanel_send(session, sandbox, p2p([{"recipients": ["+989120000000"], "message": "again"}]))
    assert second.json()["data"]["message_outbox_ids"] == [FIRST_OUTBOX_ID + 2]
    messages = sandbox.messages()
    assert [(m["id"], m["recipient"], m["text"], m["request_seq"]) for m in messages] == [
        (str(FIRST_OUTBOX_ID), "+989120000000", "پیام اول", 1),
        (str(FIRST_OUTBOX_ID), "+989350000000", "پیام اول", 1),
        (str(FIRST_OUTBOX_ID + 1), "+989130000000", "پیام دوم", 1),
        (str(FIRST_OUTBOX_ID + 2), "+989120000000", "again", 2),
    ]
    assert {(m["provider"], m["sender"], m["send_time"]) for m in messages} == {("ippanel", SENDER, None)}
    assert json.loads(sandbox.requests()[0]["body"]) == body


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ([], ["body"]),
        ({**p2p([{"recipients": ["+989120000000"], "message": "m"}]), "sending_type": "bulk"}, ["sending_type"]),
        ({"from_number": SENDER, "params": [{"recipients": ["+989120000000"], "message": "m"}]}, ["sending_type"]),
        ({**p2p([{"recipients": ["+989120000000"], "message": "m"}]), "from_number": None}, ["from_number"]),
        ({**p2p([{"recipients": ["+989120000000"], "message": "m"}]), "from_number": "+9810"}, ["from_number"]),
        (p2p([]), ["params"]),
        (
            p2p([{"recipients": ["+989120000000", "09120000000"], "message": "m"}, {"recipients": ["+989120000000"]}]),
            ["params.0.recipients.1", "params.1.message"],
        ),
        (p2p([{"recipients": [], "message": "m"}, "x"]), ["params.0.recipients", "params.1"]),
        (p2p([{"recipients": ["+989120000000"], "message": "m"}], send_time="tomorrow"), ["send_time"]),
        (
            {"sending_type": "webservice", "from_number": SENDER, "params": {"recipients": ["+98"]}},
            ["message", "params.recipients.0"],
        ),
    ],
)
def test_ippanel_validation_names_the_fields(
    session: requests.Session, sandbox: SandboxServer, body: object, fields: list[str]
) -> None:
    response = ippanel_send(session, sandbox, body)
    assert response.status_code == 422
    payload = response.json()
    assert payload["data"] is None
    meta = payload["meta"]
    assert (meta["status"], meta["message_code"], meta["message_parameters"]) == (False, "400-2", [])
    assert list(meta["errors"]) == fields
    assert all(isinstance(message, str) and message for messages in meta["errors"].values() for message in messages)
    assert meta["message"] == meta["errors"][fields[0]][0]
    assert sandbox.messages() == []


def test_ippanel_missing_message_uses_the_documented_text(session: requests.Session, sandbox: SandboxServer) -> None:
    response = ippanel_send(session, sandbox, p2p([{"recipients": ["+989120000000"]}]))
    assert response.json()["meta"]["errors"] == {"params.0.message": ["تکمیل گزینه پیام الزامی است"]}


def test_ippanel_webservice_send(session: requests.Session, sandbox: SandboxServer) -> None:
    body = {
        "sending_type": "webservice",
        "from_number": SENDER,
        "message": "one text",
        "params": {"recipients": ["+989120000000", "+989130000000"]},
    }
    response = ippanel_send(session, sandbox, body)
    assert response.json()["data"] == {"message_outbox_ids": [FIRST_OUTBOX_ID]}
    assert [m["recipient"] for m in sandbox.messages()] == ["+989120000000", "+989130000000"]


def test_ippanel_report_lifecycle(session: requests.Session, sandbox: SandboxServer) -> None:
    sandbox.configure(delivery_seconds=0.6)
    recipients = ["+989120001234", "+989120000001", "+989120000002", "+989120000009"]
    outbox_id = send_one_bulk(session, sandbox, recipients)
    accepted_at = sandbox.messages()[0]["accepted_at"]
    assert isinstance(accepted_at, float)

    def snapshot() -> tuple[int, list[str | None], float]:
        bulk = ippanel_get(session, sandbox, "report/by_bulk", messages_outbox_id=outbox_id).json()["data"]
        rows = ippanel_get(session, sandbox, "report/recipients", bulk_id=outbox_id).json()["data"]
        return bulk["state_id"], [row.get("message_status") for row in rows], bulk["cost"]

    assert snapshot() == (2, [None] * 4, 0.0)
    sleep_until(accepted_at + 0.4)
    assert snapshot() == (6, ["1"] * 4, 0.0)
    sleep_until(accepted_at + 0.65)
    assert snapshot() == (6, ["2", "3", "4", "1"], 300.0)
    stats = ippanel_get(session, sandbox, "report/bulk_stats", bulk_id=outbox_id).json()["data"]
    assert stats == {
        "operators_delivered": 1,
        "operators_failed": 1,
        "operators_blacklist": 1,
        "operators_pending": 1,
        "operators_sent": 4,
    }


def test_ippanel_by_bulk_shape(session: requests.Session, sandbox: SandboxServer) -> None:
    sandbox.configure(delivery_seconds=0)
    outbox_id = send_one_bulk(session, sandbox, ["+989120001234", "+989120000003"], message="x" * 161)
    response = ippanel_get(session, sandbox, "report/by_bulk", messages_outbox_id=outbox_id)
    data = response.json()["data"]
    assert data == {
        "message_outbox_id": outbox_id,
        "state": "sent",
        "state_id": 6,
        "status": data["status"],
        "rcpts_count": 2,
        "exit_count": 2,
        "cost": 300.0,
        "time_send": data["time_send"],
        "from_number": SENDER,
        "message": "x" * 161,
    }
    assert isinstance(data["status"], str) and data["status"]
    datetime.strptime(data["time_send"], "%Y-%m-%d %H:%M:%S")
    rows = ippanel_get(session, sandbox, "report/recipients", bulk_id=outbox_id).json()["data"]
    assert rows == [
        {"recipient": "+989120001234", "message": "x" * 161, "msg_parts": 2, "message_status": "2"},
        {"recipient": "+989120000003", "message": "x" * 161, "msg_parts": 2, "message_status": "3"},
    ]


@pytest.mark.parametrize(("marker", "state_id"), [(MARKER_REJECT, 3), (MARKER_NO_CREDIT, 8)])
def test_ippanel_bulk_markers(session: requests.Session, sandbox: SandboxServer, marker: str, state_id: int) -> None:
    sandbox.configure(delivery_seconds=0)
    outbox_id = send_one_bulk(session, sandbox, ["+989120001234"], message=f"hello {marker}")
    data = ippanel_get(session, sandbox, "report/by_bulk", messages_outbox_id=outbox_id).json()["data"]
    assert (data["state_id"], data["exit_count"], data["cost"]) == (state_id, 0, 0.0)
    rows = ippanel_get(session, sandbox, "report/recipients", bulk_id=outbox_id).json()["data"]
    assert rows == [{"recipient": "+989120001234", "message": f"hello {marker}", "msg_parts": 1}]


def test_ippanel_unknown_bulk_is_not_found(session: requests.Session, sandbox: SandboxServer) -> None:
    for report, parameter in (("by_bulk", "messages_outbox_id"), ("recipients", "bulk_id"), ("bulk_stats", "bulk_id")):
        response = ippanel_get(session, sandbox, f"report/{report}", **{parameter: 42})
        assert response.status_code == 404
        assert response.json()["data"] is None and response.json()["meta"]["status"] is False
    missing = ippanel_get(session, sandbox, "report/by_bulk")
    assert missing.status_code == 422
    assert list(missing.json()["meta"]["errors"]) == ["messages_outbox_id"]


def test_ippanel_recipients_pagination(session: requests.Session, sandbox: SandboxServer) -> None:
    sandbox.configure(delivery_seconds=60)  # still in flight when the last page is read, however slow the machine
    recipients = [f"+98912000{index:04d}" for index in range(1000, 1250)]
    outbox_id = send_one_bulk(session, sandbox, recipients)
    pages = [
        ippanel_get(session, sandbox, "report/recipients", bulk_id=outbox_id, page=page, per_page=100).json()
        for page in (1, 2, 3, 4)
    ]
    assert [len(page["data"]) for page in pages] == [100, 100, 50, 0]
    for number, page in enumerate(pages, start=1):
        meta = page["meta"]
        assert (meta["current_page"], meta["last_page"], meta["total"], meta["per_page"]) == (number, 3, 250, 100)
        assert meta["message_code"] == "200-1"
    assert [row["recipient"] for page in pages for row in page["data"]] == recipients
    assert all("message_status" not in row for page in pages for row in page["data"])
    default = ippanel_get(session, sandbox, "report/recipients", bulk_id=outbox_id).json()["meta"]
    assert (default["current_page"], default["per_page"], default["last_page"]) == (1, 100, 3)
    capped = ippanel_get(session, sandbox, "report/recipients", bulk_id=outbox_id, per_page=1000).json()
    assert (capped["meta"]["per_page"], len(capped["data"])) == (500, 250)
    bad = ippanel_get(session, sandbox, "report/recipients", bulk_id=outbox_id, page=0)
    assert (bad.status_code, list(bad.json()["meta"]["errors"])) == (422, ["page"])


def test_ippanel_scheduled_send_and_cancel(session: requests.Session, sandbox: SandboxServer) -> None:
    send_time = utc_in(3600)
    body = p2p([{"recipients": ["+989120001234"], "message": "later"}], send_time=send_time)
    outbox_id = ippanel_send(session, sandbox, body).json()["data"]["message_outbox_ids"][0]
    assert sandbox.messages()[0]["send_time"] == send_time
    data = ippanel_get(session, sandbox, "report/by_bulk", messages_outbox_id=outbox_id).json()["data"]
    assert (data["state_id"], data["time_send"]) == (5, send_time)
    rows = ippanel_get(session, sandbox, "report/recipients", bulk_id=outbox_id).json()["data"]
    assert "message_status" not in rows[0]

    cancel_url = f"{sandbox.ippanel_url}/api/send/cancel"
    cancelled = session.post(cancel_url, json={"message_outbox_id": outbox_id}, headers=IPPANEL_AUTH)
    assert cancelled.status_code == 200 and cancelled.json()["meta"]["message_code"] == "200-1"
    data = ippanel_get(session, sandbox, "report/by_bulk", messages_outbox_id=outbox_id).json()["data"]
    assert data["state_id"] == 7
    again = session.post(cancel_url, json={"message_outbox_id": outbox_id}, headers=IPPANEL_AUTH)
    assert (again.status_code, again.json()["meta"]["message_code"]) == (422, "400-2")
    unknown = session.post(cancel_url, json={"message_outbox_id": 1}, headers=IPPANEL_AUTH)
    assert unknown.status_code == 404


def test_ippanel_cancel_needs_five_minutes_of_lead(session: requests.Session, sandbox: SandboxServer) -> None:
    soon = ippanel_send(
        session, sandbox, p2p([{"recipients": ["+989120001234"], "message": "m"}], send_time=utc_in(120))
    )
    now = send_one_bulk(session, sandbox, ["+989120001234"])
    cancel_url = f"{sandbox.ippanel_url}/api/send/cancel"
    for outbox_id in (soon.json()["data"]["message_outbox_ids"][0], now):
        response = session.post(cancel_url, json={"message_outbox_id": outbox_id}, headers=IPPANEL_AUTH)
        assert response.status_code == 422
        assert list(response.json()["meta"]["errors"]) == ["message_outbox_id"]


def test_ippanel_past_send_time_sends_now(session: requests.Session, sandbox: SandboxServer) -> None:
    sandbox.configure(delivery_seconds=0)
    body = p2p([{"recipients": ["+989120001234"], "message": "m"}], send_time=utc_in(-3600))
    outbox_id = ippanel_send(session, sandbox, body).json()["data"]["message_outbox_ids"][0]
    data = ippanel_get(session, sandbox, "report/by_bulk", messages_outbox_id=outbox_id).json()["data"]
    assert data["state_id"] == 6


def test_ippanel_account_endpoints(session: requests.Session, sandbox: SandboxServer) -> None:
    credit = session.get(f"{sandbox.ippanel_url}/api/payment/credit/mine", headers=IPPANEL_AUTH)
    assert credit.json()["data"] == {"credit": 1000000.0}
    token = session.post(f"{sandbox.ippanel_url}/api/acl/auth/check_token", headers=IPPANEL_AUTH)
    assert token.json()["data"] == {"user_name": "sandbox", "send_block": False}
    assert [entry["kind"] for entry in sandbox.requests()] == ["account", "account"]


# --- faults -----------------------------------------------------------------------------


def test_send_5xx_records_nothing(session: requests.Session, sandbox: SandboxServer) -> None:
    sandbox.configure(send_5xx_rate=1.0)
    bitel = bitel_post(session, sandbox, "single", {"phoneNumber": "09121234567", "message": "hi"})
    assert (bitel.status_code, bitel.json()) == (503, {"result": None, "error": "ServiceUnavailable"})
    ippanel = ippanel_send(session, sandbox, p2p([{"recipients": ["+989120000000"], "message": "m"}]))
    assert (ippanel.status_code, ippanel.json()["data"], ippanel.json()["meta"]["status"]) == (503, None, False)
    assert sandbox.messages() == []
    credit = session.get(f"{sandbox.ippanel_url}/api/payment/credit/mine", headers=IPPANEL_AUTH)
    assert credit.status_code == 200


def test_send_429_carries_retry_after(session: requests.Session, sandbox: SandboxServer) -> None:
    sandbox.configure(send_429_rate=1.0)
    bitel = bitel_post(session, sandbox, "single", {"phoneNumber": "09121234567", "message": "hi"})
    assert (bitel.status_code, bitel.headers["Retry-After"], bitel.json()["error"]) == (429, "1", "TooManyRequests")
    sandbox.configure(retry_after_seconds=0.5)
    ippanel = ippanel_send(session, sandbox, p2p([{"recipients": ["+989120000000"], "message": "m"}]))
    assert (ippanel.status_code, ippanel.headers["Retry-After"]) == (429, "0.5")
    assert sandbox.messages() == []


def test_send_drop_accepts_then_closes_the_connection(session: requests.Session, sandbox: SandboxServer) -> None:
    sandbox.configure(send_drop_rate=1.0)
    with pytest.raises(requests.ConnectionError):
        bitel_post(session, sandbox, "batch/p2p", {"messages": ["a", "b"], "phoneNumbers": ["09121234567"] * 2})
    with pytest.raises(requests.ConnectionError):
        ippanel_send(session, sandbox, p2p([{"recipients": ["+989120000000"], "message": "m"}]))
    assert [(m["provider"], m["request_seq"]) for m in sandbox.messages()] == [
        ("bitel", 1),
        ("bitel", 1),
        ("ippanel", 2),
    ]
    assert [(entry["status"], entry["request_seq"]) for entry in sandbox.requests()] == [(None, 1), (None, 2)]
    sandbox.configure(send_drop_rate=0.0)
    message_id = sandbox.messages()[0]["id"]
    assert bitel_status(session, sandbox, str(message_id)).status_code == 200


def test_status_faults(session: requests.Session, sandbox: SandboxServer) -> None:
    sent = bitel_post(session, sandbox, "single", {"phoneNumber": "09121234567", "message": "hi"}).json()["result"]
    outbox_id = send_one_bulk(session, sandbox, ["+989120000000"])
    sandbox.configure(status_5xx_rate=1.0)
    assert bitel_status(session, sandbox, sent["id"]).status_code == 503
    assert ippanel_get(session, sandbox, "report/by_bulk", messages_outbox_id=outbox_id).status_code == 503
    assert bitel_post(session, sandbox, "single", {"phoneNumber": "09121234567", "message": "hi"}).status_code == 200
    sandbox.configure(status_5xx_rate=0.0, status_429_rate=1.0, retry_after_seconds=2)
    limited = ippanel_get(session, sandbox, "report/recipients", bulk_id=outbox_id)
    assert (limited.status_code, limited.headers["Retry-After"]) == (429, "2")
    sandbox.configure(status_429_rate=0.0, status_drop_rate=1.0)
    with pytest.raises(requests.ConnectionError):
        bitel_status(session, sandbox, sent["id"])
    assert sandbox.requests()[-1]["status"] is None
    assert len(sandbox.messages()) == 3


def test_fail_sends_after(session: requests.Session, sandbox: SandboxServer) -> None:
    sandbox.configure(fail_sends_after=2)
    body = {"phoneNumber": "09121234567", "message": "hi"}
    statuses = [bitel_post(session, sandbox, "single", body).status_code for _ in range(4)]
    assert statuses == [200, 200, 503, 503]
    sandbox.configure(fail_sends_after=1)
    statuses = [bitel_post(session, sandbox, "single", body).status_code for _ in range(2)]
    assert statuses == [200, 503]
    sandbox.configure(fail_sends_after=None)
    assert bitel_post(session, sandbox, "single", body).status_code == 200
    assert len(sandbox.messages()) == 4


def test_seed_makes_faults_reproducible(session: requests.Session, sandbox: SandboxServer) -> None:
    body = {"phoneNumber": "09121234567", "message": "hi"}
    knobs = {"send_5xx_rate": 0.3, "send_429_rate": 0.3}

    def run(seed: int) -> list[int]:
        sandbox.reset(seed=seed, **knobs)
        return [bitel_post(session, sandbox, "single", body).status_code for _ in range(30)]

    first = run(7)
    assert {200, 429, 503} <= set(first)
    assert run(7) == first
    assert run(8) != first
    sandbox.reset(**knobs)
    sandbox.configure(seed=7)
    assert [bitel_post(session, sandbox, "single", body).status_code for _ in range(30)] == first


def test_latency_applies_to_api_requests_only(session: requests.Session, sandbox: SandboxServer) -> None:
    sandbox.configure(latency_ms=300)
    started = time.monotonic()
    session.get(f"{sandbox.ippanel_url}/api/payment/credit/mine", headers=IPPANEL_AUTH)
    assert time.monotonic() - started >= 0.3
    started = time.monotonic()
    session.get(f"{sandbox.url}/__sandbox__/health")
    assert time.monotonic() - started < 0.3


# --- control endpoints and Python API ------------------------------------------------------


def test_control_endpoints(session: requests.Session, sandbox: SandboxServer) -> None:
    control = f"{sandbox.url}/__sandbox__"
    assert session.get(f"{control}/health").json() == {"ok": True}
    config = session.get(f"{control}/config").json()
    assert config == SandboxConfig(delivery_seconds=DELIVERY_SECONDS).to_dict()
    assert config["bitel_tokens"] == ["sandbox-bitel-token"]
    changed = session.post(f"{control}/config", json={"latency_ms": 5, "bitel_status_shape": "v2"}).json()
    assert (changed["latency_ms"], changed["bitel_status_shape"]) == (5.0, "v2")
    assert sandbox.config.bitel_status_shape == "v2"
    for bad in ({"nope": 1}, {"send_5xx_rate": 2}, {"send_5xx_rate": 0.6, "send_drop_rate": 0.6}, [1]):
        response = session.post(f"{control}/config", json=bad)
        assert response.status_code == 400 and response.json()["error"]

    bitel_post(session, sandbox, "single", {"phoneNumber": "09121234567", "message": "hi"})
    bitel_status(session, sandbox, "f" * 32)
    bitel_status(session, sandbox, "e" * 32)
    send_one_bulk(session, sandbox, ["+989120000000"])
    assert len(session.get(f"{control}/messages").json()) == 2
    logged = session.get(f"{control}/requests").json()
    assert [(entry["seq"], entry["method"], entry["status"], entry["provider"], entry["kind"]) for entry in logged] == [
        (1, "POST", 200, "bitel", "send"),
        (2, "GET", 404, "bitel", "status"),
        (3, "GET", 404, "bitel", "status"),
        (4, "POST", 200, "ippanel", "send"),
    ]
    assert logged[1]["path"] == f"/api/v2/sms/status/{'f' * 32}"
    stats = session.get(f"{control}/stats").json()
    assert stats["by_route"] == {
        "GET /api/v2/sms/status/{id}": 2,
        "POST /api/v2/sms/single": 1,
        "POST /v1/api/send": 1,
    }
    assert stats["by_status"] == {"200": 2, "404": 2}
    assert stats["total"] == 4

    reset = session.post(f"{control}/reset", json={"delivery_seconds": 1}).json()
    assert (reset["delivery_seconds"], reset["latency_ms"], reset["bitel_status_shape"]) == (1.0, 0.0, "code")
    assert session.get(f"{control}/messages").json() == []
    assert session.get(f"{control}/requests").json() == []
    assert session.get(f"{control}/stats").json()["total"] == 0
    assert send_one_bulk(session, sandbox, ["+989120000000"]) == FIRST_OUTBOX_ID
    assert session.post(f"{control}/reset").json()["delivery_seconds"] == DELIVERY_SECONDS
    assert session.get(f"{control}/nothing").status_code == 404


def test_keep_alive_and_content_length(sandbox: SandboxServer) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", sandbox.port, timeout=5)
    try:
        connection.request("GET", "/v1/api/payment/credit/mine", headers=IPPANEL_AUTH)
        first = connection.getresponse()
        first_body = first.read()
        sock = connection.sock
        connection.request("GET", "/api/v2/sms/status/x", headers=BITEL_AUTH)
        second = connection.getresponse()
        second_body = second.read()
        assert connection.sock is sock
    finally:
        connection.close()
    assert (first.status, second.status) == (200, 404)
    assert int(first.headers["Content-Length"]) == len(first_body)
    assert int(second.headers["Content-Length"]) == len(second_body)
    assert first.headers["Content-Type"] == "application/json; charset=utf-8"


def test_python_api(sandbox: SandboxServer) -> None:
    assert sandbox.url == f"http://127.0.0.1:{sandbox.port}"
    assert sandbox.bitel_url == sandbox.url
    assert sandbox.ippanel_url == f"{sandbox.url}/v1"
    assert sandbox.configure(delivery_seconds=3).delivery_seconds == 3.0
    assert sandbox.reset().delivery_seconds == DELIVERY_SECONDS
    with pytest.raises(ValueError, match="unknown"):
        sandbox.configure(no_such_knob=1)
    with pytest.raises(ValueError, match="between 0 and 1"):
        SandboxServer(send_429_rate=1.5)
    with pytest.raises(RuntimeError):
        sandbox.start()


def test_stop_releases_the_port() -> None:
    server = SandboxServer().start()
    port = server.port
    with requests.Session() as session:
        assert session.get(f"{server.url}/__sandbox__/health", timeout=5).ok
        server.stop()
        with pytest.raises(requests.ConnectionError):
            session.get(f"http://127.0.0.1:{port}/__sandbox__/health", timeout=5)
    with pytest.raises(RuntimeError):
        _ = server.port
    server.stop()


# --- command line -----------------------------------------------------------------------


def test_cli_serves_until_sigterm(tmp_path: Path) -> None:
    port_file = tmp_path / "port"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "airflow_provider_p2psms.sandbox",
            "--port",
            "0",
            "--port-file",
            str(port_file),
            "--delivery-seconds",
            "0",
            "--bitel-status-shape",
            "v2",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        port = int(port_file.read_text())
        url = f"http://127.0.0.1:{port}"
        assert line == f"sandbox listening on {url} (bitel: {url}, ippanel: {url}/v1)\n"
        assert requests.get(f"{url}/__sandbox__/config", timeout=5).json()["bitel_status_shape"] == "v2"
        response = requests.post(
            f"{url}/v1/api/send", json=p2p([{"recipients": ["+989120000000"], "message": "m"}]), headers=IPPANEL_AUTH
        )
        assert response.status_code == 200
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
        assert not port_file.exists()
        assert process.stderr is not None and process.stderr.read() == ""
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_cli_help_lists_the_special_numbers() -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "airflow_provider_p2psms.sandbox", "--help"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    for text in ("0001", "0002", "0003", "0004", "0009", MARKER_REJECT, MARKER_NO_CREDIT, "--send-drop-rate"):
        assert text in result.stdout
