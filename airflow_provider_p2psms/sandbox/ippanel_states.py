"""IPPanel bulk states: the ``state_id`` table and what a bulk shows at a given moment.

Only a cancel is stored (``IppanelBulk.cancelled``); otherwise a bulk's ``state_id``, its
recipients' ``message_status`` and its cost are worked out from the clock (see
:mod:`.lifecycle`) each time a report reads them. A cancelled bulk is in state 7; any
other waits in state 5 until its start, is in state 2 while being sent, and from halfway
through ``delivery_seconds`` is in state 6, or in state 3 / 8 if its text carries
:data:`.lifecycle.MARKER_REJECT` / :data:`.lifecycle.MARKER_NO_CREDIT`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from airflow_provider_p2psms.sandbox.lifecycle import (
    MARKER_NO_CREDIT,
    MARKER_REJECT,
    PRICE_PER_PART,
    Phase,
    final_outcome,
    phase_at,
)

if TYPE_CHECKING:
    from airflow_provider_p2psms.sandbox.store import IppanelBulk
    from airflow_provider_p2psms.sandbox.wire import Call

STATE_SENDING: Final = 2
STATE_REJECTED: Final = 3
STATE_QUEUED: Final = 5
STATE_SENT: Final = 6
STATE_CANCELLED: Final = 7
STATE_NO_CREDIT: Final = 8

# state_id -> (short English word for "state", Persian text for "status")
STATES: Final = {
    0: ("creating", "در حال ایجاد"),
    1: ("monitoring", "در صف بررسی"),
    2: ("sending", "در حال ارسال"),
    3: ("rejected", "رد شده توسط ناظر"),
    4: ("invalid_recipients", "گیرندگان نامعتبر"),
    5: ("queued", "در صف ارسال"),
    6: ("sent", "ارسال شده"),
    7: ("cancelled", "لغو شده"),
    8: ("no_credit", "اعتبار ناکافی"),
    9: ("error", "خطای سیستم"),
}


def state_id(bulk: IppanelBulk, call: Call) -> int:
    """Return the bulk's ``state_id`` at the time of the call."""
    if bulk.cancelled:
        return STATE_CANCELLED
    phase = phase_at(bulk.starts_at, call.now, call.config.delivery_seconds)
    if phase is Phase.SCHEDULED:
        return STATE_QUEUED
    if phase is Phase.SENDING:
        return STATE_SENDING
    if MARKER_REJECT in bulk.text:
        return STATE_REJECTED
    if MARKER_NO_CREDIT in bulk.text:
        return STATE_NO_CREDIT
    return STATE_SENT


def recipient_statuses(bulk: IppanelBulk, call: Call) -> list[str] | None:
    """Return each recipient's ``message_status``, or ``None`` before state 6."""
    if state_id(bulk, call) != STATE_SENT:
        return None
    if phase_at(bulk.starts_at, call.now, call.config.delivery_seconds) is Phase.AT_OPERATOR:
        return ["1"] * len(bulk.recipients)
    return [final_outcome(recipient).ippanel_status for recipient in bulk.recipients]


def cost(bulk: IppanelBulk, call: Call) -> float:
    """Price the recipients the operator took, once the bulk is final."""
    if (
        state_id(bulk, call) != STATE_SENT
        or phase_at(bulk.starts_at, call.now, call.config.delivery_seconds) is not Phase.FINAL
    ):
        return 0.0
    charged = sum(1 for recipient in bulk.recipients if final_outcome(recipient).charged)
    return PRICE_PER_PART * bulk.parts * charged
