"""The send operator's smaller steps: its argument checks, ``send_time``, the dry run and the summary line.

Imported when a DAG file is parsed (the argument checks run in the operator's constructor): nothing here
imports the engine at module level.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow_provider_p2psms.exceptions import SmsConfigurationError
from airflow_provider_p2psms.hooks.factory import scheduling_hint
from airflow_provider_p2psms.utils.phone import mask_numbers_in_text, mask_phone

if TYPE_CHECKING:
    from datetime import datetime

    from airflow_provider_p2psms.campaign.approval import DryRunReceipt
    from airflow_provider_p2psms.campaign.estimate import CostLimits
    from airflow_provider_p2psms.campaign.receipt import ReceiptBuilder
    from airflow_provider_p2psms.campaign.recipients import MessageBuilder
    from airflow_provider_p2psms.hooks.base import P2PSmsHook
    from airflow_provider_p2psms.models import OutgoingSms, SendReceipt


def templated(*values: Any) -> bool:
    """Whether any of the values (or their items) is a Jinja template, to be checked once rendered."""
    return any(
        "{{" in str(item) for value in values for item in (value if isinstance(value, list | tuple) else [value])
    )


def outcomes_target(
    conn_id: str | None, table: str | None, sql_conn_id: str | None, problems: list[str]
) -> tuple[str | None, str | None]:
    """The outcomes table's connection and name, with the defaults filled in; problems are appended."""
    if not conn_id and not table:
        return None, None
    from airflow_provider_p2psms.campaign.outcome_schema import DEFAULT_TABLE, check_table_name

    if not conn_id:
        if not sql_conn_id:
            problems.append("outcomes_table needs outcomes_conn_id (or sql_conn_id), the database to write it to")
        conn_id = sql_conn_id
    if not table:
        table = DEFAULT_TABLE
    elif not templated(table):
        try:
            check_table_name(table)
        except SmsConfigurationError as error:
            problems.append(str(error).rstrip("."))
    return conn_id, table


def resolve_send_time(
    hook: P2PSmsHook, value: datetime | str | None, sms_conn_id: str, *, retry: bool, log: Any
) -> datetime | None:
    """
    ``send_time`` as a UTC date-time, or None to send now.

    In the past on the first try it is an error; in the past on a retry, the first try scheduled what it
    sent for it and the time has come, so the rest goes now.
    """
    if value in (None, ""):
        return None
    if not hook.supports_send_time:
        raise SmsConfigurationError(
            f"send_time is set, but {hook.provider_name} (connection '{sms_conn_id}') cannot schedule "
            f"a send. {scheduling_hint()}"
        )
    import pendulum

    try:
        moment = pendulum.parse(value, tz="UTC") if isinstance(value, str) else pendulum.instance(value, tz="UTC")
    except (ValueError, TypeError) as error:
        raise SmsConfigurationError(
            f"send_time {value!r} is not a date-time; use ISO 8601, e.g. '2026-03-12T21:20:00+03:30'. ({error})"
        ) from None
    if not isinstance(moment, pendulum.DateTime):
        raise SmsConfigurationError(f"send_time {value!r} is not a date-time (it parsed as {type(moment).__name__}).")
    if moment < pendulum.now("UTC"):
        if retry:
            log.warning(
                "send_time %s has passed since the first try: this retry sends what is left now.", moment.isoformat()
            )
            return None
        raise SmsConfigurationError(f"send_time {moment.isoformat()} is in the past.")
    return moment


def preview(
    hook: P2PSmsHook,
    builder: MessageBuilder,
    rows: Any,
    receipt: ReceiptBuilder,
    log: Any,
    *,
    template: str = "",
    limits: CostLimits | None = None,
) -> DryRunReceipt:
    """
    The dry run: render and check every row, log a masked sample and the counts, send nothing.

    Where the gateway prices a text before sending, the receipt's ``estimate`` is what the messages would
    cost (and the account's credit, where it can be read), and ``limits`` are enforced as a send would;
    elsewhere it is ``None``. Pricing asks the gateway, once per parts count; nothing is sent.

    :param template: the message template's source, shown to the approver in the receipt's ``preview``.
    :param limits: ``check_credit`` and ``max_cost``: a dry run that breaks them fails as the send would.
    """
    from airflow_provider_p2psms.campaign.approval import dry_run_preview
    from airflow_provider_p2psms.campaign.estimate import CostTally, priced_dry_run

    sample: list[OutgoingSms] = []
    count = parts = 0
    tally = CostTally() if hook.supports_price_quote else None
    for _, message in builder.build(rows):
        count += 1
        parts += message.parts
        if tally is not None:
            tally.add(message)
        if len(sample) < 5:
            sample.append(message)
    for message in sample:
        log.info("Dry run sample: %s <- %r", mask_phone(message.recipient), mask_numbers_in_text(message.text))
    log.info(
        "Dry run on %s: %d rows, %d messages would be sent, %d invalid, %d duplicate, %d excluded. Nothing was sent.",
        hook.provider_name,
        builder.requested,
        count,
        builder.invalid,
        builder.duplicate,
        builder.excluded,
    )
    estimate = None if tally is None else priced_dry_run(hook, tally, limits, receipt.sms_conn_id, log)
    built = receipt.build(builder, dry_run=count)
    texts = (message.text for message in sample)
    return {**built, "estimate": estimate, "preview": dry_run_preview(template, texts, parts)}


def log_summary(log: Any, hook: P2PSmsHook, sms_conn_id: str, receipt: SendReceipt) -> None:
    """The send's summary line, then up to 20 of its problems (masked)."""
    counts = receipt["counts"]
    price = "not known yet" if counts["price"] is None else f"{counts['price']:g}"
    log.info(
        "P2P SMS via %s (connection '%s'): %d rows read, %d messages accepted (%d of them by an earlier try), "
        "%d invalid, %d duplicate, %d excluded, %d uncertain, %d rejected by the gateway; %d SMS parts, price %s.",
        hook.provider_name,
        sms_conn_id,
        counts["requested"],
        counts["sent"],
        counts["resumed"],
        counts["invalid"],
        counts["duplicate"],
        counts.get("excluded", 0),
        counts["uncertain"],
        counts["rejected"],
        counts["parts"],
        price,
    )
    for problem in receipt["problems"][:20]:
        log.warning("%s", problem)
    if len(receipt["problems"]) > 20:
        log.warning("... and %d more problems, listed in the receipt.", len(receipt["problems"]) - 20)


def receipt_detail(
    task: Any, recorder: Any, who: str, try_number: int, *, checkpoint_path: str | None, rows: int | None
) -> Any:
    """
    Where the receipt's messages go once too many for an XCom: the outcomes table when there is one, else
    a detail file of this try (:mod:`~airflow_provider_p2psms.campaign.detail`), whose storage is checked
    now, before anything is sent: unless ``rows`` (the number of recipients, when known) cannot fill it.
    """
    from airflow_provider_p2psms.campaign.detail import (
        MAX_LINE,
        OUTCOMES_REF,
        DetailWriter,
        detail_root,
    )
    from airflow_provider_p2psms.campaign.stores import task_folder
    from airflow_provider_p2psms.models import INLINE_MESSAGES

    if recorder is not None:
        return OUTCOMES_REF
    always_inline = rows is not None and rows * MAX_LINE <= INLINE_MESSAGES
    root = detail_root(None if always_inline else who, checkpoint_path)
    return DetailWriter(
        task_folder(root, task.dag_id, task.run_id, task.task_id, task.map_index), f"messages-{try_number}.zlib"
    )
