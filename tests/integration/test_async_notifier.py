"""P2PSmsNotifier awaited the way the triggerer awaits notifiers (deadline alerts), against the sandbox.

The connections point at the sandbox on a loopback port, as a user's ``AIRFLOW_CONN_...`` variables would;
each test asserts on what the sandbox received.
"""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

import pytest

from airflow_provider_p2psms.exceptions import P2PSmsError, SmsGatewayUnavailable
from airflow_provider_p2psms.notifications.p2p_sms import P2PSmsNotifier
from airflow_provider_p2psms.sandbox import DEFAULT_BITEL_TOKEN, DEFAULT_IPPANEL_KEY
from tests.helpers import GATEWAYS, connection_env

pytestmark = pytest.mark.integration

#: The number as the user writes it, and as each gateway receives it.
NUMBER = "0912 123 4567"
WIRE = {"bitel": "09121234567", "ippanel": "+989121234567"}


@pytest.fixture
def failing_gateway(sandbox: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Both connections on a sandbox that answers every send 503; one retry, so that the send gives up fast."""
    for name, value in connection_env(sandbox, max_retries=1).items():
        monkeypatch.setenv(name, value)
    sandbox.configure(fail_sends_after=0)
    return sandbox


def logged(capfd: pytest.CaptureFixture[str], level: str) -> list[str]:
    """The notifier's log lines at ``level`` since the last call (Airflow's structlog writes to stdout or stderr)."""
    output = "".join(capfd.readouterr())
    return re.findall(rf"\[{level} *\] (.*?) \[airflow_provider_p2psms\.notifications", output)


def notifier(gateway: str, **kwargs: Any) -> P2PSmsNotifier:
    arguments: dict[str, Any] = {
        "sms_conn_id": f"{gateway}_default",
        "phone_numbers": [NUMBER, "+98 912 123 4567", "not-a-number"],
        "message": "etl.load missed its deadline",
        **kwargs,
    }
    return P2PSmsNotifier(**arguments)


@pytest.mark.parametrize("gateway", GATEWAYS)
def test_async_notify_texts_each_number_once_without_holding_the_event_loop(
    sms_connections: Any, gateway: str, capfd: pytest.CaptureFixture[str]
) -> None:
    # Every answer of the gateway takes 0.6 s: a send that blocked the event loop would stop the ticks meanwhile.
    sms_connections.configure(latency_ms=600)
    ticks: list[float] = []

    async def tick() -> None:
        while True:
            ticks.append(time.monotonic())
            await asyncio.sleep(0.02)

    async def main() -> tuple[float, float]:
        ticker = asyncio.ensure_future(tick())
        await asyncio.sleep(0)
        started = time.monotonic()
        await notifier(gateway).async_notify({})
        finished = time.monotonic()
        ticker.cancel()
        return started, finished

    started, finished = asyncio.run(main())
    output = "".join(capfd.readouterr())

    received = sms_connections.messages()
    assert [(m["provider"], m["recipient"], m["text"]) for m in received] == [
        (gateway, WIRE[gateway], "etl.load missed its deadline")
    ]
    assert finished - started >= 0.6
    # The loop ran on while the gateway answered: ticks well inside the send, not only before and after it.
    during = [at for at in ticks if started + 0.1 < at < finished - 0.1]
    assert len(during) >= 3, (len(during), len(ticks), finished - started)
    assert "SMS notification sent through" in output and "SMS notification: leaving out" in output
    assert WIRE[gateway] not in output and "1234567" not in output  # numbers are masked in every line
    assert DEFAULT_BITEL_TOKEN not in output and DEFAULT_IPPANEL_KEY not in output


def test_awaiting_the_notifier_renders_its_templates_first(sms_connections: Any) -> None:
    """What the triggerer does with a notifier callback: construct it with the context, then await it."""

    async def main() -> None:
        await P2PSmsNotifier(
            sms_conn_id="{{ conn }}",
            phone_numbers="09351234567",
            message="{{ dag_id }} is late ({{ ds }})",
            context={"conn": "ippanel_default", "dag_id": "etl", "ds": "2026-01-31"},
        )

    asyncio.run(main())
    assert [(m["provider"], m["recipient"], m["text"]) for m in sms_connections.messages()] == [
        ("ippanel", "+989351234567", "etl is late (2026-01-31)")
    ]


@pytest.mark.parametrize("gateway", GATEWAYS)
def test_a_failing_gateway_is_logged_as_by_notify(
    failing_gateway: Any, gateway: str, capfd: pytest.CaptureFixture[str]
) -> None:
    capfd.readouterr()
    notifier(gateway).notify({})
    sync_errors = logged(capfd, "error")
    assert asyncio.run(notifier(gateway).async_notify({})) is None
    async_errors = logged(capfd, "error")

    assert failing_gateway.messages() == []
    assert len(async_errors) == 1 and async_errors == sync_errors
    assert async_errors[0].startswith(f"SMS notification failed (connection '{gateway}_default'): ")
    assert "did not answer" in async_errors[0] and "max_retries" in async_errors[0]


@pytest.mark.parametrize("gateway", GATEWAYS)
def test_a_failing_gateway_raises_as_notify_does_with_raise_on_error(failing_gateway: Any, gateway: str) -> None:
    with pytest.raises(SmsGatewayUnavailable) as sync_error:
        notifier(gateway, raise_on_error=True).notify({})
    with pytest.raises(SmsGatewayUnavailable) as async_error:
        asyncio.run(notifier(gateway, raise_on_error=True).async_notify({}))
    assert str(async_error.value) == str(sync_error.value)
    assert f"Connection '{gateway}_default'" in str(async_error.value)
    assert failing_gateway.messages() == []


def test_no_valid_number_raises_with_raise_on_error(sms_connections: Any) -> None:
    with pytest.raises(P2PSmsError, match="no valid phone number") as error:
        asyncio.run(notifier("bitel", phone_numbers=["not-a-number"], raise_on_error=True).async_notify({}))
    assert type(error.value) is P2PSmsError
    assert sms_connections.messages() == []


def _callback_trigger(callback_kwargs: dict[str, Any]) -> Any:
    """The trigger with which Airflow runs an async callback in the triggerer (a deadline alert's notifier)."""
    path = "airflow_provider_p2psms.notifications.p2p_sms.P2PSmsNotifier"
    try:
        from airflow.triggers.callback import CallbackTrigger  # Airflow 3.2+
    except ImportError:
        from airflow.triggers.deadline import DeadlineCallbackTrigger  # Airflow 3.1

        return DeadlineCallbackTrigger(callback_path=path, callback_kwargs=callback_kwargs)
    return CallbackTrigger(callback_path=path, callback_kwargs=callback_kwargs)


@pytest.mark.parametrize("gateway", GATEWAYS)
def test_airflow_callback_trigger_texts_through_the_notifier(sms_connections: Any, gateway: str) -> None:
    trigger = _callback_trigger(
        {
            "sms_conn_id": f"{gateway}_default",
            "phone_numbers": ["09121234567"],
            "message": "{{ dag_id }} missed its deadline",
            "context": {"dag_id": "etl"},
        }
    )

    async def events() -> list[dict[str, Any]]:
        return [event.payload async for event in trigger.run()]

    states = [str(payload["state"]).rsplit(".", 1)[-1].lower() for payload in asyncio.run(events())]
    assert states == ["running", "success"]
    assert [(m["provider"], m["recipient"], m["text"]) for m in sms_connections.messages()] == [
        (gateway, WIRE[gateway], "etl missed its deadline")
    ]
