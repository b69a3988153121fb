"""Send a templated peer-to-peer SMS batch: one personal text per recipient."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from airflow.sdk import BaseOperator

from airflow_provider_p2psms.exceptions import SmsConfigurationError
from airflow_provider_p2psms.operators.lineage import LineageMixin
from airflow_provider_p2psms.operators.options import (
    approval_problems,
    choice_problems,
    cost_problems,
    flag_problem,
    rate_problems,
    source_problems,
    suppression_problems,
    whole_number_problems,
    window_problems,
)
from airflow_provider_p2psms.operators.steps import outcomes_target
from airflow_provider_p2psms.utils.rendered import PersonalDataFields, as_bool
from airflow_provider_p2psms.utils.window import SendWindow

if TYPE_CHECKING:
    from datetime import datetime

    from airflow.sdk import Context

    from airflow_provider_p2psms.campaign.ledger import SendLedger
    from airflow_provider_p2psms.models import SendReceipt

OnInvalid = Literal["skip", "fail"]
OnEmpty = Literal["skip", "succeed", "fail"]
OnUncertain = Literal["skip", "resend"]
OnRejected = Literal["isolate", "fail"]
OutsideWindow = Literal["defer", "schedule"]


class P2PSmsOperator(LineageMixin, PersonalDataFields, BaseOperator):
    """
    Send one personal SMS per recipient through a Bitel or IPPanel connection.

    Recipients come from exactly one source: ``recipients`` (rows or phone numbers, typically an
    upstream task's XCom) or ``sql`` run on ``sql_conn_id``. ``message`` is a Jinja template rendered
    once per recipient with the row as ``row`` and the task context (``ds``, ``params``...); row
    values are data and are never rendered as templates. Numbers are normalized for the gateway,
    repeated (number, text) pairs are sent once, and batches go out ``max_concurrency`` at a time.

    Every accepted batch is checkpointed, so a retry of the task sends only what was not accepted
    before (see ``on_uncertain`` for batches whose fate is unknown). The checkpoint is deleted by a
    success callback the operator adds to ``on_success_callback``, once Airflow has stored the
    receipt: a retry after a failed XCom push still finds everything sent.

    :param sms_conn_id: connection of type ``bitel`` or ``ippanel``; its type picks the gateway. (templated)
    :param message: Jinja template of the text, rendered per recipient, e.g.
        ``"سلام {{ row.name }}، کد شما {{ row.code }}"``. A path ending in ``.j2`` or ``.txt`` is read
        from the DAG's template search path. Undefined variables are an error naming the row.
    :param recipients: a list of row dicts, or of phone numbers; a JSON or Python-literal string of
        such a list is accepted too (what ``{{ ti.xcom_pull(...) }}`` renders to). (templated)
    :param sql: a query whose rows are the recipients, with column names as fields; ``.sql`` files work.
        Rows are streamed in chunks of ``fetch_size``. (templated)
    :param sql_conn_id: the Airflow connection ``sql`` runs on (any common-sql database). (templated)
    :param parameters: bind parameters of ``sql``. (templated)
    :param phone_field: the row field holding the phone number; default ``"phone"``.
    :param key_field: the row field that identifies a row, e.g. ``"customer_id"``: carried into every
        problem line and outcome row. A row without it, or with a key an earlier row had, is invalid (never
        sent). Required with an outcomes table: a row's number is not stable across retries of an
        unordered query, its key is.
    :param outcomes_conn_id: a SQL connection (any common-sql database) whose ``outcomes_table`` gets one
        row per input row: its status, message id, parts and price, written as rows are read and batches
        answered; the delivery sensor then writes the final statuses. (templated)
    :param outcomes_table: the outcomes table, created when missing, checked when present; default
        ``p2psms_outcomes`` once ``outcomes_conn_id`` is set. Given alone, it is on ``sql_conn_id``. (templated)
    :param on_invalid: ``"skip"`` (default): invalid rows are left out and reported, masked;
        ``"fail"``: if any row is invalid, nothing at all is sent.
    :param on_empty: when there is nothing to send: ``"skip"`` (default, the task is skipped),
        ``"succeed"``, or ``"fail"``.
    :param on_uncertain: what a retry does with a batch an earlier try sent but never heard back
        about (timeout, dropped connection): ``"skip"`` (default) reports it and does not resend it,
        so nobody gets a text twice but some may get none; ``"resend"`` sends it again, so everybody
        gets one but some may get two. With ``"resend"`` a try that leaves uncertain batches fails,
        so that the retry resends them.
    :param on_rejected: what a batch the gateway refuses for its recipients does (a well-formed number
        it does not take): ``"isolate"`` (default) splits the batch to find the refused messages (by the
        recipients the gateway names, else by halving), reports them as ``rejected`` with the gateway's
        reason, and sends every other message once; ``"fail"`` fails the task at the first refusal.
    :param max_concurrency: send requests in flight at once; default 4.
    :param max_rate: the most messages a second this task instance sends, shared by its ``max_concurrency``
        requests; batches then hold at most ``max_rate`` messages. A 429 (too many requests) lowers the rate
        and the batch is sent again, later. Per task instance: for a limit over several tasks on one
        account, send from one task, or run them in an Airflow pool of one slot. Default: the connection's
        ``max_rate`` extra, else no limit.
    :param max_parts: the most SMS parts one text may take (GSM-7: 153 characters a part, UCS-2 such
        as Persian: 67); longer texts are invalid rows. Default 8.
    :param dry_run: render, normalize and validate everything, log a sample and the counts, send nothing.
        (templated)
    :param send_time: schedule the send (IPPanel only): a timezone-aware datetime or an ISO string
        (UTC if it has no offset). In the past on the first try, it is an error; in the past on a retry
        (the first try scheduled its messages for it, and the time has come), what is left goes out at
        once. (templated)
    :param fetch_size: rows fetched per round trip from ``sql``; default 1000.
    :param send_window: quiet hours: a daily window ``("08:00", "21:00")`` (``HH:MM`` or ``HH:MM:SS``,
        spanning midnight if the start is later than the end) outside which nothing is sent. Default:
        no window. (templated)
    :param timezone: the IANA timezone of ``send_window``; default ``"Asia/Tehran"``. (templated)
    :param outside_window: what happens outside the window: ``"defer"`` (default) waits in the
        triggerer until it opens, holding no worker slot; ``"schedule"`` sends at once with
        ``send_time`` set to the opening (IPPanel only).
    :param checkpoint_path: an ``ObjectStoragePath`` URL (``file:///shared/p2psms``, ``s3://bucket/p2psms``)
        for the resume checkpoints. Default: the task state store on Airflow 3.3+, else
        ``[p2psms] checkpoint_path``, else ``$AIRFLOW_HOME/p2psms_checkpoints`` (local disk: with
        several workers, point it at storage every worker can read).
    :param opt_out_footer: a line appended to every text, e.g. ``"لغو۱۱"`` (the opt-out rule of Iranian
        senders); counted in the text's parts, so in ``max_parts`` too.
    :param exclude: a suppression list: phone numbers in any spelling (or rows with ``phone_field``),
        e.g. an upstream task's XCom. A row whose number is on it is not sent: counted as ``excluded``,
        and written with status ``excluded`` to the outcomes table. (templated)
    :param exclude_sql: a query returning one column of numbers to suppress, streamed, on
        ``exclude_conn_id``; together with ``exclude``. ``.sql`` files work. (templated)
    :param exclude_conn_id: the SQL connection ``exclude_sql`` runs on; default ``sql_conn_id``. (templated)
    :param approved_dry_run: the receipt of the dry run a person approved, e.g. ``dry_run.output`` or
        ``"{{ ti.xcom_pull(task_ids='dry_run') }}"`` (a dict or its string form). When set, the send reads and
        checks every row before the first text, and sends nothing if the campaign is not the one approved: another
        connection or template, or counts, SMS parts or estimated cost beyond ``approval_tolerance``. (templated)
    :param check_credit: before the first text, read and check every row (keeping the messages on disk),
        estimate the campaign's cost from the gateway's prices and read the account's credit; send nothing
        if the credit does not cover the estimate. Gateways without price and credit endpoints (Bitel)
        refuse it at the start. Default ``False``. (templated)
    :param max_cost: send nothing if the estimated cost (as for ``check_credit``) is more than this, in
        the gateway's price unit; ``None`` (default): no limit. (templated)
    :param approval_tolerance: how far the campaign may move from ``approved_dry_run``, as a fraction: each count
        by this share of the approved rows, the SMS parts and the estimated cost by this share of their approved
        value. Default 0.05 (5%); 0 means exactly as approved.
    """

    template_fields: Sequence[str] = (
        "sms_conn_id",
        "recipients",
        "sql",
        "sql_conn_id",
        "parameters",
        "outcomes_conn_id",
        "outcomes_table",
        "dry_run",
        "send_time",
        "send_window",
        "timezone",
        "exclude",
        "exclude_sql",
        "exclude_conn_id",
        "approved_dry_run",
        "check_credit",
        "max_cost",
    )
    template_ext: Sequence[str] = (".sql",)
    template_fields_renderers: ClassVar[dict[str, str]] = {"sql": "sql", "exclude_sql": "sql"}
    # Phone numbers and row values: the task gets them, the UI's rendered fields show only a count.
    personal_fields: ClassVar[tuple[str, ...]] = ("recipients", "parameters", "exclude", "approved_dry_run")
    ui_color = "#d6f5e3"
    # Shadows BaseOperator.dry_run(), a method no Airflow 3 code path calls, with the documented flag.
    dry_run: bool  # type: ignore[assignment]
    # Set by a running send, for on_kill: stops it, and the sends it scheduled to cancel (campaign/cancel.py).
    _halt: Any = None
    _scheduled: Any = None

    def __init__(
        self,
        *,
        sms_conn_id: str,
        message: str,
        recipients: Any = None,
        sql: str | None = None,
        sql_conn_id: str | None = None,
        parameters: Mapping[str, Any] | Sequence[Any] | None = None,
        phone_field: str = "phone",
        key_field: str | None = None,
        outcomes_conn_id: str | None = None,
        outcomes_table: str | None = None,
        on_invalid: OnInvalid = "skip",
        on_empty: OnEmpty = "skip",
        on_uncertain: OnUncertain = "skip",
        on_rejected: OnRejected = "isolate",
        max_concurrency: int = 4,
        max_rate: float | None = None,
        max_parts: int = 8,
        dry_run: bool = False,
        send_time: datetime | str | None = None,
        fetch_size: int = 1000,
        send_window: Sequence[str] | None = None,
        timezone: str = "Asia/Tehran",
        outside_window: OutsideWindow = "defer",
        checkpoint_path: str | None = None,
        opt_out_footer: str | None = None,
        exclude: Any = None,
        exclude_sql: str | None = None,
        exclude_conn_id: str | None = None,
        approved_dry_run: Any = None,
        approval_tolerance: float = 0.05,
        check_credit: bool = False,
        max_cost: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        problems: list[str] = []
        outcomes_conn_id, outcomes_table = outcomes_target(outcomes_conn_id, outcomes_table, sql_conn_id, problems)
        source_problems(
            problems,
            recipients=recipients,
            sql=sql,
            sql_conn_id=sql_conn_id,
            outcomes_conn_id=outcomes_conn_id,
            key_field=key_field,
        )
        choice_problems(
            problems,
            on_invalid=on_invalid,
            on_empty=on_empty,
            on_uncertain=on_uncertain,
            on_rejected=on_rejected,
            outside_window=outside_window,
        )
        whole_number_problems(problems, max_concurrency=max_concurrency, max_parts=max_parts, fetch_size=fetch_size)
        rate_problems(problems, max_rate=max_rate)
        if not isinstance(message, str) or not message.strip():
            problems.append("message must be a non-empty template string")
        window_problems(
            problems, send_window=send_window, timezone=timezone, outside_window=outside_window, send_time=send_time
        )
        dry_run = flag_problem(problems, "dry_run", dry_run)
        suppression_problems(
            problems,
            opt_out_footer=opt_out_footer,
            exclude_sql=exclude_sql,
            exclude_conn_id=exclude_conn_id,
            sql_conn_id=sql_conn_id,
        )
        approval_problems(problems, approved_dry_run=approved_dry_run, approval_tolerance=approval_tolerance)
        check_credit = cost_problems(problems, check_credit=check_credit, max_cost=max_cost)
        if problems:
            raise SmsConfigurationError(f"P2PSmsOperator '{kwargs.get('task_id')}': " + "; ".join(problems) + ".")

        self.sms_conn_id = sms_conn_id
        self.message = message
        self.recipients = recipients
        self.sql = sql
        self.sql_conn_id = sql_conn_id
        self.parameters = parameters
        self.phone_field = phone_field
        self.key_field = key_field
        self.outcomes_conn_id = outcomes_conn_id
        self.outcomes_table = outcomes_table
        self.on_invalid = on_invalid
        self.on_empty = on_empty
        self.on_uncertain = on_uncertain
        self.on_rejected = on_rejected
        self.max_concurrency = max_concurrency
        self.max_rate = max_rate
        self.max_parts = max_parts
        self.dry_run = dry_run
        self.send_time = send_time
        self.fetch_size = fetch_size
        self.send_window = send_window
        self.timezone = timezone
        self.outside_window = outside_window
        self.checkpoint_path = checkpoint_path
        self.opt_out_footer = opt_out_footer
        self.exclude = exclude
        self.exclude_sql = exclude_sql
        self.exclude_conn_id = exclude_conn_id
        self.approved_dry_run = approved_dry_run
        self.approval_tolerance = approval_tolerance
        self.check_credit = check_credit
        self.max_cost = max_cost
        # Deleted only once the task has succeeded, that is after Airflow stored the receipt: at the end of
        # execute(), a retry after a failed XCom push would find no checkpoint and send everything again.
        self.on_success_callback = [*self.on_success_callback, _delete_checkpoint]

    def execute(self, context: Context) -> SendReceipt:
        self.dry_run = as_bool(self.dry_run, "dry_run")
        if self.send_window is None or self.dry_run:  # a dry run sends nothing: quiet hours do not hold it
            return self._send(context, None)
        import pendulum

        from airflow_provider_p2psms.exceptions import SendWindowClosed

        window = SendWindow.parse(self.send_window, self.timezone)
        now = pendulum.now("UTC")
        opening = window.next_opening(now)
        if opening is None:
            closing = window.next_closing(now)
            closes_at = None if self.send_time or closing is None else closing.timestamp()
            try:
                return self._send(context, None, closes_at)
            except SendWindowClosed:
                opening = window.next_opening(pendulum.now("UTC"))
                if opening is None:  # open again already (a window of seconds): go on
                    return self.execute(context)
                self.log.info("The send window %s closed during the send; the ledger is written.", window.describe())
        if self.outside_window == "defer":
            from airflow.providers.standard.triggers.temporal import DateTimeTrigger

            self.log.info(
                "Outside the send window %s: waiting until %s without holding a worker slot.",
                window.describe(),
                opening.in_timezone(self.timezone).isoformat(),
            )
            self.defer(trigger=DateTimeTrigger(moment=opening), method_name="execute_in_window")
        self.log.info("Outside the send window %s: scheduling the send for %s.", window.describe(), opening)
        return self._send(context, opening)

    def execute_in_window(self, context: Context, event: Any = None) -> SendReceipt:
        """Resume here once the send window has opened: what was sent before it closed is not sent again."""
        return self.execute(context)

    def _send(self, context: Context, scheduled_for: datetime | None, closes_at: float | None = None) -> SendReceipt:
        # The engine loads when the task runs, not each time the DAG file is parsed.
        from airflow_provider_p2psms.operators.sending import send

        return send(self, context, scheduled_for, closes_at)

    def on_kill(self) -> None:
        """
        The task is being killed: nothing more leaves, and the sends it scheduled (``send_time``, IPPanel) are
        cancelled, within the seconds Airflow gives before its SIGKILL; the log says which could not be.
        """
        halt = getattr(self, "_halt", None)
        if halt is not None:
            halt.set()
        scheduled = getattr(self, "_scheduled", None)
        if scheduled is not None and scheduled.ids:
            from airflow_provider_p2psms.campaign.cancel import cancel_scheduled

            cancel_scheduled(scheduled, self.log)

    # ------------------------------------------------------------------ steps

    def _ledger(self, context: Context) -> SendLedger:
        from airflow_provider_p2psms.campaign.ledger import SendLedger
        from airflow_provider_p2psms.campaign.stores import checkpoint_store

        return SendLedger(checkpoint_store(context, self.checkpoint_path))


def _delete_checkpoint(context: Context) -> None:
    """
    Success callback: the task instance is done, so a new run of it may send again.

    It reads the task Airflow ran (``context["task"]``, its fields rendered), never the operator as the
    DAG file built it: there ``dry_run`` may still be the template ``"{{ params.dry }}"``.
    """
    task: Any = context["task"]
    if not as_bool(task.dry_run, "dry_run"):
        task._ledger(context).clear()


__all__ = ["P2PSmsOperator"]
