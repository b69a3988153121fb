"""Poll delivery states in the triggerer, for the deferrable ``P2PSmsDeliverySensor``."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_p2psms.exceptions import P2PSmsError, SmsGatewayUnavailable

if TYPE_CHECKING:
    import httpx

    from airflow_provider_p2psms.campaign.tracking import DeliveryTracker
    from airflow_provider_p2psms.hooks.base import P2PSmsHook


class P2PSmsDeliveryTrigger(BaseTrigger):
    """
    Poll until the wait ends, then yield one event with the delivery state.

    Status requests go out on an async HTTP client, at most the connection's ``max_concurrency`` at
    a time, so one triggerer can follow many campaigns on its event loop without blocking it. The
    wait ends when every message is final, when the target can no longer be met (``fail_early``),
    at ``give_up_at`` (after one last poll of everything pending) or at ``timeout_at``, which the
    sensor sets just before Airflow's own deferral timeout so that it can still write its report.

    The event is ``{"status": "done", "ending": ..., "state": <one letter per message>, "polls": n}``
    (``ending`` as in the delivery report), or ``{"status": "error", "message": ..., "state": ...}``
    if the gateway could not be read.

    :param sms_conn_id: the SMS connection.
    :param messages: the send receipt's ``messages`` (packed lines, or ``[message_id, recipient]`` pairs).
    :param poke_interval: seconds between polls.
    :param min_delivered_ratio: the sensor's target, for ``fail_early``.
    :param uncertain: messages of the send that were uncertain (attempted, never tracked).
    :param rejected: messages of the send that were rejected at send (attempted, never delivered).
    :param fail_early: end as soon as the target cannot be met any more; default False.
    :param give_up_at: when to stop waiting (seconds since the epoch); default never.
    :param timeout_at: when to stop at the latest, as a timeout (seconds since the epoch); default never.
    """

    def __init__(
        self,
        *,
        sms_conn_id: str,
        messages: str | list[list[str]],
        poke_interval: float = 60.0,
        min_delivered_ratio: float = 0.0,
        uncertain: int = 0,
        rejected: int = 0,
        fail_early: bool = False,
        give_up_at: float | None = None,
        timeout_at: float | None = None,
    ) -> None:
        super().__init__()
        self.sms_conn_id = sms_conn_id
        self.messages = messages
        self.poke_interval = float(poke_interval)
        self.min_delivered_ratio = float(min_delivered_ratio)
        self.uncertain = int(uncertain)
        self.rejected = int(rejected)
        self.fail_early = bool(fail_early)
        self.give_up_at = None if give_up_at is None else float(give_up_at)
        self.timeout_at = None if timeout_at is None else float(timeout_at)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "sms_conn_id": self.sms_conn_id,
                "messages": self.messages,
                "poke_interval": self.poke_interval,
                "min_delivered_ratio": self.min_delivered_ratio,
                "uncertain": self.uncertain,
                "rejected": self.rejected,
                "fail_early": self.fail_early,
                "give_up_at": self.give_up_at,
                "timeout_at": self.timeout_at,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from asgiref.sync import sync_to_async

        from airflow_provider_p2psms.campaign.tracking import TIMEOUT, UNREACHABLE, DeliveryTarget, DeliveryTracker
        from airflow_provider_p2psms.hooks.factory import get_sms_hook

        tracker = DeliveryTracker(self.messages)
        target = DeliveryTarget(self.min_delivered_ratio, self.uncertain, self.rejected, self.fail_early)
        try:
            # Reading the connection talks to the triggerer's supervisor: it must go through
            # sync_to_async, which knows the event loop. Polling is async HTTP on this loop.
            hook = await sync_to_async(get_sms_hook)(self.sms_conn_id)
            async with hook.async_client() as client:
                while True:
                    deadline_passed = self.give_up_at is not None and time.time() >= self.give_up_at
                    in_time = await self._poll(tracker, hook, client, everything=deadline_passed)
                    ending = target.ending(tracker, deadline_passed=deadline_passed)
                    if in_time and ending == UNREACHABLE and not deadline_passed:
                        # Before failing, read everything pending once: the report is then up to date.
                        in_time = await self._poll(tracker, hook, client, everything=True)
                        ending = target.ending(tracker)
                    self.log.info("Delivery so far: %s.", tracker.summary())
                    if ending is None and (not in_time or self._timed_out()):
                        ending = TIMEOUT
                    if ending is not None:
                        break
                    await asyncio.sleep(self._pause())
        except P2PSmsError as error:
            yield TriggerEvent({"status": "error", "message": str(error), "state": tracker.state()})
            return
        yield TriggerEvent({"status": "done", "ending": ending, "state": tracker.state(), "polls": tracker.polls})

    async def _poll(
        self, tracker: DeliveryTracker, hook: P2PSmsHook, client: httpx.AsyncClient, *, everything: bool
    ) -> bool:
        """One poll, cut short at ``timeout_at``; whether it finished in time."""
        budget = None if self.timeout_at is None else self.timeout_at - time.time()
        try:
            await asyncio.wait_for(tracker.apoll(hook, client, everything=everything), budget)
        except SmsGatewayUnavailable as error:
            # An outage of the status API says nothing about delivery: the deadlines bound it.
            self.log.warning("Could not read delivery states this time; trying again. %s", error)
        except asyncio.TimeoutError:
            return False
        return True

    def _timed_out(self) -> bool:
        return self.timeout_at is not None and time.time() >= self.timeout_at

    def _pause(self) -> float:
        """Seconds to the next poll: ``poke_interval``, or less to poll right at a deadline."""
        now = time.time()
        deadlines = [at - now for at in (self.give_up_at, self.timeout_at) if at is not None and at > now]
        return max(0.0, min([self.poke_interval, *deadlines]))
