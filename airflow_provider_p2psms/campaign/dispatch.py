"""Send keyed messages in concurrent batches, noting each batch in the ledger before and after the wire.

The order of events for every batch is what makes retries safe:

1. its message keys are written to the ledger as *in flight* (a window of batches per write);
2. the batch is sent;
3. accepted receipts are written to the ledger (with the next window's marks, or at the latest about
   a second later), and refused batches, and marked batches a stopped try never sent, are released,
   so a retry sends those again.

A batch whose answer never came stays in flight: a retry treats it as uncertain. If the worker
itself dies, batches accepted since the last flush are uncertain too, never resent by default.

Three kinds of threads keep the gateway busy: a feeder reads messages, builds the next group of
batches and has it marked while the current group is on the wire; the senders (``max_concurrency``
of them) make the requests; one ledger thread makes every checkpoint write, in order, so that a slow
store (the task state store answers in about 20 ms) never holds up a request. The caller's thread
runs the generator: it hands batches to the senders and yields each batch's result as it comes.
"""

from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from itertools import islice
from typing import TYPE_CHECKING, Any

from airflow_provider_p2psms.campaign.ledger import CHUNK_SIZE, NullLedger
from airflow_provider_p2psms.exceptions import (
    SmsAuthenticationError,
    SmsConfigurationError,
    SmsGatewayUnavailable,
    SmsRequestRejected,
    SmsUncertainSendError,
)
from airflow_provider_p2psms.models import BatchResult
from airflow_provider_p2psms.utils.phone import mask_phone

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator
    from datetime import datetime

    from airflow_provider_p2psms.campaign.ledger import SendLedger
    from airflow_provider_p2psms.hooks.base import P2PSmsHook
    from airflow_provider_p2psms.models import OutgoingSms, SmsReceipt

Batch = list[tuple[int, "OutgoingSms"]]

#: Errors that prove the gateway did not take the batch: a retry may send it again.
_REFUSED = (SmsAuthenticationError, SmsConfigurationError, SmsGatewayUnavailable, SmsRequestRejected)

FLUSH_SECONDS = 1.0
PROGRESS_SECONDS = 5.0

#: Groups the feeder may prepare ahead of the senders.
_GROUPS_AHEAD = 2
_END = object()


def send_keyed(
    hook: P2PSmsHook,
    messages: Iterator[tuple[int, OutgoingSms]],
    *,
    max_concurrency: int,
    send_time: datetime | None,
    ledger: SendLedger | None,
    log: Any,
) -> Iterator[BatchResult]:
    """
    Send ``(key, message)`` pairs in batches of the hook's batch size, ``max_concurrency`` at a time.

    Yields one result per batch as its answer comes; after the last, raises the first error that
    stopped sending (a refused token or request, an unavailable gateway, a failing source), once
    every batch in flight is answered and written to the ledger.
    """
    return _Dispatch(hook, ledger or NullLedger(), max_concurrency, send_time, log).run(messages)


