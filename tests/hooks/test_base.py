"""What both gateway hooks share: reading the connection, retries and backoff, uncertain sends, secrets."""

from __future__ import annotations

import email.utils
import json
import logging
import random
import time

import pytest

from airflow_provider_p2psms.exceptions import (
    P2PSmsError,
    SmsAuthenticationError,
    SmsConfigurationError,
    SmsGatewayUnavailable,
    SmsRequestRejected,
    SmsUncertainSendError,
)
from airflow_provider_p2psms.hooks import transport
from airflow_provider_p2psms.hooks.base import P2PSmsHook
from airflow_provider_p2psms.hooks.bitel import BitelHook
from airflow_provider_p2psms.hooks.ippanel import IPPanelHook
from airflow_provider_p2psms.hooks.settings import DEFAULT_STATUS_CONCURRENCY, GatewaySettings
from airflow_provider_p2psms.hooks.transport import MAX_BACKOFF_SECONDS
from airflow_provider_p2psms.models import OutgoingSms, SmsReceipt
from airflow_provider_p2psms.sandbox import DEFAULT_BITEL_GATEWAY, DEFAULT_IPPANEL_SENDER
from tests.helpers import GATEWAYS
from tests.hooks import SECRET_TOKEN, ScriptedServer, closed_port, use_connection

HOOKS: dict[str, type[P2PSmsHook]] = {"bitel": BitelHook, "ippanel": IPPanelHook}
SENDERS = {"bitel": DEFAULT_BITEL_GATEWAY, "ippanel": DEFAULT_IPPANEL_SENDER}
WIRE_NUMBERS = {"bitel": "09121234567", "ippanel": "+989121234567"}
UNKNOWN_IDS = {"bitel": "f" * 32, "ippanel": "999"}
SEND_PATHS = {"bitel": "/api/v2/sms/batch/p2p", "ippanel": "/v1/api/send"}


