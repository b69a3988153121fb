"""How fast a send may go: ``max_rate`` messages a second, shared by the sending threads, slower after a 429.

**The pace.** :class:`SendRate` hands out slots over messages: a batch of ``n`` messages may leave at its
slot, and the next slot opens ``n / rate`` seconds later, or now if that is later (a token bucket that
holds one batch: time left unused is not saved up, so nothing bursts after a pause). A slot is reserved
before its batch is marked in the ledger (:mod:`~airflow_provider_p2psms.campaign.marking`), at most
:data:`MARK_AHEAD_SECONDS` ahead of it so that the write lands in time, and the sender holds the batch
until its slot (:mod:`~airflow_provider_p2psms.campaign.dispatch`). So over any span the gateway receives
at most ``rate`` × the span messages, plus the batch whose slot opens it; a batch holds at most
``max_rate`` messages. The rate is the task instance's own: two tasks on one account each have theirs.

**Slowing down.** A 429 to the first attempt at a batch means "too fast": the gateway did not process it
(the table in :mod:`~airflow_provider_p2psms.hooks.transport`). A 429 to a batch resent after an uncertain
attempt may come from a duplicate guard, which means the first attempt was accepted: it stays the
transport's, which calls it uncertain. With a rate set, the transport does not wait and retry the first
kind itself: :class:`SlowDownWatch` raises :class:`SlowDown` out of the send, and the sender halves the
rate (:meth:`SendRate.slow_down`, never below :data:`MIN_RATE`), waits out ``Retry-After``, and sends the
batch again at a new slot, its ledger mark kept. 429s to batches reserved before the last cut do not
cut again: a burst of them is one change. After :data:`QUIET_SECONDS` without a 429 the rate climbs by a
tenth of ``max_rate``, and again every :data:`QUIET_SECONDS`, up to ``max_rate``. Each change is logged
once. A gateway that refuses even :data:`MIN_RATE` ``patience + 1`` times in a row stops the send.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow_provider_p2psms.hooks.transport import MAX_BACKOFF_SECONDS, retry_after_seconds, verdict_for_status

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from airflow_provider_p2psms.hooks.base import P2PSmsHook
    from airflow_provider_p2psms.models import OutgoingSms, SmsReceipt

#: The slowest a 429 makes a send (or ``max_rate``, if that is lower), in messages a second.
MIN_RATE = 1.0
#: Seconds without a 429 before the rate climbs back one step.
QUIET_SECONDS = 5.0
#: Each step back up, as a share of ``max_rate``.
RECOVERY_STEP = 0.1
#: How long before its slot a batch may be marked: about a ledger write, so that it is ready at its slot.
MARK_AHEAD_SECONDS = 0.25


def paced_batch_size(batch_size: int, max_rate: float | None) -> int:
    """Messages per batch: the hook's batch size, at most ``max_rate`` (and at least 1)."""
    return batch_size if max_rate is None else max(1, min(batch_size, int(max_rate)))


@dataclass(frozen=True)
class Slot:
    """When a batch may leave (on the rate's clock), and its place in the order of reservations."""

    at: float
    number: int


