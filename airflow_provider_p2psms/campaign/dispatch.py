"""Send keyed messages in concurrent batches, writing each batch to the ledger just before and after the wire.

The order of events for every batch is what makes retries safe:

1. its message keys are written to the ledger as *in flight*, in a write that first carries what was
   answered since the last one;
2. the batch is sent;
3. accepted receipts are written (with the next marks, or at the latest about a second later); batches
   the gateway provably did not process, messages it refused, and marked batches a stopped try never
   sent are *released*, so a retry sends them; batches whose fate is unknown stay marked. What each
   answer means is the one table in :mod:`~airflow_provider_p2psms.hooks.transport`.

Batches are marked just ahead of the wire, never more than ``2 * max_concurrency * batch_size``
messages open at once, so a worker killed at any instant leaves at most that many uncertain: the
argument is in :mod:`~airflow_provider_p2psms.campaign.marking`, whose feeder and ledger thread build
and mark the batches. A batch refused for some of its recipients is taken apart
(:mod:`~airflow_provider_p2psms.campaign.isolation`), unless ``on_rejected="fail"``.

Here, the caller's thread runs the generator: it hands marked batches to the senders
(``max_concurrency`` threads making the requests), learns each answer through one event queue, and
yields what came of each batch as it comes.

With ``max_rate`` (or the connection's ``max_rate`` extra), batches hold at most that many messages, each
waits here for its slot, and a 429 to a first attempt slows the send down and sends the batch again
(:mod:`~airflow_provider_p2psms.campaign.rate`). Without it, a 429 is the transport's: it waits
``Retry-After`` and tries again, up to the connection's ``max_retries``, and then the send stops with the
batch released, as for a gateway that stays unavailable.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import TYPE_CHECKING, Any

from airflow_provider_p2psms.campaign.isolation import reject_reason, split_refused
from airflow_provider_p2psms.campaign.ledger import NullLedger
from airflow_provider_p2psms.campaign.marking import Marking
from airflow_provider_p2psms.campaign.rate import SendRate, SlowDown, SlowDownWatch, describe, paced_batch_size
from airflow_provider_p2psms.exceptions import (
    P2PSmsError,
    SendWindowClosed,
    SmsGatewayUnavailable,
    SmsRecipientsRefused,
    SmsUncertainSendError,
)
from airflow_provider_p2psms.hooks.transport import verdict_for_error
from airflow_provider_p2psms.models import BatchResult
from airflow_provider_p2psms.utils.phone import mask_phone

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator
    from datetime import datetime

    from airflow_provider_p2psms.campaign.ledger import SendLedger
    from airflow_provider_p2psms.campaign.marking import Batch
    from airflow_provider_p2psms.hooks.base import P2PSmsHook
    from airflow_provider_p2psms.models import OutgoingSms, SmsReceipt

PROGRESS_SECONDS = 5.0


def send_keyed(
    hook: P2PSmsHook,
    messages: Iterator[tuple[int, OutgoingSms]],
    *,
    max_concurrency: int,
    send_time: datetime | None,
    ledger: SendLedger | None,
    log: Any,
    on_rejected: str = "isolate",
    closes_at: float | None = None,
    max_rate: float | None = None,
    halt: threading.Event | None = None,
) -> Iterator[BatchResult]:
    """
    Send ``(key, message)`` pairs in batches of the hook's batch size, ``max_concurrency`` at a time.

    Yields one result per batch (or part of a refused batch) as its answer comes; after the last, raises
    the first error that stopped sending (a refused token or sender line, an unavailable gateway, a
    failing source, a checkpoint that could not be written), once every batch in flight is answered and
    written to the ledger. ``on_rejected`` is ``"isolate"`` or ``"fail"`` (see ``P2PSmsHook.send_messages``).
    ``closes_at`` (epoch seconds) is when the send window closes: no batch leaves after it, and once the
    ones on the wire are answered and written, :class:`~airflow_provider_p2psms.exceptions.SendWindowClosed`
    is raised. Once ``halt`` is set (the task is being killed), no batch leaves either, and the send stops
    as after a fatal answer. ``max_rate``: the most messages a second, shared by the sending threads;
    ``None`` (default): the connection's ``max_rate`` extra, if set, else no limit.
    """
    if on_rejected not in ("isolate", "fail"):
        raise ValueError(f"on_rejected must be 'isolate' or 'fail', not {on_rejected!r}")
    settings = getattr(hook, "settings", None)
    if max_rate is None:
        max_rate = getattr(settings, "max_rate", None)
    rate = None
    if max_rate is not None:
        patience = getattr(settings, "max_retries", 5)
        rate = SendRate(max_rate, log=log, gateway=hook.provider_name, patience=patience)
    dispatch = _Dispatch(hook, ledger or NullLedger(), max_concurrency, send_time, log, on_rejected, rate)
    dispatch.closes_at, dispatch.halt = closes_at, halt
    return dispatch.run(messages)


class _Dispatch:
    def __init__(
        self,
        hook: P2PSmsHook,
        ledger: SendLedger,
        max_concurrency: int,
        send_time: datetime | None,
        log: Any,
        on_rejected: str,
        rate: SendRate | None = None,
    ) -> None:
        self.hook = hook
        self.ledger = ledger
        self.max_concurrency = max_concurrency
        self.send_time = send_time
        self.log = log
        self.isolate = on_rejected == "isolate"
        self.closes_at: float | None = None
        self.halt: threading.Event | None = None
        self.accepted = self.uncertain = self.rejected = 0
        self._fatal: BaseException | None = None
        self._events: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._rate = rate
        self._watch = None if rate is None else SlowDownWatch()
        prepare = getattr(hook, "prepare_batch", None)
        self._marking = Marking(
            ledger,
            paced_batch_size(hook.batch_size, None if rate is None else rate.max_rate),
            max_concurrency,
            self._events,
            None if prepare is None else lambda messages: prepare(messages, send_time=send_time),
            rate,
        )
        self._ready: deque[Batch] = deque()  # marked, not handed to a sender yet
        self._in_flight: dict[Future[list[SmsReceipt]], Batch] = {}
        self._last_progress = self._started = time.monotonic()

    def run(self, messages: Iterator[tuple[int, OutgoingSms]]) -> Iterator[BatchResult]:
        pool = ThreadPoolExecutor(max_workers=self.max_concurrency, thread_name_prefix="p2psms-send")
        self._marking.start(messages)
        ended = False
        source_error: BaseException | None = None
        try:
            # One session for every sending thread, opened while the first batches are built and marked.
            # Left to the first sends, they wait on each other for it (Python 3.11's cached_property
            # locks), or each opens its own (3.12+ does not lock).
            session = self.hook.get_conn()
            if self._watch is not None and not self._watch.attach(session):
                self._watch = None  # not a requests session: a 429 is the hook's own business
            while True:
                self._hand_out(pool)
                if self._fatal is not None:
                    self._marking.halt()
                if not self._in_flight and (self._fatal is not None or (ended and not self._ready)):
                    break
                try:
                    kind, payload = self._events.get(timeout=self._held())
                except queue.Empty:
                    continue  # the first ready batch's slot has come
                if kind == "marked":
                    self._ready.extend(payload)
                elif kind == "done":
                    yield from self._collect([payload])
                elif kind == "end":
                    ended, source_error = True, payload
                else:  # a checkpoint could not be written: nothing more may leave
                    self._fatal = self._fatal or payload
        finally:
            write_error = self._shut_down(pool)
            if self._watch is not None:
                self._watch.detach()
        fatal = self._fatal or write_error or source_error
        if isinstance(fatal, SendWindowClosed):
            self.log.info("The send window closed: %d messages accepted; nothing more left.", self.accepted)
            raise fatal
        if fatal is not None:
            self.log.error(
                "Stopped after %d messages were accepted; nothing after the failure was sent. "
                "A retry of this task resumes where this try stopped.",
                self.accepted,
            )
            raise fatal

    def _hand_out(self, pool: ThreadPoolExecutor) -> None:
        if self.closes_at is not None and self._ready and self._fatal is None and time.time() >= self.closes_at:
            self._fatal = SendWindowClosed(f"The send window closed after {self.accepted} messages were accepted.")
        if self.halt is not None and self.halt.is_set() and self._fatal is None:
            self._fatal = P2PSmsError(f"The task was killed after {self.accepted} messages were accepted.")
        while self._ready and len(self._in_flight) < self.max_concurrency and self._fatal is None:
            slot = self._ready[0].slot
            if slot is not None and slot.at > time.monotonic():
                return  # held until its slot: see _held
            batch = self._ready.popleft()
            if batch.ready_ahead:
                self._marking.taken()
            options: dict[str, Any] = {"send_time": self.send_time}
            if batch.after_uncertain:
                # Only when set, so that a gateway hook written before the flag existed still works.
                options["after_uncertain"] = True
            if batch.prepared is not None:
                options["prepared"] = batch.prepared
            if self._watch is None:
                future = pool.submit(self.hook.send_batch, batch.messages, **options)
            else:
                future = pool.submit(self._watch.send, self.hook, batch.messages, batch.after_uncertain, **options)
            self._in_flight[future] = batch
            future.add_done_callback(lambda done: self._events.put(("done", done)))

    def _held(self) -> float | None:
        """Seconds until the first ready batch's slot, when a sender is free for it; ``None``: no wait."""
        if not self._ready or len(self._in_flight) >= self.max_concurrency or self._fatal is not None:
            return None
        slot = self._ready[0].slot
        return None if slot is None else max(0.0, slot.at - time.monotonic())

    def _collect(self, done: Iterable[Future[list[SmsReceipt]]]) -> Iterator[BatchResult]:
        for future in done:
            batch = self._in_flight.pop(future, None)
            if batch is None:
                continue  # collected already, while shutting down
            try:
                receipts = future.result()
            except SlowDown as error:
                self._slow_down(batch, error)
            except BaseException as error:
                yield from self._answered_with(batch, error)
            else:
                if self._rate is not None:
                    self._rate.accepted()
                self.ledger.stage(
                    {key: [r.message_id, r.recipient] for key, r in zip(batch.keys, receipts, strict=True)}
                )
                self._marking.answered()
                self.accepted += len(receipts)
                yield BatchResult(tuple(batch.keys), tuple(batch.messages), tuple(receipts))
        self._tick()

    def _answered_with(self, batch: Batch, error: BaseException) -> Iterator[BatchResult]:
        verdict = verdict_for_error(error, after_uncertain=batch.after_uncertain)
        if verdict == "uncertain":
            self.uncertain += len(batch)
            self._marking.settle(len(batch))
            if isinstance(error, SmsUncertainSendError):
                reason = error.reason
                sample = ", ".join(mask_phone(m.recipient) for m in batch.messages[:3])
                self.log.warning("%s Recipients include %s.", error, sample)
            else:
                # An unexpected failure may have happened after the request left: uncertain, and stop.
                reason = f"{type(error).__name__}: {error}"
                self._fatal = self._fatal or error
            yield BatchResult(tuple(batch.keys), tuple(batch.messages), uncertain=reason)
        elif verdict == "refused" and self.isolate and self._fatal is None and isinstance(error, SmsRecipientsRefused):
            yield from self._isolate(batch, error)
        else:
            # Refused (and on_rejected="fail"), or not processed at all: nothing of it went out.
            self._release([batch])
            self._fatal = self._fatal or error

    def _slow_down(self, batch: Batch, error: SlowDown) -> None:
        """
        A 429 to a first attempt: the gateway processed none of it. The rate goes down, and the batch goes
        again at a new slot, after those ready. Its ledger mark stays, rather than being released and
        written again: the ledger reads an entry's marks before its releases, so a release and a new mark
        of the same messages in one write would read back as released, while they may be on the wire.
        """
        assert self._rate is not None and batch.slot is not None
        if self._rate.slow_down(batch.slot, error.retry_after):
            batch.slot = self._rate.reserve(len(batch))
            batch.ready_ahead = False  # the ledger thread counted it out when it first left
            self._ready.append(batch)
            return
        self._release([batch])
        self._fatal = self._fatal or SmsGatewayUnavailable(
            f"{self.hook.provider_name} kept answering 429 (too many requests) at "
            f"{describe(self._rate.floor)} message/s, {self._rate.patience + 1} times in a row; nothing of "
            f"those batches was processed. Connection '{self.hook.sms_conn_id}': ask the gateway about the "
            "account's rate limit, and set max_rate below it."
        )

    def _isolate(self, batch: Batch, error: SmsRecipientsRefused) -> Iterator[BatchResult]:
        """Take a refused batch apart: reject what the gateway refuses, send the rest again ahead of the others."""
        refused, parts, isolation = split_refused(batch, error)
        if self._rate is not None:
            for part in parts:
                part.slot = self._rate.reserve(len(part))
        self._ready.extendleft(reversed(parts))
        if refused is None:
            return
        # Refused messages are released, even after an uncertain attempt: the gateway does not take the number.
        self.ledger.stage(released=refused.keys)
        self._marking.answered()
        self.rejected += len(refused)
        reason = reject_reason(error)
        self.log.warning(
            "%s refused messages of a batch (%s); left out, %d of them: %s.",
            self.hook.provider_name,
            reason,
            len(refused),
            ", ".join(mask_phone(m.recipient) for m in refused.messages[:3]),
        )
        if isolation is not None and isolation.refuse(len(refused)):
            self.log.error(
                "%s refused each of the %d messages of a batch, one by one: the refusal is about the request, "
                "not its recipients. Stopping.",
                self.hook.provider_name,
                isolation.size,
            )
            self._fatal = self._fatal or isolation.error
        yield BatchResult(tuple(refused.keys), tuple(refused.messages), rejected=reason)

    def _release(self, batches: Iterable[Batch]) -> None:
        """Note marked batches that provably did not go out; one resent after an uncertain attempt stays uncertain."""
        for batch in batches:
            if batch.after_uncertain:
                self._marking.settle(len(batch))
            else:
                self.ledger.stage(released=batch.keys)
        self._marking.answered()

    def _shut_down(self, pool: ThreadPoolExecutor) -> BaseException | None:
        """
        Stop marking, release marked batches that never left, answer the ones on the wire, write what is
        left. Whatever stops the loop (a fatal answer, a timeout or SIGTERM raised in this thread, the
        caller closing the stream) ends here. Returns a write's error, if any.
        """
        self._marking.stop()
        write_error: BaseException | None = None
        while True:
            try:
                kind, payload = self._events.get_nowait()
            except queue.Empty:
                break
            if kind == "marked":
                self._ready.extend(payload)
            elif kind == "error":
                write_error = write_error or payload
        self.isolate = False  # a refused batch is released now; a retry takes it apart
        while self._in_flight:
            # Nobody reads results any more, but the ledger still learns them.
            done, _ = wait(self._in_flight, return_when=FIRST_COMPLETED)
            for _ in self._collect(done):
                pass
        pool.shutdown(wait=True)
        self._release(self._ready)
        self._ready.clear()
        try:
            self.ledger.flush()
        except BaseException as error:
            write_error = write_error or error
        return write_error

    def _tick(self) -> None:
        now = time.monotonic()
        if now - self._last_progress >= PROGRESS_SECONDS:
            self._last_progress = now
            rate = self.accepted / max(now - self._started, 1e-9)
            limit = "" if self._rate is None else f", at most {describe(self._rate.rate)}/s now"
            self.log.info(
                "Progress: %d messages accepted, %d uncertain, %d rejected (%.0f messages/s%s).",
                self.accepted,
                self.uncertain,
                self.rejected,
                rate,
                limit,
            )