class _Dispatch:
    def __init__(
        self, hook: P2PSmsHook, ledger: SendLedger, max_concurrency: int, send_time: datetime | None, log: Any
    ) -> None:
        self.hook = hook
        self.ledger = ledger
        self.max_concurrency = max_concurrency
        self.send_time = send_time
        self.log = log
        self.accepted = 0
        self.uncertain = 0
        self._fatal: BaseException | None = None
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="p2psms-ledger")
        self._writes: list[Future[None]] = []
        self._last_flush = self._last_progress = self._started = time.monotonic()

    def run(self, messages: Iterator[tuple[int, OutgoingSms]]) -> Iterator[BatchResult]:
        window = max(2 * self.max_concurrency, 4)
        in_flight: dict[Future[list[SmsReceipt]], Batch] = {}
        feed: queue.Queue[Any] = queue.Queue(maxsize=_GROUPS_AHEAD)
        stop = threading.Event()
        # Keys marked in flight whose batch was not handed to the gateway yet. Whatever stops this
        # loop (a fatal answer, a timeout or SIGTERM raised in this thread, the caller closing the
        # stream), they provably did not go out, so they are released: left marked, a retry would
        # take them for uncertain.
        group_left: list[int] = []
        group_marked: Future[None] | None = None
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
                    self._fatal = item
                    break
                group, group_marked = item
                group_left = [key for batch in group for key, _ in batch]
                group_marked.result()  # the marks are durable before any of these messages leaves
                for batch in group:
                    while len(in_flight) >= self.max_concurrency:
                        done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                        yield from self._collect(done, in_flight)
                    if self._fatal is not None:
                        break
                    future = pool.submit(self.hook.send_batch, [m for _, m in batch], send_time=self.send_time)
                    in_flight[future] = batch
                    del group_left[: len(batch)]
                    self._tick()
            self._stop_feeding(stop, feed, feeder, group_left, group_marked)
            group_left = []
            while in_flight:
                done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                yield from self._collect(done, in_flight)
        finally:
            self._stop_feeding(stop, feed, feeder, group_left, group_marked)
            while in_flight:
                # Stopped from outside: nobody reads results any more, but the ledger still learns them.
                done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                for _ in self._collect(done, in_flight):
                    pass
            pool.shutdown(wait=True)
            self._flush()
            self._writer.shutdown(wait=True)
        for write in self._writes:
            write.result()  # a checkpoint that could not be written must not pass unnoticed
        if self._fatal is not None:
            self.log.error(
                "Stopped after %d messages were accepted; nothing after the failure was sent. "
                "A retry of this task resumes where this try stopped.",
                self.accepted,
            )
            raise self._fatal

    def _feed(
        self, messages: Iterator[tuple[int, OutgoingSms]], window: int, feed: queue.Queue[Any], stop: threading.Event
    ) -> None:
        """Build groups of batches and have them marked in flight, ahead of the senders (feeder thread)."""
        try:
            batches = _batched(messages, self.hook.batch_size)
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

    def _stop_feeding(
        self,
        stop: threading.Event,
        feed: queue.Queue[Any],
        feeder: threading.Thread,
        group_left: list[int],
        group_marked: Future[None] | None,
    ) -> None:
        """Stop the feeder and release every marked key that was not handed to the gateway."""
        stop.set()
        if group_marked is not None and group_left:
            # A timeout may have come while the marks were being written: release after them.
            _release_once_marked(self.ledger, group_left, group_marked)
        while feeder.is_alive() or not feed.empty():
            try:
                item = feed.get(timeout=0.05)
            except queue.Empty:
                continue
            if isinstance(item, tuple):
                group, marked = item
                _release_once_marked(self.ledger, [key for batch in group for key, _ in batch], marked)
        feeder.join()

    def _collect(self, done: Iterable[Future[list[SmsReceipt]]], in_flight: dict[Any, Batch]) -> Iterator[BatchResult]:
        for future in done:
            batch = in_flight.pop(future)
            keys = tuple(key for key, _ in batch)
            messages = tuple(message for _, message in batch)
            try:
                receipts = future.result()
            except SmsUncertainSendError as error:
                self.uncertain += len(batch)
                sample = ", ".join(mask_phone(m.recipient) for m in messages[:3])
                self.log.warning("%s Recipients include %s.", error, sample)
                yield BatchResult(keys, messages, uncertain=error.reason)
            except _REFUSED as error:
                self.ledger.stage(released=keys)
                self._fatal = self._fatal or error
            except Exception as error:
                # An unexpected failure may have happened after the request left: treat it as uncertain.
                self.uncertain += len(batch)
                self._fatal = self._fatal or error
                yield BatchResult(keys, messages, uncertain=f"{type(error).__name__}: {error}")
            else:
                self.ledger.stage({key: [r.message_id, r.recipient] for key, r in zip(keys, receipts, strict=True)})
                self.accepted += len(receipts)
                yield BatchResult(keys, messages, tuple(receipts))
        self._tick()

    def _tick(self) -> None:
        now = time.monotonic()
        pending = self._writes and not self._writes[-1].done()
        if not pending and (self.ledger.staged >= CHUNK_SIZE or now - self._last_flush >= FLUSH_SECONDS):
            # At most one flush waits at a time: it writes whatever is staged when its turn comes.
            self._flush()
        if now - self._last_progress >= PROGRESS_SECONDS:
            self._last_progress = now
            rate = self.accepted / max(now - self._started, 1e-9)
            self.log.info(
                "Progress: %d messages accepted, %d uncertain (%.0f messages/s).",
                self.accepted,
                self.uncertain,
                rate,
            )

    def _flush(self) -> None:
        """Have the ledger thread write what was accepted or released and is not written yet."""
        self._writes.append(self._writer.submit(self.ledger.flush))
        self._last_flush = time.monotonic()


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
