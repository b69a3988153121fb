"""The send operator's try: the gateway's hook, the rows' messages, the ledger, the receipt and the outcomes.

Imported when the task runs, never when the DAG file is parsed: it loads the engine.
"""

from __future__ import annotations

import dataclasses
import threading
from typing import TYPE_CHECKING, Any

from airflow_provider_p2psms.campaign.approval import approved_receipt, check_approved, estimated_cost, template_source
from airflow_provider_p2psms.campaign.cancel import watch_scheduled
from airflow_provider_p2psms.campaign.estimate import CostCheck, CostLimits, CostTally, estimate_cost, read_all_first
from airflow_provider_p2psms.campaign.outcomes import SendTaskKey
from airflow_provider_p2psms.campaign.receipt import ReceiptBuilder
from airflow_provider_p2psms.campaign.recipients import MessageBuilder, compile_template, iter_rows
from airflow_provider_p2psms.campaign.run import send_campaign
from airflow_provider_p2psms.campaign.suppression import load_suppression
from airflow_provider_p2psms.exceptions import P2PSmsError, SmsInputError
from airflow_provider_p2psms.hooks.factory import get_sms_hook
from airflow_provider_p2psms.operators.options import max_cost_value
from airflow_provider_p2psms.operators.steps import log_summary, preview, receipt_detail, resolve_send_time
from airflow_provider_p2psms.utils.rendered import as_bool

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from datetime import datetime

    from airflow.sdk import Context

    from airflow_provider_p2psms.campaign.approval import CampaignCounts
    from airflow_provider_p2psms.campaign.recording import OutcomeRecorder
    from airflow_provider_p2psms.hooks.base import P2PSmsHook
    from airflow_provider_p2psms.models import EstimatedReceipt, OutgoingSms, SendReceipt
    from airflow_provider_p2psms.operators.p2p_sms import P2PSmsOperator


def send(
    op: P2PSmsOperator, context: Context, scheduled_for: datetime | None, closes_at: float | None = None
) -> SendReceipt:
    """
    One try of the operator's send (or its dry run): build the parts, run them, return the receipt.

    :param closes_at: when the send window closes (epoch seconds); then nothing more leaves, the ledger is
        written and :class:`~airflow_provider_p2psms.exceptions.SendWindowClosed` is raised.
    """

    hook = get_sms_hook(op.sms_conn_id)
    # Before any row is read: a gateway that cannot price a text refuses check_credit and max_cost now.
    limits = CostLimits(as_bool(op.check_credit, "check_credit"), max_cost_value(op.max_cost))
    limits.require(hook)
    send_time = resolve_send_time(
        hook, scheduled_for or op.send_time, op.sms_conn_id, retry=context["ti"].try_number > 1, log=op.log
    )
    task = SendTaskKey.from_context(context)
    recorder = None if op.dry_run else _recorder(op, task, hook)
    suppression = load_suppression(
        exclude=op.personal_value("exclude"),
        exclude_sql=op.exclude_sql,
        exclude_conn_id=op.exclude_conn_id or op.sql_conn_id,
        phone_field=op.phone_field,
        fetch_size=op.fetch_size,
    )
    if suppression is not None:
        op.log.info("%s", suppression.describe())
    environment = op.get_template_env()
    builder = MessageBuilder(
        template=compile_template(op.message, environment),
        context=context,
        normalize=hook.normalize_number,
        phone_field=op.phone_field,
        max_parts=op.max_parts,
        fail_on_invalid=op.on_invalid == "fail",
        key_field=op.key_field,
        recorder=recorder,
        suppression=suppression,
        footer=op.opt_out_footer,
    )
    rows = iter_rows(
        recipients=op.personal_value("recipients"),
        sql=op.sql,
        sql_conn_id=op.sql_conn_id,
        parameters=op.personal_value("parameters"),
        fetch_size=op.fetch_size,
    )
    if op.dry_run:
        source = template_source(op.message, environment)
        dry = preview(
            hook, builder, rows, ReceiptBuilder(hook.conn_type, op.sms_conn_id), op.log, template=source, limits=limits
        )
        if not dry["counts"]["dry_run"]:
            nothing_to_send(op, dry)
        return dry

    approved = None if op.approved_dry_run is None else approved_receipt(op.personal_value("approved_dry_run"))
    ledger = op._ledger(context)
    ledger.load()
    # A large campaign's messages go to the outcomes table or a detail file: checked before sending.
    recipients = op.personal_value("recipients")
    detail = receipt_detail(
        task,
        recorder,
        op.task_id,
        context["ti"].try_number,
        checkpoint_path=op.checkpoint_path,
        rows=len(recipients) if isinstance(recipients, list) else None,
    )
    receipt = ReceiptBuilder(hook.conn_type, op.sms_conn_id, detail)
    if ledger.sent or ledger.uncertain:
        op.log.info(
            "Resuming: an earlier try had %d messages accepted and %d uncertain.",
            len(ledger.sent),
            len(ledger.uncertain),
        )
    cost_check = CostCheck(hook, limits, op.sms_conn_id, op.log) if limits.active else None
    op._halt = threading.Event()  # on_kill sets it, and cancels what this task scheduled
    op._scheduled = watch_scheduled(hook, send_time, ledger, op.max_concurrency)
    shared: CostCheck | None = None
    try:
        messages = builder.build(rows)
        if approved is not None:
            source = template_source(op.message, environment)
            # On a first try every message read is one to send: that pass's tally is the cost check's too,
            # so the rows are spooled and priced once. On a retry the cost covers only what is left.
            shared = cost_check if not (ledger.sent or ledger.uncertain) else None
            check = _approval_check(op, hook, approved, source, recorder, shared)
            messages = read_every_row(builder, messages, check)
        send_campaign(
            hook,
            messages,
            ledger=ledger,
            receipt=receipt,
            recorder=recorder,
            resend_uncertain=op.on_uncertain == "resend",
            check_all_first=op.on_invalid == "fail" and approved is None,  # else read_every_row did
            max_concurrency=op.max_concurrency,
            send_time=send_time,
            on_rejected=op.on_rejected,
            log=op.log,
            cost_check=cost_check if shared is None else None,  # else priced by the approval's pass
            closes_at=closes_at,
            max_rate=op.max_rate,
            halt=op._halt,
        )
    except BaseException:
        receipt.discard()
        raise
    outcomes = None if recorder is None else {"conn_id": recorder.sql_conn_id, "table": recorder.table}
    built = receipt.build(builder, task=dataclasses.asdict(task), outcomes=outcomes)
    if cost_check is not None:
        estimated: EstimatedReceipt = {**built, "estimate": cost_check.estimate}
        built = estimated
    op._lineage_counts = built["counts"]  # for the OpenLineage run facet (operators/lineage.py)
    log_summary(op.log, hook, op.sms_conn_id, built)
    if receipt.uncertain and op.on_uncertain == "resend":
        raise P2PSmsError(
            f"{len(receipt.uncertain)} messages are uncertain and on_uncertain='resend': failing this "
            "try so that the retry resends them (everything else is checkpointed and will not be resent)."
        )
    if not built["messages"] and not built["counts"]["uncertain"] and not built["counts"]["rejected"]:
        nothing_to_send(op, built)
    return built


