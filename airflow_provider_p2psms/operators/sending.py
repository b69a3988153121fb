"""The send operator's try: the gateway's hook, the rows' messages, the ledger, the receipt and the outcomes.

Imported when the task runs, never when the DAG file is parsed: it loads the engine.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from airflow_provider_p2psms.campaign.outcomes import SendTaskKey
from airflow_provider_p2psms.campaign.receipt import ReceiptBuilder
from airflow_provider_p2psms.campaign.recipients import MessageBuilder, compile_template, iter_rows
from airflow_provider_p2psms.campaign.run import send_campaign
from airflow_provider_p2psms.exceptions import P2PSmsError, SmsInputError
from airflow_provider_p2psms.hooks.factory import get_sms_hook
from airflow_provider_p2psms.operators.steps import log_summary, preview, receipt_detail, resolve_send_time

if TYPE_CHECKING:
    from datetime import datetime

    from airflow.sdk import Context

    from airflow_provider_p2psms.campaign.recording import OutcomeRecorder
    from airflow_provider_p2psms.hooks.base import P2PSmsHook
    from airflow_provider_p2psms.models import SendReceipt
    from airflow_provider_p2psms.operators.p2p_sms import P2PSmsOperator


def send(op: P2PSmsOperator, context: Context, scheduled_for: datetime | None) -> SendReceipt:
    """One try of the operator's send (or its dry run): build the parts, run them, return the receipt."""

    hook = get_sms_hook(op.sms_conn_id)
    send_time = resolve_send_time(
        hook, scheduled_for or op.send_time, op.sms_conn_id, retry=context["ti"].try_number > 1, log=op.log
    )
    task = SendTaskKey.from_context(context)
    recorder = None if op.dry_run else _recorder(op, task, hook)
    builder = MessageBuilder(
        template=compile_template(op.message, op.get_template_env()),
        context=context,
        normalize=hook.normalize_number,
        phone_field=op.phone_field,
        max_parts=op.max_parts,
        fail_on_invalid=op.on_invalid == "fail",
        key_field=op.key_field,
        recorder=recorder,
    )
    rows = iter_rows(
        recipients=op.personal_value("recipients"),
        sql=op.sql,
        sql_conn_id=op.sql_conn_id,
        parameters=op.personal_value("parameters"),
        fetch_size=op.fetch_size,
    )
    if op.dry_run:
        built = preview(hook, builder, rows, ReceiptBuilder(hook.conn_type, op.sms_conn_id), op.log)
        if not built["counts"]["dry_run"]:
            nothing_to_send(op, built)
        return built

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
    try:
        send_campaign(
            hook,
            builder.build(rows),
            ledger=ledger,
            receipt=receipt,
            recorder=recorder,
            resend_uncertain=op.on_uncertain == "resend",
            check_all_first=op.on_invalid == "fail",
            max_concurrency=op.max_concurrency,
            send_time=send_time,
            on_rejected=op.on_rejected,
            log=op.log,
        )
    except BaseException:
        receipt.discard()
        raise
    outcomes = None if recorder is None else {"conn_id": recorder.sql_conn_id, "table": recorder.table}
    built = receipt.build(builder, task=dataclasses.asdict(task), outcomes=outcomes)
    log_summary(op.log, hook, op.sms_conn_id, built)
    if receipt.uncertain and op.on_uncertain == "resend":
        raise P2PSmsError(
            f"{len(receipt.uncertain)} messages are uncertain and on_uncertain='resend': failing this "
            "try so that the retry resends them (everything else is checkpointed and will not be resent)."
        )
    if not built["messages"] and not built["counts"]["uncertain"] and not built["counts"]["rejected"]:
        nothing_to_send(op, built)
    return built


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
    why = f"Nothing to send: {counts['requested']} rows, {counts['invalid']} invalid, {counts['duplicate']} duplicate."
    if op.on_empty == "fail":
        raise SmsInputError(f"{why} on_empty='fail'.")
    if op.on_empty == "skip":
        from airflow_provider_p2psms.version_compat import AirflowSkipException

        raise AirflowSkipException(f"{why} Skipping (on_empty='skip').")
    op.log.info("%s Succeeding (on_empty='succeed').", why)