@pytest.fixture(params=GATEWAYS)
def gateway(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def connect(sandbox, monkeypatch, gateway):
    """Define ``sms_test`` for ``gateway`` on the sandbox, holding the secret token, and return a hook."""
    sandbox.configure(bitel_tokens=[SECRET_TOKEN], ippanel_tokens=[SECRET_TOKEN])
    hooks: list[P2PSmsHook] = []

    def connect(password: str = SECRET_TOKEN, host: str | None = None, **extra: object) -> P2PSmsHook:
        extra = {"sender": SENDERS[gateway], "retry_backoff": 0.01, **extra}
        url = sandbox.url if gateway == "bitel" else sandbox.ippanel_url
        use_connection(monkeypatch, "sms_test", gateway, password=password, host=host or url, **extra)
        hooks.append(HOOKS[gateway]("sms_test"))
        return hooks[-1]

    yield connect
    for hook in hooks:
        hook.close()


def one_message(gateway: str) -> list[OutgoingSms]:
    return [OutgoingSms(WIRE_NUMBERS[gateway], "hello")]


def unknown_receipt(gateway: str) -> SmsReceipt:
    return SmsReceipt(UNKNOWN_IDS[gateway], WIRE_NUMBERS[gateway])


def statuses(sandbox) -> list[int | None]:
    return [r["status"] for r in sandbox.requests()]


def seed_for(rate: float) -> int:
    """A sandbox seed whose first fault draw hits ``rate`` and whose second misses it."""
    for seed in range(1000):
        draws = random.Random(seed)
        if draws.random() < rate <= draws.random():
            return seed
    raise AssertionError("no seed found")


# ---------------------------------------------------------------- settings and extras


def test_defaults_of_a_connection_with_only_a_token(monkeypatch, gateway):
    extra = {"sender": SENDERS[gateway]} if gateway == "ippanel" else {}
    use_connection(monkeypatch, "sms_min", gateway, password="t0ken", host=None, **extra)
    hook = HOOKS[gateway]("sms_min")
    assert hook.settings == GatewaySettings(
        base_url=HOOKS[gateway].default_base_url,
        token="t0ken",
        sender="+983000505" if gateway == "ippanel" else None,
        timeout=30.0,
        verify=True,
        max_retries=5,
        retry_backoff=1.0,
        max_concurrency=8,
        batch_size=100,
    )
    assert {"bitel": "https://api.bitel.rest", "ippanel": "https://edge.ippanel.com/v1"}[gateway] == (
        hook.settings.base_url
    )


def test_extras_typed_in_the_ui_as_strings_are_parsed(monkeypatch):
    use_connection(
        monkeypatch,
        "sms_text",
        "bitel",
        password="t0ken",
        host="http://127.0.0.1:1",
        timeout="2.5",
        max_retries="3",
        retry_backoff="0",
        verify_ssl="false",
        max_concurrency="4",
        batch_size="50",
        sender=" 10009909 ",
    )
    settings = BitelHook("sms_text").settings
    assert (settings.timeout, settings.max_retries, settings.retry_backoff) == (2.5, 3, 0.0)
    assert (settings.verify, settings.max_concurrency, settings.batch_size, settings.sender) == (
        False,
        4,
        50,
        "10009909",
    )


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("timeout", "abc", "a number of seconds"),
        ("timeout", 0, "a number of at least 0.001"),
        ("retry_backoff", -1, "a number of at least 0.0"),
        ("max_retries", "two", "a whole number"),
        ("max_retries", -1, "a whole number of at least 0"),
        ("batch_size", 0, "a whole number of at least 1"),
        ("max_concurrency", [4], "a whole number"),
        ("verify_ssl", "maybe", "true or false"),
    ],
)
def test_a_bad_extra_names_the_connection_the_field_and_what_is_expected(monkeypatch, gateway, name, value, expected):
    use_connection(
        monkeypatch, "sms_bad", gateway, password="t0ken", host=None, sender=SENDERS[gateway], **{name: value}
    )
    with pytest.raises(SmsConfigurationError) as caught:
        HOOKS[gateway]("sms_bad").settings  # noqa: B018
    assert str(caught.value) == f"Connection 'sms_bad': extra '{name}' is {value!r}, expected {expected}."


def test_status_concurrency_defaults_to_16_and_is_read_from_its_extra(monkeypatch, gateway):
    base = {"password": "t0ken", "host": None, "sender": SENDERS[gateway]}
    use_connection(monkeypatch, "sms_status", gateway, **base)
    assert HOOKS[gateway]("sms_status").settings.status_concurrency == DEFAULT_STATUS_CONCURRENCY == 16
    use_connection(monkeypatch, "sms_status", gateway, **base, status_concurrency="32", max_concurrency=4)
    assert HOOKS[gateway]("sms_status").settings.status_concurrency == 32
    assert "status_concurrency=32" in repr(HOOKS[gateway]("sms_status").settings)


def test_max_concurrency_alone_still_sets_the_status_concurrency(monkeypatch, gateway):
    """Before ``status_concurrency``, ``max_concurrency`` was the status concurrency: a connection keeps it."""
    use_connection(
        monkeypatch, "sms_old", gateway, password="t0ken", host=None, sender=SENDERS[gateway], max_concurrency=3
    )
    assert HOOKS[gateway]("sms_old").settings.status_concurrency == 3


@pytest.mark.parametrize("value", ["many", " ", 0, -2, 257, "1000", 2.5, True, [8], {"n": 8}])
def test_a_bad_status_concurrency_names_the_connection_and_the_field(monkeypatch, gateway, value):
    use_connection(
        monkeypatch, "sms_bad", gateway, password="t0ken", host=None, sender=SENDERS[gateway], status_concurrency=value
    )
    with pytest.raises(SmsConfigurationError) as caught:
        HOOKS[gateway]("sms_bad").settings  # noqa: B018
    assert str(caught.value) == (
        f"Connection 'sms_bad': extra 'status_concurrency' is {value!r}, expected a whole number from 1 to 256."
    )


