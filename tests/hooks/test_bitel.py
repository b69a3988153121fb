"""BitelHook against the sandbox API on a real socket: what goes on the wire, statuses, errors."""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone

import pytest

from airflow_provider_p2psms.exceptions import (
    SmsAuthenticationError,
    SmsConfigurationError,
    SmsRequestRejected,
    SmsUncertainSendError,
)
from airflow_provider_p2psms.hooks.bitel import BITEL_STATUSES, BitelHook, parse_bitel_status
from airflow_provider_p2psms.models import DeliveryStatus, OutgoingSms, SmsReceipt
from airflow_provider_p2psms.sandbox import DEFAULT_BITEL_GATEWAY, DEFAULT_BITEL_TOKEN
from tests.helpers import connection_env
from tests.hooks import ScriptedServer, closed_port, use_connection

SEND_PATH = "/api/v2/sms/batch/p2p"
P = DeliveryStatus


@pytest.fixture
def connect(sandbox, monkeypatch):
    """Point ``bitel_default`` at the sandbox with the given extras, and return a fresh hook."""
    hooks: list[BitelHook] = []

    def connect(**extra: object) -> BitelHook:
        for name, value in connection_env(sandbox, **extra).items():
            monkeypatch.setenv(name, value)
        hooks.append(BitelHook())
        return hooks[-1]

    yield connect
    for hook in hooks:
        hook.close()


def send_requests(sandbox) -> list[dict]:
    return [r for r in sandbox.requests() if r["path"] == SEND_PATH]


# ---------------------------------------------------------------- request shape


def test_send_batch_posts_messages_and_numbers_with_the_gateway_number(connect, sandbox):
    sandbox.configure(bitel_gateways=[DEFAULT_BITEL_GATEWAY, "20002000"])
    hook = connect(sender="20002000")
    long_text = "x" * 161

    receipts = hook.send_batch(
        [
            OutgoingSms("09121234567", "سلام نازنین، کد شما A1"),
            OutgoingSms("09351234567", long_text),
        ]
    )

    (request,) = sandbox.requests()
    assert (request["method"], request["path"], request["status"]) == ("POST", SEND_PATH, 200)
    assert request["auth_ok"] is True
    assert json.loads(request["body"]) == {
        "messages": ["سلام نازنین، کد شما A1", long_text],
        "phoneNumbers": ["09121234567", "09351234567"],
        "gatewayNumber": "20002000",
    }
    recorded = sandbox.messages()
    assert [(m["recipient"], m["text"], m["sender"]) for m in recorded] == [
        ("09121234567", "سلام نازنین، کد شما A1", "20002000"),
        ("09351234567", long_text, "20002000"),
    ]
    assert receipts == [
        SmsReceipt(message_id=recorded[0]["id"], recipient="09121234567", parts=1, price=None),
        SmsReceipt(message_id=recorded[1]["id"], recipient="09351234567", parts=2, price=None),
    ]
    assert all(re.fullmatch(r"[0-9a-f]{32}", r.message_id) for r in receipts)


def test_no_sender_extra_omits_gateway_number_so_bitel_uses_the_default_gateway(connect, sandbox):
    hook = connect(sender=None)

    hook.send_batch([OutgoingSms("09121234567", "hi")])

    body = json.loads(sandbox.requests()[0]["body"])
    assert body == {"messages": ["hi"], "phoneNumbers": ["09121234567"]}
    assert sandbox.messages()[0]["sender"] == DEFAULT_BITEL_GATEWAY


def test_gateway_number_in_persian_digits_goes_out_in_ascii(connect, sandbox):
    hook = connect(sender="۱۰۰۰۹۹۰۹")

    hook.send_batch([OutgoingSms("09121234567", "hi")])

    assert json.loads(sandbox.requests()[0]["body"])["gatewayNumber"] == "10009909"


def test_token_goes_in_a_bearer_authorization_header(connect):
    hook = connect()
    assert hook.get_conn().headers["Authorization"] == f"Bearer {DEFAULT_BITEL_TOKEN}"


def test_wire_format_and_batch_limits(connect):
    hook = connect()
    assert hook.normalize_number("+98 912 123 4567") == "09121234567"
    assert hook.normalize_number(9121234567) == "09121234567"
    assert hook.max_batch_size == 100
    assert hook.batch_size == 100
    assert hook.supports_send_time is False


def test_batch_size_extra_lowers_the_batch_limit(connect, sandbox):
    hook = connect(batch_size=2)
    assert hook.batch_size == 2
    with pytest.raises(ValueError, match="3 messages exceed Bitel's batch size of 2"):
        hook.send_batch([OutgoingSms(f"0912123456{i}", "hi") for i in range(3)])
    with pytest.raises(ValueError, match="at least one message"):
        hook.send_batch([])
    assert sandbox.requests() == []


def test_send_time_is_refused_before_anything_is_sent(connect, sandbox):
    hook = connect()
    with pytest.raises(SmsConfigurationError, match="Bitel cannot schedule a send") as caught:
        hook.send_batch([OutgoingSms("09121234567", "hi")], send_time=datetime(2031, 1, 1, tzinfo=timezone.utc))
    assert "'bitel_default'" in str(caught.value)
    assert sandbox.requests() == []


