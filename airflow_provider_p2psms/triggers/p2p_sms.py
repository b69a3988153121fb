"""Poll delivery states in the triggerer, for the deferrable ``P2PSmsDeliverySensor``."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_p2psms.exceptions import P2PSmsError, SmsGatewayUnavailable

#: Seconds a write may take at least, even past ``timeout_at`` (a poll cut short there still writes what
#: it read): within the sensor's margin before Airflow's own deferral timeout, 5 s for a timeout of 50 s.
_LAST_WRITE_SECONDS = 1.0

if TYPE_CHECKING:
    import httpx

    from airflow_provider_p2psms.campaign.delivery_outcomes import DeliveryOutcomes
    from airflow_provider_p2psms.campaign.tracking import DeliveryTracker
    from airflow_provider_p2psms.hooks.base import P2PSmsHook


class P2PSmsDeliveryTrigger(BaseTrigger):
    """
    Poll until the wait ends, then yield one event with the delivery state.

    Status requests go out on an async HTTP client, at most the connection's ``status_concurrency`` at
    a time, so one triggerer can follow many campaigns on its event loop without blocking it. The
    wait ends when every message is final, when the target can no longer be met (``fail_early``),
    at ``give_up_at`` (after one last poll of everything pending) or at ``timeout_at``, which the
    sensor sets just before Airflow's own deferral timeout so that it can still write its report.

    The event is ``{"status": "done", "ending": ..., "total": n, "counts": {status: n}, "parts": <total>,
    "price": <total or None>, "polls": n, "not_delivered": [masked sample], "messages": [triples] or None}``
    (``ending`` as in the delivery report; the triples only for a campaign of at most 500 messages), or
    ``{"status": "error", "message": ..., ...}`` if the gateway could not be read or the outcomes table could
    not be written: small whatever the campaign, with totals, not a row per message.

    Its arguments are small too: a large receipt's ``messages`` is a reference, and the trigger reads the
    messages where it points (the outcomes table, or a detail file), in a thread, when it starts.

    With an outcomes table, the statuses that changed in a poll are written after it (see
    :mod:`~airflow_provider_p2psms.campaign.delivery_outcomes`). The database hooks are blocking code: the
    write runs in a thread of the loop's default executor (``sync_to_async(thread_sensitive=False)``),
    never on the event loop, nor on asgiref's one shared thread, where a slow database would hold up
    every trigger's connection look-ups. That thread reaches the triggerer's connections (the SQL hook
    reads its connection) the way ``sync_to_async`` code does, through the event loop. It opens its own
    database connection and closes it. A write must finish by ``timeout_at``, or the wait ends in error.

    :param sms_conn_id: the SMS connection.
    :param messages: the send receipt's ``messages`` (lines, a reference, or ``[message_id, recipient]`` pairs).
    :param expected_messages: how many messages a reference to the outcomes table must find (the receipt's
        ``sent``); default unchecked.
    :param poke_interval: seconds between polls.
    :param min_delivered_ratio: the sensor's target, for ``fail_early``.
    :param uncertain: messages of the send that were uncertain (attempted, never tracked).
    :param rejected: messages of the send that were rejected at send (attempted, never delivered).
    :param fail_early: end as soon as the target cannot be met any more; default False.
    :param give_up_at: when to stop waiting (seconds since the epoch); default never.
    :param timeout_at: when to stop at the latest, as a timeout (seconds since the epoch); default never.
    :param outcomes_conn_id: the SQL connection of the outcomes table to update; default none.
    :param outcomes_table: that table; default ``p2psms_outcomes``.
    :param send_task: the send task instance whose rows to update (``dag_id``, ``run_id``, ``task_id``,
        ``map_index``); required with ``outcomes_conn_id``.
    """

    def __init__(
        self,
        *,
        sms_conn_id: str,
        messages: str | list[list[str]],
        expected_messages: int | None = None,
        poke_interval: float = 60.0,
        min_delivered_ratio: float = 0.0,
        uncertain: int = 0,
        rejected: int = 0,
        fail_early: bool = False,
        give_up_at: float | None = None,
        timeout_at: float | None = None,
        outcomes_conn_id: str | None = None,
        outcomes_table: str | None = None,
        send_task: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.sms_conn_id = sms_conn_id
        self.messages = messages
        self.expected_messages = None if expected_messages is None else int(expected_messages)
        self.poke_interval = float(poke_interval)
        self.min_delivered_ratio = float(min_delivered_ratio)
        self.uncertain = int(uncertain)
        self.rejected = int(rejected)
        self.fail_early = bool(fail_early)
        self.give_up_at = None if give_up_at is None else float(give_up_at)
        self.timeout_at = None if timeout_at is None else float(timeout_at)
        self.outcomes_conn_id = outcomes_conn_id
        self.outcomes_table = outcomes_table
        self.send_task = send_task

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "sms_conn_id": self.sms_conn_id,
                "messages": self.messages,
                "expected_messages": self.expected_messages,
                "poke_interval": self.poke_interval,
                "min_delivered_ratio": self.min_delivered_ratio,
                "uncertain": self.uncertain,
                "rejected": self.rejected,
                "fail_early": self.fail_early,
                "give_up_at": self.give_up_at,
                "timeout_at": self.timeout_at,
                "outcomes_conn_id": self.outcomes_conn_id,
                "outcomes_table": self.outcomes_table,
                "send_task": self.send_task,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from asgiref.sync import sync_to_async

        from airflow_provider_p2psms.campaign.delivery_outcomes import DeliveryOutcomes
        from airflow_provider_p2psms.campaign.tracking import TIMEOUT, UNREACHABLE, DeliveryTarget, DeliveryTracker
        from airflow_provider_p2psms.hooks.factory import get_sms_hook

        outcomes = DeliveryOutcomes.of(self.outcomes_conn_id, self.outcomes_table, self.send_task)
        tracker = DeliveryTracker("", record_changes=outcomes is not None)
        target = DeliveryTarget(self.min_delivered_ratio, self.uncertain, self.rejected, self.fail_early)
        try:
            tracker = await self._load(outcomes)
            # Reading the connection talks to the triggerer's supervisor: it must go through
            # sync_to_async, which knows the event loop. Polling is async HTTP on this loop.
            hook = await sync_to_async(get_sms_hook)(self.sms_conn_id)
            async with hook.async_client() as client:
                while True:
                    deadline_passed = self.give_up_at is not None and time.time() >= self.give_up_at
                    in_time = await self._poll(tracker, hook, client, everything=deadline_passed)
                    await self._write(outcomes, tracker)
                    ending = target.ending(tracker, deadline_passed=deadline_passed)
                    if in_time and ending == UNREACHABLE and not deadline_passed:
                        # Before failing, read everything pending once: the report is then up to date.
                        in_time = await self._poll(tracker, hook, client, everything=True)
                        await self._write(outcomes, tracker)
                        ending = target.ending(tracker)
                    self.log.info("Delivery so far: %s.", tracker.summary())
                    if ending is None and (not in_time or self._timed_out()):
                        ending = TIMEOUT
                    if ending is not None:
                        break
                    await asyncio.sleep(self._pause())
            await self._write_end(outcomes, tracker, ending)
        except P2PSmsError as error:
            yield TriggerEvent({"status": "error", "message": str(error), **tracker.snapshot().to_event()})
            return
        yield TriggerEvent({"status": "done", "ending": ending, **tracker.snapshot().to_event()})

    async def _load(self, outcomes: DeliveryOutcomes | None) -> DeliveryTracker:
        """The tracker of the messages, read in a thread when they are in the outcomes table or a file."""
        from asgiref.sync import sync_to_async

        from airflow_provider_p2psms.campaign.detail import is_ref
        from airflow_provider_p2psms.campaign.receipt_detail import load_tracker

        receipt = {"messages": self.messages, "counts": {"sent": self.expected_messages}}
        if not is_ref(self.messages):
            return load_tracker(receipt, outcomes, record_changes=outcomes is not None)
        if self.messages == "outcomes:" and outcomes is None:
            raise P2PSmsError("The receipt's messages are in its outcomes table, and the trigger was given none.")
        try:
            return await sync_to_async(load_tracker, thread_sensitive=False)(
                receipt, outcomes, record_changes=outcomes is not None
            )
        except P2PSmsError:
            raise
        except Exception as error:
            raise P2PSmsError(f"Reading the receipt's messages failed: {type(error).__name__}: {error}") from None

    async def _write_end(self, outcomes: DeliveryOutcomes | None, tracker: DeliveryTracker, ending: str) -> None:
        """The last known status and the reason of every message still not final, once the wait has ended."""
        if outcomes is None:
            return
        from asgiref.sync import sync_to_async

        await sync_to_async(outcomes.write_end, thread_sensitive=False)(tracker, ending, self.log)

    async def _write(self, outcomes: DeliveryOutcomes | None, tracker: DeliveryTracker) -> None:
        """
        Write the statuses the last poll changed, in a thread of its own, by ``timeout_at``. The updates are
        built in that thread too (a poll of a large campaign changes many): the event loop, which every
        trigger of this triggerer shares, only waits. Nothing else touches the tracker meanwhile.
        """
        if outcomes is None or not tracker.changed:
            return
        from asgiref.sync import sync_to_async

        def write_changes() -> int:
            return outcomes.write(outcomes.changes(tracker))

        # A poll cut short at timeout_at still gets a moment to write what it read.
        budget = None if self.timeout_at is None else max(self.timeout_at - time.time(), _LAST_WRITE_SECONDS)
        try:
            written = await asyncio.wait_for(sync_to_async(write_changes, thread_sensitive=False)(), budget)
        except asyncio.TimeoutError:
            raise P2PSmsError(
                f"Writing delivery statuses to outcomes table '{outcomes.table}' on connection '{outcomes.conn_id}' "
                "did not finish before the sensor's timeout."
            ) from None
        except P2PSmsError:
            raise
        except Exception as error:
            raise P2PSmsError(
                f"Writing delivery statuses to outcomes table '{outcomes.table}' on connection '{outcomes.conn_id}' "
                f"failed: {type(error).__name__}: {error}"
            ) from None
        self.log.info("Wrote %d delivery statuses to outcomes table '%s'.", written, outcomes.table)

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