def test_a_batch_size_above_the_gateway_limit_is_refused(monkeypatch, gateway):
    use_connection(
        monkeypatch, "sms_big", gateway, password="t0ken", host=None, sender=SENDERS[gateway], batch_size=500
    )
    name = {"bitel": "Bitel", "ippanel": "IPPanel"}[gateway]
    with pytest.raises(SmsConfigurationError) as caught:
        HOOKS[gateway]("sms_big").batch_size  # noqa: B018
    assert str(caught.value) == (
        f"Connection 'sms_big': extra 'batch_size' is 500, but {name} takes at most 100 messages per request."
    )


@pytest.mark.parametrize("password", [None, "", "   "])
def test_a_connection_without_token_is_a_configuration_error(monkeypatch, gateway, password):
    use_connection(monkeypatch, "sms_notoken", gateway, password=password, host=None, sender=SENDERS[gateway])
    label = HOOKS[gateway].token_label
    with pytest.raises(SmsConfigurationError) as caught:
        HOOKS[gateway]("sms_notoken").settings  # noqa: B018
    assert str(caught.value).startswith(f"Connection 'sms_notoken' has no {label}. Set its password field")


def test_a_pasted_token_with_a_trailing_line_break_still_works(connect, sandbox, gateway):
    hook = connect(password=f"  {SECRET_TOKEN}\n")
    assert hook.settings.token == SECRET_TOKEN
    hook.send_batch(one_message(gateway))
    assert [(r["status"], r["auth_ok"]) for r in sandbox.requests()] == [(200, True)]


def test_a_token_with_a_line_break_inside_is_refused_without_echoing_it(connect, sandbox, gateway, capfd):
    half, other_half = SECRET_TOKEN[:10], SECRET_TOKEN[10:]
    hook = connect(password=f"{half}\n{other_half}")
    with pytest.raises(SmsConfigurationError) as caught:
        hook.send_batch(one_message(gateway))
    assert "Connection 'sms_test': the " in str(caught.value)
    assert "cannot go in an HTTP header" in str(caught.value)
    captured = capfd.readouterr()
    for text in (str(caught.value), captured.out, captured.err):
        assert half not in text
        assert other_half not in text
    assert sandbox.requests() == []


@pytest.mark.parametrize(
    ("connection", "expected"),
    [
        ({"host": "http://127.0.0.1:8080"}, "http://127.0.0.1:8080"),
        ({"host": "http://127.0.0.1:8080/v1/"}, "http://127.0.0.1:8080/v1"),
        ({"host": " https://gw.example/v1 "}, "https://gw.example/v1"),
        ({"host": "gw.example", "schema": "v1"}, "https://gw.example/v1"),
        (
            {"host": "127.0.0.1", "port": 8080, "schema": "/v1/", "extra": {"scheme": "http"}},
            "http://127.0.0.1:8080/v1",
        ),
        ({"host": "127.0.0.1:8080"}, "https://127.0.0.1:8080"),
        # Airflow's URI form with the protocol in the host keeps port and path in their own fields.
        ({"host": "http://127.0.0.1", "port": 8080, "schema": "v1"}, "http://127.0.0.1:8080/v1"),
        ({"host": "http://127.0.0.1:9090/v2", "port": 8080, "schema": "v1"}, "http://127.0.0.1:9090/v2"),
        ({"host": "http://[::1]", "port": 8080}, "http://[::1]:8080"),
    ],
)
def test_base_url_from_host_port_and_schema(monkeypatch, connection, expected):
    monkeypatch.setenv("AIRFLOW_CONN_SMS_URL", json.dumps({"conn_type": "bitel", "password": "t0ken", **connection}))
    assert BitelHook("sms_url").settings.base_url == expected


def test_a_base_url_with_an_unsupported_scheme_is_a_configuration_error(connect, gateway):
    hook = connect(host="ftp://127.0.0.1/v1")
    with pytest.raises(SmsConfigurationError) as caught:
        hook.send_batch(one_message(gateway))
    assert str(caught.value).startswith("Connection 'sms_test' has an unusable base URL 'ftp://127.0.0.1/v1'")


