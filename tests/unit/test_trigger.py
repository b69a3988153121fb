"""P2PSmsDeliveryTrigger in an event loop against the sandbox: serialization, polling, endings, outages."""

from __future__ import annotations

import asyncio
import json
import threading
import time

from airflow_provider_p2psms.hooks.factory import get_sms_hook
from airflow_provider_p2psms.models import MessagesPacker, OutgoingSms
from airflow_provider_p2psms.triggers.p2p_sms import P2PSmsDeliveryTrigger


def send(numbers: list[str]) -> list[list[str]]:
    hook = get_sms_hook("bitel_default")
    receipts = hook.send_batch([OutgoingSms(hook.normalize_number(n), "Hi") for n in numbers])
    return [[r.message_id, r.recipient] for r in receipts]


LETTERS = {"pending": "p", "sent": "s", "delivered": "d", "failed": "f", "blacklisted": "b", "rejected": "r"}


def state(payload: dict) -> str:
    """One letter per message, from the masked triples a small campaign's event lists."""
    return "".join(LETTERS[status] for _, _, status in payload["messages"])


def summary(payload: dict) -> dict:
    return {key: payload[key] for key in ("status", "ending", "polls", "parts", "price")} | {"state": state(payload)}


def done(ending: str, state: str, payloads: list[dict], *, parts: int, price: float | None) -> dict:
    """The event of a wait that ended; the sandbox charges 150 a part for delivered and failed messages."""
    return {
        "status": "done",
        "ending": ending,
        "state": state,
        "polls": payloads[0]["polls"],
        "parts": parts,
        "price": price,
    }


def events(trigger: P2PSmsDeliveryTrigger) -> list[dict]:
    async def collect() -> list[dict]:
        return [event.payload async for event in trigger.run()]

    return asyncio.run(collect())


def test_serialize_round_trip_keeps_every_argument(sms_connections):
    trigger = P2PSmsDeliveryTrigger(
        sms_conn_id="bitel_default",
        messages=[["a" * 32, "09121234567"]],
        poke_interval=2.5,
        min_delivered_ratio=0.9,
        uncertain=3,
        rejected=1,
        fail_early=True,
        give_up_at=1_800_000_000.5,
        timeout_at=1_800_000_100.0,
        outcomes_conn_id="crm_db",
        outcomes_table="sms_outcomes",
        send_task={"dag_id": "campaign", "run_id": "manual__1", "task_id": "send", "map_index": -1},
    )
    classpath, kwargs = trigger.serialize()
    assert classpath == "airflow_provider_p2psms.triggers.p2p_sms.P2PSmsDeliveryTrigger"
    again = P2PSmsDeliveryTrigger(**kwargs)
    assert again.serialize() == (classpath, kwargs)
    assert kwargs == {
        "sms_conn_id": "bitel_default",
        "messages": [["a" * 32, "09121234567"]],
        "expected_messages": None,
        "poke_interval": 2.5,
        "min_delivered_ratio": 0.9,
        "uncertain": 3,
        "rejected": 1,
        "fail_early": True,
        "give_up_at": 1_800_000_000.5,
        "timeout_at": 1_800_000_100.0,
        "outcomes_conn_id": "crm_db",
        "outcomes_table": "sms_outcomes",
        "send_task": {"dag_id": "campaign", "run_id": "manual__1", "task_id": "send", "map_index": -1},
    }
    # Deadlines are plain numbers: the serialized trigger stays small and JSON-ready.
    assert json.loads(json.dumps(kwargs)) == kwargs


def test_a_trigger_serialized_before_the_deadlines_existed_still_runs(sms_connections):
    """A triggerer may pick up a trigger row written by the previous version: it waits for every message."""
    sms_connections.configure(delivery_seconds=0.2)
    messages = send(["09121234567", "09121230001"])
    payloads = events(P2PSmsDeliveryTrigger(sms_conn_id="bitel_default", messages=messages, poke_interval=0.1))
    assert [summary(p) for p in payloads] == [done("all_final", "df", payloads, parts=2, price=300.0)]


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
    assert [summary(p) for p in payloads] == [done("all_final", "df", payloads, parts=2, price=300.0)]
    status_requests = [r for r in sms_connections.requests() if "/status/" in r["path"]]
    assert len(status_requests) >= 2


def test_polls_until_every_message_is_final(sms_connections):
    sms_connections.configure(delivery_seconds=0.3)
    messages = send(["09121234567", "09121230001", "09121230002"])
    payloads = events(P2PSmsDeliveryTrigger(sms_conn_id="bitel_default", messages=messages, poke_interval=0.1))
    assert [summary(p) for p in payloads] == [done("all_final", "dfb", payloads, parts=3, price=300.0)]
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
    assert payloads[0]["total"] == 1500
    assert {status: n for status, n in payloads[0]["counts"].items() if n} == {"delivered": 1500}
    # The event carries totals, not a state per message: it is stored in the metadata DB with the trigger.
    assert payloads[0]["messages"] is None
    assert len(json.dumps(payloads[0])) < 1000