def read_every_row(
    builder: MessageBuilder,
    messages: Iterator[tuple[int, OutgoingSms]],
    check: Callable[[CampaignCounts, CostTally], None],
) -> Iterator[tuple[int, OutgoingSms]]:
    """
    The pre-send pass: read, render and check every row, keeping the messages on disk, not in memory; then
    ``check`` the whole campaign's counts and cost tally, before the first text is sent. The messages to send
    are the ones read then, not read again: the source may change meanwhile.
    """

    def counted(tally: CostTally) -> None:
        counts: CampaignCounts = {
            "requested": builder.requested,
            "messages": tally.messages,
            "invalid": builder.invalid,
            "duplicate": builder.duplicate,
            "excluded": builder.excluded,
            "parts": sum(parts * count for (parts, _), count in tally.counts.items()),
        }
        check(counts, tally)

    return read_all_first(messages, counted)


def _approval_check(
    op: P2PSmsOperator,
    hook: P2PSmsHook,
    approved: Any,
    template: str,
    recorder: OutcomeRecorder | None,
    cost_check: CostCheck | None = None,
) -> Callable[[CampaignCounts, CostTally], None]:
    """
    The approval gate, for :func:`read_every_row`: the campaign is still the dry run approved. With
    ``cost_check``, the same pass also makes the send's estimate and enforces its limits (one pricing).
    """

    def check(counts: CampaignCounts, tally: CostTally) -> None:
        try:
            if cost_check is not None:
                estimate: float | None = cost_check.priced(tally)["cost"]
            elif estimated_cost(approved) is not None and hook.supports_price_quote:
                # Priced again only when the approver saw a price: one quote per parts count, a read.
                estimate = estimate_cost(hook, tally, credit=False)["cost"]
            else:
                estimate = None
            check_approved(
                approved, counts, estimate, op.approval_tolerance, sms_conn_id=op.sms_conn_id, template=template
            )
        except BaseException:
            if recorder is not None:
                recorder.close()  # the rows left out are written, as a failed send writes them
            raise
        op.log.info(
            "The campaign is the dry run approved, within %s: %d rows, %d messages to send.",
            f"{op.approval_tolerance * 100:g}%",
            counts["requested"],
            counts["messages"],
        )

    return check


def _recorder(op: P2PSmsOperator, task: Any, hook: P2PSmsHook) -> OutcomeRecorder | None:
    """The outcomes table's writer, its table created or checked before any row is read; or None."""
    if not op.outcomes_conn_id:
        return None
    from airflow_provider_p2psms.campaign.outcome_schema import DEFAULT_TABLE
    from airflow_provider_p2psms.campaign.recording import OutcomeRecorder

    table = op.outcomes_table or DEFAULT_TABLE  # a template may render to nothing
    recorder = OutcomeRecorder(op.outcomes_conn_id, table, task, hook.conn_type)
    # Before the rows are read: on SQLite, the switch to WAL (so that the source file can be written
    # while it is read) needs a moment with no read open.
    recorder.ensure()
    return recorder


def nothing_to_send(op: P2PSmsOperator, receipt: SendReceipt) -> None:
    counts = receipt["counts"]
    excluded = f", {counts['excluded']} excluded" if counts.get("excluded") else ""
    why = (
        f"Nothing to send: {counts['requested']} rows, {counts['invalid']} invalid, {counts['duplicate']} duplicate"
        f"{excluded}."
    )
    if op.on_empty == "fail":
        raise SmsInputError(f"{why} on_empty='fail'.")
    if op.on_empty == "skip":
        from airflow_provider_p2psms.version_compat import AirflowSkipException

        raise AirflowSkipException(f"{why} Skipping (on_empty='skip').")
    op.log.info("%s Succeeding (on_empty='succeed').", why)