def test_proxy_variables_are_honoured_as_requests_would(connect, gateway, monkeypatch):
    """HTTP(S)_PROXY and NO_PROXY apply, read when the hook's session is made."""
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:1")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    through_proxy = connect(max_retries=0)
    with pytest.raises(SmsGatewayUnavailable, match=r"ProxyError|ConnectionError"):
        through_proxy.send_batch(one_message(gateway))

    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    direct = connect(max_retries=0)
    assert [receipt.recipient for receipt in direct.send_batch(one_message(gateway))] == [WIRE_NUMBERS[gateway]]


def test_a_ca_bundle_variable_applies_unless_verification_is_off(connect, monkeypatch, tmp_path):
    bundle = tmp_path / "ca.pem"
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(bundle))
    assert connect().session.verify == str(bundle)
    assert connect(verify_ssl=False).session.verify is False


def test_repr_of_the_settings_hides_the_token(connect):
    settings = connect().settings
    assert settings.token == SECRET_TOKEN
    assert SECRET_TOKEN not in repr(settings)
    assert SECRET_TOKEN not in str(settings)
    assert repr(settings).startswith(f"GatewaySettings(base_url={settings.base_url!r}")


def test_close_drops_the_session_and_the_hook_can_send_again(connect, sandbox, gateway):
    hook = connect()
    first = hook.get_conn()
    hook.send_batch(one_message(gateway))
    hook.close()
    assert hook.get_conn() is not first
    # Another text: the same one again within 40 s would meet IPPanel's duplicate guard.
    hook.send_batch([OutgoingSms(WIRE_NUMBERS[gateway], "hello again")])
    assert statuses(sandbox) == [200, 200]


# ---------------------------------------------------------------- retries of reads


def test_reads_are_retried_on_5xx_up_to_max_retries(connect, sandbox, gateway):
    hook = connect(max_retries=2)
    sandbox.configure(status_5xx_rate=1)

    with pytest.raises(SmsGatewayUnavailable) as caught:
        hook.get_statuses([unknown_receipt(gateway)])

    assert statuses(sandbox) == [503, 503, 503]
    assert "usefully after 3 attempts (last: HTTP 503)" in str(caught.value)
    assert "Connection 'sms_test'" in str(caught.value)
    assert "'max_retries' extra" in str(caught.value)


def test_reads_are_retried_on_dropped_connections(connect, sandbox, gateway, capfd):
    hook = connect(max_retries=2)
    sandbox.configure(status_drop_rate=1)

    with pytest.raises(SmsGatewayUnavailable) as caught:
        hook.get_statuses([unknown_receipt(gateway)])

    assert statuses(sandbox) == [None, None, None]
    assert "(last: ConnectionError (ProtocolError))" in str(caught.value)
    logged = "".join(capfd.readouterr())  # Airflow's structlog writes to stdout or stderr, not to caplog
    assert "retrying in" in logged
    assert "(attempt 2 of 3)" in logged
    assert "(attempt 3 of 3)" in logged


def test_reads_wait_as_long_as_retry_after_asks_on_429(connect, sandbox, gateway):
    hook = connect(max_retries=1, retry_backoff=0.001)
    sandbox.configure(status_429_rate=1, retry_after_seconds=0.2)

    started = time.monotonic()
    with pytest.raises(SmsGatewayUnavailable, match=r"after 2 attempts \(last: HTTP 429\)"):
        hook.get_statuses([unknown_receipt(gateway)])
    elapsed = time.monotonic() - started

    assert statuses(sandbox) == [429, 429]
    assert elapsed >= 0.2


