"""Track the delivery of a send receipt's messages with few status requests, and judge it against a target.

A naive poller asks about every message on every poke. The tracker instead:

* never asks again about a message whose state is final;
* while nothing is known to have moved, asks about a few probes only: the oldest and the newest message
  still pending, and one more that changes every poll, spread over the receipt (each with the pending
  messages that share its message id, which the gateway answers for in the same request);
* as soon as a probe is final, asks about everything still pending: messages accepted together
  finish together, so a campaign costs about one request per message.

Because the probes move, a message that never becomes final (a phone switched off for days) cannot
hide the progress of the others: the next poll's newest or rotating probe sees it.

Its state is a compact string (one letter per message, compressed when long), so the sensor can keep
it between rescheduled pokes and the trigger can hand it back in a small event. Beside it, the tracker
keeps the SMS parts the reports gave (one byte per message, kept compressed like the state) and the
running sum of the prices in the reports that made messages final: a final message is never asked
about again, so each price is counted once. With ``record_changes``, it also remembers the states that
changed a message's status since :meth:`DeliveryTracker.take_changes` was last called, for the outcomes
table.

:class:`DeliveryTarget` judges a tracker: the delivered ratio over every message the send attempted,
and how the wait ends (see :data:`ENDINGS`).
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from airflow_provider_p2psms.models import (
    DeliveryReport,
    DeliveryState,
    DeliveryStatus,
    SmsReceipt,
    receipt_messages,
)
from airflow_provider_p2psms.utils.phone import mask_phone

if TYPE_CHECKING:
    from collections.abc import Generator, Mapping, Sequence

    import httpx

    from airflow_provider_p2psms.hooks.base import P2PSmsHook

#: Receipts per ``get_statuses`` call during a full poll, to bound the memory of one call.
POLL_CHUNK = 2000

#: A state longer than this many letters is kept compressed.
PACK_STATE_ABOVE = 1024

#: Every message is final.
ALL_FINAL: Final = "all_final"
#: ``fail_early``: even if every message not final yet were delivered, the target would be missed.
UNREACHABLE: Final = "unreachable"
#: ``give_up_after`` passed; messages not final count as not delivered.
GAVE_UP: Final = "gave_up"
#: The sensor's ``timeout`` passed (Airflow's own sensor timeout).
TIMEOUT: Final = "timeout"
#: The send attempted nothing (every row invalid): there is nothing to wait for.
NOTHING_ATTEMPTED: Final = "nothing_attempted"
#: Reading the states failed for good (a refused token, for example).
ERROR: Final = "error"
#: How a wait can end, as the delivery report's ``ending`` says.
ENDINGS: Final = (ALL_FINAL, UNREACHABLE, GAVE_UP, TIMEOUT, NOTHING_ATTEMPTED, ERROR)

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
_PACKED_PREFIX = "zlib:"
#: Spreads the rotating probe over the receipt: neighbours in a receipt were accepted together.
_ROTATION_STRIDE = 0x9E3779B1
#: Parts are kept in one byte per message: a concatenated SMS counts its parts in one byte (at most 255).
_MAX_PARTS = 255


def pack_state(state: str) -> str:
    """A tracker state as kept between pokes: as is when short, else ``"zlib:" + base64``."""
    if len(state) <= PACK_STATE_ABOVE:
        return state
    import base64
    import zlib

    return _PACKED_PREFIX + base64.b64encode(zlib.compress(state.encode(), 9)).decode()


def unpack_state(state: str) -> str:
    """One letter per message, from :func:`pack_state`'s output."""
    if not state.startswith(_PACKED_PREFIX):
        return state
    import base64
    import zlib

    return zlib.decompress(base64.b64decode(state[len(_PACKED_PREFIX) :])).decode()


def pack_parts(parts: array[int]) -> str:
    """Parts per message (0: not known) as kept between pokes: ``""`` when none is known, else compressed."""
    if not any(parts):
        return ""
    import base64
    import zlib

    return base64.b64encode(zlib.compress(parts.tobytes(), 9)).decode()


def unpack_parts(packed: str | None, count: int) -> array[int]:
    """:func:`pack_parts`'s input back, for ``count`` messages."""
    if not packed:
        return array("B", bytes(count))
    import base64
    import zlib

    parts = array("B", zlib.decompress(base64.b64decode(packed)))
    if len(parts) != count:
        raise ValueError(f"parts of {len(parts)} messages cannot describe {count} messages")
    return parts


