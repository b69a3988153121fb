"""The opt-out table: the numbers that asked for no more texts, in the user's own database.

One row per number, its key (``PRIMARY KEY``): the number in E.164 form (``+989121234567``) whatever the
gateway or the spelling it came in, the gateway and the account line the reply reached, the opt-out word
it was (as configured, never the reply's own text), the first and the last time such a reply came, and
the gateway's id of the last one. Timestamps are ISO-8601 UTC text, as in the outcomes table
(:mod:`.outcome_schema`), so that one type serves every database and text order is time order.

Writes are upserts, and they commute: ``first_seen`` only moves back, ``last_seen`` only forward, and
the word, line, gateway and reply id follow the latest reply. Writing the same replies twice, or older
ones after newer ones, leaves the same row; that is what lets a reader of the inbox re-read after a crash.
The statements are SQLite's and PostgreSQL's ``INSERT ... ON CONFLICT (number) DO UPDATE`` (SQLite 3.24+,
PostgreSQL 9.5+) and MySQL's and MariaDB's ``INSERT ... ON DUPLICATE KEY UPDATE``.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import closing
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Final

from airflow_provider_p2psms.campaign.outcome_schema import (
    DIALECTS,
    MYSQL,
    POSTGRESQL,
    SQLITE,
    check_table_name,
)
from airflow_provider_p2psms.campaign.sql_table import SqlTable, describe_error
from airflow_provider_p2psms.exceptions import P2PSmsError, SmsConfigurationError
from airflow_provider_p2psms.utils.phone import mask_numbers_in_text

#: The table's name when none is given.
DEFAULT_TABLE: Final = "p2psms_opt_outs"
#: Every column, in the order the writes bind them.
COLUMNS: Final = ("number", "gateway", "line", "keyword", "first_seen", "last_seen", "last_reply_id")
#: The longest opt-out word the ``keyword`` column takes.
MAX_KEYWORD_LENGTH: Final = 64

_DDL = """\
CREATE TABLE IF NOT EXISTS {table} (
    number VARCHAR(32) NOT NULL PRIMARY KEY,
    gateway VARCHAR(32) NOT NULL,
    line VARCHAR(32),
    keyword VARCHAR(64) NOT NULL,
    first_seen VARCHAR(32) NOT NULL,
    last_seen VARCHAR(32) NOT NULL,
    last_reply_id VARCHAR(100)
){options}"""
#: Set from the latest reply, so assigned before ``last_seen`` (MySQL assigns left to right).
_LATEST: Final = ("gateway", "line", "keyword", "last_reply_id")


def check_opt_out_table_name(table: str) -> None:
    """Refuse a table name that is not a plain, optionally schema-qualified, SQL identifier."""
    try:
        check_table_name(table)
    except SmsConfigurationError:
        raise SmsConfigurationError(
            f"Opt-out table name {table!r} is not a plain SQL identifier: use letters, digits and "
            "underscores, optionally after a schema and a dot (crm.sms_opt_outs)."
        ) from None


def opt_outs_ddl(table: str = DEFAULT_TABLE, dialect: str = POSTGRESQL) -> str:
    """
    The statement that creates the opt-out table when missing: one text for SQLite and PostgreSQL; MySQL's
    declares ``utf8mb4``, for the Persian words.

    :param table: the table, optionally schema-qualified; default ``p2psms_opt_outs``.
    :param dialect: ``"postgresql"`` (default), ``"sqlite"`` or ``"mysql"``.
    """
    check_opt_out_table_name(table)
    options = " DEFAULT CHARSET=utf8mb4" if DIALECTS.get(dialect) == MYSQL else ""
    return _DDL.format(table=table, options=options)


#: The documented DDL of the default table, on SQLite and PostgreSQL.
OPT_OUTS_DDL: Final = opt_outs_ddl() + ";"


def upsert_sql(table: str, dialect: str, placeholder: str) -> str:
    """
    The statement that inserts a row of :data:`COLUMNS`, or merges it into the row of its number.

    :param table: the table.
    :param dialect: ``"sqlite"``, ``"postgresql"`` or ``"mysql"``.
    :param placeholder: the driver's parameter placeholder, ``?`` or ``%s``.
    """
    columns, values = ", ".join(COLUMNS), ", ".join([placeholder] * len(COLUMNS))
    if dialect == MYSQL:
        latest = [f"{c} = IF(VALUES(last_seen) >= last_seen, VALUES({c}), {c})" for c in _LATEST]
        times = [
            "first_seen = LEAST(first_seen, VALUES(first_seen))",
            "last_seen = GREATEST(last_seen, VALUES(last_seen))",
        ]
        return f"INSERT INTO {table} ({columns}) VALUES ({values}) ON DUPLICATE KEY UPDATE {', '.join(latest + times)}"
    least, greatest = ("MIN", "MAX") if dialect == SQLITE else ("LEAST", "GREATEST")
    latest = [
        f"{c} = CASE WHEN excluded.last_seen >= stored.last_seen THEN excluded.{c} ELSE stored.{c} END" for c in _LATEST
    ]
    times = [
        f"first_seen = {least}(stored.first_seen, excluded.first_seen)",
        f"last_seen = {greatest}(stored.last_seen, excluded.last_seen)",
    ]
    return (
        f"INSERT INTO {table} AS stored ({columns}) VALUES ({values}) "
        f"ON CONFLICT (number) DO UPDATE SET {', '.join(latest + times)}"
    )


@dataclass(frozen=True, slots=True)
class OptOut:
    """
    One opt-out reply, as the table takes it.

    :param number: the sender, in E.164 form (``+989121234567``).
    :param gateway: the connection type of the gateway that received it.
    :param keyword: the opt-out word it was, as configured (at most 64 characters).
    :param seen_at: when it arrived (timezone-aware).
    :param reply_id: the gateway's id of the reply.
    :param line: the account line it reached, if known.
    """

    number: str
    gateway: str
    keyword: str
    seen_at: datetime
    reply_id: str
    line: str | None = None


def merge(opt_outs: Sequence[OptOut]) -> list[tuple[Any, ...]]:
    """The rows of :data:`COLUMNS` for ``opt_outs``, one per number: earliest and latest time, latest reply."""
    rows: dict[str, list[Any]] = {}
    for opt_out in sorted(opt_outs, key=lambda o: o.seen_at):
        seen = _timestamp(opt_out.seen_at)
        latest = [opt_out.gateway, (opt_out.line or "")[:32] or None, opt_out.keyword]
        row = rows.get(opt_out.number)
        if row is None:
            rows[opt_out.number] = [opt_out.number, *latest, seen, seen, opt_out.reply_id]
        else:
            row[1:4], row[5], row[6] = latest, seen, opt_out.reply_id
    return [tuple(row) for row in rows.values()]


class OptOutTable(SqlTable):
    """
    The opt-out table behind an Airflow SQL connection (any whose hook is a common-sql ``DbApiHook``).

    It keeps one database connection from its first use until :meth:`close`; use it as a context manager,
    and call :meth:`ensure` first.

    :param sql_conn_id: the Airflow connection of the database.
    :param table: the table, optionally schema-qualified (not on SQLite); default ``p2psms_opt_outs``.
    """

    kind = "opt-out table"

    def __init__(self, sql_conn_id: str, table: str = DEFAULT_TABLE) -> None:
        check_opt_out_table_name(table)
        super().__init__(sql_conn_id, table)

    def ensure(self) -> None:
        """
        Create the table when missing; when present, check that it has every column.

        :raises SmsConfigurationError: naming the connection, the table and the missing columns.
        """
        connection = self._connect()
        try:
            with closing(connection.cursor()) as cursor:
                cursor.execute(opt_outs_ddl(self.table, self.dialect))
                cursor.execute(f"SELECT * FROM {self.table} WHERE 1 = 0")
                found = {str(column[0]).lower() for column in cursor.description or ()}
            connection.commit()
        except Exception as error:
            connection.rollback()
            raise self._config_error(f"could not be created or read ({describe_error(error)})") from None
        missing = [column for column in COLUMNS if column not in found]
        if missing:
            raise self._config_error(f"lacks the columns {', '.join(missing)}: add them as in opt_outs_ddl()")

    def write(self, opt_outs: Sequence[OptOut]) -> int:
        """
        Upsert ``opt_outs`` in one transaction, committed before returning; return how many of their numbers
        the table did not have before.
        """
        rows = merge(opt_outs)
        if not rows:
            return 0
        numbers = [row[0] for row in rows]
        connection = self._connect()
        marks = ", ".join([self._placeholder] * len(numbers))
        try:
            with closing(connection.cursor()) as cursor:
                cursor.execute(f"SELECT number FROM {self.table} WHERE number IN ({marks})", numbers)
                known = len(cursor.fetchall())
                cursor.executemany(upsert_sql(self.table, self.dialect, self._placeholder), rows)
            connection.commit()
        except Exception as error:
            connection.rollback()
            # The database's message may quote a row: the numbers in it are masked.
            raise P2PSmsError(
                f"Writing {len(rows)} opt-outs to table '{self.table}' on connection '{self.sql_conn_id}' failed "
                f"({mask_numbers_in_text(describe_error(error))}); none of them was committed. The number column "
                "must be the PRIMARY KEY or UNIQUE, as in opt_outs_ddl()."
            ) from None
        return len(rows) - known


def _timestamp(value: datetime) -> str:
    if value.utcoffset() is None:
        raise ValueError("an opt-out's seen_at must be timezone-aware")
    return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