def test_a_read_that_fails_once_succeeds_on_the_retry(connect, sandbox, gateway):
    sandbox.configure(delivery_seconds=0)
    hook = connect(max_retries=1)
    receipts = hook.send_batch(one_message(gateway))
    sandbox.configure(status_5xx_rate=0.5, seed=seed_for(0.5))

    (state,) = hook.get_statuses(receipts)

    assert state.status.value == "delivered"
    assert statuses(sandbox) == [200, 503, 200]


def test_max_retries_zero_makes_one_attempt(connect, sandbox, gateway):
    hook = connect(max_retries=0)
    sandbox.configure(status_5xx_rate=1)
    with pytest.raises(SmsGatewayUnavailable, match="after 1 attempts"):
        hook.get_statuses([unknown_receipt(gateway)])
    assert statuses(sandbox) == [503]


def test_authentication_errors_are_never_retried(connect, sandbox, gateway):
    hook = connect(max_retries=5)
    sandbox.configure(bitel_tokens=["other"], ippanel_tokens=["other"])
    with pytest.raises(SmsAuthenticationError, match="connection 'sms_test'"):
        hook.get_statuses([unknown_receipt(gateway)])
    with pytest.raises(SmsAuthenticationError, match="connection 'sms_test'"):
        hook.send_batch(one_message(gateway))
    assert statuses(sandbox) == [401, 401]


# ---------------------------------------------------------------- retries of sends


@pytest.mark.parametrize(("knob", "status"), [("send_429_rate", 429), ("send_5xx_rate", 503)])
def test_sends_refused_with_429_or_503_are_retried(connect, sandbox, gateway, knob, status):
    hook = connect(max_retries=2)
    sandbox.configure(**{knob: 1}, retry_after_seconds=0.01)

    with pytest.raises(SmsGatewayUnavailable, match=rf"after 3 attempts \(last: HTTP {status}\)"):
        hook.send_batch(one_message(gateway))

    assert statuses(sandbox) == [status] * 3
    assert sandbox.messages() == []


def test_a_send_refused_once_with_429_goes_through_exactly_once(connect, sandbox, gateway):
    hook = connect(max_retries=3)
    sandbox.configure(send_429_rate=0.5, seed=seed_for(0.5), retry_after_seconds=0.01)

    receipts = hook.send_batch(one_message(gateway))

    assert statuses(sandbox) == [429, 200]
    assert [m["recipient"] for m in sandbox.messages()] == [WIRE_NUMBERS[gateway]]
    assert [r.message_id for r in receipts] == [m["id"] for m in sandbox.messages()]


def test_a_send_to_a_closed_port_is_retried(monkeypatch, gateway):
    port = closed_port()
    use_connection(
        monkeypatch,
        "sms_down",
        gateway,
        password="t0ken",
        host=f"http://127.0.0.1:{port}",
        sender=SENDERS[gateway],
        max_retries=2,
        retry_backoff=0.001,
    )
    hook = HOOKS[gateway]("sms_down")
    attempts: list[str] = []
    real_request = hook.get_conn().request

    def counting_request(method: str, url: str, **kwargs: object) -> object:
        attempts.append(url)
        return real_request(method, url, **kwargs)

    monkeypatch.setattr(hook.get_conn(), "request", counting_request)

    with pytest.raises(SmsGatewayUnavailable) as caught:
        hook.send_batch(one_message(gateway))

    assert "after 3 attempts (last: ConnectionError (NewConnectionError))" in str(caught.value)
    assert len(attempts) == 3
    assert all(url.endswith(SEND_PATHS[gateway].removeprefix("/v1")) for url in attempts)


def test_a_send_dropped_after_acceptance_is_uncertain_and_never_resent(connect, sandbox, gateway):
    hook = connect(max_retries=5)
    sandbox.configure(send_drop_rate=1)
    batch = [OutgoingSms(WIRE_NUMBERS[gateway], "first"), OutgoingSms(WIRE_NUMBERS[gateway][:-1] + "8", "second")]

    with pytest.raises(SmsUncertainSendError) as caught:
        hook.send_batch(batch)

    error = caught.value
    assert error.messages == tuple(batch)
    assert error.provider == HOOKS[gateway].provider_name
    assert error.reason == "ConnectionError after the request was sent"
    assert "It was not resent automatically" in str(error)
    assert statuses(sandbox) == [None]
    # The gateway did take the messages: resending them would text the recipients twice.
    assert [(m["recipient"], m["text"]) for m in sandbox.messages()] == [(m.recipient, m.text) for m in batch]