def retrying_bitel(monkeypatch, url: str, **extra: float) -> None:
    """Point ``bitel_default`` at the sandbox with these retry settings."""
    connection = {"conn_type": "bitel", "password": "sandbox-bitel-token", "host": url, "extra": extra}
    monkeypatch.setenv("AIRFLOW_CONN_BITEL_DEFAULT", json.dumps(connection))


def test_a_status_outage_does_not_end_the_wait(sms_connections, monkeypatch):
    retrying_bitel(monkeypatch, sms_connections.url, max_retries=0, retry_backoff=0.01)
    sms_connections.configure(delivery_seconds=0.0)
    messages = send(["09121234567", "09351234567"])
    sms_connections.configure(status_5xx_rate=1.0)
    threading.Timer(0.6, lambda: sms_connections.configure(status_5xx_rate=0.0)).start()
    payloads = events(P2PSmsDeliveryTrigger(sms_conn_id="bitel_default", messages=messages, poke_interval=0.1))
    assert [p["status"] for p in payloads] == ["done"]
    assert state(payloads[0]) == "dd"
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


def test_gives_up_at_the_deadline_after_one_last_poll_of_everything(sms_connections):
    """A message that never becomes final ends the wait at ``give_up_at``, not at Airflow's timeout."""
    sms_connections.configure(delivery_seconds=0.2)
    messages = send(["09121230009", "09121234567", "09351234567", "09121230001"])
    started = time.monotonic()
    payloads = events(
        P2PSmsDeliveryTrigger(
            sms_conn_id="bitel_default",
            messages=messages,
            poke_interval=30,  # the deadline cuts the pause short
            min_delivered_ratio=0.5,
            fail_early=True,
            give_up_at=time.time() + 1.0,
            timeout_at=time.time() + 20,
        )
    )
    assert 0.9 < time.monotonic() - started < 10
    assert [summary(p) for p in payloads] == [done("gave_up", "sddf", payloads, parts=4, price=450.0)]


def test_ends_as_a_timeout_before_airflow_would_time_the_deferral_out(sms_connections):
    sms_connections.configure(delivery_seconds=0.2)
    messages = send(["09121230009", "09121234567"])
    started = time.monotonic()
    payloads = events(
        P2PSmsDeliveryTrigger(
            sms_conn_id="bitel_default", messages=messages, poke_interval=30, timeout_at=time.time() + 1.0
        )
    )
    assert time.monotonic() - started < 10
    assert [(p["status"], p["ending"]) for p in payloads] == [("done", "timeout")]
    assert state(payloads[0])[0] != "d"


def test_a_poll_still_running_at_the_timeout_is_cut_short(sms_connections, monkeypatch):
    """A slow status read (retries, backoff) cannot carry the trigger past ``timeout_at``."""
    retrying_bitel(monkeypatch, sms_connections.url, max_retries=50, retry_backoff=0.5)
    messages = send(["09121234567"])
    sms_connections.configure(status_5xx_rate=1.0)
    started = time.monotonic()
    payloads = events(
        P2PSmsDeliveryTrigger(
            sms_conn_id="bitel_default", messages=messages, poke_interval=0.1, timeout_at=time.time() + 1.0
        )
    )
    assert time.monotonic() - started < 5
    assert [(p["status"], p["ending"], state(p)) for p in payloads] == [("done", "timeout", "p")]


def test_fails_early_once_the_target_is_out_of_reach(sms_connections):
    """One failed message of two, a target of 90%: the stuck one cannot save it, so the wait ends now."""
    sms_connections.configure(delivery_seconds=0.2)
    messages = send(["09121230001", "09121230009"])
    started = time.monotonic()
    payloads = events(
        P2PSmsDeliveryTrigger(
            sms_conn_id="bitel_default",
            messages=messages,
            poke_interval=0.1,
            min_delivered_ratio=0.9,
            fail_early=True,
            timeout_at=time.time() + 60,
        )
    )
    assert time.monotonic() - started < 10
    assert [(p["ending"], state(p)) for p in payloads] == [("unreachable", "fs")]


def test_uncertain_and_rejected_messages_count_against_the_target(sms_connections):
    """2 tracked messages, and 2 more attempted and never tracked (1 uncertain, 1 rejected): at most 50%."""
    sms_connections.configure(delivery_seconds=3.0)  # the first poll comes well before delivery
    messages = send(["09121234567", "09351234567"])

    def ending(min_delivered_ratio: float) -> tuple[str, str]:
        trigger = P2PSmsDeliveryTrigger(
            sms_conn_id="bitel_default",
            messages=messages,
            poke_interval=0.1,
            min_delivered_ratio=min_delivered_ratio,
            uncertain=1,
            rejected=1,
            fail_early=True,
            timeout_at=time.time() + 60,
        )
        [payload] = events(trigger)
        return payload["ending"], state(payload)

    found, letters = ending(0.6)  # out of reach at the first poll, nothing delivered yet
    assert found == "unreachable" and "d" not in letters and len(letters) == 2
    assert ending(0.5) == ("all_final", "dd")
