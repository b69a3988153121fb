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

from airflow_provider_p2psms.campaign.tracker_state import (
    _BY_CODE,
    _CODE,
    _FINAL_CODES,
    _KNOWN_CODES,
    _MAX_PARTS,
    _STATUS_OF_VALUE,
    PACK_STATE_ABOVE,
    REPORT_MESSAGES,
    PackedMessages,
    TrackerSnapshot,
    _Statuses,
    describe_counts,
    pack_parts,
    pack_state,
    unpack_parts,
    unpack_state,
)
from airflow_provider_p2psms.models import DeliveryReport, DeliveryState, DeliveryStatus, SmsReceipt
from airflow_provider_p2psms.utils.phone import mask_phone

__all__ = [
    "ALL_FINAL",
    "ENDINGS",
    "ERROR",
    "GAVE_UP",
    "NOTHING_ATTEMPTED",
    "PACK_STATE_ABOVE",
    "REPORT_MESSAGES",
    "TIMEOUT",
    "UNREACHABLE",
    "DeliveryTarget",
    "DeliveryTracker",
    "PackedMessages",
    "TrackerSnapshot",
    "pack_parts",
    "pack_state",
    "unpack_parts",
    "unpack_state",
]

if TYPE_CHECKING:
    from collections.abc import Generator, Iterable, Mapping, Sequence

    import httpx

    from airflow_provider_p2psms.hooks.base import P2PSmsHook

#: Receipts per ``get_statuses`` call during a full poll, to bound the memory of one call.
POLL_CHUNK = 2000


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

#: Spreads the rotating probe over the receipt: neighbours in a receipt were accepted together.
_ROTATION_STRIDE = 0x9E3779B1