class DeliveryTracker:
    """
    The delivery states of a receipt's messages, and the polling that updates them.

    :param messages: the send receipt's ``messages`` (packed, or ``[message_id, recipient]`` pairs).
    :param state: :meth:`state` of an earlier tracker of the same messages.
    :param polls: how many polls that earlier tracker had made.
    :param parts: :meth:`packed_parts` of that earlier tracker; default none known.
    :param price: its :attr:`price`; default none known.
    :param record_changes: remember the states that change, for :meth:`take_changes`; default False.
    """

    def __init__(
        self,
        messages: str | list[list[str]],
        state: str | None = None,
        polls: int = 0,
        *,
        parts: str | None = None,
        price: float | None = None,
        record_changes: bool = False,
    ) -> None:
        self.messages = receipt_messages(messages)
        letters = unpack_state(state) if state else ""
        if state is not None and len(letters) != len(self.messages):
            raise ValueError(f"a tracker state of {len(letters)} letters cannot describe {len(self.messages)} messages")
        self.statuses = (
            [_STATUS[letter] for letter in letters] if letters else [DeliveryStatus.PENDING] * len(self.messages)
        )
        self.polls = polls
        self.parts = unpack_parts(parts, len(self.messages))
        #: The SMS parts the reports gave, summed over the messages (a message no report counted adds 0).
        self.total_parts = sum(self.parts)
        #: The sum of the prices in the reports that made messages final; ``None`` while none gave one.
        self.price = None if price is None else float(price)
        self.record_changes = record_changes
        self._changes: dict[int, DeliveryState] = {}
        self._by_id: dict[str, list[int]] | None = None

    def state(self) -> str:
        """One letter per message (compressed when long); give it back to the constructor to resume."""
        return pack_state("".join(_LETTER[status] for status in self.statuses))

    def packed_parts(self) -> str:
        """The parts known per message, packed; give it back to the constructor (``parts``) to resume."""
        return pack_parts(self.parts)

    def take_changes(self) -> list[tuple[int, DeliveryState]]:
        """The states read since the last call that changed a message's status, by message index; forgets them."""
        changes, self._changes = sorted(self._changes.items()), {}
        return changes

    @property
    def pending(self) -> list[int]:
        return [index for index, status in enumerate(self.statuses) if not status.is_final]

    @property
    def all_final(self) -> bool:
        return all(status.is_final for status in self.statuses)

    def poll(self, hook: P2PSmsHook, *, everything: bool = False) -> None:
        """Update the states of messages that are not final yet (in a worker); ``everything``: skip the probes."""
        steps = self._poll_steps(everything)
        try:
            receipts = next(steps)
            while True:
                receipts = steps.send(hook.get_statuses(receipts))
        except StopIteration:
            return

    async def apoll(self, hook: P2PSmsHook, client: httpx.AsyncClient, *, everything: bool = False) -> None:
        """:meth:`poll` on an async client, for the triggerer: the same choice of what to ask about."""
        steps = self._poll_steps(everything)
        try:
            receipts = next(steps)
            while True:
                receipts = steps.send(await hook.aget_statuses(receipts, client))
        except StopIteration:
            return

    def _poll_steps(self, everything: bool) -> Generator[list[SmsReceipt], Sequence[DeliveryState], None]:
        """Yield the receipts to look up next and take their states (sent back), until this poll is done."""
        pending = self.pending
        if not pending:
            return
        self.polls += 1
        if not everything:
            probes = self._probes(pending)
            self._apply(probes, (yield [self._receipt(index) for index in probes]))
            if not any(self.statuses[index].is_final for index in probes):
                return
            asked = set(probes)
            pending = [index for index in self.pending if index not in asked]
        for start in range(0, len(pending), POLL_CHUNK):
            chunk = pending[start : start + POLL_CHUNK]
            self._apply(chunk, (yield [self._receipt(index) for index in chunk]))

    def _probes(self, pending: list[int]) -> list[int]:
        """The oldest, the newest and this poll's rotating pending message, with the pending sharing their ids."""
        if self._by_id is None:
            self._by_id = {}
            for index, message in enumerate(self.messages):
                self._by_id.setdefault(message[0], []).append(index)
        picked = {pending[0], pending[-1], pending[(self.polls * _ROTATION_STRIDE) % len(pending)]}
        shared = {other for index in picked for other in self._by_id[self.messages[index][0]]}
        return sorted(index for index in shared if not self.statuses[index].is_final)

    def _receipt(self, index: int) -> SmsReceipt:
        message_id, recipient = self.messages[index][:2]
        return SmsReceipt(message_id=message_id, recipient=recipient)

    def _apply(self, indices: Sequence[int], states: Sequence[DeliveryState]) -> None:
        for index, found in zip(indices, states, strict=True):
            parts = min(found.parts, _MAX_PARTS) if found.parts and found.parts > 0 else self.parts[index]
            if self.record_changes and found.status is not self.statuses[index]:
                self._changes[index] = found
            self.statuses[index] = found.status
            self.total_parts += parts - self.parts[index]
            self.parts[index] = parts
            if found.status.is_final and found.price is not None:
                self.price = (self.price or 0.0) + found.price

    def counts(self) -> dict[str, int]:
        counts = {status.value: 0 for status in DeliveryStatus}
        for status in self.statuses:
            counts[status.value] += 1
        return counts

    @property
    def delivered(self) -> int:
        return sum(1 for status in self.statuses if status is DeliveryStatus.DELIVERED)

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


