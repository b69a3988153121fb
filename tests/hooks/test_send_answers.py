"""What an answer to a send means: the one table in ``hooks/transport.py``, on a real loopback socket.

Each row of the README's table ("Retries and resumption") is checked twice: as data (``SEND_ANSWERS`` and the
functions that read it), and on the wire, for a first attempt of a batch and for an attempt after one whose
fate is unknown (``send_batch(..., after_uncertain=True)``).
"""

from __future__ import annotations

import pytest

from airflow_provider_p2psms.exceptions import (
    SmsAuthenticationError,
    SmsConfigurationError,
    SmsGatewayUnavailable,
    SmsRecipientsRefused,
    SmsRequestRejected,
    SmsUncertainSendError,
)
from airflow_provider_p2psms.hooks import transport
from airflow_provider_p2psms.hooks.factory import get_sms_hook
from airflow_provider_p2psms.models import OutgoingSms
from airflow_provider_p2psms.sandbox import DEFAULT_BITEL_GATEWAY, DEFAULT_IPPANEL_SENDER, SUFFIX_REFUSED
from tests.helpers import GATEWAYS, connection_env
from tests.hooks import ScriptedServer, closed_port, use_connection

SENDERS = {"bitel": DEFAULT_BITEL_GATEWAY, "ippanel": DEFAULT_IPPANEL_SENDER}
SEND_PATHS = {"bitel": "/api/v2/sms/batch/p2p", "ippanel": "/v1/api/send"}
WIRE = {"bitel": "09121234567", "ippanel": "+989121234567"}
REFUSED = {"bitel": f"091212{SUFFIX_REFUSED}", "ippanel": f"+9891212{SUFFIX_REFUSED}"}

#: The README's table: answer -> (first attempt of a batch, an attempt after one whose fate is unknown).
README_TABLE = {
    "not reached": ("retry", "retry"),
    "429": ("retry", "uncertain"),
    "503": ("retry", "uncertain"),
    "lost": ("uncertain", "uncertain"),
    "refused": ("refused", "refused"),
    "fail": ("fail", "fail"),
}


@pytest.fixture(params=GATEWAYS)
def gateway(request: pytest.FixtureRequest) -> str:
    return request.param


def scripted_hook(monkeypatch, server: ScriptedServer, gateway: str, **extra: object):
    host = server.url if gateway == "bitel" else f"{server.url}/v1"
    use_connection(
        monkeypatch,
        "sms_scripted",
        gateway,
        password="t0ken",
        host=host,
        sender=SENDERS[gateway],
        retry_backoff=0.01,
        max_retries=2,
        **extra,
    )
    return get_sms_hook("sms_scripted")


def one(gateway: str, number: str | None = None) -> list[OutgoingSms]:
    return [OutgoingSms(number or WIRE[gateway], "hello")]


# --------------------------------------------------------------------------- the table as data


def test_the_code_holds_the_readme_table():
    assert {row: (m.first, m.after_uncertain) for row, m in transport.SEND_ANSWERS.items()} == README_TABLE


@pytest.mark.parametrize("after_uncertain", [False, True])
def test_statuses_and_network_errors_read_the_table(after_uncertain):
    column = 1 if after_uncertain else 0

    def status(code: int) -> str:
        return transport.verdict_for_status("send", code, after_uncertain=after_uncertain)

    assert status(429) == README_TABLE["429"][column]
    assert status(503) == README_TABLE["503"][column]
    assert {status(code) for code in (500, 502, 504)} == {README_TABLE["lost"][column]}
    assert {status(code) for code in (200, 302, 400, 401, 422)} == {"answer"}
    network = transport.verdict_for_network_error
    assert network("send", True, after_uncertain=after_uncertain) == README_TABLE["not reached"][column]
    assert network("send", False, after_uncertain=after_uncertain) == README_TABLE["lost"][column]
    # Reads are retried whatever happened.
    assert {transport.verdict_for_status("read", code) for code in (429, 500, 503)} == {"retry"}


@pytest.mark.parametrize("after_uncertain", [False, True])
def test_what_a_send_error_means_for_the_sender_and_the_ledger(after_uncertain):
    def verdict(error: BaseException) -> str:
        return transport.verdict_for_error(error, after_uncertain=after_uncertain)

    assert verdict(SmsUncertainSendError("Bitel", [], "timeout")) == "uncertain"
    assert verdict(SmsRecipientsRefused("Bitel", 400, "InvalidPhoneNumber")) == "refused"
    assert verdict(SmsRequestRejected("Bitel", 400, "InvalidGateway")) == "fail"
    assert verdict(SmsAuthenticationError("401")) == "fail"
    assert verdict(SmsConfigurationError("bad URL")) == "fail"
    assert verdict(SmsGatewayUnavailable("kept answering 503")) == "fail"
    assert verdict(RuntimeError("a bug, maybe after the request left")) == "uncertain"


