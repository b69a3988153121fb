"""A table of the user's on any common-sql connection, written by upsert: its connection, dialect and placeholder.

The outcomes table (:mod:`.outcomes`) and the opt-out table (:mod:`.opt_out_table`) are both written this
way. :class:`SqlTable` opens one DB-API connection through the connection's common-sql hook, and knows the
upsert dialect (SQLite 3.24+, PostgreSQL, MySQL/MariaDB) and the driver's placeholder; what is written is
the subclass's.
"""

from __future__ import annotations

import sys
from contextlib import closing
from typing import Any, ClassVar

from airflow_provider_p2psms.campaign.outcome_schema import DIALECTS, SQLITE, SUPPORTED_DATABASES
from airflow_provider_p2psms.exceptions import SmsConfigurationError


class SqlTable:
    """
    One table on one SQL connection, used as a context manager (its connection is closed at the end).

    :param sql_conn_id: an Airflow connection with a common-sql hook.
    :param table: the table, optionally schema-qualified (not on SQLite).
    """

    #: What the table is, in error messages: ``"outcomes table"``, ``"opt-out table"``.
    kind: ClassVar[str] = "table"

    def __init__(self, sql_conn_id: str, table: str) -> None:
        self.sql_conn_id = sql_conn_id
        self.table = table
        self._hook: Any = None
        self._dialect = ""
        self._connection: Any = None
        self._placeholder = ""

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the database connection, if open."""
        if self._connection is not None:
            connection, self._connection = self._connection, None
            connection.close()

    @property
    def dialect(self) -> str:
        """Which upsert the database takes: ``"sqlite"``, ``"postgresql"`` or ``"mysql"``."""
        if not self._dialect:
            self._dialect = self._resolve_dialect()
        return self._dialect

    def _parameter(self) -> str:
        """The driver's placeholder: ``?`` (qmark, sqlite3) or ``%s`` (format and pyformat, psycopg, MySQLdb)."""
        self._connect()
        return self._placeholder

    def _connect(self) -> Any:
        if self._connection is None:
            dialect = self.dialect
            connection = self._sql_hook().get_conn()
            module = sys.modules.get(type(connection).__module__.partition(".")[0])
            paramstyle = getattr(module, "paramstyle", None)
            if paramstyle == "qmark":
                self._placeholder = "?"
            elif paramstyle in ("format", "pyformat"):
                self._placeholder = "%s"
            else:
                self._placeholder = self._sql_hook().placeholder
            self._connection = connection
            if dialect == SQLITE:
                # Python's sqlite3 gives up on a locked file after 5 s; a write waits for a concurrent one.
                self._cursor_run("PRAGMA busy_timeout = 30000")
        return self._connection

    def _sql_hook(self) -> Any:
        if self._hook is None:
            from airflow.providers.common.sql.hooks.sql import DbApiHook
            from airflow.sdk import BaseHook

            hook = BaseHook.get_connection(self.sql_conn_id).get_hook()
            if not isinstance(hook, DbApiHook):
                raise SmsConfigurationError(
                    f"Connection '{self.sql_conn_id}' ({self.kind}) is not a SQL database connection: its "
                    f"hook is {type(hook).__name__}. Use a connection whose provider has a common-sql hook "
                    f"({SUPPORTED_DATABASES})."
                )
            self._hook = hook
        return self._hook

    def _resolve_dialect(self) -> str:
        name = str(self._sql_hook().dialect_name)
        dialect = DIALECTS.get(name.lower())
        if dialect is None:
            raise SmsConfigurationError(
                f"Connection '{self.sql_conn_id}' is a '{name}' database: the {self.kind} is written by "
                f"upsert, which this provider does for {SUPPORTED_DATABASES} only. Use a connection to one of those."
            )
        if dialect == SQLITE:
            import sqlite3

            if sqlite3.sqlite_version_info < (3, 24, 0):
                raise SmsConfigurationError(
                    f"Connection '{self.sql_conn_id}': SQLite {sqlite3.sqlite_version} has no upsert "
                    "(ON CONFLICT ... DO UPDATE, SQLite 3.24+). Use a Python built with a newer SQLite."
                )
        if "." in self.table and dialect == SQLITE:
            raise SmsConfigurationError(
                f"{self.kind.capitalize()} '{self.table}': SQLite tables take no schema; use an unqualified name."
            )
        return dialect

    def _cursor_run(self, sql: str) -> Any:
        with closing(self._connect().cursor()) as cursor:
            cursor.execute(sql)
            return cursor.fetchone()

    def _config_error(self, problem: str) -> SmsConfigurationError:
        return SmsConfigurationError(f"The {self.kind} '{self.table}' on connection '{self.sql_conn_id}' {problem}.")


def describe_error(error: Exception | None) -> str:
    """``"<type>: <message>"`` of a database error, for messages."""
    return f"{type(error).__name__}: {str(error).strip()}"