@dataclass(frozen=True)
class DeliveryTarget:
    """
    What counts as delivered enough, over every message a send attempted.

    The delivered ratio is delivered / attempted, where attempted = the receipt's messages (accepted)
    + those uncertain at send + those rejected at send; invalid and duplicate rows are not attempted.
    Nothing attempted passes (there is nothing to wait for); anything attempted and not confirmed
    delivered counts against the target.

    :param min_delivered_ratio: the delivered ratio, from 0 to 1, that counts as success.
    :param uncertain: messages the gateway may or may not have accepted (never tracked).
    :param rejected: messages the gateway or its operator refused at send (never delivered).
    :param fail_early: end as soon as the target cannot be met any more.
    """

    min_delivered_ratio: float
    uncertain: int = 0
    rejected: int = 0
    fail_early: bool = True

    @classmethod
    def of_receipt(cls, receipt: Mapping[str, Any], min_delivered_ratio: float, fail_early: bool) -> DeliveryTarget:
        counts = receipt.get("counts") or {}
        return cls(
            min_delivered_ratio,
            uncertain=int(counts.get("uncertain", 0) or 0),
            rejected=int(counts.get("rejected", 0) or 0),
            fail_early=fail_early,
        )

    def attempted(self, tracker: DeliveryTracker) -> int:
        return len(tracker.statuses) + self.uncertain + self.rejected

    def ratio(self, tracker: DeliveryTracker) -> float | None:
        """Delivered / attempted; ``None`` when nothing was attempted."""
        attempted = self.attempted(tracker)
        return tracker.delivered / attempted if attempted else None

    def best_ratio(self, tracker: DeliveryTracker) -> float:
        """The ratio if every message not final yet were delivered."""
        attempted = self.attempted(tracker)
        return (tracker.delivered + len(tracker.pending)) / attempted if attempted else 1.0

    def met(self, tracker: DeliveryTracker) -> bool:
        ratio = self.ratio(tracker)
        return ratio is None or ratio + 1e-9 >= self.min_delivered_ratio

    def ending(self, tracker: DeliveryTracker, *, deadline_passed: bool = False) -> str | None:
        """How the wait ends now (one of :data:`ENDINGS`), or ``None`` to keep waiting. Never an early success."""
        if not self.attempted(tracker):
            return NOTHING_ATTEMPTED
        if tracker.all_final:
            return ALL_FINAL
        if self.fail_early and self.best_ratio(tracker) + 1e-9 < self.min_delivered_ratio:
            return UNREACHABLE
        return GAVE_UP if deadline_passed else None

    def report(self, tracker: DeliveryTracker, provider: str, sms_conn_id: str, ending: str) -> DeliveryReport:
        """The delivery report: how the wait ended, the ratio, counts per status and every message, masked."""
        ratio = self.ratio(tracker)
        return {
            "provider": provider,
            "sms_conn_id": sms_conn_id,
            "ending": ending,
            "attempted": self.attempted(tracker),
            "total": len(tracker.statuses),
            "final": sum(1 for status in tracker.statuses if status.is_final),
            "uncertain_at_send": self.uncertain,
            "rejected_at_send": self.rejected,
            "delivered_ratio": None if ratio is None else round(ratio, 6),
            "min_delivered_ratio": self.min_delivered_ratio,
            "counts": tracker.counts(),
            "parts": tracker.total_parts,
            "price": None if tracker.price is None else round(tracker.price, 6),
            "messages": [
                [message[0], mask_phone(message[1]), status.value]
                for message, status in zip(tracker.messages, tracker.statuses, strict=True)
            ],
        }
