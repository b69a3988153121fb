"""The outcomes table: one row per input row of a campaign, in the user's own database.

A row says what became of one recipient row of one send task instance: the number it was sent to, the
gateway's message id, the status (``pending`` when accepted, then what the delivery reports say, or why it
was never sent), parts, price, and when it was sent and became final. It is keyed by the send task
instance (``dag_id``, ``run_id``, ``task_id``, ``map_index``) and the row's ``row_key``.

Two sides write it, through one :class:`OutcomesTable` each:

* the **send** writes every row once it knows its fate, by upsert (:meth:`OutcomesTable.upsert`): a
  retried send writes the same keys again, and must update them in place, never delete and re-insert;
* the **delivery tracking** knows message ids and recipients, not row keys, and updates by them
  (:meth:`OutcomesTable.update_by_message`). IPPanel gives the recipients of one text in a batch one
  message id; it is stored as is, and the recipient tells the rows apart.

**Final statuses are sticky.** ``delivered``, ``failed``, ``blacklisted`` and ``rejected`` are what the
gateway finally said about a row's message. A write whose own status is not final leaves such a row whole
(message id, times and price stay with the final status) unless it is about another message:

* a send retry rewrites ``pending``, the same message ids and ``sent_at`` for what an earlier try had
  accepted: the final statuses the tracking wrote stay;
* a late or repeated poll that reads ``sent`` cannot undo ``delivered`` (same message, not final);
* a row with no message id (``uncertain``, ``excluded``, ...) does not replace a final one;
* but a row sent again with a new message id (a retry sends what the gateway refused in an earlier try;
  a cleared task sends afresh) starts over as ``pending``, so that the tracking finds it by that id.

A write with a final status always applies. Which columns an upsert sets is the caller's choice
(``update``); a delivery update leaves a column alone when its new value is ``None``.

Writes stream: rows are taken from an iterable ``chunk_size`` at a time, written with one
``executemany`` and committed, one transaction per chunk. The statements are SQLite's and PostgreSQL's
``INSERT ... ON CONFLICT (...) DO UPDATE`` (SQLite 3.24+, PostgreSQL 9.5+) and MySQL's and MariaDB's
``INSERT ... ON DUPLICATE KEY UPDATE``; any other database is refused with a clear error.

The rows (:class:`Outcome`, :class:`DeliveryUpdate`), the DDL (:func:`outcomes_ddl`) and the statements
live in :mod:`.outcome_schema`; this module re-exports what a caller needs.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator
from contextlib import closing
from itertools import islice
from typing import Any, Final

from airflow_provider_p2psms.campaign.outcome_schema import (
    COLUMNS,
    DEFAULT_TABLE,
    FINAL_STATUSES,
    KEY_COLUMNS,
    MYSQL,
    OUTCOMES_DDL,
    ROW_COLUMNS,
    SEND_FIELDS,
    SQLITE,
    STATUSES,
    TASK_COLUMNS,
    DeliveryUpdate,
    Outcome,
    SendTaskKey,
    check_table_name,
    key_check_sql,
    outcomes_ddl,
    update_params,
    update_sql,
    upsert_sql,
)
from airflow_provider_p2psms.campaign.sql_table import SqlTable, describe_error
from airflow_provider_p2psms.exceptions import P2PSmsError, SmsConfigurationError

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_TABLE",
    "FINAL_STATUSES",
    "OUTCOMES_DDL",
    "SEND_FIELDS",
    "STATUSES",
    "DeliveryUpdate",
    "Outcome",
    "OutcomesTable",
    "SendTaskKey",
    "outcomes_ddl",
]

#: Rows per ``executemany`` and per transaction.
DEFAULT_CHUNK_SIZE: Final = 1000


class OutcomesTable(SqlTable):
    """
    The outcomes table behind an Airflow SQL connection (any whose hook is a common-sql ``DbApiHook``).

    It keeps one database connection (the hook's ``get_conn()``) from its first use until :meth:`close`;
    use it as a context manager. Call :meth:`ensure` first. On SQLite, :meth:`ensure` switches the file to
    WAL journal mode (a lasting setting of the file) so that a campaign can read its recipients from the
    same file while its outcomes are written: in the default journal mode, an open read blocks every
    commit. Switching needs a moment with no open read, so call :meth:`ensure` before reading.

    :param sql_conn_id: the Airflow connection of the database.
    :param table: the table, optionally schema-qualified; default ``p2psms_outcomes``.
    :param chunk_size: rows per ``executemany`` and per transaction; default 1,000.
    """

    kind = "outcomes table"

    def __init__(self, sql_conn_id: str, table: str = DEFAULT_TABLE, *, chunk_size: int = DEFAULT_CHUNK_SIZE) -> None:
        check_table_name(table)
        if chunk_size < 1:
            raise SmsConfigurationError(f"chunk_size of the outcomes table must be at least 1, got {chunk_size}.")
        super().__init__(sql_conn_id, table)
        self.chunk_size = chunk_size

    def ddl(self) -> list[str]:
        """The statements :meth:`ensure` runs on this database when the table is missing."""
        return outcomes_ddl(self.table, self.dialect)

    def ensure(self) -> None:
        """
        Create the table and its index when missing; when present, check that it can take the writes.

        :raises SmsConfigurationError: naming the connection, the table and every missing column, or the
            missing UNIQUE key (not checked on MySQL, whose upsert names no key).
        """
        connection = self._connect()
        if self.dialect == SQLITE:
            self._use_wal()
        columns, error = self._columns()
        if columns is None:
            try:
                with closing(connection.cursor()) as cursor:
                    for statement in self.ddl():
                        cursor.execute(statement)
                connection.commit()
            except Exception as create_error:
                connection.rollback()
                raise self._config_error(f"could not be created ({describe_error(create_error)})") from None
            columns, error = self._columns()
            if columns is None:
                raise self._config_error(f"cannot be read ({describe_error(error)})")
        missing = [column for column in COLUMNS if column not in columns]
        if missing:
            raise self._config_error(
                f"lacks the column{'s' if len(missing) > 1 else ''} {', '.join(missing)}. Add "
                f"{'them' if len(missing) > 1 else 'it'} as in outcomes_ddl(), or name another table"
            )
        if self.dialect != MYSQL:
            self._check_key()

    def upsert(self, task: SendTaskKey, outcomes: Iterable[Outcome], *, update: Collection[str] = SEND_FIELDS) -> int:
        """
        Insert each row, or update the row with its key in place; return how many rows were written.

        :param task: the send task instance the rows belong to.
        :param outcomes: the rows, read ``chunk_size`` at a time (a generator is never held whole).
        :param update: the columns to set on a row that exists; default :data:`SEND_FIELDS`. Empty: a
            row that exists is left as it is. A row whose stored status is final is only updated by an
            outcome whose own status is final, or that brings another message id (see the module docstring).
        """
        if isinstance(update, str):
            update = (update,)
        unknown = sorted(set(update) - set(ROW_COLUMNS[1:]))
        if unknown:
            raise SmsConfigurationError(
                f"Outcomes upsert: cannot update {', '.join(unknown)}; the columns are {', '.join(ROW_COLUMNS[1:])}."
            )
        fixed = task.params()
        rows = ((*fixed, *outcome.params()) for outcome in outcomes)
        columns = [column for column in ROW_COLUMNS if column in update]
        return self._write(upsert_sql(self.table, self.dialect, self._parameter(), columns), rows)

    def update_by_message(self, task: SendTaskKey, updates: Iterable[DeliveryUpdate]) -> int:
        """
        Update the rows of ``task`` sent to each update's message id and recipient; return how many
        updates were applied to the database (rows that match none are left alone).

        :param task: the send task instance the messages were sent by.
        :param updates: what the tracking learned, read ``chunk_size`` at a time.
        """
        fixed = task.params()
        rows = (update_params(update, fixed) for update in updates)
        return self._write(update_sql(self.table, self._parameter()), rows)

    def messages_of(self, task: SendTaskKey) -> Iterator[tuple[Any, ...]]:
        """
        The messages ``task`` sent, as ``(message_id, recipient, status, parts, price)`` rows, streamed in
        ``chunk_size`` pieces, in the order they were accepted (``sent_at``, then message id and recipient).
        """
        placeholder = self._parameter()
        where = " AND ".join(f"{column} = {placeholder}" for column in TASK_COLUMNS)
        sql = (
            f"SELECT message_id, recipient, status, parts, price FROM {self.table} "
            f"WHERE {where} AND message_id IS NOT NULL ORDER BY sent_at, message_id, recipient"
        )
        connection = self._connect()
        with closing(connection.cursor()) as cursor:
            try:
                cursor.execute(sql, task.params())
            except Exception as error:
                connection.rollback()
                raise P2PSmsError(
                    f"Reading the messages of task '{task.task_id}' from outcomes table '{self.table}' on "
                    f"connection '{self.sql_conn_id}' failed: {describe_error(error)}."
                ) from None
            while chunk := cursor.fetchmany(self.chunk_size):
                yield from chunk
        connection.rollback()  # a read: end its transaction, so no snapshot is held open

    def _write(self, sql: str, rows: Iterator[tuple[Any, ...]]) -> int:
        connection = self._connect()
        written = 0
        with closing(connection.cursor()) as cursor:
            while chunk := list(islice(rows, self.chunk_size)):
                try:
                    cursor.executemany(sql, chunk)
                    connection.commit()
                except Exception as error:
                    connection.rollback()
                    raise P2PSmsError(
                        f"Writing outcomes to table '{self.table}' on connection '{self.sql_conn_id}' failed "
                        f"after {written} rows: {describe_error(error)}. The rows written before are committed; "
                        "writing them again updates them in place."
                    ) from None
                written += len(chunk)
        return written

    def _use_wal(self) -> None:
        mode = str(self._cursor_run("PRAGMA journal_mode")[0]).lower()
        if mode not in ("wal", "memory"):
            try:
                self._cursor_run("PRAGMA journal_mode = WAL")
            except Exception as error:
                raise P2PSmsError(
                    f"Switching the SQLite file of connection '{self.sql_conn_id}' to WAL journal mode failed: "
                    f"{describe_error(error)}. It needs a moment with no open read: make sure nothing reads the file "
                    "while the outcomes table is set up (ensure() runs before the recipients are read)."
                ) from None

    def _columns(self) -> tuple[set[str] | None, Exception | None]:
        connection = self._connect()
        try:
            with closing(connection.cursor()) as cursor:
                cursor.execute(f"SELECT * FROM {self.table} WHERE 1 = 0")
                names = {str(column[0]).lower() for column in cursor.description or ()}
            connection.rollback()
            return names, None
        except Exception as error:
            connection.rollback()
            return None, error

    def _check_key(self) -> None:
        connection = self._connect()
        keys = ", ".join(KEY_COLUMNS)
        sql = key_check_sql(self.table)
        try:
            with closing(connection.cursor()) as cursor:
                cursor.execute(sql)
        except Exception as error:
            raise self._config_error(
                f"does not take an upsert ({describe_error(error)}): it needs a UNIQUE key on ({keys}), made with "
                f"CREATE UNIQUE INDEX {self.table.rpartition('.')[2]}_key ON {self.table} ({keys}), and the "
                "right to insert"
            ) from None
        finally:
            connection.rollback()