class SendRate:
    """
    The pace of one send, shared by its threads.

    :param max_rate: the most messages a second; the rate starts there and never exceeds it.
    :param log: where each change of the rate is logged.
    :param gateway: the gateway's name, for the log.
    :param patience: 429s in a row at the lowest rate after which :meth:`slow_down` gives up.
    :param clock: seconds, monotonic; injectable for tests.
    """

    def __init__(
        self,
        max_rate: float,
        *,
        log: Any,
        gateway: str = "The gateway",
        patience: int = 5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not max_rate > 0:
            raise ValueError(f"max_rate must be more than 0, not {max_rate!r}")
        self.max_rate = float(max_rate)
        self.floor = min(MIN_RATE, self.max_rate)
        self.rate = self.max_rate
        self.log = log
        self.gateway = gateway
        self.patience = patience
        self._clock = clock
        self._lock = threading.Lock()
        self._next = self._quiet_from = clock()
        self._reserved = 0  # slots handed out so far
        self._cut_at = 0  # the first slot reserved after the last cut
        self._strikes = 0  # 429s at the floor since a batch was last accepted

    def delay(self) -> float:
        """Seconds until the next slot opens; 0 if it is open."""
        with self._lock:
            now = self._clock()
            change = self._recover(now)
            wait = max(0.0, self._next - now)
        self._log(change)
        return wait

    def reserve(self, count: int) -> Slot:
        """The slot of the next batch, of ``count`` messages (it may be in the future: see :meth:`delay`)."""
        with self._lock:
            now = self._clock()
            change = self._recover(now)
            at = max(self._next, now)
            self._next = at + count / self.rate
            slot = Slot(at, self._reserved)
            self._reserved += 1
        self._log(change)
        return slot

    def accepted(self) -> None:
        """A batch was accepted: the gateway takes messages at this rate."""
        with self._lock:
            self._strikes = 0

    def slow_down(self, slot: Slot, retry_after: float | None) -> bool:
        """
        The batch sent at ``slot`` was answered "too fast": lower the rate, unless a cut answered it already.

        :param retry_after: the answer's ``Retry-After`` in seconds: no slot opens before it has passed.
        :return: whether to go on; ``False`` once the lowest rate was refused more than ``patience`` times
            in a row.
        """
        with self._lock:
            now = self._clock()
            self._quiet_from = now
            if retry_after:
                self._next = max(self._next, now + min(retry_after, MAX_BACKOFF_SECONDS))
            if slot.number < self._cut_at:
                return True  # sent before the last cut, at the rate that cut lowered
            if self.rate <= self.floor:
                self._strikes += 1
                return self._strikes <= self.patience
            change = self._change(max(self.floor, self.rate / 2), now)
            self._cut_at = self._reserved
        self._log(change)
        return True

    def _recover(self, now: float) -> tuple[str, str] | None:
        """One step back up, once the gateway has been quiet long enough (under the lock)."""
        if self.rate >= self.max_rate or now - self._quiet_from < QUIET_SECONDS:
            return None
        return self._change(min(self.max_rate, self.rate + self.max_rate * RECOVERY_STEP), now)

    def _change(self, rate: float, now: float) -> tuple[str, str]:
        """Set the rate; return the log method and line that say so (logged once the lock is released)."""
        before, self.rate, self._quiet_from = self.rate, rate, now
        if rate < before:
            return "warning", (
                f"{self.gateway} answered 429 (too many requests): slowing down from {describe(before)} "
                f"to {describe(rate)} messages/s (max_rate {describe(self.max_rate)})."
            )
        return "info", (
            f"No 429 for {QUIET_SECONDS:.0f} s: speeding up from {describe(before)} to {describe(rate)} "
            f"messages/s (max_rate {describe(self.max_rate)})."
        )

    def _log(self, change: tuple[str, str] | None) -> None:
        if change is not None:
            level, line = change
            getattr(self.log, level)("%s", line)


def describe(rate: float) -> str:
    """A rate for people: ``50``, ``12.5``."""
    return f"{round(rate, 1):g}"


class SlowDown(Exception):
    """
    A send's first attempt was answered 429: not processed, to be sent again, slower.

    Raised only out of :meth:`SlowDownWatch.send`; the sender handles it and it goes no further.

    :param retry_after: the answer's ``Retry-After``, in seconds, if it had one.
    """

    def __init__(self, retry_after: float | None) -> None:
        super().__init__(f"HTTP 429, Retry-After {retry_after}")
        self.retry_after = retry_after


class SlowDownWatch:
    """
    Makes the sending threads learn of a 429 to a first attempt at once, instead of the transport retrying it.

    It is a response hook of the hook's ``requests`` session (``Session.hooks``), which sees every answer;
    it acts only on answers to sends made through :meth:`send`, on that thread, and only where the
    transport's table says ``"retry"``.
    """

    def __init__(self) -> None:
        self._sending = threading.local()
        self._hooks: list[Any] | None = None

    def attach(self, session: Any) -> bool:
        """Watch ``session``'s answers; ``False`` if it is not a ``requests`` session (429s stay the transport's)."""
        hooks = getattr(session, "hooks", None)
        if not isinstance(hooks, dict) or not isinstance(hooks.get("response"), list):
            return False
        self._hooks = hooks["response"]
        self._hooks.append(self._answered)
        return True

    def detach(self) -> None:
        if self._hooks is not None and self._answered in self._hooks:
            self._hooks.remove(self._answered)
        self._hooks = None

    def send(
        self, hook: P2PSmsHook, messages: Sequence[OutgoingSms], after_uncertain: bool, **options: Any
    ) -> list[SmsReceipt]:
        """``hook.send_batch(messages, **options)``, raising :class:`SlowDown` on a 429 that means "too fast"."""
        self._sending.after_uncertain = after_uncertain
        try:
            return hook.send_batch(messages, **options)
        finally:
            self._sending.after_uncertain = None

    def _answered(self, response: Any, *args: Any, **kwargs: Any) -> None:
        after_uncertain = getattr(self._sending, "after_uncertain", None)
        if after_uncertain is None or response.status_code != 429:
            return
        if verdict_for_status("send", 429, after_uncertain=after_uncertain) != "retry":
            return
        # Read to its end, so that its connection goes back to the pool.
        _ = response.content
        raise SlowDown(retry_after_seconds(response.headers.get("Retry-After")))
