"""One try of a campaign's send: what the ledger says was sent before, the sending, the receipt and the outcomes.

The operator builds the parts (the gateway's hook, the rows' :class:`~.recipients.MessageBuilder`, the
loaded ledger, the receipt, the outcomes writer) and :func:`send_campaign` runs them: messages an earlier
try accepted are left out and accounted for (:class:`~.resume.Resumption`), the rest stream through the
sender (:func:`~.dispatch.send_keyed`), and each batch's answer goes into the receipt and, when set, the
outcomes table, as it comes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow_provider_p2psms.campaign.dispatch import send_keyed
from airflow_provider_p2psms.campaign.recipients import row_label, spooled, text_parts
from airflow_provider_p2psms.campaign.resume import Resumption
from airflow_provider_p2psms.utils.phone import mask_phone

if TYPE_CHECKING:
    import threading
    from collections.abc import Iterator
    from datetime import datetime

    from airflow_provider_p2psms.campaign.estimate import CostCheck
    from airflow_provider_p2psms.campaign.ledger import SendLedger
    from airflow_provider_p2psms.campaign.receipt import ReceiptBuilder
    from airflow_provider_p2psms.campaign.recording import OutcomeRecorder
    from airflow_provider_p2psms.hooks.base import P2PSmsHook
    from airflow_provider_p2psms.models import BatchResult, OutgoingSms


def send_campaign(
    hook: P2PSmsHook,
    messages: Iterator[tuple[int, OutgoingSms]],
    *,
    ledger: SendLedger,
    receipt: ReceiptBuilder,
    recorder: OutcomeRecorder | None,
    resend_uncertain: bool,
    check_all_first: bool,
    max_concurrency: int,
    send_time: datetime | None,
    on_rejected: str,
    log: Any,
    cost_check: CostCheck | None = None,
    closes_at: float | None = None,
    max_rate: float | None = None,
    halt: threading.Event | None = None,
) -> None:
    """
    Send what this try has to send, filling ``receipt`` (and the outcomes table, through ``recorder``).

    :param messages: the (message key, message) pairs built from the rows.
    :param check_all_first: build and check every message before sending the first (``on_invalid="fail"``),
        keeping them on disk meanwhile.
    :param cost_check: estimate what this try would send and enforce the cost limits (``check_credit``,
        ``max_cost``) before the first message goes out; it checks and spools every message first.
    :param closes_at: when the send window closes (epoch seconds): see :func:`~.dispatch.send_keyed`.
    :param max_rate: the most messages a second; ``None``: the connection's ``max_rate`` extra, if any.
    :param halt: set when the task is killed: nothing more leaves (see :func:`~.dispatch.send_keyed`).
    """
    try:
        resumption = Resumption(ledger, receipt, resend_uncertain=resend_uncertain, recorder=recorder)
        fresh = resumption.fresh(messages)
        if cost_check is not None:
            fresh = cost_check.checked(fresh)
        elif check_all_first:
            fresh = spooled(fresh)
        results = send_keyed(
            hook,
            fresh,
            max_concurrency=max_concurrency,
            send_time=send_time,
            ledger=ledger,
            log=log,
            on_rejected=on_rejected,
            closes_at=closes_at,
            max_rate=max_rate,
            halt=halt,
        )
        for result in results:
            _account(result, receipt)
            if recorder is not None:
                recorder.answered(result)
        resumption.merge_unread()
    except BaseException:
        if recorder is not None:
            try:
                recorder.close()  # what was answered before the failure still reaches the table
            except Exception as error:  # the send's own failure is the one to report
                log.warning("Writing the last outcome rows failed too: %s", error)
        raise
    if recorder is not None:
        recorder.close()


def _account(result: BatchResult, receipt: ReceiptBuilder) -> None:
    if result.accepted:
        parts = 0
        price: float | None = None
        for message, answer in zip(result.messages, result.receipts, strict=True):
            parts += answer.parts if answer.parts is not None else text_parts(message)
            if answer.price is not None:
                price = (price or 0.0) + answer.price
        pairs = [[answer.message_id, answer.recipient] for answer in result.receipts]
        receipt.accept(pairs, parts=parts, price=price)
        return
    why: str | None
    if result.rejected is not None:
        receipt.add_rejected(result.keys)
        kind, why = "Rejected", result.rejected
    else:
        receipt.add_uncertain(result.keys)
        kind, why = "Uncertain", result.uncertain
    for message in result.messages:
        where = f" in r{row_label(message.row, message.row_key)[1:]}" if message.row else ""
        receipt.problem(f"{kind}: {mask_phone(message.recipient)}{where} ({why}).")
