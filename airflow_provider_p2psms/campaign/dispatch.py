"""Send prepared messages in concurrent batches, checkpointing as it goes.

The order of events for every batch is what makes retries safe:

1. its message keys are written to the ledger as *in flight* (a window of batches per write);
2. the batch is sent;
3. accepted receipts are written to the ledger (with the next window's marks, or at the latest about
   a second later), and refused batches, and marked batches a stopped try never sent, are released,
   so a retry sends those again.

A batch whose answer never came stays in flight: a retry treats it as uncertain. If the worker
itself dies, batches accepted since the last flush are uncertain too, never resent by default.

Three kinds of threads keep the gateway busy: a feeder reads rows, builds the next group of batches
and has it marked while the current group is on the wire; the senders (``max_concurrency`` of them)
make the requests; one ledger thread makes every checkpoint write, in order, so that a slow store
(the task state store answers in about 20 ms) never holds up a request.
"""

from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from itertools import islice
from typing import TYPE_CHECKING, Any

from airflow_provider_p2psms.exceptions import (
    SmsAuthenticationError,
    SmsConfigurationError,
    SmsGatewayUnavailable,
    SmsRequestRejected,
    SmsUncertainSendError,
)
from airflow_provider_p2psms.models import MessagesPacker
from airflow_provider_p2psms.utils.checkpoint import CHUNK_SIZE
from airflow_provider_p2psms.utils.phone import mask_phone
from airflow_provider_p2psms.utils.recipients import MAX_PROBLEMS

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator
    from datetime import datetime

    from airflow_provider_p2psms.hooks.base import P2PSmsHook
    from airflow_provider_p2psms.models import OutgoingSms, SendReceipt, SmsReceipt
    from airflow_provider_p2psms.utils.checkpoint import SendLedger
    from airflow_provider_p2psms.utils.recipients import MessageBuilder

Batch = list[tuple[int, "OutgoingSms"]]

#: Errors that prove the gateway did not take the batch: a retry may send it again.
_REFUSED = (SmsAuthenticationError, SmsConfigurationError, SmsGatewayUnavailable, SmsRequestRejected)

FLUSH_SECONDS = 1.0
PROGRESS_SECONDS = 5.0

#: Groups the feeder may prepare ahead of the senders.
_GROUPS_AHEAD = 2
_END = object()