# ---------------------------------------------------------------- statuses

NUMBERS = ["09121234567", "09121230001", "09121230002", "09121230003", "09121230004", "09121230009"]


@pytest.mark.parametrize("shape", ["code", "v2"])
def test_every_documented_status_code_maps_in_both_response_shapes(connect, sandbox, shape):
    sandbox.configure(bitel_status_shape=shape, delivery_seconds=3600)
    hook = connect()
    receipts = hook.send_batch([OutgoingSms(number, "hi") for number in NUMBERS])

    waiting = hook.get_statuses(receipts)
    assert [(s.status, s.provider_status, s.is_final) for s in waiting] == [(P.PENDING, "0 WAITING", False)] * 6

    sandbox.configure(delivery_seconds=0)
    final = hook.get_statuses(receipts)

    assert [(s.message_id, s.recipient) for s in final] == [(r.message_id, r.recipient) for r in receipts]
    assert [(s.status, s.provider_status, s.is_final) for s in final] == [
        (P.DELIVERED, "1 DELIVERED", True),
        (P.FAILED, "4 DELIVERY_FAILED", True),
        (P.BLACKLISTED, "5 BLACKLIST", True),
        (P.REJECTED, "9 ERROR", True),
        (P.REJECTED, "10 CHECK_ERROR", True),
        (P.SENT, "2 CHECK_OK", False),
    ]
    status_paths = [r["path"] for r in sandbox.requests() if r["kind"] == "status"]
    assert sorted(status_paths) == sorted(f"/api/v2/sms/status/{r.message_id}" for r in receipts * 2)


def test_status_table_covers_exactly_the_documented_codes():
    assert {code: status for code, (_, status) in BITEL_STATUSES.items()} == {
        0: P.PENDING,
        1: P.DELIVERED,
        2: P.SENT,
        4: P.FAILED,
        5: P.BLACKLISTED,
        9: P.REJECTED,
        10: P.REJECTED,
    }


@pytest.mark.parametrize(
    ("result", "expected"),
    [
        ({"statusCode": 4, "status": "DELIVERY_FAILED"}, (4, "DELIVERY_FAILED")),
        ({"status": 4, "statusText": "DeliveryFailed"}, (4, "DeliveryFailed")),
        ({"statusCode": "10", "status": "CHECK_ERROR"}, (10, "CHECK_ERROR")),
        ({"status": "5"}, (5, None)),
        ({"status": "DELIVERED"}, (1, "DELIVERED")),
        ({"statusText": "CheckOk"}, (2, "CheckOk")),
        ({"statusText": "Delivery Failed"}, (4, "Delivery Failed")),
        ({"statusCode": 3, "status": "SOMETHING_NEW"}, (3, "SOMETHING_NEW")),
        ({"status": True}, (None, None)),
        ({}, (None, None)),
    ],
)
def test_parse_bitel_status_reads_both_shapes_and_names_alone(result, expected):
    assert parse_bitel_status(result) == expected


@pytest.mark.parametrize(
    ("status_fields", "provider_status"),
    [
        ({"statusCode": 3, "status": "SOMETHING_NEW"}, "3 SOMETHING_NEW"),
        ({"status": 77, "statusText": "Odd"}, "77 Odd"),
    ],
)
def test_an_unknown_code_is_unknown_and_not_final(monkeypatch, status_fields, provider_status):
    message_id = "a" * 32
    answer = {"result": {"id": message_id, "phoneNumber": "09121234567", **status_fields}, "error": None}
    with ScriptedServer({f"/api/v2/sms/status/{message_id}": (200, answer, {})}) as server:
        use_connection(monkeypatch, "bitel_odd", "bitel", password="t", host=server.url)
        (state,) = BitelHook("bitel_odd").get_statuses([SmsReceipt(message_id, "09121234567")])
    assert (state.status, state.provider_status, state.is_final) == (P.UNKNOWN, provider_status, False)


def test_an_id_bitel_does_not_know_is_unknown(connect, sandbox):
    (state,) = connect().get_statuses([SmsReceipt("f" * 32, "09121234567")])
    assert (state.status, state.provider_status) == (P.UNKNOWN, "NotFound")
    assert [r["status"] for r in sandbox.requests()] == [404]


def test_no_receipts_means_no_requests(connect, sandbox):
    assert connect().get_statuses([]) == []
    assert sandbox.requests() == []


# ---------------------------------------------------------------- errors


def test_wrong_token_raises_authentication_error_after_exactly_one_request(connect, sandbox):
    hook = connect()
    sandbox.configure(bitel_tokens=["another-token"])

    with pytest.raises(SmsAuthenticationError) as caught:
        hook.send_batch([OutgoingSms("09121234567", "hi")])

    assert "'bitel_default'" in str(caught.value)
    assert "HTTP 401" in str(caught.value)
    assert [(r["status"], r["auth_ok"]) for r in sandbox.requests()] == [(401, False)]
    assert sandbox.messages() == []

    with pytest.raises(SmsAuthenticationError):
        hook.get_statuses([SmsReceipt("f" * 32, "09121234567")])
    assert len(sandbox.requests()) == 2


