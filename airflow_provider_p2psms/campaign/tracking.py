"""Track the delivery of a send receipt's messages with as few status requests as possible.

A naive poller asks about every message on every poke. The tracker instead:

* never asks again about a message whose state is final;
* asks first about the oldest message still pending (the probe), and only when that one is final,
  about everything still pending: messages sent later rarely finish sooner;
* still polls everything pending every ``FULL_POLL_EVERY``-th time, so that one message stuck in a
  non-final state cannot hide the progress of the others.

Its state is a compact string (one letter per message), so the sensor can keep it between
rescheduled pokes and the trigger can hand it back in a small event.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow_provider_p2psms.models import DeliveryReport, DeliveryStatus, SmsReceipt, receipt_messages
from airflow_provider_p2psms.utils.phone import mask_phone

if TYPE_CHECKING:
    from collections.abc import Generator, Sequence

    import httpx

    from airflow_provider_p2psms.hooks.base import P2PSmsHook

FULL_POLL_EVERY = 10

#: Receipts per ``get_statuses`` call during a full poll, to bound the memory of one call.
POLL_CHUNK = 2000

_LETTER = {
    DeliveryStatus.PENDING: "p",
    DeliveryStatus.SENT: "s",
    DeliveryStatus.DELIVERED: "d",
    DeliveryStatus.FAILED: "f",
    DeliveryStatus.BLACKLISTED: "b",
    DeliveryStatus.REJECTED: "r",
    DeliveryStatus.UNKNOWN: "u",
}
_STATUS = {letter: status for status, letter in _LETTER.items()}


class DeliveryTracker:
    """
    The delivery states of a receipt's messages, and the polling that updates them.

    :param messages: the send receipt's ``messages`` (packed, or ``[message_id, recipient]`` pairs).
    :param state: a string from :meth:`state` of an earlier tracker of the same messages.
    :param polls: how many polls that earlier tracker had made.
    """

    def __init__(self, messages: str | list[list[str]], state: str | None = None, polls: int = 0) -> None:
        self.messages = receipt_messages(messages)
        if state is not None and len(state) != len(self.messages):
            raise ValueError(f"a tracker state of {len(state)} letters cannot describe {len(self.messages)} messages")
        self.statuses = (
            [_STATUS[letter] for letter in state] if state else [DeliveryStatus.PENDING] * len(self.messages)
        )
        self.polls = polls

    def state(self) -> str:
        """One letter per message; give it back to the constructor to resume."""
        return "".join(_LETTER[status] for status in self.statuses)

    @property
    def pending(self) -> list[int]:
        return [index for index, status in enumerate(self.statuses) if not status.is_final]

    @property
    def all_final(self) -> bool:
        return all(status.is_final for status in self.statuses)

    def poll(self, hook: P2PSmsHook) -> None:
        """Update the states of messages that are not final yet (in a worker)."""
        steps = self._poll_steps()
        try:
            receipts = next(steps)
            while True:
                receipts = steps.send(hook.get_statuses(receipts))
        except StopIteration:
            return

    async def apoll(self, hook: P2PSmsHook, client: httpx.AsyncClient) -> None:
        """:meth:`poll` on an async client, for the triggerer: the same choice of what to ask about."""
        steps = self._poll_steps()
        try:
            receipts = next(steps)
            while True:
                receipts = steps.send(await hook.aget_statuses(receipts, client))
        except StopIteration:
            return

    def _poll_steps(self) -> Generator[list[SmsReceipt], Sequence[Any], None]:
        """Yield the receipts to look up next and take their states (sent back), until this poll is done."""
        pending = self.pending
        if not pending:
            return
        self.polls += 1
        if self.polls % FULL_POLL_EVERY != 0:
            probe = pending[0]
            self._apply([probe], (yield [self._receipt(probe)]))
            if not self.statuses[probe].is_final:
                return
            pending = pending[1:]
        for start in range(0, len(pending), POLL_CHUNK):
            chunk = pending[start : start + POLL_CHUNK]
            self._apply(chunk, (yield [self._receipt(index) for index in chunk]))

    def _receipt(self, index: int) -> SmsReceipt:
        message_id, recipient = self.messages[index][:2]
        return SmsReceipt(message_id=message_id, recipient=recipient)

    def _apply(self, indices: Sequence[int], states: Sequence[Any]) -> None:
        for index, found in zip(indices, states, strict=True):
            self.statuses[index] = found.status

    def counts(self) -> dict[str, int]:
        counts = {status.value: 0 for status in DeliveryStatus}
        for status in self.statuses:
            counts[status.value] += 1
        return counts

    def delivered_ratio(self) -> float:
        if not self.statuses:
            return 1.0
        delivered = sum(1 for status in self.statuses if status is DeliveryStatus.DELIVERED)
        return delivered / len(self.statuses)

    def report(self, provider: str, sms_conn_id: str) -> DeliveryReport:
        """The delivery report: counts per status and the state of every message, numbers masked."""
        return {
            "provider": provider,
            "sms_conn_id": sms_conn_id,
            "total": len(self.statuses),
            "final": sum(1 for status in self.statuses if status.is_final),
            "delivered_ratio": round(self.delivered_ratio(), 6),
            "counts": self.counts(),
            "messages": [
                [message[0], mask_phone(message[1]), status.value]
                for message, status in zip(self.messages, self.statuses, strict=True)
            ],
        }

    def summary(self) -> str:
        counts = ", ".join(f"{name} {count}" for name, count in self.counts().items() if count)
        return f"{len(self.statuses)} messages: {counts or 'none'}"

    def failed_numbers(self, limit: int = 20) -> list[str]:
        """Masked numbers of messages that ended other than delivered."""
        found = []
        for message, status in zip(self.messages, self.statuses, strict=True):
            if status.is_failure:
                found.append(f"{mask_phone(message[1])} ({status.value})")
                if len(found) >= limit:
                    break
        return found