class BatchSender:
    """
    Send (key, message) pairs in batches of the hook's batch size, ``max_concurrency`` at a time.

    :param hook: the gateway hook (shared by the sending threads).
    :param ledger: the checkpoint of this task instance, already loaded.
    :param max_concurrency: send requests in flight at once.
    :param resend_uncertain: send again what an earlier try left uncertain.
    :param send_time: schedule, where the gateway supports it.
    :param log: the task's logger.
    """

    def __init__(
        self,
        *,
        hook: P2PSmsHook,
        ledger: SendLedger,
        max_concurrency: int,
        resend_uncertain: bool,
        send_time: datetime | None,
        log: Any,
    ) -> None:
        self.hook = hook
        self.ledger = ledger
        self.max_concurrency = max_concurrency
        self.resend_uncertain = resend_uncertain
        self.send_time = send_time
        self.log = log
        #: Accepted messages, packed as ``SendReceipt.messages``.
        self.accepted = MessagesPacker()
        self.accepted_count = 0
        self.resumed = 0
        self.uncertain_keys: set[int] = set()
        self.problems: list[str] = []
        self._read_earlier: set[int] = set()
        self._fatal: BaseException | None = None
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="p2psms-ledger")
        self._writes: list[Future[None]] = []
        self._last_flush = self._last_progress = self._started = time.monotonic()

    def send_all(self, messages: Iterator[tuple[int, OutgoingSms]]) -> None:
        """Send every message not already accepted; raise the first fatal error after draining."""
        window = max(2 * self.max_concurrency, 4)
        in_flight: dict[Future[list[SmsReceipt]], Batch] = {}
        # Keys marked in flight whose batch was not handed to the gateway yet. Whatever stops this
        # loop (a fatal answer, a timeout or SIGTERM raised in this thread), they provably did not go
        # out, so they are released: left marked, a retry would take them for uncertain.
        unsent: list[int] = []
        unsent_marked: Future[None] | None = None
        feed: queue.Queue[Any] = queue.Queue(maxsize=_GROUPS_AHEAD)
        stop = threading.Event()
        feeder = threading.Thread(
            target=self._feed, args=(messages, window, feed, stop), name="p2psms-prepare", daemon=True
        )
        pool = ThreadPoolExecutor(max_workers=self.max_concurrency, thread_name_prefix="p2psms-send")
        feeder.start()
        try:
            # One session for every sending thread, opened here while the feeder reads rows and has the
            # first group marked. Left to the first sends, they wait on each other for it (Python 3.11's
            # cached_property locks), or each opens its own (3.12+ does not lock).
            self.hook.get_conn()
            while self._fatal is None:
                item = feed.get()
                if item is _END:
                    break
                if isinstance(item, BaseException):
                    raise item
                group, unsent_marked = item
                unsent = [key for batch in group for key, _ in batch]
                unsent_marked.result()  # the marks are durable before any of these messages leaves
                for batch in group:
                    while len(in_flight) >= self.max_concurrency:
                        done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                        self._collect(done, in_flight)
                    if self._fatal is not None:
                        break
                    future = pool.submit(self.hook.send_batch, [m for _, m in batch], send_time=self.send_time)
                    in_flight[future] = batch
                    del unsent[: len(batch)]
                    self._tick()
        finally:
            stop.set()
            if unsent_marked is not None:
                # A timeout may have come while the marks were being written: release after them.
                _release_once_marked(self.ledger, unsent, unsent_marked)
            self._release_queued(feed, feeder)
            while in_flight:
                done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                self._collect(done, in_flight)
            pool.shutdown(wait=True)
            self._flush()
            self._writer.shutdown(wait=True)
        for write in self._writes:
            write.result()  # a checkpoint that could not be written must not pass unnoticed
        if self._fatal is not None:
            self.log.error(
                "Stopped after %d messages were accepted; nothing after the failure was sent. "
                "A retry of this task resumes where this try stopped.",
                self.accepted_count,
            )
            raise self._fatal
        self._merge_unread()

    def _feed(
        self, messages: Iterator[tuple[int, OutgoingSms]], window: int, feed: queue.Queue[Any], stop: threading.Event
    ) -> None:
        """Build groups of batches and have them marked in flight, ahead of the senders (feeder thread)."""
        try:
            batches = _batched(self._fresh(messages), self.hook.batch_size)
            while not stop.is_set() and (group := list(islice(batches, window))):
                keys = [key for batch in group for key, _ in batch]
                marked = self._writer.submit(self.ledger.mark_in_flight, keys)
                if not _put(feed, (group, marked), stop):
                    # Marked, but the senders stopped before taking it: it never goes out.
                    _release_once_marked(self.ledger, keys, marked)
                    return
        except BaseException as error:
            _put(feed, error, stop)
            return
        _put(feed, _END, stop)

    def _release_queued(self, feed: queue.Queue[Any], feeder: threading.Thread) -> None:
        """Release the groups the feeder prepared that were never sent, and wait for the feeder to end."""
        while feeder.is_alive() or not feed.empty():
            try:
                item = feed.get(timeout=0.05)
            except queue.Empty:
                continue
            if isinstance(item, tuple):
                group, marked = item
                _release_once_marked(self.ledger, [key for batch in group for key, _ in batch], marked)
        feeder.join()

    def _fresh(self, messages: Iterator[tuple[int, OutgoingSms]]) -> Iterator[tuple[int, OutgoingSms]]:
        """Leave out what an earlier try had accepted (or left uncertain, unless resending)."""
        earlier, uncertain = self.ledger.sent, self.ledger.uncertain
        for key, message in messages:
            receipt = earlier.get(key)
            if receipt is not None:
                self.resumed += 1
                self._accept([receipt])
                self._read_earlier.add(key)
            elif key in uncertain:
                self._read_earlier.add(key)
                if not self.resend_uncertain:
                    self.uncertain_keys.add(key)
                    self._problem(f"Uncertain (earlier try, not resent): {mask_phone(message.recipient)}.")
                else:
                    yield key, message
            else:
                yield key, message

    def _merge_unread(self) -> None:
        """
        Account for what an earlier try left that this try's input no longer holds (the source changed).

        Accepted messages go into the receipt, so the sensor tracks every text that went out. Uncertain
        ones cannot be resent without their row: they are reported, and counted unless resending.
        """
        unread = 0
        for key, receipt in self.ledger.sent.items():
            if key not in self._read_earlier:
                self.resumed += 1
                self._accept([receipt])
        for key in self.ledger.uncertain:
            if key not in self._read_earlier:
                unread += 1
                if not self.resend_uncertain:
                    self.uncertain_keys.add(key)
        if unread:
            self._problem(f"Uncertain (earlier try): {unread} messages whose rows this try did not read; not resent.")

    def _collect(self, done: Iterable[Future[list[SmsReceipt]]], in_flight: dict[Any, Batch]) -> None:
        for future in done:
            batch = in_flight.pop(future)
            keys = [key for key, _ in batch]
            try:
                receipts = future.result()
            except SmsUncertainSendError as error:
                self.uncertain_keys.update(keys)
                sample = ", ".join(mask_phone(m.recipient) for _, m in batch[:3])
                self.log.warning("%s Recipients include %s.", error, sample)
                for _, message in batch:
                    self._problem(f"Uncertain: {mask_phone(message.recipient)} ({error.reason}).")
            except _REFUSED as error:
                self.ledger.stage(released=keys)
                self._fatal = self._fatal or error
            except Exception as error:
                # An unexpected failure may have happened after the request left: treat it as uncertain.
                self.uncertain_keys.update(keys)
                self._fatal = self._fatal or error
            else:
                pairs = [[receipt.message_id, receipt.recipient] for receipt in receipts]
                self.ledger.stage(dict(zip(keys, pairs, strict=True)))
                self._accept(pairs)
        self._tick()

    def _accept(self, pairs: list[list[str]]) -> None:
        self.accepted.add(pairs)
        self.accepted_count += len(pairs)

    def _tick(self) -> None:
        now = time.monotonic()
        pending = self._writes and not self._writes[-1].done()
        if not pending and (self.ledger.staged >= CHUNK_SIZE or now - self._last_flush >= FLUSH_SECONDS):
            # At most one flush waits at a time: it writes whatever is staged when its turn comes.
            self._flush()
        if now - self._last_progress >= PROGRESS_SECONDS:
            self._last_progress = now
            rate = (self.accepted_count - self.resumed) / max(now - self._started, 1e-9)
            self.log.info(
                "Progress: %d messages accepted, %d uncertain (%.0f messages/s).",
                self.accepted_count,
                len(self.uncertain_keys),
                rate,
            )

    def _flush(self) -> None:
        """Have the ledger thread write what was accepted or released and is not written yet."""
        self._writes.append(self._writer.submit(self.ledger.flush))
        self._last_flush = time.monotonic()

    def _problem(self, text: str) -> None:
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(text)

    def receipt(self, sms_conn_id: str, builder: MessageBuilder) -> SendReceipt:
        """The XCom receipt of everything this task instance had accepted, in this try and earlier ones."""
        return builder.receipt(
            self.hook.conn_type,
            sms_conn_id,
            messages=self.accepted.value(),
            sent=self.accepted_count,
            resumed=self.resumed,
            uncertain=len(self.uncertain_keys),
            problems=self.problems,
        )


def _release_once_marked(ledger: SendLedger, keys: list[int], marked: Future[None]) -> None:
    """
    Release keys of a group that never went out, once its marks are written.

    A release staged earlier could be written by a flush that runs before the marks' own, and replaying
    the log would then find the marks last: the messages would read as uncertain, and never be sent.
    """
    wait([marked])
    ledger.stage(released=keys)


def _put(feed: queue.Queue[Any], item: Any, stop: threading.Event) -> bool:
    """Queue ``item`` unless the senders stop first; return whether it was queued."""
    while not stop.is_set():
        try:
            feed.put(item, timeout=0.05)
        except queue.Full:
            continue
        return True
    return False


def _batched(items: Iterator[Any], size: int) -> Iterator[list[Any]]:
    while chunk := list(islice(items, size)):
        yield chunk