@pytest.mark.parametrize(
    ("extra", "message", "code", "hint"),
    [
        ({"sender": "10001234"}, OutgoingSms("09121234567", "hi"), "InvalidGateway", "'sender' extra of connection"),
        ({}, OutgoingSms("09121234567", ""), "InvalidRequest", "empty message texts"),
        ({}, OutgoingSms("+989121234567", "hi"), "InvalidPhoneNumber", "09xxxxxxxxx"),
    ],
)
def test_bitel_error_codes_become_request_rejected_with_a_hint(connect, sandbox, extra, message, code, hint):
    hook = connect(**extra)

    with pytest.raises(SmsRequestRejected) as caught:
        hook.send_batch([message])

    error = caught.value
    assert (error.provider, error.http_status, error.provider_code) == ("Bitel", 400, code)
    assert hint in error.hint
    assert str(error).startswith(f"Bitel rejected the request (400, {code}).")
    assert hint in str(error)
    assert len(sandbox.requests()) == 1
    assert sandbox.messages() == []


def test_invalid_gateway_hint_names_the_connection(connect):
    hook = connect(sender="10001234")
    with pytest.raises(SmsRequestRejected, match="connection 'bitel_default'"):
        hook.send_batch([OutgoingSms("09121234567", "hi")])


def test_a_base_url_that_is_not_bitel_gives_a_clear_error_everywhere(monkeypatch):
    with ScriptedServer() as server:
        use_connection(monkeypatch, "bitel_wrong", "bitel", password="t", host=f"{server.url}/wrong", retry_backoff=0)
        hook = BitelHook("bitel_wrong")

        with pytest.raises(SmsRequestRejected) as caught:
            hook.send_batch([OutgoingSms("09121234567", "hi")])
        with pytest.raises(SmsRequestRejected):
            hook.get_statuses([SmsReceipt("f" * 32, "09121234567")])
        ok, message = hook.test_connection()

    error = caught.value
    assert (error.http_status, error.provider_code) == (404, None)
    assert f"check the base URL ({server.url}/wrong) of connection 'bitel_wrong'" in str(error)
    assert ok is False
    assert message == str(error)
    assert [r["path"] for r in server.requests] == [
        f"/wrong{SEND_PATH}",
        f"/wrong/api/v2/sms/status/{'f' * 32}",
        f"/wrong/api/v2/sms/status/{'0' * 32}",
    ]


def test_the_ippanel_url_given_to_a_bitel_connection_is_reported_as_a_wrong_base_url(monkeypatch, sandbox):
    use_connection(monkeypatch, "bitel_mixed", "bitel", password=DEFAULT_BITEL_TOKEN, host=sandbox.ippanel_url)
    with pytest.raises(SmsRequestRejected, match="not a Bitel error envelope: check the base URL"):
        BitelHook("bitel_mixed").send_batch([OutgoingSms("09121234567", "hi")])
    assert sandbox.messages() == []


@pytest.mark.parametrize(
    ("result", "reason"),
    [
        ([], "the answer listed 0 results for 1 messages"),
        (None, "the answer listed no results for 1 messages"),
        ([{"status": 0}], "a result had no message id"),
    ],
)
def test_a_200_that_does_not_account_for_every_message_is_an_uncertain_send(monkeypatch, result, reason):
    with ScriptedServer({SEND_PATH: (200, {"result": result, "error": None}, {})}) as server:
        use_connection(monkeypatch, "bitel_odd", "bitel", password="t", host=server.url)
        batch = [OutgoingSms("09121234567", "hi")]
        with pytest.raises(SmsUncertainSendError) as caught:
            BitelHook("bitel_odd").send_batch(batch)
    assert caught.value.reason == reason
    assert caught.value.messages == tuple(batch)
    assert len(server.requests) == 1


# ---------------------------------------------------------------- test_connection


def test_test_connection_accepts_the_right_token(connect, sandbox):
    ok, message = connect().test_connection()
    assert ok is True
    assert message == f"Bitel accepted the API token at {sandbox.url}."


def test_test_connection_refuses_a_wrong_token_without_echoing_it(monkeypatch, sandbox):
    use_connection(monkeypatch, "bitel_bad", "bitel", password="wrong-token-123456", host=sandbox.url)
    ok, message = BitelHook("bitel_bad").test_connection()
    assert ok is False
    # The UI tests connections under a temporary id: the answer names the field to fix instead.
    assert message == "Bitel refused the API token (HTTP 401). Put a valid API token in the password field."
    assert "wrong-token-123456" not in message
    assert len(sandbox.requests()) == 1


def test_test_connection_fails_against_a_closed_port(monkeypatch):
    port = closed_port()
    use_connection(
        monkeypatch,
        "bitel_down",
        "bitel",
        password="t",
        host=f"http://127.0.0.1:{port}",
        max_retries=1,
        retry_backoff=0,
    )
    ok, message = BitelHook("bitel_down").test_connection()
    assert ok is False
    assert "after 2 attempts" in message
    assert "NewConnectionError" in message
    assert f"127.0.0.1:{port}" in message
