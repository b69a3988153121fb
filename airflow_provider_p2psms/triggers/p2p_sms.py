"""Poll delivery states in the triggerer, for the deferrable ``P2PSmsDeliverySensor``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_p2psms.exceptions import P2PSmsError, SmsGatewayUnavailable


class P2PSmsDeliveryTrigger(BaseTrigger):
    """
    Poll until every message is final, then yield one event with the delivery state.

    Status requests go out on an async HTTP client, at most the connection's ``max_concurrency`` at
    a time, so one triggerer can follow many campaigns on its event loop without blocking it.

    The event is ``{"status": "done", "state": <one letter per message>, "polls": n}``, or
    ``{"status": "error", "message": ..., "state": ...}`` if the gateway could not be read.

    :param sms_conn_id: the SMS connection.
    :param messages: the send receipt's ``messages`` (packed lines, or ``[message_id, recipient]`` pairs).
    :param poke_interval: seconds between polls.
    """

    def __init__(self, *, sms_conn_id: str, messages: str | list[list[str]], poke_interval: float = 60.0) -> None:
        super().__init__()
        self.sms_conn_id = sms_conn_id
        self.messages = messages
        self.poke_interval = float(poke_interval)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {"sms_conn_id": self.sms_conn_id, "messages": self.messages, "poke_interval": self.poke_interval},
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from asgiref.sync import sync_to_async

        from airflow_provider_p2psms.campaign.tracking import DeliveryTracker
        from airflow_provider_p2psms.hooks.factory import get_sms_hook

        tracker = DeliveryTracker(self.messages)
        try:
            # Reading the connection talks to the triggerer's supervisor: it must go through
            # sync_to_async, which knows the event loop. Polling is async HTTP on this loop.
            hook = await sync_to_async(get_sms_hook)(self.sms_conn_id)
            async with hook.async_client() as client:
                while True:
                    try:
                        await tracker.apoll(hook, client)
                    except SmsGatewayUnavailable as error:
                        # An outage of the status API says nothing about delivery: the deferral's
                        # timeout bounds it.
                        self.log.warning("Could not read delivery states this time; trying again. %s", error)
                    self.log.info("Delivery so far: %s.", tracker.summary())
                    if tracker.all_final:
                        break
                    await asyncio.sleep(self.poke_interval)
        except P2PSmsError as error:
            yield TriggerEvent({"status": "error", "message": str(error), "state": tracker.state()})
            return
        yield TriggerEvent({"status": "done", "state": tracker.state(), "polls": tracker.polls})
