"""What ``on_kill`` does to a scheduled campaign: cancel the sends this task scheduled, and say which it could not.

A send with ``send_time`` is accepted at once and leaves the gateway later, so a task killed after it
sent still has texts waiting at the gateway. :class:`ScheduledSends` keeps the ids of those this task
instance had accepted (by earlier tries too, read from the ledger), as 64-bit integers in a
:class:`~.keyset.KeySet` (about 8.5 bytes each: IPPanel's outbox ids are integers), and
:func:`cancel_scheduled` cancels them, several at a time, within a time budget: Airflow's supervisor
follows its SIGTERM (which calls ``on_kill``) with a SIGKILL a few seconds later (5 s in Airflow 3.1
to 3.3). What it could not cancel, or had no time to, is logged with the ids.

A batch on the wire when the task was killed is not in the set (its ids are not known yet): if the
gateway accepted it, it stays scheduled. The log says how many messages that may concern.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any

from airflow_provider_p2psms.campaign.keyset import KeySet

#: Seconds on_kill spends cancelling: under the supervisor's 5 s between SIGTERM and SIGKILL.
CANCEL_BUDGET_SECONDS = 4.0
#: Cancel requests in flight at once.
CANCEL_CONCURRENCY = 32
#: Ids listed in the log line of what could not be cancelled.
LISTED = 20


class ScheduledSends:
    """The ids of the scheduled sends one task instance had accepted."""

    def __init__(self, hook: Any, on_the_wire: int) -> None:
        self.hook = hook
        self.ids = KeySet()
        self.on_the_wire = on_the_wire  # the most messages on the wire at once, whose ids are not known yet

    def note(self, pairs: Any) -> None:
        """Remember accepted ``[message_id, recipient]`` pairs (the ledger's :meth:`stage` calls it)."""
        add = self.ids.add
        for message_id, _ in pairs:
            add(int(message_id))


def watch_scheduled(hook: Any, send_time: Any, ledger: Any, max_concurrency: int) -> ScheduledSends | None:
    """
    For a scheduled send on a gateway that can cancel: the sends to cancel on a kill, earlier tries' among
    them, kept up to date by the ledger. ``None`` otherwise.
    """
    if send_time is None or not getattr(hook, "supports_cancel", False):
        return None
    sends = ScheduledSends(hook, on_the_wire=max_concurrency * hook.batch_size)
    sends.note(pair for _, pair in ledger.sent.items())
    # The ledger learns every accepted batch, those answered while a stopped send shuts down too.
    ledger.watch = sends.note
    return sends


def cancel_scheduled(
    sends: ScheduledSends, log: Any, budget: float = CANCEL_BUDGET_SECONDS
) -> tuple[int, list[tuple[int, str]], int]:
    """
    Cancel every send in ``sends`` within ``budget`` seconds: ``(cancelled, [(id, why not)], not tried)``.

    The outcome is logged: how many were cancelled, the first :data:`LISTED` that were not with the
    gateway's reason, and how many there was no time for.
    """
    hook = sends.hook
    ids = list(sends.ids)
    log.warning(
        "Killed: cancelling the %d sends this task scheduled on %s (send_time), for at most %.0f s.",
        len(ids),
        hook.provider_name,
        budget,
    )
    deadline = time.monotonic() + budget
    failed: list[tuple[int, str]] = []
    cancelled = 0
    pool = ThreadPoolExecutor(max_workers=CANCEL_CONCURRENCY, thread_name_prefix="p2psms-cancel")
    pending = iter(ids)
    running: dict[Any, int] = {}
    tried = 0
    try:
        while True:
            while len(running) < CANCEL_CONCURRENCY and time.monotonic() < deadline:
                outbox_id = next(pending, None)
                if outbox_id is None:
                    break
                running[pool.submit(hook.cancel_scheduled, str(outbox_id))] = outbox_id
                tried += 1
            if not running:
                break
            done, _ = wait(running, timeout=max(0.0, deadline - time.monotonic()), return_when="FIRST_COMPLETED")
            if not done:
                break  # out of time: what is running is not counted as cancelled
            for future in done:
                outbox_id = running.pop(future)
                try:
                    why = future.result()
                except Exception as error:  # a cancel must not hide the others
                    why = f"{type(error).__name__}: {error}"
                if why is None:
                    cancelled += 1
                else:
                    failed.append((outbox_id, why))
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    not_tried = len(ids) - tried + len(running)
    log.warning("Cancelled %d of the %d scheduled sends.", cancelled, len(ids))
    if failed:
        listed = "; ".join(f"{outbox_id}: {why}" for outbox_id, why in failed[:LISTED])
        more = f" (and {len(failed) - LISTED} more)" if len(failed) > LISTED else ""
        log.error("%d scheduled sends could not be cancelled: %s%s.", len(failed), listed, more)
    if not_tried:
        log.error(
            "%d scheduled sends were not cancelled in time; cancel them on the gateway's panel (their ids are in "
            "the ledger and the outcomes table).",
            not_tried,
        )
    if sends.on_the_wire:
        log.error(
            "Up to %d messages were on the wire when the task was stopped: if the gateway accepted them, they "
            "stay scheduled.",
            sends.on_the_wire,
        )
    return cancelled, failed, not_tried
