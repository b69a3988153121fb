"""What the delivery tracking writes into the outcomes table of the send it tracks.

The send writes one row per input row, ``pending`` with the message id and recipient for each accepted
message (:mod:`.outcomes`). The tracking then updates those rows by message id and recipient, through
:class:`DeliveryOutcomes`:

* after each poll, the messages whose status changed in that poll, so each status is written once, with
  the parts the reports gave; a final status with ``final_at`` (when the poll read it) and its price, and
  a failure with the gateway's words as the ``reason``;
* when the wait ends with messages still not final, their last known status with a ``reason`` naming the
  ending (:data:`END_REASONS`). An ending in error writes no reason: the task may be retried, and a
  reason once written stays on the row.

Every write is an update that can be repeated (final statuses are sticky): a rescheduled poke that restored
an older state, or a re-run, writes the same statuses, parts and prices again (a final one with the
``final_at`` of its new reading).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Final

from airflow_provider_p2psms.campaign.outcome_schema import DEFAULT_TABLE, DeliveryUpdate, SendTaskKey
from airflow_provider_p2psms.campaign.tracking import GAVE_UP, TIMEOUT, UNREACHABLE
from airflow_provider_p2psms.exceptions import SmsConfigurationError

if TYPE_CHECKING:
    from airflow_provider_p2psms.campaign.tracking import DeliveryTracker

#: The ``reason`` written for a message still not final when the wait ends, by how it ended.
END_REASONS: Final[Mapping[str, str]] = {
    UNREACHABLE: "no final delivery report before the sensor failed early (min_delivered_ratio out of reach)",
    GAVE_UP: "no final delivery report before the sensor gave up (give_up_after)",
    TIMEOUT: "no final delivery report before the sensor timed out",
}


@dataclass(frozen=True)
class DeliveryOutcomes:
    """
    The rows of one send task instance in an outcomes table, as the delivery tracking updates them.

    :param conn_id: the SQL connection of the table.
    :param table: the table.
    :param task: the send task instance whose rows they are.
    """

    conn_id: str
    table: str
    task: SendTaskKey

    @classmethod
    def resolve(
        cls, receipt: Mapping[str, Any], conn_id: str | None, table: str | None, who: str
    ) -> DeliveryOutcomes | None:
        """
        The table in effect for ``receipt``: ``conn_id`` and ``table`` where given, else the receipt's
        ``outcomes`` (the table the send wrote); ``None`` when there is none.

        :param who: the task, for error messages.
        :raises SmsConfigurationError: a table without a connection, or a receipt without ``task``.
        """
        written = receipt.get("outcomes") or {}
        conn_id = conn_id or written.get("conn_id")
        table = table or written.get("table")
        if not conn_id:
            if table:
                raise SmsConfigurationError(
                    f"{who}: outcomes_table is {table!r} but there is no outcomes_conn_id, and the receipt names "
                    "no outcomes table. Set outcomes_conn_id to the SQL connection of the table."
                )
            return None
        table = table or DEFAULT_TABLE
        task: Any = receipt.get("task")
        try:
            key = SendTaskKey(task["dag_id"], task["run_id"], task["task_id"], int(task.get("map_index", -1)))
        except (TypeError, KeyError, ValueError, AttributeError):
            raise SmsConfigurationError(
                f"{who}: the receipt does not say which send task instance made it (it has no 'task'): it comes "
                f"from an older P2PSmsOperator, so the rows of its messages in outcomes table '{table}' cannot be "
                "found. Run the send again with this version, or leave outcomes_conn_id and outcomes_table unset "
                "on the sensor."
            ) from None
        return cls(conn_id, table, key)

    @classmethod
    def of(cls, conn_id: str | None, table: str | None, task: Mapping[str, Any] | None) -> DeliveryOutcomes | None:
        """From a trigger's plain arguments (see :meth:`task_fields`); ``None`` when there is no table."""
        if not conn_id or not task:
            return None
        return cls(conn_id, table or DEFAULT_TABLE, SendTaskKey(**task))

    def task_fields(self) -> dict[str, Any]:
        """The send task instance as plain data, for a trigger's arguments."""
        return dataclasses.asdict(self.task)

    def changes(self, tracker: DeliveryTracker) -> list[DeliveryUpdate]:
        """The updates of the states that changed since the last call (``record_changes`` trackers)."""
        now = datetime.now(timezone.utc)
        updates = []
        for index, found in tracker.take_changes():
            message_id, recipient = tracker.messages[index][:2]
            final = found.status.is_final
            updates.append(
                DeliveryUpdate(
                    message_id,
                    recipient,
                    found.status.value,
                    final_at=now if final else None,
                    parts=tracker.parts[index] or None,
                    # Only a final report's price is counted in the report: the rows add up to its price.
                    price=found.price if final else None,
                    reason=f"the gateway reported {found.provider_status}" if found.status.is_failure else None,
                )
            )
        return updates

    def end_updates(self, tracker: DeliveryTracker, ending: str) -> Iterator[DeliveryUpdate]:
        """The last known status of every message still not final when the wait ended, with the reason."""
        reason = END_REASONS.get(ending)
        if reason is None:
            return
        for index in tracker.pending:
            message_id, recipient = tracker.messages[index][:2]
            yield DeliveryUpdate(
                message_id, recipient, tracker.statuses[index].value, parts=tracker.parts[index] or None, reason=reason
            )

    def rows(self) -> Iterator[tuple[Any, ...]]:
        """The send's messages with what the table says of them, as :meth:`OutcomesTable.messages_of` reads them."""
        from airflow_provider_p2psms.campaign.outcomes import OutcomesTable

        with OutcomesTable(self.conn_id, self.table) as outcomes:
            yield from outcomes.messages_of(self.task)

    def write(self, updates: Iterable[DeliveryUpdate]) -> int:
        """Apply ``updates`` (streamed, in chunks) on a connection of its own; how many were written."""
        from airflow_provider_p2psms.campaign.outcomes import OutcomesTable

        with OutcomesTable(self.conn_id, self.table) as outcomes:
            return outcomes.update_by_message(self.task, updates)

    def write_changes(self, tracker: DeliveryTracker, log: Any) -> None:
        """Write :meth:`changes`, if any; a table that cannot take them raises."""
        updates = self.changes(tracker)
        if updates:
            log.info("Wrote %d delivery statuses to outcomes table '%s'.", self.write(updates), self.table)

    def write_end(self, tracker: DeliveryTracker, ending: str, log: Any) -> None:
        """
        Write :meth:`end_updates`. The wait's result is known by then and every status was written as it
        changed: a table that cannot take the reasons is logged as a warning, and changes nothing else.
        """
        pending = tracker.pending_count
        if not pending or ending not in END_REASONS:
            return
        try:
            written = self.write(self.end_updates(tracker, ending))
        except Exception as error:
            log.warning(
                "Could not write the last status of %d messages not final to outcomes table '%s': %s",
                pending,
                self.table,
                error,
            )
            return
        log.info("Wrote the last status of %d messages not final to outcomes table '%s'.", written, self.table)
