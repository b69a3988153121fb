"""What a row of the outcomes table is, and the SQL that creates and writes the table on each database.

Text only: nothing here opens a connection (:mod:`.outcomes` does). The rows are plain frozen dataclasses;
the statements are built from :data:`COLUMNS` and bound in that order, so the DDL, the writes and the
checks of an existing table cannot drift apart.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from enum import Enum
from typing import Any, Final

from airflow_provider_p2psms.exceptions import SmsConfigurationError, SmsInputError
from airflow_provider_p2psms.models import DeliveryStatus

#: The table's name when none is given.
DEFAULT_TABLE: Final = "p2psms_outcomes"

#: The send task instance a row belongs to.
TASK_COLUMNS: Final = ("dag_id", "run_id", "task_id", "map_index")
#: What a row says about its input row.
ROW_COLUMNS: Final = (
    "row_key",
    "recipient",
    "gateway",
    "message_id",
    "status",
    "parts",
    "price",
    "reason",
    "sent_at",
    "final_at",
)
#: Every column, in the order the writes bind them.
COLUMNS: Final = (*TASK_COLUMNS, *ROW_COLUMNS)
#: The UNIQUE key of the table.
KEY_COLUMNS: Final = (*TASK_COLUMNS, "row_key")

#: The statuses a row may have. The column itself is free text (no check constraint), so that a new
#: status needs no migration of users' tables; the writes check against this list.
STATUSES: Final = (
    "pending",
    "sent",
    "delivered",
    "failed",
    "blacklisted",
    "rejected",
    "uncertain",
    "unknown",
    "invalid",
    "duplicate",
    "excluded",
)
#: What the gateway finally said about a message (see :func:`upsert_sql` for when a write replaces one).
FINAL_STATUSES: Final = tuple(status.value for status in DeliveryStatus if status.is_final)
#: What a send sets on a row that exists, by default: every column but the key. A write that the sticky
#: rule lets through (see :func:`upsert_sql`) is about the row's current message, so nothing of an
#: earlier message (its ``final_at``, its ``reason``) should stay.
SEND_FIELDS: Final = ROW_COLUMNS[1:]

#: Longest values of the VARCHAR columns. MySQL indexes VARCHAR columns, not TEXT, and the keys fit its
#: 3,072-byte limit at these lengths; Airflow's own ids are at most 250 characters long.
MAX_LENGTHS: Final[Mapping[str, int]] = {
    "dag_id": 250,
    "run_id": 250,
    "task_id": 250,
    "row_key": 250,
    "recipient": 32,
    "gateway": 32,
    "message_id": 100,
}

SQLITE: Final = "sqlite"
POSTGRESQL: Final = "postgresql"
MYSQL: Final = "mysql"
#: SQLAlchemy dialect names (``DbApiHook.dialect_name``) to the upsert syntax they take.
DIALECTS: Final[Mapping[str, str]] = {
    "sqlite": SQLITE,
    "postgresql": POSTGRESQL,
    "postgres": POSTGRESQL,
    "mysql": MYSQL,
    "mariadb": MYSQL,
}
#: The databases the table can be written to, for error messages.
SUPPORTED_DATABASES: Final = "SQLite 3.24+, PostgreSQL 9.5+ and MySQL/MariaDB"

_DDL = """\
CREATE TABLE IF NOT EXISTS {table} (
    dag_id VARCHAR(250){binary} NOT NULL,
    run_id VARCHAR(250){binary} NOT NULL,
    task_id VARCHAR(250){binary} NOT NULL,
    map_index INTEGER NOT NULL,
    row_key VARCHAR(250){binary} NOT NULL,
    recipient VARCHAR(32),
    gateway VARCHAR(32),
    message_id VARCHAR(100){binary},
    status VARCHAR(16) NOT NULL,
    parts INTEGER,
    price DOUBLE PRECISION,
    reason TEXT,
    sent_at VARCHAR(32),
    final_at VARCHAR(32),
    UNIQUE (dag_id, run_id, task_id, map_index, row_key){index}
)"""
_MESSAGE_INDEX = "(dag_id, run_id, task_id, map_index, message_id)"
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?")
_FINAL_LIST = ", ".join(f"'{status}'" for status in FINAL_STATUSES)


def check_table_name(table: str) -> None:
    """Refuse a table name that is not a plain, optionally schema-qualified, SQL identifier."""
    # The name goes into SQL text: a plain identifier can never carry SQL.
    if not _IDENTIFIER.fullmatch(table):
        raise SmsConfigurationError(
            f"Outcomes table name {table!r} is not a plain SQL identifier: use letters, digits and "
            "underscores, optionally after a schema and a dot (crm.sms_outcomes)."
        )


def outcomes_ddl(table: str = DEFAULT_TABLE, dialect: str = POSTGRESQL) -> list[str]:
    """
    The statements that create the outcomes table and its index, when missing.

    The same text serves SQLite and PostgreSQL. MySQL gets the index inside ``CREATE TABLE`` (it has no
    ``CREATE INDEX IF NOT EXISTS``) and binary ``utf8mb3`` ids, as Airflow's own tables on MySQL have:
    case-sensitive like the other databases, and short enough for its index limit.
    Timestamps are ISO-8601 UTC text (``2026-01-31T08:30:00.000000Z``): one type on every database, in
    an order that sorts by time, and read with ``CAST(sent_at AS TIMESTAMPTZ)`` or ``datetime(sent_at)``.
    The index serves the delivery updates, which find rows by message id.

    :param table: the table, optionally schema-qualified (``crm.sms_outcomes``); default ``p2psms_outcomes``.
    :param dialect: ``"postgresql"`` (default), ``"sqlite"`` or ``"mysql"``.
    """
    check_table_name(table)
    index = table.rpartition(".")[2] + "_by_message"
    if DIALECTS.get(dialect) == MYSQL:
        binary = " CHARACTER SET utf8mb3 COLLATE utf8mb3_bin"
        return [_DDL.format(table=table, binary=binary, index=f",\n    INDEX {index} {_MESSAGE_INDEX}")]
    return [
        _DDL.format(table=table, binary="", index=""),
        f"CREATE INDEX IF NOT EXISTS {index} ON {table} {_MESSAGE_INDEX}",
    ]


#: The documented DDL of the default table, on SQLite and PostgreSQL.
OUTCOMES_DDL: Final = ";\n".join(outcomes_ddl()) + ";"


def upsert_sql(table: str, dialect: str, placeholder: str, update: Sequence[str]) -> str:
    """
    The statement that inserts a row of :data:`COLUMNS`, or sets ``update`` on the row with its key.

    A row whose stored status is final is left whole by a row whose status is not final, unless that row
    brings another message id: a new message sent for the row (a resend after a refusal, or a new run of
    a cleared task) starts over, while a rewrite of the same message, or a row without one, does not.

    :param table: the table.
    :param dialect: ``"sqlite"``, ``"postgresql"`` or ``"mysql"``.
    :param placeholder: the driver's parameter placeholder, ``?`` or ``%s``.
    :param update: the columns to set on an existing row; empty: leave it as it is.
    """
    columns, values = ", ".join(COLUMNS), ", ".join([placeholder] * len(COLUMNS))
    if dialect == MYSQL:
        insert = f"INSERT INTO {table} ({columns}) VALUES ({values}) ON DUPLICATE KEY UPDATE"
        if not update:
            return f"{insert} row_key = row_key"
        keep = _keeps_final("", lambda column: f"VALUES({column})")
        # MySQL has no WHERE here and assigns left to right, each guard seeing the assignments before it:
        # status and message_id go last, in that order. Every guard before them reads the stored row; once
        # status is set to the new one, the guard contradicts itself (new status final and not), so it is
        # false for message_id exactly when it was false for status.
        ordered = sorted(update, key=_mysql_order)
        return f"{insert} " + ", ".join(f"{column} = IF({keep}, {column}, VALUES({column}))" for column in ordered)
    insert = f"INSERT INTO {table} AS stored ({columns}) VALUES ({values}) ON CONFLICT ({', '.join(KEY_COLUMNS)})"
    if not update:
        return f"{insert} DO NOTHING"
    sets = ", ".join(f"{column} = excluded.{column}" for column in update)
    keep = _keeps_final("stored.", lambda column: f"excluded.{column}")
    return f"{insert} DO UPDATE SET {sets} WHERE NOT ({keep})"


def _keeps_final(stored: str, new: Callable[[str], str]) -> str:
    """True where the stored row is final, the new one is not, and it brings no other message id."""
    return (
        f"{stored}status IN ({_FINAL_LIST}) AND {new('status')} NOT IN ({_FINAL_LIST}) AND "
        f"({new('message_id')} IS NULL OR {new('message_id')} = COALESCE({stored}message_id, ''))"
    )


def _mysql_order(column: str) -> int:
    return {"status": 1, "message_id": 2}.get(column, 0)


def update_sql(table: str, placeholder: str) -> str:
    """
    The statement that applies a delivery update (bound as :func:`update_params` returns) to the rows of
    one task instance with its message id and recipient. ``None`` values keep what a row has; a non-final
    status leaves a final row alone.
    """
    p = placeholder
    return (
        f"UPDATE {table} SET status = {p}, final_at = COALESCE({p}, final_at), parts = COALESCE({p}, parts), "
        f"price = COALESCE({p}, price), reason = COALESCE({p}, reason) WHERE dag_id = {p} AND run_id = {p} "
        f"AND task_id = {p} AND map_index = {p} AND message_id = {p} AND recipient = {p} "
        f"AND (status NOT IN ({_FINAL_LIST}) OR {p} = 1)"
    )


def key_check_sql(table: str) -> str:
    """An upsert of no rows: it fails where the table has no UNIQUE key on :data:`KEY_COLUMNS` (not MySQL)."""
    nulls = ", ".join(["NULL"] * len(COLUMNS))
    return (
        f"INSERT INTO {table} ({', '.join(COLUMNS)}) SELECT {nulls} WHERE 1 = 0 "
        f"ON CONFLICT ({', '.join(KEY_COLUMNS)}) DO NOTHING"
    )


@dataclass(frozen=True, slots=True)
class SendTaskKey:
    """
    The send task instance whose outcomes a write is about.

    :param dag_id: its DAG.
    :param run_id: its DAG run.
    :param task_id: the send task.
    :param map_index: its map index; ``-1`` when not mapped (Airflow's own convention).
    """

    dag_id: str
    run_id: str
    task_id: str
    map_index: int = -1

    @classmethod
    def from_context(cls, context: Mapping[str, Any]) -> SendTaskKey:
        """The running task instance's key, from its task context."""
        ti = context["ti"]
        map_index = getattr(ti, "map_index", None)
        return cls(ti.dag_id, ti.run_id, ti.task_id, -1 if map_index is None else int(map_index))

    def params(self) -> tuple[Any, ...]:
        """The key's values in the order of :data:`TASK_COLUMNS`."""
        for column in ("dag_id", "run_id", "task_id"):
            _check_length(column, getattr(self, column), "")
        return (self.dag_id, self.run_id, self.task_id, int(self.map_index))


@dataclass(frozen=True, slots=True)
class Outcome:
    """
    One row of the table, as the send writes it.

    :param row_key: the input row's key, unique within the task instance (at most 250 characters).
    :param status: one of :data:`STATUSES`.
    :param recipient: the number in wire format; ``None`` when the row had no usable number.
    :param gateway: the connection type of the gateway it went through.
    :param message_id: the gateway's message id (IPPanel's integer outbox ids are stored as text).
    :param parts: SMS parts; ``None`` until known.
    :param price: the price; ``None`` until known.
    :param reason: why it was not sent or not delivered, in words a user can act on.
    :param sent_at: when the gateway accepted it (timezone-aware).
    :param final_at: when its status became final (timezone-aware).
    """

    row_key: str
    status: str
    recipient: str | None = None
    gateway: str | None = None
    message_id: str | int | None = None
    parts: int | None = None
    price: float | None = None
    reason: str | None = None
    sent_at: datetime | None = None
    final_at: datetime | None = None

    def params(self) -> tuple[Any, ...]:
        """The row's values in the order of :data:`ROW_COLUMNS`, checked and converted for any driver."""
        key = self.row_key
        _check_length("row_key", key, key)
        message_id = None if self.message_id is None else str(self.message_id)
        for column, value in (("recipient", self.recipient), ("gateway", self.gateway), ("message_id", message_id)):
            _check_length(column, value, key)
        return (
            key,
            self.recipient,
            self.gateway,
            message_id,
            _status(self.status, f"row {key!r}"),
            None if self.parts is None else int(self.parts),
            None if self.price is None else float(self.price),
            self.reason,
            _timestamp(self.sent_at, "sent_at", f"row {key!r}"),
            _timestamp(self.final_at, "final_at", f"row {key!r}"),
        )


@dataclass(frozen=True, slots=True)
class DeliveryUpdate:
    """
    What the delivery tracking learned about one message to one recipient. A field left ``None`` keeps
    what the row has.

    :param message_id: the gateway's message id, as the send stored it.
    :param recipient: the number in wire format, as the send stored it.
    :param status: one of :data:`STATUSES`.
    :param final_at: when the status became final (timezone-aware).
    :param parts: SMS parts, if the report says.
    :param price: the price, if the report says.
    :param reason: why it was not delivered.
    """

    message_id: str | int
    recipient: str
    status: str
    final_at: datetime | None = None
    parts: int | None = None
    price: float | None = None
    reason: str | None = None


def update_params(update: DeliveryUpdate, task: tuple[Any, ...]) -> tuple[Any, ...]:
    """The parameters of :func:`update_sql` for one update of the task instance with ``task`` params."""
    message_id = str(update.message_id)
    status = _status(update.status, f"message {message_id}")
    return (
        status,
        _timestamp(update.final_at, "final_at", f"message {message_id}"),
        None if update.parts is None else int(update.parts),
        None if update.price is None else float(update.price),
        update.reason,
        *task,
        message_id,
        update.recipient,
        int(status in FINAL_STATUSES),
    )


def _check_length(column: str, value: str | None, row: str) -> None:
    if value is not None and len(value) > MAX_LENGTHS[column]:
        where = f" of row {row[:40]!r}" if row and column != "row_key" else ""
        raise SmsInputError(
            f"Outcomes: the {column}{where} is {len(value)} characters long; the table takes at most "
            f"{MAX_LENGTHS[column]}."
        )


def _status(status: str, what: str) -> str:
    value = status.value if isinstance(status, Enum) else status
    if value not in STATUSES:
        raise SmsInputError(f"Outcomes: status {value!r} of {what} is not one of {', '.join(STATUSES)}.")
    return str(value)


def _timestamp(value: datetime | None, column: str, what: str) -> str | None:
    if value is None:
        return None
    if value.utcoffset() is None:
        raise SmsInputError(f"Outcomes: {column} of {what} is a naive datetime; pass a timezone-aware one.")
    return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