# --------------------------------------------------------------------------- on the wire


@pytest.mark.parametrize(("status", "row"), [(429, "429"), (503, "503"), (500, "lost"), (502, "lost")])
@pytest.mark.parametrize("after_uncertain", [False, True])
def test_429_and_5xx_on_the_wire(monkeypatch, gateway, status, row, after_uncertain):
    answer = (status, {"error": "busy"}, {"Retry-After": "0"})
    with ScriptedServer({SEND_PATHS[gateway]: answer}) as server:
        hook = scripted_hook(monkeypatch, server, gateway)
        expected = README_TABLE[row][1 if after_uncertain else 0]
        error = SmsGatewayUnavailable if expected == "retry" else SmsUncertainSendError
        with pytest.raises(error) as caught:
            hook.send_batch(one(gateway), after_uncertain=after_uncertain)
        hook.close()
    # Retried: the first attempt and max_retries more. Uncertain: one request, never resent.
    assert len(server.requests) == (3 if expected == "retry" else 1)
    if expected == "uncertain" and status == 429:
        assert "earlier attempt may have sent" in str(caught.value)


@pytest.mark.parametrize("after_uncertain", [False, True])
def test_a_connection_never_established_is_retried_in_both_columns(monkeypatch, gateway, after_uncertain):
    use_connection(
        monkeypatch,
        "sms_closed",
        gateway,
        password="t0ken",
        host=f"http://127.0.0.1:{closed_port()}",
        sender=SENDERS[gateway],
        retry_backoff=0.01,
        max_retries=1,
    )
    with pytest.raises(SmsGatewayUnavailable, match="after 2 attempts"):
        get_sms_hook("sms_closed").send_batch(one(gateway), after_uncertain=after_uncertain)


@pytest.mark.parametrize(
    ("code", "refused"), [("InvalidPhoneNumber", True), ("InvalidRequest", True), ("InvalidGateway", False)]
)
@pytest.mark.parametrize("status", [400, 302])
def test_bitel_error_codes_in_4xx_and_3xx_answers(monkeypatch, code, refused, status):
    """Bitel's 3xx carry an error envelope like its 4xx; a send never follows one (requests would GET it)."""
    answer = (status, {"result": None, "error": code}, {"Location": "/api/v2/elsewhere"})
    with ScriptedServer({SEND_PATHS["bitel"]: answer}) as server:
        hook = scripted_hook(monkeypatch, server, "bitel")
        with pytest.raises(SmsRequestRejected) as caught:
            hook.send_batch(one("bitel"))
        hook.close()
    assert isinstance(caught.value, SmsRecipientsRefused) is refused
    assert (caught.value.http_status, caught.value.provider_code) == (status, code)
    if refused:
        assert caught.value.refused is None  # Bitel names no recipient
    assert [r["method"] for r in server.requests] == ["POST"]


def test_a_redirect_without_an_envelope_fails_the_send_and_is_not_followed(monkeypatch, gateway):
    answer = (301, "<html>Moved</html>", {"Location": "https://elsewhere.example/"})
    with ScriptedServer({SEND_PATHS[gateway]: answer}) as server:
        hook = scripted_hook(monkeypatch, server, gateway)
        with pytest.raises(SmsRequestRejected) as caught:
            hook.send_batch(one(gateway))
        hook.close()
    assert not isinstance(caught.value, SmsRecipientsRefused)
    assert transport.verdict_for_error(caught.value) == "fail"
    assert len(server.requests) == 1


