"""Status look-ups carry the SMS parts and the price the gateways report, on both the worker's and the triggerer's path.

Bitel's status answer has ``smsCount`` and ``price`` (Toman; 0 until the message is processed). IPPanel's
recipients report has ``msg_parts`` per recipient and no price per message (``by_bulk``'s ``cost`` is the
whole outbox entry's), so its states carry no price. The sandbox charges 150 a part once a message is
final and the operator took it (delivered, or delivery failed).
"""

from __future__ import annotations

import asyncio

import pytest

from airflow_provider_p2psms.hooks.factory import get_sms_hook
from airflow_provider_p2psms.models import DeliveryStatus, OutgoingSms, SmsReceipt
from tests.hooks import ScriptedServer, use_connection

P = DeliveryStatus
#: Persian text of 100 characters: UCS-2, 67 characters a part, so two parts.
LONG = "س" * 100
#: Delivered (one part, two parts), delivery failed, blacklisted, never final.
NUMBERS = ["09121234567", "09351234567", "09121230001", "09121230002", "09121230009"]
TEXTS = ["hi", LONG, "hi", "hi", "hi"]


def read(hook, receipts, path):
    if path == "sync":
        return hook.get_statuses(receipts)

    async def run():
        async with hook.async_client() as client:
            return await hook.aget_statuses(receipts, client)

    return asyncio.run(run())


@pytest.mark.parametrize("path", ["sync", "async"])
@pytest.mark.parametrize("shape", ["code", "v2"])
def test_bitel_states_carry_sms_count_and_the_final_price(sms_connections, shape, path):
    sms_connections.configure(bitel_status_shape=shape, delivery_seconds=3600)
    hook = get_sms_hook("bitel_default")
    receipts = hook.send_batch(
        [OutgoingSms(hook.normalize_number(n), text) for n, text in zip(NUMBERS, TEXTS, strict=True)]
    )

    waiting = read(hook, receipts, path)
    # Bitel prices a message 0 until it is processed: not known yet, not free.
    assert [(s.status, s.parts, s.price) for s in waiting] == [(P.PENDING, parts, None) for parts in (1, 2, 1, 1, 1)]

    sms_connections.configure(delivery_seconds=0)
    final = read(hook, receipts, path)
    assert [(s.status, s.parts, s.price) for s in final] == [
        (P.DELIVERED, 1, 150.0),
        (P.DELIVERED, 2, 300.0),
        (P.FAILED, 1, 150.0),
        (P.BLACKLISTED, 1, 0.0),  # final and not charged: a price of 0
        (P.SENT, 1, None),  # never final: not processed, no price yet
    ]


def test_bitel_a_price_before_the_final_status_and_counts_as_digits(monkeypatch):
    answers = {
        f"/api/v2/sms/status/{'a' * 32}": (
            200,
            {"result": {"statusCode": 2, "status": "CHECK_OK", "smsCount": "3", "price": 420.5}, "error": None},
            {},
        ),
        f"/api/v2/sms/status/{'b' * 32}": (
            200,
            {"result": {"statusCode": 1, "status": "DELIVERED", "smsCount": True, "price": "free"}, "error": None},
            {},
        ),
    }
    with ScriptedServer(answers) as server:
        use_connection(monkeypatch, "bitel_odd", "bitel", password="token", host=server.url)
        states = get_sms_hook("bitel_odd").get_statuses(
            [SmsReceipt("a" * 32, "09121234567"), SmsReceipt("b" * 32, "09351234567")]
        )
    assert [(s.status, s.parts, s.price) for s in states] == [(P.SENT, 3, 420.5), (P.DELIVERED, None, None)]


@pytest.mark.parametrize("path", ["sync", "async"])
def test_ippanel_states_carry_msg_parts_and_no_price(sms_connections, path):
    sms_connections.configure(delivery_seconds=3600)
    hook = get_sms_hook("ippanel_default")
    receipts = hook.send_batch(
        [OutgoingSms(hook.normalize_number(n), text) for n, text in zip(NUMBERS, TEXTS, strict=True)]
    )

    # Before the bulk is sent the recipients report has parts but no status: the bulk state gives it.
    sending = read(hook, receipts, path)
    assert [(s.status, s.parts, s.price) for s in sending] == [(P.PENDING, parts, None) for parts in (1, 2, 1, 1, 1)]

    sms_connections.configure(delivery_seconds=0)
    final = read(hook, receipts, path)
    assert [(s.status, s.parts, s.price) for s in final] == [
        (P.DELIVERED, 1, None),
        (P.DELIVERED, 2, None),
        (P.FAILED, 1, None),
        (P.BLACKLISTED, 1, None),
        (P.SENT, 1, None),
    ]


def test_ippanel_msg_parts_in_any_spelling(monkeypatch):
    rows = [
        {"recipient": "+989121230000", "message_status": "2", "msg_parts": "3"},
        {"recipient": "+989121230001", "message_status": "2", "msg_parts": 2},
        {"recipient": "+989121230002", "message_status": "2"},
        {"recipient": "+989121230003", "message_status": "2", "msg_parts": "?"},
    ]
    report = {"data": rows, "meta": {"last_page": 1}}
    with ScriptedServer({"/v1/api/report/recipients": (200, report, {})}) as server:
        use_connection(monkeypatch, "ipp_odd", "ippanel", password="k", host=f"{server.url}/v1", sender="+983000505")
        states = get_sms_hook("ipp_odd").get_statuses([SmsReceipt("7", row["recipient"]) for row in rows])
    assert [(s.status, s.parts, s.price) for s in states] == [
        (P.DELIVERED, 3, None),
        (P.DELIVERED, 2, None),
        (P.DELIVERED, None, None),
        (P.DELIVERED, None, None),
    ]