class DeliveryTracker:
    """
    The delivery states of a receipt's messages, and the polling that updates them.

    Memory is a few dozen bytes a message (:class:`PackedMessages`, one byte of state and one of parts),
    and a poll makes no copy of the campaign but the indices of the messages it asks about.

    :param messages: the send receipt's ``messages`` (inline, a detail file, ``[message_id, recipient]``
        pairs, or :class:`PackedMessages`).
    :param state: :meth:`state` of an earlier tracker of the same messages.
    :param polls: how many polls that earlier tracker had made.
    :param parts: :meth:`packed_parts` of that earlier tracker; default none known.
    :param price: its :attr:`price`; default none known.
    :param record_changes: remember the states that change, for :meth:`take_changes`; default False.
    """

    def __init__(
        self,
        messages: str | list[list[str]] | PackedMessages,
        state: str | None = None,
        polls: int = 0,
        *,
        parts: str | None = None,
        price: float | None = None,
        record_changes: bool = False,
    ) -> None:
        self.messages = PackedMessages.of(messages)
        count = len(self.messages)
        letters = unpack_state(state) if state else ""
        if state is not None and len(letters) != count:
            raise ValueError(f"a tracker state of {len(letters)} letters cannot describe {count} messages")
        codes = bytearray(letters.encode("ascii")) if letters else bytearray(b"p") * count
        if codes.translate(None, _KNOWN_CODES):
            raise ValueError("a tracker state holds letters that are no status")
        self.statuses = _Statuses(codes)
        self.polls = polls
        self.parts = unpack_parts(parts, count)
        #: The SMS parts the reports gave, summed over the messages (a message no report counted adds 0).
        self.total_parts = sum(self.parts)
        #: The sum of the prices in the reports that made messages final; ``None`` while none gave one.
        self.price = None if price is None else float(price)
        self.record_changes = record_changes
        self._changes: dict[int, DeliveryState] = {}
        self._final = sum(codes.count(code) for code in _FINAL_CODES)

    @classmethod
    def from_rows(
        cls, rows: Iterable[Sequence[Any]], *, polls: int = 0, record_changes: bool = False
    ) -> DeliveryTracker:
        """
        A tracker of messages read from an outcomes table: ``(message_id, recipient, status, parts, price)``
        rows, whose statuses are what the tracking last wrote there.
        """
        import io

        lines = io.StringIO()  # no list of a million small strings on the way
        letters = bytearray()
        parts = array("B")
        price: float | None = None
        for message_id, recipient, status, row_parts, row_price in rows:
            lines.write(f"{message_id} {recipient}\n")
            found = _STATUS_OF_VALUE.get(str(status), DeliveryStatus.PENDING)
            letters.append(_CODE[found])
            parts.append(min(int(row_parts), _MAX_PARTS) if row_parts and int(row_parts) > 0 else 0)
            if found.is_final and row_price is not None:
                price = (price or 0.0) + float(row_price)
        state = letters.decode("ascii")  # not compressed: the constructor takes it as is
        tracker = cls(PackedMessages(lines.getvalue()), state, polls, price=price, record_changes=record_changes)
        tracker.parts = parts
        tracker.total_parts = sum(parts)
        return tracker

    def state(self) -> str:
        """One letter per message (compressed when long); give it back to the constructor to resume."""
        return pack_state(self.statuses.codes.decode("ascii"))

    def packed_parts(self) -> str:
        """The parts known per message, packed; give it back to the constructor (``parts``) to resume."""
        return pack_parts(self.parts)

    @property
    def changed(self) -> bool:
        """Whether a status changed since :meth:`take_changes` was last called."""
        return bool(self._changes)

    def take_changes(self) -> list[tuple[int, DeliveryState]]:
        """The states read since the last call that changed a message's status, by message index; forgets them."""
        changes, self._changes = sorted(self._changes.items()), {}
        return changes

    @property
    def total(self) -> int:
        return len(self.statuses)

    @property
    def final(self) -> int:
        return self._final

    @property
    def pending_count(self) -> int:
        return len(self.statuses) - self._final

    @property
    def pending(self) -> array[int]:
        """The indices of the messages not final yet, in receipt order."""
        codes = self.statuses.codes
        if not self.pending_count:
            return array("Q")
        return array("Q", (index for index, code in enumerate(codes) if code not in _FINAL_CODES))

    @property
    def all_final(self) -> bool:
        return self._final == len(self.statuses)

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
        if not self.pending_count:
            return
        pending: Sequence[int] = self.pending
        self.polls += 1
        if not everything:
            probes = self._probes(pending)
            self._apply(probes, (yield [self._receipt(index) for index in probes]))
            if not any(self.statuses[index].is_final for index in probes):
                return
            asked = set(probes)
            pending = array("Q", (index for index in self.pending if index not in asked))
        for start in range(0, len(pending), POLL_CHUNK):
            chunk = pending[start : start + POLL_CHUNK]
            self._apply(chunk, (yield [self._receipt(index) for index in chunk]))

    def _probes(self, pending: Sequence[int]) -> list[int]:
        """The oldest, the newest and this poll's rotating pending message, with the pending sharing their ids."""
        picked = {pending[0], pending[-1], pending[(self.polls * _ROTATION_STRIDE) % len(pending)]}
        # Messages that share an id (an IPPanel outbox entry) were accepted together: they are neighbours.
        shared: set[int] = set()
        for index in picked:
            message_id = self.messages[index][0]
            low = index
            while low > 0 and self.messages[low - 1][0] == message_id:
                low -= 1
            high = index
            while high + 1 < len(self.messages) and self.messages[high + 1][0] == message_id:
                high += 1
            shared.update(range(low, high + 1))
        return sorted(index for index in shared if not self.statuses[index].is_final)

    def _receipt(self, index: int) -> SmsReceipt:
        message_id, recipient = self.messages[index]
        return SmsReceipt(message_id=message_id, recipient=recipient)

    def _apply(self, indices: Sequence[int], states: Sequence[DeliveryState]) -> None:
        codes = self.statuses.codes
        for index, found in zip(indices, states, strict=True):
            parts = min(found.parts, _MAX_PARTS) if found.parts and found.parts > 0 else self.parts[index]
            old = codes[index]
            new = _CODE[found.status]
            if self.record_changes and new != old:
                self._changes[index] = found
            self._final += (new in _FINAL_CODES) - (old in _FINAL_CODES)
            codes[index] = new
            self.total_parts += parts - self.parts[index]
            self.parts[index] = parts
            if found.status.is_final and found.price is not None:
                self.price = (self.price or 0.0) + found.price

    def counts(self) -> dict[str, int]:
        codes = self.statuses.codes
        return {status.value: codes.count(_CODE[status]) for status in DeliveryStatus}

    @property
    def delivered(self) -> int:
        return self.statuses.codes.count(_CODE[DeliveryStatus.DELIVERED])

    def summary(self) -> str:
        return describe_counts(len(self.statuses), self.counts())

    def failed_numbers(self, limit: int = 20) -> list[str]:
        """Masked numbers of messages that ended other than delivered."""
        found = []
        codes = self.statuses.codes
        for index, code in enumerate(codes):
            status = _BY_CODE[code]
            if status.is_failure:
                found.append(f"{mask_phone(self.messages[index][1])} ({status.value})")
                if len(found) >= limit:
                    break
        return found

    def snapshot(self) -> TrackerSnapshot:
        """What a report needs of this tracker, without its messages (small whatever the campaign)."""
        return TrackerSnapshot(
            total=len(self.statuses),
            counts=self.counts(),
            parts=self.total_parts,
            price=self.price,
            polls=self.polls,
            not_delivered=self.failed_numbers(),
            messages=self.report_messages(),
        )

    def report_messages(self) -> list[list[str]] | None:
        """Every ``[message_id, masked recipient, status]``, up to :data:`REPORT_MESSAGES`; else ``None``."""
        if len(self.statuses) > REPORT_MESSAGES:
            return None
        return [
            [message_id, mask_phone(recipient), status.value]
            for (message_id, recipient), status in zip(self.messages, self.statuses, strict=True)
        ]


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

    def attempted(self, tracker: DeliveryTracker | TrackerSnapshot) -> int:
        return tracker.total + self.uncertain + self.rejected

    def ratio(self, tracker: DeliveryTracker | TrackerSnapshot) -> float | None:
        """Delivered / attempted; ``None`` when nothing was attempted."""
        attempted = self.attempted(tracker)
        return tracker.delivered / attempted if attempted else None

    def best_ratio(self, tracker: DeliveryTracker | TrackerSnapshot) -> float:
        """The ratio if every message not final yet were delivered."""
        attempted = self.attempted(tracker)
        return (tracker.delivered + tracker.pending_count) / attempted if attempted else 1.0

    def met(self, tracker: DeliveryTracker | TrackerSnapshot) -> bool:
        ratio = self.ratio(tracker)
        return ratio is None or ratio + 1e-9 >= self.min_delivered_ratio

    def ending(self, tracker: DeliveryTracker | TrackerSnapshot, *, deadline_passed: bool = False) -> str | None:
        """How the wait ends now (one of :data:`ENDINGS`), or ``None`` to keep waiting. Never an early success."""
        if not self.attempted(tracker):
            return NOTHING_ATTEMPTED
        if tracker.all_final:
            return ALL_FINAL
        if self.fail_early and self.best_ratio(tracker) + 1e-9 < self.min_delivered_ratio:
            return UNREACHABLE
        return GAVE_UP if deadline_passed else None

    def report(
        self, tracker: DeliveryTracker | TrackerSnapshot, provider: str, sms_conn_id: str, ending: str
    ) -> DeliveryReport:
        """
        The delivery report: how the wait ended, the ratio, counts per status, and every message (masked)
        for a campaign of at most :data:`REPORT_MESSAGES`; else a sample of the numbers not delivered.
        """
        snapshot = tracker.snapshot() if isinstance(tracker, DeliveryTracker) else tracker
        ratio = self.ratio(snapshot)
        return {
            "provider": provider,
            "sms_conn_id": sms_conn_id,
            "ending": ending,
            "attempted": self.attempted(snapshot),
            "total": snapshot.total,
            "final": snapshot.final,
            "uncertain_at_send": self.uncertain,
            "rejected_at_send": self.rejected,
            "delivered_ratio": None if ratio is None else round(ratio, 6),
            "min_delivered_ratio": self.min_delivered_ratio,
            "counts": snapshot.counts_dict(),
            "parts": snapshot.parts,
            "price": None if snapshot.price is None else round(snapshot.price, 6),
            "messages": snapshot.messages if snapshot.messages is not None else [],
            "messages_listed": snapshot.messages is not None,
            "not_delivered_sample": snapshot.not_delivered,
            "outcomes": None,
        }