def test_a_send_that_times_out_is_uncertain(connect, sandbox, gateway):
    hook = connect(timeout=0.1, max_retries=5)
    sandbox.configure(latency_ms=400)

    with pytest.raises(SmsUncertainSendError) as caught:
        hook.send_batch(one_message(gateway))

    assert caught.value.reason == "ReadTimeout after the request was sent"
    assert len(sandbox.requests()) == 1
    assert [m["recipient"] for m in sandbox.messages()] == [WIRE_NUMBERS[gateway]]


@pytest.mark.parametrize("status", [500, 502, 504])
def test_a_send_answered_with_another_5xx_is_uncertain(monkeypatch, gateway, status):
    path = SEND_PATHS[gateway]
    with ScriptedServer({path: (status, {"error": "boom"}, {})}) as server:
        host = server.url if gateway == "bitel" else f"{server.url}/v1"
        use_connection(monkeypatch, "sms_5xx", gateway, password="t0ken", host=host, sender=SENDERS[gateway])
        with pytest.raises(SmsUncertainSendError) as caught:
            HOOKS[gateway]("sms_5xx").send_batch(one_message(gateway))
    assert caught.value.reason == f"HTTP {status} from POST {path.removeprefix('/v1')}"
    assert len(server.requests) == 1


def test_a_send_answered_200_with_a_body_that_is_not_json_is_uncertain(monkeypatch, gateway):
    path = SEND_PATHS[gateway]
    with ScriptedServer({path: (200, "<html>OK</html>", {})}) as server:
        host = server.url if gateway == "bitel" else f"{server.url}/v1"
        use_connection(monkeypatch, "sms_html", gateway, password="t0ken", host=host, sender=SENDERS[gateway])
        with pytest.raises(SmsUncertainSendError) as caught:
            HOOKS[gateway]("sms_html").send_batch(one_message(gateway))
    assert caught.value.reason == "HTTP 200 with a body that is not JSON"
    assert len(server.requests) == 1


def test_a_read_answered_200_with_a_body_that_is_not_json_asks_about_the_base_url(monkeypatch, gateway):
    with ScriptedServer(default=(200, "<html>Welcome</html>", {})) as server:
        use_connection(monkeypatch, "sms_html", gateway, password="t0ken", host=server.url, sender=SENDERS[gateway])
        with pytest.raises(P2PSmsError) as caught:
            HOOKS[gateway]("sms_html").get_statuses([unknown_receipt(gateway)])
    assert str(caught.value) == (
        f"{HOOKS[gateway].provider_name} answered HTTP 200 with a body that is not JSON. "
        f"Is the base URL {server.url} of connection 'sms_html' the gateway's API?"
    )
    assert len(server.requests) == 1


def test_sends_after_the_gateway_starts_failing_are_retried_then_unavailable(connect, sandbox, gateway):
    hook = connect(max_retries=1)
    sandbox.configure(fail_sends_after=1)

    hook.send_batch([OutgoingSms(WIRE_NUMBERS[gateway], "first")])
    with pytest.raises(SmsGatewayUnavailable, match=r"after 2 attempts \(last: HTTP 503\)"):
        hook.send_batch([OutgoingSms(WIRE_NUMBERS[gateway], "second")])

    assert statuses(sandbox) == [200, 503, 503]
    assert [m["text"] for m in sandbox.messages()] == ["first"]


# ---------------------------------------------------------------- backoff


@pytest.mark.parametrize(
    ("header", "expected"),
    [("0.05", 0.05), ("2", 2.0), ("-1", 0.0), ("", None), (None, None), ("soon", None)],
)
def test_retry_after_in_seconds(header, expected):
    assert transport.retry_after_seconds(header) == expected


