"""What a rescheduled ``P2PSmsDeliverySensor`` keeps between pokes, bounded whatever the campaign's size.

A poke in reschedule mode runs in a fresh process: it needs the states the pokes before it read. When the
receipt keeps its messages in the outcomes table, the table has them (every change is written there after
each poll), and the checkpoint keeps only the poll count and the deadline. Otherwise the checkpoint keeps
the tracker's packed state and parts, and puts them in a detail file of the sensor's task instance when
they are long (:func:`~airflow_provider_p2psms.campaign.detail.spill`), so that the checkpoint stays small.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from airflow_provider_p2psms.campaign.delivery_outcomes import DeliveryOutcomes
    from airflow_provider_p2psms.campaign.stores import KeyValueStore
    from airflow_provider_p2psms.campaign.tracking import DeliveryTracker

#: The checkpoint's key.
STATE_KEY = "p2psms.delivery"


@dataclass
class Progress:
    """What a poke knows: the messages' states, and when to give up (seconds since the epoch)."""

    tracker: DeliveryTracker
    deadline: float | None
    try_number: int | None


def load_progress(
    receipt: Mapping[str, Any],
    outcomes: DeliveryOutcomes | None,
    store: KeyValueStore | None,
    *,
    give_up_after: float | None,
    try_number: int | None,
    log: Any,
) -> Progress:
    """This try's progress: a fresh tracker, brought up to date from the checkpoint ``store`` if given."""
    from airflow_provider_p2psms.campaign.detail import OUTCOMES_REF, unspill
    from airflow_provider_p2psms.campaign.receipt_detail import load_tracker
    from airflow_provider_p2psms.campaign.tracking import DeliveryTracker

    tracker = load_tracker(receipt, outcomes, record_changes=outcomes is not None)
    deadline = None if give_up_after is None else time.time() + give_up_after
    saved = store.get(STATE_KEY) if store is not None else None
    if isinstance(saved, dict):
        try:
            if receipt.get("messages") == OUTCOMES_REF:
                tracker.polls = int(saved.get("polls", 0))  # the statuses came from the table
            else:
                tracker = DeliveryTracker(
                    tracker.messages,
                    state=unspill(saved["state"]) if saved.get("state") else None,
                    polls=int(saved.get("polls", 0)),
                    parts=unspill(saved["parts"]) if saved.get("parts") else None,
                    price=saved.get("price"),
                    record_changes=tracker.record_changes,
                )
        except (ValueError, KeyError, TypeError):
            log.warning("Ignoring a saved delivery state that does not fit this receipt.")
        else:
            if saved.get("try") == try_number and give_up_after is not None:
                deadline = saved.get("deadline") or deadline
    return Progress(tracker, deadline, try_number)


def save_progress(
    store: KeyValueStore, progress: Progress, receipt: Mapping[str, Any], folder_of: Callable[[], Any]
) -> None:
    """
    Keep ``progress`` for the next poke.

    :param folder_of: where long states go (:func:`~airflow_provider_p2psms.campaign.stores.task_folder` of
        the sensor's task instance), asked for only when a state is long.
    """
    from airflow_provider_p2psms.campaign.detail import OUTCOMES_REF, spill

    tracker = progress.tracker
    value: dict[str, Any] = {"polls": tracker.polls, "deadline": progress.deadline, "try": progress.try_number}
    if receipt.get("messages") != OUTCOMES_REF:
        value["state"] = spill(tracker.state(), folder_of, "state.zlib")
        value["parts"] = spill(tracker.packed_parts(), folder_of, "parts.zlib")
        value["price"] = tracker.price
    store.set(STATE_KEY, value)


def forget_progress(store: KeyValueStore) -> None:
    """Delete the checkpoint, and the detail files a long state went to."""
    from airflow_provider_p2psms.campaign.detail import remove_detail

    saved = store.get(STATE_KEY)
    if isinstance(saved, dict):
        for name in ("state", "parts"):
            remove_detail(saved.get(name))
    store.delete(STATE_KEY)