@pytest.mark.parametrize(
    ("errors", "refused"),
    [
        ({"params.1.recipients.0": ["refused"]}, ["+989351234567"]),
        (
            {"params.0.recipients.1": ["refused"], "params.1.recipients.0": ["refused"]},
            ["+989120000002", "+989351234567"],
        ),
        ({"recipients": ["refused"]}, None),
        ({"params.0.message": ["bad"]}, None),
        ({"params.0.recipients.7": ["refused"]}, None),  # no such recipient: it names nobody we know
        ({}, None),
    ],
)
def test_ippanel_422_on_the_recipients_names_them_when_it_can(monkeypatch, errors, refused):
    body = {"data": None, "meta": {"status": False, "message": "x", "message_code": "400-2", "errors": errors}}
    with ScriptedServer({SEND_PATHS["ippanel"]: (422, body, {})}) as server:
        hook = scripted_hook(monkeypatch, server, "ippanel")
        batch = [
            OutgoingSms("+989121234567", "a"),
            OutgoingSms("+989120000002", "a"),
            OutgoingSms("+989351234567", "b"),
        ]
        with pytest.raises(SmsRecipientsRefused) as caught:
            hook.send_batch(batch)
        hook.close()
    assert caught.value.refused == refused
    assert len(server.requests) == 1


@pytest.mark.parametrize("field", ["from_number", "send_time", "sending_type"])
def test_ippanel_422_on_a_request_wide_field_fails_the_task(monkeypatch, field):
    errors = {field: ["bad"], "params.0.recipients.0": ["refused"]}
    body = {"data": None, "meta": {"status": False, "message": "x", "message_code": "400-2", "errors": errors}}
    with ScriptedServer({SEND_PATHS["ippanel"]: (422, body, {})}) as server:
        hook = scripted_hook(monkeypatch, server, "ippanel")
        with pytest.raises(SmsRequestRejected) as caught:
            hook.send_batch(one("ippanel"))
        hook.close()
    assert not isinstance(caught.value, SmsRecipientsRefused)


# --------------------------------------------------------------------------- against the sandbox


@pytest.fixture
def sandbox_hook(sandbox, monkeypatch, gateway):
    for name, value in connection_env(sandbox, retry_backoff=0.01, max_retries=2).items():
        monkeypatch.setenv(name, value)
    hook = get_sms_hook(f"{gateway}_default")
    yield hook
    hook.close()


def test_the_sandbox_refused_number_raises_recipients_refused(sandbox, sandbox_hook, gateway):
    batch = [OutgoingSms(WIRE[gateway], "hi"), OutgoingSms(REFUSED[gateway], "hi")]
    with pytest.raises(SmsRecipientsRefused) as caught:
        sandbox_hook.send_batch(batch)
    # IPPanel names the recipient (params.0.recipients.1 in the sandbox); Bitel never does.
    assert caught.value.refused == ([REFUSED[gateway]] if gateway == "ippanel" else None)
    assert sandbox.messages() == []


def test_a_resend_after_an_uncertain_attempt_meets_ippanels_duplicate_guard_as_uncertain(sandbox, monkeypatch):
    """The first attempt was accepted but its answer lost; resending within 40 s is answered 429."""
    for name, value in connection_env(sandbox, retry_backoff=0.01, max_retries=2).items():
        monkeypatch.setenv(name, value)
    hook = get_sms_hook("ippanel_default")
    sandbox.configure(send_drop_rate=1.0)
    with pytest.raises(SmsUncertainSendError):
        hook.send_batch(one("ippanel"))
    sandbox.configure(send_drop_rate=0.0)

    with pytest.raises(SmsUncertainSendError, match="HTTP 429"):
        hook.send_batch(one("ippanel"), after_uncertain=True)
    # As a first attempt, the same 429 means "not processed": it is retried until the retries are spent.
    with pytest.raises(SmsGatewayUnavailable, match=r"after 3 attempts \(last: HTTP 429\)"):
        hook.send_batch(one("ippanel"))
    hook.close()
    assert len(sandbox.messages()) == 1
    assert [r["status"] for r in sandbox.requests()] == [None, 429, 429, 429, 429]


def test_the_readme_shows_the_same_table():
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme[readme.index("## Retries and resumption") :]
    rows = [line.split("|")[1:-1] for line in section.splitlines() if line.startswith("| ")][1:]
    words = {"retry": "retry", "uncertain": "uncertain", "refused": "refused", "fail": "fail the task"}
    starts = {
        "connection refused": "not reached",
        "429": "429",
        "503": "503",
        "other 5xx": "lost",
        "4xx validation": "refused",
        "401": "fail",
    }
    seen = set()
    for answer, first, after in rows[: len(starts) + 1]:
        row = next((key for start, key in starts.items() if answer.strip().startswith(start)), None)
        if row is None:
            assert answer.strip().startswith("3xx") and "like 4xx" in first and "like 4xx" in after
            continue
        seen.add(row)
        expected = README_TABLE[row]
        assert words[expected[0]] in first.lower(), (answer, first)
        assert words[expected[1]] in after.lower(), (answer, after)
    assert seen == set(starts.values())
