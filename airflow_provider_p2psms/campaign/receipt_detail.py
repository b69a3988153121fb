"""Read a send receipt's messages wherever they are: inline, in a detail file, or in the outcomes table.

:func:`iter_receipt_messages` is the reader for users (streamed: a million messages never sit in a list);
:func:`load_tracker` builds the sensor's and the trigger's :class:`~.tracking.DeliveryTracker` from the same
places. A receipt whose messages are in its outcomes table gets its statuses from there too: the tracking
writes every change there, so the table is the tracker's state, and nothing per message has to be carried
between pokes or in a trigger's arguments.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from airflow_provider_p2psms.campaign.detail import FILE_REF, OUTCOMES_REF, iter_text
from airflow_provider_p2psms.exceptions import SmsInputError

if TYPE_CHECKING:
    from airflow_provider_p2psms.campaign.delivery_outcomes import DeliveryOutcomes
    from airflow_provider_p2psms.campaign.tracking import DeliveryTracker


def iter_receipt_messages(receipt: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """
    Every ``(message_id, recipient)`` of a send receipt (recipient in the gateway's wire format), in the
    order accepted, read as it goes whatever the campaign's size.

    :param receipt: the send receipt (``send.output`` of a ``P2PSmsOperator``), as a dict.
    """
    messages = receipt.get("messages")
    if messages == OUTCOMES_REF:
        for row in _outcomes(receipt).rows():
            yield str(row[0]), str(row[1])
        return
    if isinstance(messages, str) and messages.startswith(FILE_REF):
        rest = ""
        for piece in iter_text(messages):
            lines = (rest + piece).split("\n")
            rest = lines.pop()
            for line in lines:
                if line:
                    message_id, _, recipient = line.partition(" ")
                    yield message_id, recipient
        if rest:
            message_id, _, recipient = rest.partition(" ")
            yield message_id, recipient
        return
    from airflow_provider_p2psms.models import receipt_messages

    if not isinstance(messages, str | list):
        raise SmsInputError("This is not a send receipt: it has no 'messages'.")
    for message_id, recipient in receipt_messages(messages):
        yield message_id, recipient


def load_tracker(
    receipt: Mapping[str, Any], outcomes: DeliveryOutcomes | None, *, record_changes: bool = False
) -> DeliveryTracker:
    """
    The tracker of ``receipt``'s messages: from the outcomes table, with the statuses written there, when
    the receipt keeps its messages there; else from the receipt (inline, or its detail file), all pending.

    :raises SmsInputError: the table has another number of this send's messages than the receipt says.
    """
    from airflow_provider_p2psms.campaign.tracking import DeliveryTracker

    messages = receipt.get("messages")
    if messages != OUTCOMES_REF:
        return DeliveryTracker(messages, record_changes=record_changes)  # type: ignore[arg-type]
    table = outcomes if outcomes is not None else _outcomes(receipt)
    tracker = DeliveryTracker.from_rows(table.rows(), record_changes=record_changes)
    expected = (receipt.get("counts") or {}).get("sent")
    if expected is not None and tracker.total != int(expected):
        raise SmsInputError(
            f"The receipt says its send had {expected} messages accepted, and outcomes table '{table.table}' on "
            f"connection '{table.conn_id}' has {tracker.total} rows of that send with a message id: the rows were "
            "changed or removed since. Restore the table, or track a fresh send."
        )
    return tracker


def _outcomes(receipt: Mapping[str, Any]) -> DeliveryOutcomes:
    from airflow_provider_p2psms.campaign.delivery_outcomes import DeliveryOutcomes

    found = DeliveryOutcomes.resolve(receipt, None, None, "Reading the receipt's messages")
    if found is None:
        raise SmsInputError(
            "The receipt says its messages are in its outcomes table, but it names no outcomes table "
            "('outcomes' is empty): it was changed after the send."
        )
    return found
