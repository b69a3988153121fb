"""What the send writes to the outcomes table: one row per input row, as soon as its fate is known.

A row is written when it is read and left out (``invalid``, with its reason, or ``duplicate``), when an
earlier try's ledger says what became of it (``pending`` with its message id, or ``uncertain``), and when
its batch is answered (``pending``, ``uncertain`` or ``rejected``). The resume ledger stays the source of
truth: a retry writes the rows of what an earlier try accepted again, from the ledger, so a row the
earlier try could not write before it died is repaired, while the final statuses the sensor wrote stay
(the table's upsert keeps them, see :mod:`.outcomes`).

Rows are buffered and upserted :data:`~.outcomes.DEFAULT_CHUNK_SIZE` at a time. Rows left out are found
by the thread that reads the source, answers by the one that collects results; a database connection
belongs to the thread that opened it (``sqlite3`` refuses any other), so each thread writes through its
own :class:`~.outcomes.OutcomesTable`. Whatever a thread could not write when it stopped early is written
by :meth:`OutcomeRecorder.close`.
"""

from __future__ import annotations

import contextlib
import itertools
import operator
import threading
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from airflow_provider_p2psms.campaign.outcomes import (
    DEFAULT_CHUNK_SIZE,
    SEND_FIELDS,
    Outcome,
    OutcomesTable,
    SendTaskKey,
)
from airflow_provider_p2psms.campaign.recipients import text_parts

if TYPE_CHECKING:
    from airflow_provider_p2psms.models import BatchResult, OutgoingSms

#: What a retry sets on the row of a message an earlier try sent, from the ledger: its ``sent_at``, its
#: price and what the tracking wrote (reason, ``final_at``) stay as they are.
REPAIR_FIELDS = ("recipient", "gateway", "message_id", "status", "parts")


class OutcomeRecorder:
    """
    Buffers the send's outcome rows and upserts them, per thread.

    :param sql_conn_id: the connection of the outcomes table.
    :param table: the table.
    :param task: the send task instance.
    :param gateway: the gateway's connection type, written in every row.
    :param chunk_size: rows per upsert.
    """

    def __init__(
        self,
        sql_conn_id: str,
        table: str,
        task: SendTaskKey,
        gateway: str,
        *,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
    ) -> None:
        self.sql_conn_id = sql_conn_id
        self.table = table
        self.task = task
        self.gateway = gateway
        self.chunk_size = chunk_size
        self._lock = threading.Lock()
        self._tables: dict[int, OutcomesTable] = {}
        self._buffers: dict[int, list[tuple[Outcome, tuple[str, ...]]]] = {}
        self._owner = threading.get_ident()

    def ensure(self) -> None:
        """Create or check the table, on this (the collecting) thread's connection; call it before reading rows."""
        self._table().ensure()

    # ------------------------------------------------------------------ rows

    def left_out(self, row_key: str, status: str, reason: str, recipient: str | None = None) -> None:
        """A row that is not sent: ``invalid`` (``reason`` says why) or ``duplicate``."""
        self._add(Outcome(row_key, status, recipient=recipient, gateway=self.gateway, reason=reason))

    def answered(self, result: BatchResult) -> None:
        """The rows of one answered batch (or part of one); parts as the gateway counted them, else the text's."""
        now = datetime.now(timezone.utc)
        if result.accepted:
            for message, receipt in zip(result.messages, result.receipts, strict=True):
                if message.row_key is not None:
                    self._add(
                        Outcome(
                            message.row_key,
                            "pending",
                            recipient=receipt.recipient,
                            gateway=self.gateway,
                            message_id=receipt.message_id,
                            parts=receipt.parts if receipt.parts is not None else text_parts(message),
                            price=receipt.price,
                            sent_at=now,
                        )
                    )
            return
        status, reason = (
            ("rejected", result.rejected) if result.rejected is not None else ("uncertain", result.uncertain)
        )
        for message in result.messages:
            if message.row_key is not None:
                self._add(
                    Outcome(message.row_key, status, recipient=message.recipient, gateway=self.gateway, reason=reason)
                )

    def resumed(self, message: OutgoingSms, message_id: str, parts: int) -> None:
        """A row an earlier try had sent (from the ledger): its row is written again, final statuses kept."""
        if message.row_key is not None:
            outcome = Outcome(
                message.row_key,
                "pending",
                recipient=message.recipient,
                gateway=self.gateway,
                message_id=message_id,
                parts=parts,
            )
            # The ledger knows neither when it was sent nor what the tracking learned since: those stay.
            self._add(outcome, REPAIR_FIELDS)

    def uncertain(self, message: OutgoingSms, reason: str) -> None:
        """A row whose message an earlier try left uncertain, and that this try does not resend."""
        if message.row_key is not None:
            self._add(
                Outcome(message.row_key, "uncertain", recipient=message.recipient, gateway=self.gateway, reason=reason)
            )

    # ------------------------------------------------------------------ writing

    def finish_thread(self) -> None:
        """Write what this thread buffered, and close its connection (the reading thread, at its end)."""
        ident = threading.get_ident()
        with self._lock:
            rows = self._buffers.pop(ident, [])
            table = self._tables.pop(ident, None) if ident != self._owner else None
        if rows:
            self._write(self._table(), rows)
        if table is not None:
            table.close()

    def close(self) -> None:
        """Write every buffered row (of any thread) on this thread's connection, and close it."""
        with self._lock:
            leftovers = [row for rows in self._buffers.values() for row in rows]
            self._buffers.clear()
            others = [table for ident, table in self._tables.items() if ident != self._owner]
        try:
            if leftovers:
                self._write(self._table(), leftovers)
        finally:
            for table in others:
                # A connection of a thread that stopped early: sqlite3 refuses to close it from another
                # thread, and the garbage collector closes it.
                with contextlib.suppress(Exception):
                    table.close()
            with self._lock:
                own = self._tables.pop(self._owner, None)
                self._tables.clear()
            if own is not None:
                own.close()

    def _add(self, outcome: Outcome, update: tuple[str, ...] = SEND_FIELDS) -> None:
        ident = threading.get_ident()
        with self._lock:
            rows = self._buffers.setdefault(ident, [])
            rows.append((outcome, update))
            if len(rows) < self.chunk_size:
                return
            self._buffers[ident] = []
        self._write(self._table(), rows)

    def _write(self, table: OutcomesTable, rows: list[tuple[Outcome, tuple[str, ...]]]) -> None:
        for update, group in itertools.groupby(rows, key=operator.itemgetter(1)):
            table.upsert(self.task, [outcome for outcome, _ in group], update=update)

    def _table(self) -> OutcomesTable:
        ident = threading.get_ident()
        with self._lock:
            table = self._tables.get(ident)
            if table is None:
                table = self._tables[ident] = OutcomesTable(self.sql_conn_id, self.table, chunk_size=self.chunk_size)
        return table
