"""IPPanelHook's price and credit look-ups against the sandbox API on a real socket; Bitel's refusal of them."""

from __future__ import annotations

import json
import logging

import pytest

from airflow_provider_p2psms.exceptions import (
    P2PSmsError,
    SmsAuthenticationError,
    SmsConfigurationError,
    SmsGatewayUnavailable,
    SmsRequestRejected,
)
from airflow_provider_p2psms.hooks.bitel import BitelHook
from airflow_provider_p2psms.hooks.ippanel import IPPanelHook
from airflow_provider_p2psms.models import PriceQuote
from airflow_provider_p2psms.sandbox import DEFAULT_IPPANEL_SENDER
from airflow_provider_p2psms.sandbox.ippanel_account import MCI_PRICE_PER_PART, OTHER_PRICE_PER_PART
from tests.helpers import connection_env
from tests.hooks import SECRET_TOKEN, ScriptedServer, use_connection

PRICE_PATH = "/v1/api/send/calculate-price"
CREDIT_PATH = "/v1/api/payment/credit/mine"


@pytest.fixture
def hook(sandbox, monkeypatch):
    for name, value in connection_env(sandbox).items():
        monkeypatch.setenv(name, value)
    made = IPPanelHook()
    yield made
    made.close()


@pytest.mark.parametrize(("text", "parts"), [("Hello", 1), ("سلام " * 20, 2), ("x" * 400, 3)])
def test_a_price_quote_asks_with_the_sender_line_and_reads_both_prices(hook, sandbox, text, parts):
    quote = hook.price_quote(text)

    assert quote == PriceQuote(
        parts=parts, mci_price=MCI_PRICE_PER_PART * parts, other_price=OTHER_PRICE_PER_PART * parts
    )
    (request,) = sandbox.requests()
    assert (request["method"], request["path"], request["status"], request["kind"]) == (
        "POST",
        PRICE_PATH,
        200,
        "account",
    )
    assert json.loads(request["body"]) == {"number": DEFAULT_IPPANEL_SENDER, "message": text}
    assert sandbox.messages() == []  # a price is not a send


def test_the_sender_extra_is_sent_in_e164_whatever_its_spelling(sandbox, monkeypatch):
    for name, value in connection_env(sandbox, sender="03000505").items():
        monkeypatch.setenv(name, value)
    IPPanelHook().price_quote("Hi")
    assert json.loads(sandbox.requests()[0]["body"])["number"] == "+983000505"


def test_credit_reads_the_balance(hook, sandbox):
    assert hook.credit() == 1000000.0
    sandbox.configure(ippanel_credit=1234.5)
    assert hook.credit() == 1234.5
    assert [r["path"] for r in sandbox.requests()] == [CREDIT_PATH, CREDIT_PATH]


def test_a_sender_line_not_of_the_account_is_refused_with_a_hint(sandbox, monkeypatch):
    for name, value in connection_env(sandbox, sender="+989000000000").items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SmsRequestRejected) as caught:
        IPPanelHook().price_quote("Hi")
    error = caught.value
    assert (error.http_status, error.provider_code, list(error.field_errors)) == (422, "400-2", ["number"])
    assert "Check the 'sender' extra of connection 'ippanel_default'" in str(error)
    assert len(sandbox.requests()) == 1  # a 422 is not retried


@pytest.mark.parametrize("call", ["price_quote", "credit"])
def test_a_wrong_key_raises_authentication_error_without_showing_it(sandbox, monkeypatch, caplog, call):
    use_connection(
        monkeypatch, "ipp_bad", "ippanel", password=SECRET_TOKEN, host=sandbox.ippanel_url, sender="+983000505"
    )
    hook = IPPanelHook("ipp_bad")
    with caplog.at_level(logging.DEBUG), pytest.raises(SmsAuthenticationError) as caught:
        hook.price_quote("Hi") if call == "price_quote" else hook.credit()
    assert "connection 'ipp_bad' (HTTP 401)" in str(caught.value)
    assert SECRET_TOKEN not in str(caught.value) and SECRET_TOKEN not in caplog.text
    assert len(sandbox.requests()) == 1


def test_a_503_is_retried_as_for_every_read(monkeypatch):
    unavailable = (503, {"data": None, "meta": {"message_code": "503-1"}}, {})
    with ScriptedServer({PRICE_PATH: unavailable}) as server:
        use_connection(
            monkeypatch,
            "ipp_busy",
            "ippanel",
            password="k",
            host=f"{server.url}/v1",
            sender="+983000505",
            max_retries=2,
            retry_backoff=0.01,
        )
        with pytest.raises(SmsGatewayUnavailable):
            IPPanelHook("ipp_busy").price_quote("Hi")
    assert [r["path"] for r in server.requests] == [PRICE_PATH] * 3


@pytest.mark.parametrize(
    "data",
    [None, {}, {"mci_price": 2370, "other_price": 2503}, {"mci_price": "n/a", "other_price": 2503, "parts": 1}],
)
def test_an_answer_without_prices_is_an_error_naming_the_endpoint(monkeypatch, data):
    answer = (200, {"data": data, "meta": {"message_code": "200-1"}}, {})
    with ScriptedServer({PRICE_PATH: answer, CREDIT_PATH: answer}) as server:
        use_connection(monkeypatch, "ipp_odd", "ippanel", password="k", host=f"{server.url}/v1", sender="+983000505")
        hook = IPPanelHook("ipp_odd")
        with pytest.raises(P2PSmsError, match=r"IPPanel answered /api/send/calculate-price without data\.mci_price"):
            hook.price_quote("Hi")
        with pytest.raises(P2PSmsError, match=r"IPPanel answered /api/payment/credit/mine without data\.credit"):
            hook.credit()


def test_prices_and_credit_given_as_strings_are_read(monkeypatch):
    price = (200, {"data": {"mci_price": "2370", "other_price": "2503.5", "parts": "1"}, "meta": {}}, {})
    credit = (200, {"data": {"credit": "98765.25"}, "meta": {}}, {})
    with ScriptedServer({PRICE_PATH: price, CREDIT_PATH: credit}) as server:
        use_connection(monkeypatch, "ipp_str", "ippanel", password="k", host=f"{server.url}/v1", sender="+983000505")
        hook = IPPanelHook("ipp_str")
        assert hook.price_quote("Hi") == PriceQuote(1, 2370.0, 2503.5)
        assert hook.credit() == 98765.25


def test_the_flags_say_which_gateway_can_price():
    assert (IPPanelHook.supports_price_quote, IPPanelHook.supports_credit) == (True, True)
    assert (BitelHook.supports_price_quote, BitelHook.supports_credit) == (False, False)


def test_bitel_refuses_price_and_credit_without_a_request(sms_connections):
    hook = BitelHook()
    for call in (lambda: hook.price_quote("Hi"), hook.credit):
        with pytest.raises(SmsConfigurationError) as caught:
            call()
        text = str(caught.value)
        assert text.startswith("Bitel documents no price or credit endpoint")
        assert "connection 'bitel_default'" in text and "Leave check_credit and max_cost unset" in text
    assert sms_connections.requests() == []
