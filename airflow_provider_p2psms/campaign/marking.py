"""Which batches may leave, and when: built ahead of the wire, marked in the resume ledger just ahead of it.

**The crash bound.** Call a message *open* once the write marking it has returned, until the write
carrying its receipt or its release has, or its send was answered uncertain (it is uncertain then,
whatever happens next). Only the ledger thread writes, one entry after another; it marks batches only
in a write that carries, ahead of the marks, every answer staged before it (``SendLedger.flush``), and
only as many as keep ``open - answers written + marked <= 2 * max_concurrency * batch_size``
(:func:`crash_bound`). Entries are appended in order and never rewritten, so the log cut after any
entry holds at most that many open messages; and no batch is handed to a sender before the write
marking it has returned. So whatever kills the worker, at whatever instant, a retry finds at most
``2 * max_concurrency * batch_size`` messages uncertain besides those whose send was answered uncertain:
marked batches that never left, batches on the wire, and accepted batches whose receipts were not
written yet, all together. And nothing is sent twice by default: every message that may have left is
marked.

**Throughput.** ``max_concurrency`` batches are on the wire and up to as many again marked, ready; the
senders must never wait for a write. The ledger thread marks the next batches when the senders are down
to as many ready ones as they take while a write is made (measured: about ``max_concurrency`` × write
time / request time, e.g. one at 4 senders, 20 ms writes and 55 ms requests), so the write lands
before those run out; each write carries the rest of the room, up to one batch per sender, with the
receipts of as many. The first marks wait for a batch per sender, so that the senders start together
after one write. Without marks to write, answers are written :data:`FLUSH_SECONDS` after the last
write.

Two threads do it: a feeder reads the messages and builds batches (unmarked, at most
``2 * max_concurrency`` ahead; messages resent after an uncertain attempt in batches of their own), each
with its request built already when the gateway can (``P2PSmsHook.prepare_batch``), and
the ledger thread makes every checkpoint write, in order. They tell the sender through its event queue:
``("marked", batches)``, ``("end", error or None)`` once every batch is marked, ``("error", error)``
when a write failed.

**A rate.** With ``max_rate`` set, the ledger thread reserves each batch's slot
(:class:`~airflow_provider_p2psms.campaign.rate.SendRate`) before it marks it, and marks a batch only once
its slot is at most :data:`~airflow_provider_p2psms.campaign.rate.MARK_AHEAD_SECONDS` away; the sender holds
it until then. Waiting for a slot is waiting for work: answers are still written every
:data:`FLUSH_SECONDS`.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow_provider_p2psms.campaign.rate import MARK_AHEAD_SECONDS

if TYPE_CHECKING:
    import queue
    from collections.abc import Callable, Iterable, Iterator

    from airflow_provider_p2psms.campaign.isolation import Isolation
    from airflow_provider_p2psms.campaign.ledger import SendLedger
    from airflow_provider_p2psms.campaign.rate import SendRate, Slot
    from airflow_provider_p2psms.models import OutgoingSms

FLUSH_SECONDS = 1.0


def crash_bound(max_concurrency: int, batch_size: int) -> int:
    """The most messages a killed worker leaves uncertain, beyond those whose send was answered uncertain."""
    return 2 * max_concurrency * batch_size


@dataclass(eq=False)
class Batch:
    """
    Messages to send in one request, with their keys.

    :param after_uncertain: the messages are resent after an attempt whose fate is unknown (an earlier
        try left them uncertain in the ledger).
    :param isolation: the refused batch this is a part of, while its refused messages are isolated.
    :param ready_ahead: marked by the ledger thread (a part of a refused batch is not: it was marked whole).
    :param prepared: its request, built by the feeder (``P2PSmsHook.prepare_batch``); ``None``: built at send.
    :param slot: when it may leave, under a rate (:class:`~airflow_provider_p2psms.campaign.rate.SendRate`).
    """

    keys: list[int]
    messages: list[OutgoingSms]
    after_uncertain: bool = False
    isolation: Isolation | None = None
    ready_ahead: bool = True
    prepared: Any = None
    slot: Slot | None = None

    def __len__(self) -> int:
        return len(self.keys)

    def part(self, positions: Iterable[int], isolation: Isolation | None) -> Batch:
        chosen = list(positions)
        keys, messages = [self.keys[i] for i in chosen], [self.messages[i] for i in chosen]
        return Batch(keys, messages, self.after_uncertain, isolation, ready_ahead=False)


class Marking:
    """
    The feeder and the ledger thread of one send.

    :param ledger: the loaded ledger (its ``uncertain`` keys are resent after an uncertain attempt).
    :param batch_size: messages per batch.
    :param max_concurrency: the senders' requests in flight at once.
    :param events: the sender's event queue.
    :param prepare: builds a batch's request from its messages (or returns ``None``), in the feeder.
    :param rate: the pace batches are marked at, if any.
    """

    def __init__(
        self,
        ledger: SendLedger,
        batch_size: int,
        max_concurrency: int,
        events: queue.SimpleQueue[Any],
        prepare: Callable[[list[OutgoingSms]], Any] | None = None,
        rate: SendRate | None = None,
    ):
        self.ledger = ledger
        self.prepare = prepare
        self.rate = rate
        self._paced = math.inf  # seconds until the next batch's slot is near enough to mark it
        self.batch_size = batch_size
        self.bound = crash_bound(max_concurrency, batch_size)
        self.slots = max_concurrency
        self.ahead = 2 * max_concurrency
        self.events = events
        # One lock; the ledger thread waits for work, the feeder for room. Each is woken only when it
        # has something to do, not at every answer: the senders' threads share the interpreter with them.
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)
        self._space = threading.Condition(self._lock)
        self._prepared: deque[Batch] = deque()  # built, not marked
        self._fed = False  # the feeder has queued its last batch
        self._source_error: BaseException | None = None
        self._unsent = 0  # marked, not handed to a sender yet
        self._open = 0  # see the crash bound
        self._short = False  # batches wait for marking, but the bound leaves no room for them
        self._marked_any = False
        self._answers = 0  # batches answered so far
        self._per_write = 0.0  # batches answered during a write, on average (an exponential moving mean)
        self._stopping = False
        self._last_write = time.monotonic()
        self._threads: list[threading.Thread] = []

    def start(self, messages: Iterator[tuple[int, OutgoingSms]]) -> None:
        self._threads = [
            threading.Thread(target=self._feed, args=(messages,), name="p2psms-prepare", daemon=True),
            threading.Thread(target=self._write, name="p2psms-ledger", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    @property
    def _low(self) -> int:
        """
        Ready batches at which the next marks are due: as many as the senders take while a write is
        made, so that none waits for it. Each one kept ready is one less marked per write (the bound
        holds both), so they are counted down, never up, and one write always marks a batch at least.
        """
        return min(int(self._per_write), self.slots - 1)

    def taken(self) -> None:
        """A marked batch went to a sender: the next ones may be due."""
        with self._lock:
            self._unsent -= 1
            if self._unsent <= self._low:
                self._work.notify()

    def settle(self, count: int) -> None:
        """Count messages out of the open ones without a write: their send was answered uncertain."""
        with self._lock:
            self._open -= count
            self._work.notify()

    def answered(self) -> None:
        """A batch's answer was staged in the ledger: it frees room for marks once written."""
        with self._lock:
            self._answers += 1
            if self._short:
                self._work.notify()

    def halt(self) -> None:
        """Mark nothing more: the send is stopping."""
        with self._lock:
            self._stopping = True
            self._work.notify()
            self._space.notify()

    def stop(self) -> None:
        """Halt, and wait for both threads: once this returns, the last write has returned."""
        self.halt()
        for thread in self._threads:
            thread.join()

    # ------------------------------------------------------------------ the feeder

    def _feed(self, messages: Iterator[tuple[int, OutgoingSms]]) -> None:
        resent = self.ledger.uncertain
        building = {False: Batch([], []), True: Batch([], [], after_uncertain=True)}
        try:
            for key, message in messages:
                batch = building[key in resent]
                batch.keys.append(key)
                batch.messages.append(message)
                if len(batch) == self.batch_size:
                    building[batch.after_uncertain] = Batch([], [], after_uncertain=batch.after_uncertain)
                    if not self._prepare(batch):
                        return
            for batch in building.values():
                if batch.keys and not self._prepare(batch):
                    return
        except BaseException as error:
            # The batches built before the failing message still go out; its own batch does not.
            self._source_error = error
        with self._lock:
            self._fed = True
            self._work.notify()

    def _prepare(self, batch: Batch) -> bool:
        """Queue a built batch for marking, unless sending stops first; return whether it was queued."""
        if self.prepare is not None:
            try:
                batch.prepared = self.prepare(batch.messages)
            except Exception:
                batch.prepared = None  # built again at send, which raises what is wrong with the batch
        with self._lock:
            while len(self._prepared) >= self.ahead and not self._stopping:
                self._space.wait()
            if self._stopping:
                return False
            self._prepared.append(batch)
            if self._unsent <= self._low:
                self._work.notify()
            return True

    # ------------------------------------------------------------------ the ledger thread

    def _write(self) -> None:
        announced = False
        try:
            while True:
                with self._lock:
                    while not (marks := self._marks_due()) and not self._flush_due():
                        if self._stopping:
                            return
                        if self._fed and not self._prepared and not announced:
                            announced = True
                            self.events.put(("end", self._source_error))
                        self._work.wait(min(self._flush_wait(), self._paced))
                    answers = self._answers
                keys = [key for batch in marks for key in batch.keys]
                written = self.ledger.flush(keys)
                with self._lock:
                    self._open += len(keys) - written
                    self._unsent += len(marks)
                    self._last_write = time.monotonic()
                    self._per_write += (self._answers - answers - self._per_write) / 4
                if marks:
                    self.events.put(("marked", marks))
        except BaseException as error:
            self.events.put(("error", error))

    def _marks_due(self) -> list[Batch]:
        """Once the senders are down to the last few ready batches: what the bound and rate allow (under the lock)."""
        self._paced = math.inf
        if self._unsent > self._low or not self._prepared or self._stopping:
            return []
        if not self._marked_any and len(self._prepared) < self.slots and not self._fed:
            return []  # the first marks wait for a batch per sender: they start together, after one write
        self._marked_any = True
        room = self.bound - (self._open - self.ledger.pending)
        marks: list[Batch] = []
        # At most one batch per sender: a write marking more leaves a batch ready when the senders'
        # answers come in a burst, and the next write would start with the burst, not after it.
        while self._prepared and len(self._prepared[0]) <= room and len(marks) < self.slots:
            if self.rate is not None:
                wait = self.rate.delay() - MARK_AHEAD_SECONDS
                if wait > 0:
                    self._paced = wait
                    break
                self._prepared[0].slot = self.rate.reserve(len(self._prepared[0]))
            room -= len(self._prepared[0])
            marks.append(self._prepared.popleft())
        self._short = not marks and self._paced == math.inf
        if marks:
            self._space.notify()  # the feeder may build more
        return marks

    def _flush_due(self) -> bool:
        if self._stopping or not self.ledger.pending:
            return False
        return time.monotonic() - self._last_write >= FLUSH_SECONDS

    def _flush_wait(self) -> float:
        return max(0.0, self._last_write + FLUSH_SECONDS - time.monotonic()) if self.ledger.pending else FLUSH_SECONDS
