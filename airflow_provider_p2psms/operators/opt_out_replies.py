"""Collect opt-out replies (``11``, ``لغو``...) from a gateway's inbox into an opt-out table."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, TypedDict

from airflow.sdk import BaseOperator

from airflow_provider_p2psms.campaign.opt_out_table import DEFAULT_TABLE, MAX_KEYWORD_LENGTH
from airflow_provider_p2psms.exceptions import SmsConfigurationError
from airflow_provider_p2psms.hooks.factory import get_sms_hook
from airflow_provider_p2psms.utils.opt_out_words import DEFAULT_OPT_OUT_WORDS, OptOutWords

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_p2psms.campaign.opt_out_table import OptOut
    from airflow_provider_p2psms.hooks.inbox import IncomingSms


class OptOutCounts(TypedDict):
    """What one run read. ``opt_outs`` counts replies written; ``not_mobile`` the opt-outs left out."""

    read: int
    opt_outs: int
    new_numbers: int
    not_mobile: int


class OptOutReport(TypedDict):
    """The operator's XCom: the counts, and the cursor before and after the run."""

    counts: OptOutCounts
    cursor: int | None
    previous_cursor: int | None
    cursor_variable: str
    sql_conn_id: str
    table: str


class P2PSmsOptOutRepliesOperator(BaseOperator):
    """
    Read the replies a gateway received since the last run, and upsert the numbers that opted out.

    A reply is an opt-out when, as a whole, it is one of ``opt_out_words`` in any spelling: Persian or
    Arabic digits and letters, spaces, ZWNJ, punctuation and case aside (see
    :mod:`~airflow_provider_p2psms.utils.opt_out_words`). Its sender is normalized like every number the
    provider sends to, and written in E.164 form (``+989121234567``) to ``table`` on ``sql_conn_id``: one
    row per number, with the first and the last time it opted out. The reply's own text is not stored,
    only the opt-out word it matched. A sender that is not an Iranian mobile number is counted, not written.

    The cursor, the greatest inbox id read, is kept in an Airflow Variable, and saved only once every
    opt-out read is committed: a run that fails reads the same replies again, and the upserts, which
    commute, leave the same rows. Without a saved cursor, the whole inbox is read.

    :param sms_conn_id: a connection of a gateway whose inbox the provider reads (``ippanel``). (templated)
    :param sql_conn_id: the database of the opt-out table (any common-sql connection: SQLite, PostgreSQL,
        MySQL). (templated)
    :param table: the opt-out table, created when missing; default ``p2psms_opt_outs``. (templated)
    :param opt_out_words: the words that make a reply an opt-out; default
        :data:`~airflow_provider_p2psms.utils.opt_out_words.DEFAULT_OPT_OUT_WORDS`
        (``11``, ``لغو``, ``لغو11``, ``لغو ۱۱``, ``انصراف``, ``stop``, ``unsubscribe``).
    :param cursor_variable: the Airflow Variable that keeps the cursor; default
        ``p2psms_opt_out_cursor.<dag_id>.<task_id>.<sms_conn_id>`` (with ``.<map_index>`` when mapped).
        Delete it to read the whole inbox again. (templated)
    """

    template_fields: Sequence[str] = ("sms_conn_id", "sql_conn_id", "table", "cursor_variable")
    ui_color = "#f5e3d6"

    def __init__(
        self,
        *,
        sms_conn_id: str,
        sql_conn_id: str,
        table: str = DEFAULT_TABLE,
        opt_out_words: Sequence[str] = DEFAULT_OPT_OUT_WORDS,
        cursor_variable: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        problems = []
        try:
            OptOutWords(opt_out_words)
        except ValueError as error:
            problems.append(f"opt_out_words: {error}")
        if isinstance(opt_out_words, str):
            opt_out_words = [opt_out_words]
        long_words = [word for word in opt_out_words if isinstance(word, str) and len(word) > MAX_KEYWORD_LENGTH]
        if long_words:
            problems.append(f"an opt-out word takes at most {MAX_KEYWORD_LENGTH} characters: {long_words[0][:20]!r}...")
        for name, value in (("sms_conn_id", sms_conn_id), ("sql_conn_id", sql_conn_id), ("table", table)):
            if not isinstance(value, str) or not value.strip():
                problems.append(f"{name} must be a non-empty string, not {value!r}")
        if problems:
            raise SmsConfigurationError(
                f"P2PSmsOptOutRepliesOperator '{kwargs.get('task_id')}': " + "; ".join(problems) + "."
            )
        self.sms_conn_id = sms_conn_id
        self.sql_conn_id = sql_conn_id
        self.table = table
        self.opt_out_words = list(opt_out_words)
        self.cursor_variable = cursor_variable

    def execute(self, context: Context) -> OptOutReport:
        from airflow_provider_p2psms.campaign.opt_out_table import OptOutTable
        from airflow_provider_p2psms.hooks.inbox import inbox_reader

        words = OptOutWords(self.opt_out_words)
        hook = get_sms_hook(self.sms_conn_id)
        reader = inbox_reader(hook)
        variable = self.cursor_variable or default_cursor_variable(context, self.sms_conn_id)
        previous = read_cursor(variable)
        counts: OptOutCounts = {"read": 0, "opt_outs": 0, "new_numbers": 0, "not_mobile": 0}
        cursor = previous
        with OptOutTable(self.sql_conn_id, self.table or DEFAULT_TABLE) as table:
            table.ensure()
            for page in reader.inbox_pages(previous):
                # Each page is committed before the next is read; the cursor moves only after the last.
                opt_outs = self._opt_outs(page, words, hook.conn_type, counts)
                counts["new_numbers"] += table.write(opt_outs)
                last = max(message.inbox_id for message in page)
                cursor = last if cursor is None else max(cursor, last)
        if cursor is not None and cursor != previous:
            cursor = save_cursor(variable, cursor, self.sms_conn_id)
        self.log.info(
            "Read %d replies on connection '%s' %s: %d opt-outs written to '%s' (%d new numbers), "
            "%d opt-outs from numbers that are not Iranian mobiles left out. Cursor '%s' is now %s.",
            counts["read"],
            self.sms_conn_id,
            "(no cursor yet: the whole inbox)" if previous is None else f"after inbox id {previous}",
            counts["opt_outs"],
            table.table,
            counts["new_numbers"],
            counts["not_mobile"],
            variable,
            cursor,
        )
        return {
            "counts": counts,
            "cursor": cursor,
            "previous_cursor": previous,
            "cursor_variable": variable,
            "sql_conn_id": self.sql_conn_id,
            "table": table.table,
        }

    @staticmethod
    def _opt_outs(page: list[IncomingSms], words: OptOutWords, gateway: str, counts: OptOutCounts) -> list[OptOut]:
        """The opt-outs among ``page``, counted into ``counts``."""
        from airflow_provider_p2psms.campaign.opt_out_table import OptOut
        from airflow_provider_p2psms.exceptions import InvalidPhoneNumber
        from airflow_provider_p2psms.utils.phone import to_national_mobile

        now = datetime.now(timezone.utc)
        found = []
        for message in page:
            counts["read"] += 1
            word = words.match(message.text)
            if word is None:
                continue
            try:
                national = to_national_mobile(message.sender)
            except InvalidPhoneNumber:
                counts["not_mobile"] += 1
                continue
            counts["opt_outs"] += 1
            found.append(
                OptOut(
                    number=f"+98{national}",
                    gateway=gateway,
                    keyword=word,
                    seen_at=message.received_at or now,
                    reply_id=str(message.inbox_id),
                    line=message.line or None,
                )
            )
        return found


def default_cursor_variable(context: Context, sms_conn_id: str) -> str:
    """``p2psms_opt_out_cursor.<dag_id>.<task_id>.<sms_conn_id>``, and ``.<map_index>`` for a mapped task."""
    ti = context["ti"]
    name = f"p2psms_opt_out_cursor.{ti.dag_id}.{ti.task_id}.{sms_conn_id}"
    map_index = getattr(ti, "map_index", None)
    return name if map_index is None or int(map_index) < 0 else f"{name}.{int(map_index)}"


def read_cursor(variable: str) -> int | None:
    """
    The cursor kept in ``variable``: an inbox id, or ``None`` when it is not set.

    :raises SmsConfigurationError: when it holds anything but a whole number.
    """
    from airflow.sdk import Variable

    value = Variable.get(variable, default=None)
    if value is None or not str(value).strip():
        return None
    text = str(value).strip()
    if not text.isascii() or not text.isdigit():
        raise SmsConfigurationError(
            f"Variable '{variable}' holds {text[:40]!r}, not an inbox id. It keeps the opt-out replies' cursor: "
            "set it to the last inbox id already handled, or delete it to read the whole inbox again."
        )
    return int(text)


def save_cursor(variable: str, cursor: int, sms_conn_id: str) -> int:
    """
    Save ``cursor`` in ``variable``, unless it already holds a greater one (a run that overlapped this one
    read further); return what it holds now.
    """
    from airflow.sdk import Variable

    current = read_cursor(variable)
    if current is not None and current >= cursor:
        return current
    Variable.set(
        variable,
        str(cursor),
        description=f"Opt-out replies: the last inbox id read from connection '{sms_conn_id}'. "
        "Delete it to read the whole inbox again.",
    )
    return cursor


__all__ = ["P2PSmsOptOutRepliesOperator"]