def test_retry_after_as_an_http_date():
    in_30_seconds = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 28 <= transport.retry_after_seconds(in_30_seconds) <= 30.5
    assert transport.retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0


def test_backoff_doubles_with_jitter_and_honours_retry_after_up_to_the_cap(monkeypatch):
    use_connection(monkeypatch, "sms_backoff", "bitel", password="t0ken", host=None, retry_backoff=0.5)
    hook = BitelHook("sms_backoff")
    for attempt, (low, high) in enumerate([(0.25, 0.5), (0.5, 1.0), (1.0, 2.0), (2.0, 4.0)]):
        delays = [transport.backoff_seconds(hook.settings, attempt, None) for _ in range(50)]
        assert all(low <= delay <= high for delay in delays)
    assert transport.backoff_seconds(hook.settings, 30, None) == MAX_BACKOFF_SECONDS
    assert transport.backoff_seconds(hook.settings, 0, 7.0) == 7.0
    assert transport.backoff_seconds(hook.settings, 0, 0.0) == 0.0
    assert transport.backoff_seconds(hook.settings, 0, 3600.0) == MAX_BACKOFF_SECONDS


# ---------------------------------------------------------------- secrets


PROVIDER_ERRORS = (
    SmsAuthenticationError,
    SmsRequestRejected,
    SmsUncertainSendError,
    SmsGatewayUnavailable,
    SmsConfigurationError,
)


def _fail_with_wrong_token(connect, sandbox, gateway):
    hook = connect()
    sandbox.configure(bitel_tokens=["other"], ippanel_tokens=["other"])
    hook.send_batch(one_message(gateway))


def _fail_test_connection(connect, sandbox, gateway):
    hook = connect()
    sandbox.configure(bitel_tokens=["other"], ippanel_tokens=["other"])
    ok, message = hook.test_connection()
    assert ok is False
    raise SmsAuthenticationError(message)


def _fail_rejected(connect, sandbox, gateway):
    connect(sender="10001234" if gateway == "bitel" else "+989999999").send_batch(one_message(gateway))


def _fail_uncertain(connect, sandbox, gateway):
    sandbox.configure(send_drop_rate=1)
    connect().send_batch(one_message(gateway))


def _fail_timeout(connect, sandbox, gateway):
    sandbox.configure(latency_ms=300)
    connect(timeout=0.05).send_batch(one_message(gateway))


def _fail_unavailable(connect, sandbox, gateway):
    sandbox.configure(status_5xx_rate=1)
    connect(max_retries=1).get_statuses([unknown_receipt(gateway)])


def _fail_closed_port(connect, sandbox, gateway):
    connect(host=f"http://127.0.0.1:{closed_port()}", max_retries=1).send_batch(one_message(gateway))


def _fail_missing_sender(connect, sandbox, gateway):
    connect(sender=None, batch_size="lots").send_batch(one_message(gateway))


@pytest.mark.parametrize(
    "scenario",
    [
        _fail_with_wrong_token,
        _fail_test_connection,
        _fail_rejected,
        _fail_uncertain,
        _fail_timeout,
        _fail_unavailable,
        _fail_closed_port,
        _fail_missing_sender,
    ],
    ids=lambda scenario: scenario.__name__.removeprefix("_fail_"),
)
def test_the_token_never_appears_in_errors_or_logs(connect, sandbox, gateway, caplog, capfd, scenario):
    caplog.set_level(logging.DEBUG)

    with pytest.raises(PROVIDER_ERRORS) as caught:
        scenario(connect, sandbox, gateway)

    captured = capfd.readouterr()
    assert SECRET_TOKEN not in str(caught.value)
    assert SECRET_TOKEN not in repr(caught.value)
    assert SECRET_TOKEN not in caplog.text
    assert SECRET_TOKEN not in captured.out
    assert SECRET_TOKEN not in captured.err
