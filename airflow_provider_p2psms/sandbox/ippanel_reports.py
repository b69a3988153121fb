"""IPPanel report endpoints: ``GET /v1/api/report/by_bulk``, ``.../recipients``, ``.../bulk_stats``.

``by_bulk`` names its bulk by ``messages_outbox_id``, the other two by ``bulk_id``; an
unknown id answers 404. ``recipients`` is paged by ``page`` and ``per_page`` (default
:data:`DEFAULT_PER_PAGE`, at most :data:`MAX_PER_PAGE`) and carries ``message_status``
only once the bulk is in state 6. States and prices come from :mod:`.ippanel_states`.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Final

from airflow_provider_p2psms.sandbox.ippanel_envelope import FieldErrors, not_found, ok, positive_int
from airflow_provider_p2psms.sandbox.ippanel_send import SEND_TIME_FORMAT
from airflow_provider_p2psms.sandbox.ippanel_states import (
    STATE_CANCELLED,
    STATE_NO_CREDIT,
    STATE_REJECTED,
    STATE_SENT,
    STATES,
    cost,
    recipient_statuses,
    state_id,
)
from airflow_provider_p2psms.sandbox.wire import ApiResponse

if TYPE_CHECKING:
    from airflow_provider_p2psms.sandbox.store import IppanelBulk
    from airflow_provider_p2psms.sandbox.wire import Call

DEFAULT_PER_PAGE: Final = 100
MAX_PER_PAGE: Final = 500


def by_bulk(call: Call) -> ApiResponse:
    """Report one bulk: its state, counts, cost and text."""
    bulk = _bulk_of(call, "messages_outbox_id")
    if isinstance(bulk, ApiResponse):
        return bulk
    bulk_state_id = state_id(bulk, call)
    state, status = STATES[bulk_state_id]
    return ok(
        {
            "message_outbox_id": bulk.outbox_id,
            "state": state,
            "state_id": bulk_state_id,
            "status": status,
            "rcpts_count": len(bulk.recipients),
            "exit_count": len(bulk.recipients) if bulk_state_id == STATE_SENT else 0,
            "cost": cost(bulk, call),
            "time_send": _format_time(bulk.starts_at),
            "from_number": bulk.from_number,
            "message": bulk.text,
        }
    )


def recipients(call: Call) -> ApiResponse:
    """Report one page of a bulk's recipients."""
    bulk = _bulk_of(call, "bulk_id")
    if isinstance(bulk, ApiResponse):
        return bulk
    errors = FieldErrors()
    page = positive_int(call.request.query.get("page", "1"), "page", errors)
    per_page = positive_int(call.request.query.get("per_page", str(DEFAULT_PER_PAGE)), "per_page", errors)
    if page is None or per_page is None:
        return errors.response()
    per_page = min(per_page, MAX_PER_PAGE)
    statuses = recipient_statuses(bulk, call)
    start = (page - 1) * per_page
    rows = []
    for index in range(start, min(start + per_page, len(bulk.recipients))):
        row: dict[str, object] = {
            "recipient": bulk.recipients[index],
            "message": bulk.text,
            "msg_parts": bulk.parts,
        }
        if statuses is not None:
            row["message_status"] = statuses[index]
        rows.append(row)
    total = len(bulk.recipients)
    pagination = {
        "current_page": page,
        "last_page": max(1, math.ceil(total / per_page)),
        "total": total,
        "per_page": per_page,
    }
    return ok(rows, pagination)


def bulk_stats(call: Call) -> ApiResponse:
    """Count a bulk's recipients by outcome."""
    bulk = _bulk_of(call, "bulk_id")
    if isinstance(bulk, ApiResponse):
        return bulk
    statuses = recipient_statuses(bulk, call)
    total = len(bulk.recipients)
    if statuses is None:
        failed = state_id(bulk, call) in (STATE_REJECTED, STATE_CANCELLED, STATE_NO_CREDIT)
        counts = {
            "delivered": 0,
            "failed": total if failed else 0,
            "blacklist": 0,
            "pending": 0 if failed else total,
            "sent": 0,
        }
    else:
        counts = {
            "delivered": statuses.count("2"),
            "failed": statuses.count("3"),
            "blacklist": statuses.count("4"),
            "pending": statuses.count("0") + statuses.count("1"),
            "sent": total,
        }
    return ok({f"operators_{name}": count for name, count in counts.items()})


def _bulk_of(call: Call, parameter: str) -> IppanelBulk | ApiResponse:
    """Return the bulk named by a query parameter, or the 422/404 answer."""
    errors = FieldErrors()
    outbox_id = positive_int(call.request.query.get(parameter), parameter, errors)
    if outbox_id is None:
        return errors.response()
    return call.store.bulks.get(outbox_id) or not_found()


def _format_time(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=timezone.utc).strftime(SEND_TIME_FORMAT)
