"""IPPanelHook against the sandbox API on a real socket: what goes on the wire, statuses, errors."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from airflow_provider_p2psms.exceptions import (
    SmsAuthenticationError,
    SmsConfigurationError,
    SmsRequestRejected,
    SmsUncertainSendError,
)
from airflow_provider_p2psms.hooks import ippanel
from airflow_provider_p2psms.hooks.ippanel import IPPANEL_BULK_STATES, IPPANEL_RECIPIENT_STATUSES, IPPanelHook
from airflow_provider_p2psms.models import DeliveryStatus, OutgoingSms, SmsReceipt
from airflow_provider_p2psms.sandbox import (
    DEFAULT_IPPANEL_KEY,
    DEFAULT_IPPANEL_SENDER,
    FIRST_OUTBOX_ID,
    MARKER_NO_CREDIT,
    MARKER_REJECT,
)
from tests.helpers import connection_env
from tests.hooks import ScriptedServer, closed_port, send_one_bulk, use_connection

SEND_PATH = "/v1/api/send"
TEHRAN = timezone(timedelta(hours=3, minutes=30))
P = DeliveryStatus


@pytest.fixture
def connect(sandbox, monkeypatch):
    """Point ``ippanel_default`` at the sandbox with the given extras, and return a fresh hook."""
    hooks: list[IPPanelHook] = []

    def connect(**extra: object) -> IPPanelHook:
        for name, value in connection_env(sandbox, **extra).items():
            monkeypatch.setenv(name, value)
        hooks.append(IPPanelHook())
        return hooks[-1]

    yield connect
    for hook in hooks:
        hook.close()


def routes(sandbox) -> list[str]:
    return [r["route"] for r in sandbox.requests()]


# ---------------------------------------------------------------- request shape


def test_recipients_sharing_the_exact_text_travel_in_one_params_element(connect, sandbox):
    hook = connect()
    batch = [
        OutgoingSms("+989121234567", "سلام"),
        OutgoingSms("+989351234567", "سلام"),
        OutgoingSms("+989131234567", "Hi Reza"),
        OutgoingSms("+989191234567", "سلام"),
        OutgoingSms("+989901234567", "سلام "),
    ]

    receipts = hook.send_batch(batch)

    (request,) = sandbox.requests()
    assert (request["method"], request["path"], request["status"], request["auth_ok"]) == (
        "POST",
        SEND_PATH,
        200,
        True,
    )
    assert json.loads(request["body"]) == {
        "sending_type": "peer_to_peer",
        "from_number": DEFAULT_IPPANEL_SENDER,
        "params": [
            {"recipients": ["+989121234567", "+989351234567", "+989191234567"], "message": "سلام"},
            {"recipients": ["+989131234567"], "message": "Hi Reza"},
            {"recipients": ["+989901234567"], "message": "سلام "},
        ],
    }
    first, second, third = (str(FIRST_OUTBOX_ID + i) for i in range(3))
    assert receipts == [
        SmsReceipt(first, "+989121234567"),
        SmsReceipt(first, "+989351234567"),
        SmsReceipt(second, "+989131234567"),
        SmsReceipt(first, "+989191234567"),
        SmsReceipt(third, "+989901234567"),
    ]
    assert sorted((m["id"], m["recipient"], m["text"], m["sender"]) for m in sandbox.messages()) == sorted(
        (r.message_id, m.recipient, m.text, DEFAULT_IPPANEL_SENDER) for r, m in zip(receipts, batch, strict=True)
    )


def test_send_time_goes_out_in_utc_and_the_bulk_waits_in_the_send_queue(connect, sandbox):
    hook = connect()
    in_tehran = datetime(2031, 1, 2, 1, 15, 30, tzinfo=TEHRAN)

    receipts = hook.send_batch([OutgoingSms("+989121234567", "later")], send_time=in_tehran)

    assert json.loads(sandbox.requests()[0]["body"])["send_time"] == "2031-01-01 21:45:30"
    assert sandbox.messages()[0]["send_time"] == "2031-01-01 21:45:30"
    (state,) = hook.get_statuses(receipts)
    assert (state.status, state.provider_status) == (P.PENDING, "bulk state 5 in the send queue")


def test_a_cancelled_scheduled_bulk_is_rejected_and_final(connect, sandbox):
    hook = connect()
    receipts = hook.send_batch(
        [OutgoingSms("+989121234567", "later")], send_time=datetime.now(timezone.utc) + timedelta(hours=1)
    )
    cancelled = requests.post(
        f"{sandbox.ippanel_url}/api/send/cancel",
        json={"message_outbox_id": int(receipts[0].message_id)},
        headers={"Authorization": DEFAULT_IPPANEL_KEY},
        timeout=5,
    )
    assert cancelled.status_code == 200

    (state,) = hook.get_statuses(receipts)
    assert (state.status, state.provider_status, state.is_final) == (P.REJECTED, "bulk state 7 cancelled", True)


def test_a_naive_send_time_is_refused_before_anything_is_sent(connect, sandbox):
    with pytest.raises(SmsConfigurationError, match="send_time must be timezone-aware"):
        connect().send_batch([OutgoingSms("+989121234567", "x")], send_time=datetime(2031, 1, 1))
    assert sandbox.requests() == []


def test_api_key_goes_raw_in_the_authorization_header(connect):
    assert connect().get_conn().headers["Authorization"] == DEFAULT_IPPANEL_KEY


def test_numbers_are_normalized_to_e164(connect):
    hook = connect()
    assert hook.normalize_number("0912 123 4567") == "+989121234567"
    assert hook.normalize_number("۰۹۳۵۱۲۳۴۵۶۷") == "+989351234567"
    assert hook.supports_send_time is True


@pytest.mark.parametrize(
    "sender", ["+983000505", "983000505", "00983000505", "3000505", "03000505", "+98 300 0505", "۳۰۰۰۵۰۵", "٣٠٠٠٥٠٥"]
)
def test_sender_extra_is_normalized_to_e164_and_accepted(connect, sandbox, sender):
    hook = connect(sender=sender)
    assert hook.settings.sender == "+983000505"

    hook.send_batch([OutgoingSms("+989121234567", "hi")])

    assert json.loads(sandbox.requests()[0]["body"])["from_number"] == "+983000505"
    assert sandbox.messages()[0]["sender"] == "+983000505"


@pytest.mark.parametrize("alias", ["from_number", "gateway_number"])
def test_sender_aliases(connect, alias):
    assert connect(sender=None, **{alias: "+983000505"}).settings.sender == "+983000505"


# ---------------------------------------------------------------- statuses

NUMBERS = ["+989121234567", "+989121230001", "+989121230002", "+989121230003", "+989121230004", "+989121230009"]


def test_every_per_recipient_status_the_sandbox_gives_is_mapped(connect, sandbox):
    sandbox.configure(delivery_seconds=3600)
    hook = connect()
    receipts = hook.send_batch([OutgoingSms(number, "hi") for number in NUMBERS] + [OutgoingSms(NUMBERS[0], "bye")])

    sending = hook.get_statuses(receipts)
    assert [(s.status, s.provider_status) for s in sending] == [(P.PENDING, "bulk state 2 being sent")] * 7

    sandbox.configure(delivery_seconds=0)
    before = len(sandbox.requests())
    final = hook.get_statuses(receipts)

    assert [(s.message_id, s.recipient) for s in final] == [(r.message_id, r.recipient) for r in receipts]
    assert [(s.status, s.provider_status, s.is_final) for s in final] == [
        (P.DELIVERED, "2 delivered", True),
        (P.FAILED, "3 not delivered", True),
        (P.BLACKLISTED, "4 blacklisted", True),
        (P.FAILED, "3 not delivered", True),
        (P.FAILED, "3 not delivered", True),
        (P.SENT, "1 operator received it", False),
        (P.DELIVERED, "2 delivered", True),
    ]
    # Every recipient had a status: one recipients report per outbox id, no bulk report needed.
    assert sorted(routes(sandbox)[before:]) == ["/v1/api/report/recipients"] * 2


@pytest.mark.parametrize(
    ("marker", "provider_status"),
    [(MARKER_REJECT, "bulk state 3 rejected by monitoring"), (MARKER_NO_CREDIT, "bulk state 8 insufficient credit")],
)
def test_a_bulk_that_failed_as_a_whole_is_rejected_for_every_recipient(connect, sandbox, marker, provider_status):
    sandbox.configure(delivery_seconds=0)
    hook = connect()
    receipts = hook.send_batch(
        [
            OutgoingSms("+989121234567", f"offer {marker}"),
            OutgoingSms("+989351234567", f"offer {marker}"),
            OutgoingSms("+989131234567", "plain"),
        ]
    )

    states = hook.get_statuses(receipts)

    assert [(s.status, s.provider_status, s.is_final) for s in states] == [
        (P.REJECTED, provider_status, True),
        (P.REJECTED, provider_status, True),
        (P.DELIVERED, "2 delivered", True),
    ]


def test_a_bulk_larger_than_one_report_page_is_read_across_all_pages(connect, sandbox):
    sandbox.configure(delivery_seconds=0)
    count = ippanel.REPORT_PAGE_SIZE + 30
    recipients = [f"+98912{index:07d}" for index in range(100, 100 + count)]
    recipients[-10] = "+989121230001"
    recipients[-5] = "+989121230002"
    outbox_id = send_one_bulk(sandbox, recipients, DEFAULT_IPPANEL_KEY)
    hook = connect()

    states = hook.get_statuses([SmsReceipt(outbox_id, recipient) for recipient in recipients])

    assert len(states) == count
    assert [s.recipient for s in states] == recipients
    assert states[-10].status is P.FAILED
    assert states[-5].status is P.BLACKLISTED
    assert sum(s.status is P.DELIVERED for s in states) == count - 2
    reports = [urlsplit(r["path"]) for r in sandbox.requests()[1:]]
    assert [r.path for r in reports] == ["/v1/api/report/recipients"] * 2
    assert [parse_qs(r.query) for r in reports] == [
        {"bulk_id": [str(outbox_id)], "page": [str(page)], "per_page": [str(ippanel.REPORT_PAGE_SIZE)]}
        for page in (1, 2)
    ]


def test_report_rows_are_matched_to_receipts_whatever_the_spelling(monkeypatch):
    report = {"data": [{"recipient": "09121234567", "message_status": "2"}], "meta": {"last_page": 1}}
    with ScriptedServer({"/v1/api/report/recipients": (200, report, {})}) as server:
        use_connection(monkeypatch, "ipp_odd", "ippanel", password="k", host=f"{server.url}/v1", sender="+983000505")
        (state,) = IPPanelHook("ipp_odd").get_statuses([SmsReceipt("7", "+989121234567")])
    assert (state.status, state.provider_status) == (P.DELIVERED, "2 delivered")


def test_status_tables_cover_exactly_the_documented_codes():
    assert {code: status for code, (_, status) in IPPANEL_RECIPIENT_STATUSES.items()} == {
        "0": P.SENT,
        "1": P.SENT,
        "2": P.DELIVERED,
        "3": P.FAILED,
        "4": P.BLACKLISTED,
    }
    assert {state: status for state, (_, status) in IPPANEL_BULK_STATES.items()} == {
        0: P.PENDING,
        1: P.PENDING,
        2: P.PENDING,
        3: P.REJECTED,
        4: P.REJECTED,
        5: P.PENDING,
        6: P.SENT,
        7: P.REJECTED,
        8: P.REJECTED,
        9: P.REJECTED,
    }


@pytest.mark.parametrize(
    ("state_id", "expected"),
    [
        (0, (P.PENDING, "bulk state 0 being created", False)),
        (1, (P.PENDING, "bulk state 1 in the monitoring queue", False)),
        (4, (P.REJECTED, "bulk state 4 recipients invalid", True)),
        (6, (P.SENT, "bulk state 6 sent", False)),
        (9, (P.REJECTED, "bulk state 9 system error", True)),
        ("9", (P.REJECTED, "bulk state 9 system error", True)),
        (42, (P.UNKNOWN, "bulk state 42 unknown state 42", False)),
        (None, (P.UNKNOWN, "bulk state None unknown state None", False)),
    ],
)
def test_bulk_states_the_sandbox_cannot_produce(monkeypatch, state_id, expected):
    answers = {
        "/v1/api/report/recipients": (200, {"data": [{"recipient": "+989121234567"}], "meta": {"last_page": 1}}, {}),
        "/v1/api/report/by_bulk": (200, {"data": {"state_id": state_id}, "meta": {}}, {}),
    }
    with ScriptedServer(answers) as server:
        use_connection(monkeypatch, "ipp_odd", "ippanel", password="k", host=f"{server.url}/v1", sender="+983000505")
        (state,) = IPPanelHook("ipp_odd").get_statuses([SmsReceipt("7", "+989121234567")])
    assert (state.status, state.provider_status, state.is_final) == expected
    assert [r["path"] for r in server.requests] == [
        f"/v1/api/report/recipients?bulk_id=7&page=1&per_page={ippanel.REPORT_PAGE_SIZE}",
        "/v1/api/report/by_bulk?messages_outbox_id=7",
    ]


def test_a_failed_bulk_overrides_only_recipients_without_a_final_status(monkeypatch):
    rows = [
        {"recipient": "+989121230000", "message_status": "0"},
        {"recipient": "+989121230001", "message_status": "1"},
        {"recipient": "+989121230002", "message_status": "2"},
        {"recipient": "+989121230003", "message_status": "4"},
        {"recipient": "+989121230004", "message_status": ""},
        {"recipient": "+989121230005", "message_status": "7"},
    ]
    answers = {
        "/v1/api/report/recipients": (200, {"data": rows, "meta": {"last_page": 1}}, {}),
        "/v1/api/report/by_bulk": (200, {"data": {"state_id": 9}, "meta": {}}, {}),
    }
    with ScriptedServer(answers) as server:
        use_connection(monkeypatch, "ipp_odd", "ippanel", password="k", host=f"{server.url}/v1", sender="+983000505")
        states = IPPanelHook("ipp_odd").get_statuses([SmsReceipt("7", row["recipient"]) for row in rows])
    assert [(s.status, s.provider_status) for s in states] == [
        (P.REJECTED, "bulk state 9 system error"),
        (P.REJECTED, "bulk state 9 system error"),
        (P.DELIVERED, "2 delivered"),
        (P.BLACKLISTED, "4 blacklisted"),
        (P.REJECTED, "bulk state 9 system error"),
        (P.REJECTED, "bulk state 9 system error"),
    ]


def test_recipient_status_0_is_sent_and_not_final(monkeypatch):
    report = {"data": [{"recipient": "+989121234567", "message_status": "0"}], "meta": {"last_page": 1}}
    with ScriptedServer({"/v1/api/report/recipients": (200, report, {})}) as server:
        use_connection(monkeypatch, "ipp_odd", "ippanel", password="k", host=f"{server.url}/v1", sender="+983000505")
        (state,) = IPPanelHook("ipp_odd").get_statuses([SmsReceipt("7", "+989121234567")])
    assert (state.status, state.provider_status, state.is_final) == (P.SENT, "0 sent to the operator", False)
    assert len(server.requests) == 1


def test_an_outbox_id_ippanel_does_not_know_is_rejected(connect, sandbox):
    with pytest.raises(SmsRequestRejected) as caught:
        connect().get_statuses([SmsReceipt("999", "+989121234567")])
    assert (caught.value.http_status, caught.value.provider_code) == (404, "404-1")


# ---------------------------------------------------------------- errors


def test_wrong_key_raises_authentication_error_after_exactly_one_request(connect, sandbox):
    hook = connect()
    sandbox.configure(ippanel_tokens=["another-key"])

    with pytest.raises(SmsAuthenticationError) as caught:
        hook.send_batch([OutgoingSms("+989121234567", "hi")])

    assert "IPPanel refused the API key of connection 'ippanel_default' (HTTP 401)" in str(caught.value)
    assert [(r["status"], r["auth_ok"]) for r in sandbox.requests()] == [(401, False)]
    assert sandbox.messages() == []

    with pytest.raises(SmsAuthenticationError):
        hook.get_statuses([SmsReceipt(str(FIRST_OUTBOX_ID), "+989121234567")])
    assert len(sandbox.requests()) == 2


def test_a_sender_line_not_of_the_account_is_rejected_with_the_field_error(connect, sandbox):
    hook = connect(sender="+989999999")

    with pytest.raises(SmsRequestRejected) as caught:
        hook.send_batch([OutgoingSms("+989121234567", "hi")])

    error = caught.value
    assert (error.provider, error.http_status, error.provider_code) == ("IPPanel", 422, "400-2")
    assert error.field_errors == {"from_number": ["شماره فرستنده معتبر نیست"]}
    assert "Check the 'sender' extra of connection 'ippanel_default'" in error.hint
    assert str(error).startswith("IPPanel rejected the request (422, 400-2): from_number: شماره فرستنده معتبر نیست.")
    assert len(sandbox.requests()) == 1
    assert sandbox.messages() == []


def test_a_recipient_in_the_wrong_form_is_rejected_with_a_hint(connect):
    with pytest.raises(SmsRequestRejected) as caught:
        connect().send_batch([OutgoingSms("09121234567", "hi")])
    assert caught.value.field_errors == {"params.0.recipients.0": ["شماره گیرنده معتبر نیست"]}
    assert "+989121234567" in caught.value.hint


def test_a_connection_without_sender_is_a_configuration_error(monkeypatch, sandbox):
    use_connection(monkeypatch, "ipp_nosender", "ippanel", password="k", host=sandbox.ippanel_url, sender="  ")
    with pytest.raises(SmsConfigurationError) as caught:
        IPPanelHook("ipp_nosender").send_batch([OutgoingSms("+989121234567", "hi")])
    assert "Connection 'ipp_nosender' has no sender line" in str(caught.value)
    assert "'sender' extra" in str(caught.value)
    assert sandbox.requests() == []


def test_a_base_url_that_is_not_ippanel_gives_a_clear_error(monkeypatch):
    with ScriptedServer() as server:
        use_connection(monkeypatch, "ipp_wrong", "ippanel", password="k", host=server.url, sender="+983000505")
        hook = IPPanelHook("ipp_wrong")
        with pytest.raises(SmsRequestRejected) as caught:
            hook.send_batch([OutgoingSms("+989121234567", "hi")])
        ok, message = hook.test_connection()
    assert (caught.value.http_status, caught.value.provider_code) == (404, None)
    assert f"not an IPPanel envelope: check the base URL ({server.url}) of connection 'ipp_wrong'" in str(caught.value)
    assert (ok, message) == (False, str(caught.value))


@pytest.mark.parametrize(
    "data", [{"message_outbox_ids": []}, {"message_outbox_ids": [1, 2]}, {"message_outbox_ids": [0]}, {}, None]
)
def test_a_200_without_one_outbox_id_per_text_is_an_uncertain_send(monkeypatch, data):
    with ScriptedServer({SEND_PATH: (200, {"data": data, "meta": {"message_code": "200-1"}}, {})}) as server:
        use_connection(monkeypatch, "ipp_odd", "ippanel", password="k", host=f"{server.url}/v1", sender="+983000505")
        batch = [OutgoingSms("+989121234567", "hi")]
        with pytest.raises(SmsUncertainSendError) as caught:
            IPPanelHook("ipp_odd").send_batch(batch)
    assert "one outbox id per message text (1 expected)" in caught.value.reason
    assert caught.value.messages == tuple(batch)
    assert len(server.requests) == 1


# ---------------------------------------------------------------- test_connection


def test_test_connection_accepts_the_right_key(connect, sandbox):
    ok, message = connect().test_connection()
    assert ok is True
    assert message == f"IPPanel accepted the API key at {sandbox.ippanel_url}. Credit: 1000000.0."
    assert routes(sandbox) == ["/v1/api/payment/credit/mine"]


def test_test_connection_refuses_a_wrong_key_without_echoing_it(monkeypatch, sandbox):
    use_connection(
        monkeypatch, "ipp_bad", "ippanel", password="wrong-key-123456", host=sandbox.ippanel_url, sender="+983000505"
    )
    ok, message = IPPanelHook("ipp_bad").test_connection()
    assert ok is False
    assert message == "IPPanel refused the API key (HTTP 401). Put a valid API key in the password field."
    assert "wrong-key-123456" not in message
    assert len(sandbox.requests()) == 1


def test_test_connection_fails_against_a_closed_port(monkeypatch):
    port = closed_port()
    use_connection(
        monkeypatch,
        "ipp_down",
        "ippanel",
        password="k",
        host=f"http://127.0.0.1:{port}/v1",
        sender="+983000505",
        max_retries=1,
        retry_backoff=0,
    )
    ok, message = IPPanelHook("ipp_down").test_connection()
    assert ok is False
    assert "IPPanel did not answer GET /api/payment/credit/mine usefully after 2 attempts" in message
    assert "'ipp_down'" in message
