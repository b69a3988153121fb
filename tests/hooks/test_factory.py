"""get_sms_hook: the connection's type picks the gateway, in every form a user can write a connection."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest
from airflow.sdk import Connection

from airflow_provider_p2psms.exceptions import SmsConfigurationError
from airflow_provider_p2psms.get_provider_info import get_provider_info, hook_class_names
from airflow_provider_p2psms.hooks.bitel import BitelHook
from airflow_provider_p2psms.hooks.factory import get_sms_hook
from airflow_provider_p2psms.hooks.ippanel import IPPanelHook
from airflow_provider_p2psms.models import OutgoingSms
from airflow_provider_p2psms.sandbox import DEFAULT_BITEL_TOKEN, DEFAULT_IPPANEL_KEY


def test_json_connections_pick_the_hook_by_type(sms_connections):
    sandbox = sms_connections
    bitel = get_sms_hook("bitel_default")
    ippanel = get_sms_hook("ippanel_default")

    assert type(bitel) is BitelHook
    assert type(ippanel) is IPPanelHook
    assert (bitel.sms_conn_id, bitel.settings.base_url) == ("bitel_default", sandbox.url)
    assert (ippanel.sms_conn_id, ippanel.settings.base_url) == ("ippanel_default", sandbox.ippanel_url)


def test_the_factory_knows_every_connection_type_of_the_provider_info():
    declared = {c["connection-type"]: c["hook-class-name"] for c in get_provider_info()["connection-types"]}
    assert (
        hook_class_names()
        == declared
        == {
            "bitel": "airflow_provider_p2psms.hooks.bitel.BitelHook",
            "ippanel": "airflow_provider_p2psms.hooks.ippanel.IPPanelHook",
        }
    )


def _send_one(hook, sandbox, number: str) -> None:
    hook.send_batch([OutgoingSms(number, "hi")])
    assert [(r["status"], r["auth_ok"]) for r in sandbox.requests()] == [(200, True)]
    assert [m["recipient"] for m in sandbox.messages()] == [number]


def test_uri_with_host_port_schema_and_a_scheme_extra(sandbox, monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW_CONN_SMS_URI",
        f"ippanel://:{DEFAULT_IPPANEL_KEY}@127.0.0.1:{sandbox.port}/v1?sender=%2B983000505&scheme=http",
    )
    hook = get_sms_hook("sms_uri")

    assert type(hook) is IPPanelHook
    assert hook.settings.base_url == f"http://127.0.0.1:{sandbox.port}/v1"
    assert hook.settings.sender == "+983000505"
    _send_one(hook, sandbox, "+989121234567")


def test_uri_without_a_scheme_extra_defaults_to_https(sandbox, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_SMS_URI", f"ippanel://:KEY@127.0.0.1:{sandbox.port}/v1?sender=%2B983000505")
    assert get_sms_hook("sms_uri").settings.base_url == f"https://127.0.0.1:{sandbox.port}/v1"


def test_uri_with_the_protocol_in_the_host_keeps_port_and_path(sandbox, monkeypatch):
    # Airflow parses this into host "http://127.0.0.1", port and schema "v1" as separate fields.
    monkeypatch.setenv(
        "AIRFLOW_CONN_SMS_URI",
        f"ippanel://http://:{DEFAULT_IPPANEL_KEY}@127.0.0.1:{sandbox.port}/v1?sender=%2B983000505",
    )
    hook = get_sms_hook("sms_uri")

    assert hook.settings.base_url == sandbox.ippanel_url
    _send_one(hook, sandbox, "+989121234567")


def test_uri_with_a_url_encoded_full_url_as_host(sandbox, monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW_CONN_SMS_URI",
        f"bitel://:{DEFAULT_BITEL_TOKEN}@http%3A%2F%2F127.0.0.1%3A{sandbox.port}?sender=10009909",
    )
    hook = get_sms_hook("sms_uri")

    assert type(hook) is BitelHook
    assert hook.settings.base_url == sandbox.url
    _send_one(hook, sandbox, "09121234567")


@pytest.mark.parametrize("form", ["uri", "json"])
def test_a_connection_object_exported_as_uri_or_json(sandbox, monkeypatch, form):
    connection = Connection(
        conn_id="sms_obj",
        conn_type="bitel",
        password=DEFAULT_BITEL_TOKEN,
        host=sandbox.url,
        extra=json.dumps({"sender": "10009909"}),
    )
    monkeypatch.setenv("AIRFLOW_CONN_SMS_OBJ", connection.get_uri() if form == "uri" else connection.as_json())
    hook = get_sms_hook("sms_obj")

    assert hook.settings.base_url == sandbox.url
    _send_one(hook, sandbox, "09121234567")


def test_an_http_connection_is_a_clear_configuration_error(monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_SMS_HTTP", json.dumps({"conn_type": "http", "host": "api.bitel.rest"}))
    with pytest.raises(SmsConfigurationError) as caught:
        get_sms_hook("sms_http")
    assert str(caught.value) == (
        "Connection 'sms_http' has type 'http', which is not an SMS gateway. "
        "Use a connection of type 'bitel' or 'ippanel'."
    )


def test_the_connection_is_checked_when_the_hook_is_made(monkeypatch, sandbox):
    monkeypatch.setenv(
        "AIRFLOW_CONN_SMS_NOSENDER",
        json.dumps({"conn_type": "ippanel", "password": DEFAULT_IPPANEL_KEY, "host": sandbox.ippanel_url}),
    )
    with pytest.raises(SmsConfigurationError, match="Connection 'sms_nosender' has no sender line"):
        get_sms_hook("sms_nosender")
    assert sandbox.requests() == []


class SchedulingGatewayHook(IPPanelHook):
    """A third gateway that can schedule, registered only by the test below."""

    conn_type = "third_gateway"
    provider_name = "ThirdGateway"


def test_a_send_time_refusal_names_every_gateway_that_can_schedule(sms_connections, monkeypatch):
    """The hint comes from the registered hooks, so a third gateway that can schedule is offered too."""
    from airflow_provider_p2psms.hooks import factory

    registered = {**hook_class_names(), "third_gateway": f"{__name__}.SchedulingGatewayHook"}
    monkeypatch.setattr(factory, "hook_class_names", lambda: registered)
    assert factory.scheduling_gateways() == ["IPPanel", "ThirdGateway"]

    hook = get_sms_hook("bitel_default")
    with pytest.raises(SmsConfigurationError, match="Bitel cannot schedule a send") as caught:
        hook.send_batch([OutgoingSms("09121234567", "hi")], send_time=datetime(2031, 1, 1, tzinfo=timezone.utc))
    assert "a gateway that can schedule: IPPanel or ThirdGateway" in str(caught.value)
    assert sms_connections.requests() == []
