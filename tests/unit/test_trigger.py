"""P2PSmsDeliveryTrigger in an event loop against the sandbox: serialization, polling, outages."""

from __future__ import annotations

import asyncio
import json
import threading

from airflow_provider_p2psms.hooks.factory import get_sms_hook
from airflow_provider_p2psms.models import MessagesPacker, OutgoingSms
from airflow_provider_p2psms.triggers.p2p_sms import P2PSmsDeliveryTrigger


def send(numbers: list[str]) -> list[list[str]]:
    hook = get_sms_hook("bitel_default")
    receipts = hook.send_batch([OutgoingSms(hook.normalize_number(n), "Hi") for n in numbers])
    return [[r.message_id, r.recipient] for r in receipts]


def events(trigger: P2PSmsDeliveryTrigger) -> list[dict]:
    async def collect() -> list[dict]:
        return [event.payload async for event in trigger.run()]

    return asyncio.run(collect())


def test_serialize_round_trip_keeps_every_argument(sms_connections):
    trigger = P2PSmsDeliveryTrigger(
        sms_conn_id="bitel_default", messages=[["a" * 32, "09121234567"]], poke_interval=2.5
    )
    classpath, kwargs = trigger.serialize()
    assert classpath == "airflow_provider_p2psms.triggers.p2p_sms.P2PSmsDeliveryTrigger"
    again = P2PSmsDeliveryTrigger(**kwargs)
    assert again.serialize() == (classpath, kwargs)
    assert kwargs == {
        "sms_conn_id": "bitel_default",
        "messages": [["a" * 32, "09121234567"]],
        "poke_interval": 2.5,
    }


def test_the_trigger_polls_with_the_async_client_only(sms_connections, monkeypatch):
    """The triggerer's event loop runs every trigger: a blocking status request would stall them all."""
    from airflow_provider_p2psms.hooks.base import P2PSmsHook

    def blocking(*args: object, **kwargs: object) -> None:
        raise AssertionError("the trigger made a blocking status request")

    sms_connections.configure(delivery_seconds=0.2)
    messages = send(["09121234567", "09121230001"])
    monkeypatch.setattr(P2PSmsHook, "get_statuses", blocking)
    monkeypatch.setattr(P2PSmsHook, "request", blocking)
    payloads = events(P2PSmsDeliveryTrigger(sms_conn_id="bitel_default", messages=messages, poke_interval=0.1))
    assert payloads == [{"status": "done", "state": "df", "polls": payloads[0]["polls"]}]
    status_requests = [r for r in sms_connections.requests() if "/status/" in r["path"]]
    assert len(status_requests) >= 2


def test_polls_until_every_message_is_final(sms_connections):
    sms_connections.configure(delivery_seconds=0.3)
    messages = send(["09121234567", "09121230001", "09121230002"])
    payloads = events(P2PSmsDeliveryTrigger(sms_conn_id="bitel_default", messages=messages, poke_interval=0.1))
    assert payloads == [{"status": "done", "state": "dfb", "polls": payloads[0]["polls"]}]
    assert payloads[0]["polls"] >= 2


def test_a_compressed_receipt_is_tracked_message_by_message(sms_connections):
    sms_connections.configure(delivery_seconds=0.2)
    packer = MessagesPacker()
    for start in range(0, 1500, 100):
        packer.add(send([f"0912{2001000 + index:07d}" for index in range(start, start + 100)]))
    messages = packer.value()
    assert messages.startswith("zlib:")
    payloads = events(P2PSmsDeliveryTrigger(sms_conn_id="bitel_default", messages=messages, poke_interval=0.1))
    assert [payload["status"] for payload in payloads] == ["done"]
    assert len(payloads[0]["state"]) == 1500
    assert set(payloads[0]["state"]) == {"d"}


def test_a_status_outage_does_not_end_the_wait(sms_connections, monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW_CONN_BITEL_DEFAULT",
        json.dumps(
            {
                "conn_type": "bitel",
                "password": "sandbox-bitel-token",
                "host": sms_connections.url,
                "extra": {"max_retries": 0, "retry_backoff": 0.01},
            }
        ),
    )
    sms_connections.configure(delivery_seconds=0.0)
    messages = send(["09121234567", "09351234567"])
    sms_connections.configure(status_5xx_rate=1.0)
    threading.Timer(0.6, lambda: sms_connections.configure(status_5xx_rate=0.0)).start()
    payloads = events(P2PSmsDeliveryTrigger(sms_conn_id="bitel_default", messages=messages, poke_interval=0.1))
    assert [p["status"] for p in payloads] == ["done"]
    assert payloads[0]["state"] == "dd"
    assert any(r["status"] == 503 for r in sms_connections.requests())


def test_a_bad_token_ends_the_wait_with_an_error_event(sms_connections, monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW_CONN_BITEL_DEFAULT",
        json.dumps({"conn_type": "bitel", "password": "not-the-token", "host": sms_connections.url}),
    )
    payloads = events(
        P2PSmsDeliveryTrigger(sms_conn_id="bitel_default", messages=[["b" * 32, "09121234567"]], poke_interval=0.1)
    )
    assert len(payloads) == 1 and payloads[0]["status"] == "error"
    assert "refused the API token of connection 'bitel_default' (HTTP 401)" in payloads[0]["message"]
    assert "not-the-token" not in payloads[0]["message"]
