"""IPPanel Edge stand-in: ``/v1/api/...``, raw-key auth, ``{"data", "meta"}`` envelopes.

Validation failures answer 422 with ``message_code`` ``"400-2"``; ``meta.errors`` maps
each failing field path (``from_number``, ``params.0.recipients.1``, ``params.1.message``,
``send_time``...) to Persian messages, and ``meta.message`` is the first of them. A
request body that is not a JSON object is reported under the path ``body``.

Both ``peer_to_peer`` (``params`` = list of ``{recipients, message}``) and ``webservice``
(one ``message`` to ``params.recipients``) sends are accepted; each ``params`` element of
a peer-to-peer send (and a whole webservice send) is one bulk with its own
``message_outbox_id``. A bulk scheduled with a future ``send_time`` waits in state 5 (in
the send queue) until then.
"""

from __future__ import annotations

import math
import re
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Final

from airflow_provider_p2psms.sandbox.lifecycle import (
    MARKER_NO_CREDIT,
    MARKER_REJECT,
    PRICE_PER_PART,
    Phase,
    final_outcome,
    phase_at,
    sms_parts,
)
from airflow_provider_p2psms.sandbox.store import IppanelBulk
from airflow_provider_p2psms.sandbox.wire import (
    KIND_ACCOUNT,
    KIND_CANCEL,
    KIND_REPORT,
    KIND_SEND,
    ApiResponse,
    Route,
)

if TYPE_CHECKING:
    from collections.abc import Mapping

    from airflow_provider_p2psms.sandbox.config import SandboxConfig
    from airflow_provider_p2psms.sandbox.wire import Call

SEND_TIME_FORMAT: Final = "%Y-%m-%d %H:%M:%S"
CANCEL_LEAD_SECONDS: Final = 300.0
DEFAULT_PER_PAGE: Final = 100
MAX_PER_PAGE: Final = 500
CREDIT: Final = 1000000.0

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

_RECIPIENT: Final = re.compile(r"\+989[0-9]{9}")

_DONE: Final = "انجام شد"
_UNAUTHORIZED: Final = "اطلاعات وارد شده صحیح نمی باشد"
_NOT_FOUND: Final = "موردی یافت نشد"
_UNAVAILABLE: Final = "سرویس موقتا در دسترس نیست"
_RATE_LIMITED: Final = "تعداد درخواست ها بیش از حد مجاز است"
_METHOD_NOT_ALLOWED: Final = "متد درخواست مجاز نیست"
_BODY_NOT_OBJECT: Final = "بدنه درخواست باید یک شیء JSON باشد"
_INVALID_SENDING_TYPE: Final = "نوع ارسال معتبر نیست"
_INVALID_SENDER: Final = "شماره فرستنده معتبر نیست"
_INVALID_RECIPIENT: Final = "شماره گیرنده معتبر نیست"
_INVALID_SEND_TIME: Final = "فرمت زمان ارسال معتبر نیست"
_INVALID_PARAM: Final = "هر عضو پارامترها باید یک شیء باشد"
_INVALID_NUMBER: Final = "مقدار باید یک عدد صحیح مثبت باشد"
_NOT_CANCELLABLE: Final = "لغو فقط برای ارسال زمان بندی شده و حداقل ۵ دقیقه قبل از زمان ارسال ممکن است"

_LABELS: Final = {
    "sending_type": "نوع ارسال",
    "from_number": "شماره فرستنده",
    "params": "پارامترها",
    "recipients": "گیرندگان",
    "message": "پیام",
    "message_outbox_id": "شناسه پیام",
    "messages_outbox_id": "شناسه پیام",
    "bulk_id": "شناسه پیام",
    "page": "شماره صفحه",
    "per_page": "تعداد در صفحه",
}

# One (recipients, text) pair per bulk to create.
_Outgoing = list[tuple[tuple[str, ...], str]]


def _required(field_name: str) -> str:
    return f"تکمیل گزینه {_LABELS[field_name]} الزامی است"


def _envelope(
    status: int,
    data: object,
    *,
    message: str,
    code: str,
    errors: dict[str, list[str]] | None = None,
    extra_meta: Mapping[str, object] | None = None,
) -> ApiResponse:
    meta = {
        "status": 200 <= status < 300,
        "message": message,
        "message_parameters": [],
        "message_code": code,
        "errors": errors or {},
        **(extra_meta or {}),
    }
    return ApiResponse(status, {"data": data, "meta": meta})


def _ok(data: object, extra_meta: Mapping[str, object] | None = None) -> ApiResponse:
    return _envelope(200, data, message=_DONE, code="200-1", extra_meta=extra_meta)


def _not_found() -> ApiResponse:
    return _envelope(404, None, message=_NOT_FOUND, code="404-1")


class _FieldErrors:
    """Validation errors by field path, in the order they were found."""

    def __init__(self) -> None:
        self.by_field: dict[str, list[str]] = {}

    def add(self, field_path: str, message: str) -> None:
        self.by_field.setdefault(field_path, []).append(message)

    def response(self) -> ApiResponse:
        first = next(iter(self.by_field.values()))[0]
        return _envelope(422, None, message=first, code="400-2", errors=self.by_field)


class IppanelApi:
    """The IPPanel Edge endpoints the provider uses, served under ``/v1``."""

    name = "ippanel"
    prefix = "/v1/"

    def routes(self) -> list[Route]:
        """Return the endpoints."""
        return [
            Route("POST", "/v1/api/send", KIND_SEND, self._send),
            Route("POST", "/v1/api/send/cancel", KIND_CANCEL, self._cancel),
            Route("GET", "/v1/api/report/by_bulk", KIND_REPORT, self._by_bulk),
            Route("GET", "/v1/api/report/recipients", KIND_REPORT, self._recipients),
            Route("GET", "/v1/api/report/bulk_stats", KIND_REPORT, self._bulk_stats),
            Route("GET", "/v1/api/payment/credit/mine", KIND_ACCOUNT, self._credit),
            Route("POST", "/v1/api/acl/auth/check_token", KIND_ACCOUNT, self._check_token),
        ]

    def authorized(self, authorization: str | None, config: SandboxConfig) -> bool:
        """Accept the raw key (no ``Bearer`` prefix) if it is configured."""
        return authorization is not None and authorization.strip() in config.ippanel_tokens

    def unauthorized(self) -> ApiResponse:
        """Return the 401 answer."""
        return _envelope(401, None, message=_UNAUTHORIZED, code="400-1")

    def unavailable(self) -> ApiResponse:
        """Return the 503 answer."""
        return _envelope(503, None, message=_UNAVAILABLE, code="503-1")

    def rate_limited(self) -> ApiResponse:
        """Return the 429 answer."""
        return _envelope(429, None, message=_RATE_LIMITED, code="429-1")

    def not_found(self) -> ApiResponse:
        """Return the 404 answer."""
        return _not_found()

    def method_not_allowed(self) -> ApiResponse:
        """Return the 405 answer."""
        return _envelope(405, None, message=_METHOD_NOT_ALLOWED, code="405-1")

    def _send(self, call: Call) -> ApiResponse:
        errors = _FieldErrors()
        try:
            body = call.request.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            errors.add("body", _BODY_NOT_OBJECT)
            return errors.response()
        sending_type = body.get("sending_type")
        if sending_type is None:
            errors.add("sending_type", _required("sending_type"))
        elif sending_type not in ("peer_to_peer", "webservice"):
            errors.add("sending_type", _INVALID_SENDING_TYPE)
        from_number = body.get("from_number")
        if from_number in (None, ""):
            errors.add("from_number", _required("from_number"))
        elif from_number not in call.config.ippanel_senders:
            errors.add("from_number", _INVALID_SENDER)
        outgoing: _Outgoing = []
        if sending_type == "webservice":
            outgoing = _webservice(body, errors)
        elif sending_type in (None, "peer_to_peer"):
            outgoing = _peer_to_peer(body.get("params"), errors)
        send_time = body.get("send_time")
        send_at = _send_time(send_time, errors)
        if errors.by_field:
            return errors.response()
        request_seq = call.store.accept_send()
        outbox_ids = []
        for recipients, text in outgoing:
            bulk = IppanelBulk(
                outbox_id=call.store.next_outbox_id(),
                from_number=str(from_number),
                text=text,
                recipients=recipients,
                accepted_at=call.now,
                send_time=None if send_at is None else str(send_time),
                starts_at=call.now if send_at is None else max(call.now, send_at),
                parts=sms_parts(text),
            )
            call.store.add_bulk(bulk, request_seq)
            outbox_ids.append(bulk.outbox_id)
        return _ok({"message_outbox_ids": outbox_ids})

    def _cancel(self, call: Call) -> ApiResponse:
        errors = _FieldErrors()
        try:
            body = call.request.json()
        except ValueError:
            body = None
        outbox_id = _positive_int(
            body.get("message_outbox_id") if isinstance(body, dict) else None,
            "message_outbox_id",
            errors,
        )
        if outbox_id is None:
            return errors.response()
        bulk = call.store.bulks.get(outbox_id)
        if bulk is None:
            return _not_found()
        if bulk.cancelled or bulk.send_time is None or bulk.starts_at - call.now < CANCEL_LEAD_SECONDS:
            errors.add("message_outbox_id", _NOT_CANCELLABLE)
            return errors.response()
        bulk.cancelled = True
        return _ok({"message_outbox_id": outbox_id, "state_id": STATE_CANCELLED})

    def _by_bulk(self, call: Call) -> ApiResponse:
        bulk = _bulk_of(call, "messages_outbox_id")
        if isinstance(bulk, ApiResponse):
            return bulk
        state_id = _state_id(bulk, call)
        state, status = STATES[state_id]
        return _ok(
            {
                "message_outbox_id": bulk.outbox_id,
                "state": state,
                "state_id": state_id,
                "status": status,
                "rcpts_count": len(bulk.recipients),
                "exit_count": len(bulk.recipients) if state_id == STATE_SENT else 0,
                "cost": _cost(bulk, call),
                "time_send": _format_time(bulk.starts_at),
                "from_number": bulk.from_number,
                "message": bulk.text,
            }
        )

    def _recipients(self, call: Call) -> ApiResponse:
        bulk = _bulk_of(call, "bulk_id")
        if isinstance(bulk, ApiResponse):
            return bulk
        errors = _FieldErrors()
        page = _positive_int(call.request.query.get("page", "1"), "page", errors)
        per_page = _positive_int(call.request.query.get("per_page", str(DEFAULT_PER_PAGE)), "per_page", errors)
        if page is None or per_page is None:
            return errors.response()
        per_page = min(per_page, MAX_PER_PAGE)
        statuses = _recipient_statuses(bulk, call)
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
        return _ok(rows, pagination)

    def _bulk_stats(self, call: Call) -> ApiResponse:
        bulk = _bulk_of(call, "bulk_id")
        if isinstance(bulk, ApiResponse):
            return bulk
        statuses = _recipient_statuses(bulk, call)
        total = len(bulk.recipients)
        if statuses is None:
            failed = _state_id(bulk, call) in (STATE_REJECTED, STATE_CANCELLED, STATE_NO_CREDIT)
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
        return _ok({f"operators_{name}": count for name, count in counts.items()})

    def _credit(self, call: Call) -> ApiResponse:
        return _ok({"credit": CREDIT})

    def _check_token(self, call: Call) -> ApiResponse:
        return _ok({"user_name": "sandbox", "send_block": False})


def _peer_to_peer(params: object, errors: _FieldErrors) -> _Outgoing:
    if not isinstance(params, list) or not params:
        errors.add("params", _required("params"))
        return []
    outgoing: _Outgoing = []
    for index, item in enumerate(params):
        where = f"params.{index}"
        if not isinstance(item, dict):
            errors.add(where, _INVALID_PARAM)
            continue
        recipients = _recipients(item.get("recipients"), f"{where}.recipients", errors)
        text = _message(item.get("message"), f"{where}.message", errors)
        outgoing.append((recipients, text))
    return outgoing


def _webservice(body: dict[str, object], errors: _FieldErrors) -> _Outgoing:
    text = _message(body.get("message"), "message", errors)
    params = body.get("params")
    if not isinstance(params, dict):
        errors.add("params", _required("params"))
        return []
    return [(_recipients(params.get("recipients"), "params.recipients", errors), text)]


def _recipients(value: object, where: str, errors: _FieldErrors) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        errors.add(where, _required("recipients"))
        return ()
    for index, recipient in enumerate(value):
        if not isinstance(recipient, str) or not _RECIPIENT.fullmatch(recipient):
            errors.add(f"{where}.{index}", _INVALID_RECIPIENT)
    return tuple(str(recipient) for recipient in value)


def _message(value: object, where: str, errors: _FieldErrors) -> str:
    if not isinstance(value, str) or not value.strip():
        errors.add(where, _required("message"))
        return ""
    return value


def _send_time(value: object, errors: _FieldErrors) -> float | None:
    """Return the epoch seconds of a ``send_time`` (UTC), or ``None`` when absent."""
    if value is None:
        return None
    try:
        if not isinstance(value, str):
            raise ValueError(value)
        return datetime.strptime(value, SEND_TIME_FORMAT).replace(tzinfo=timezone.utc).timestamp()
    except ValueError:
        errors.add("send_time", _INVALID_SEND_TIME)
        return None


def _format_time(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=timezone.utc).strftime(SEND_TIME_FORMAT)


def _positive_int(value: object, field_path: str, errors: _FieldErrors) -> int | None:
    """Parse a positive integer from JSON or a query string; record an error if it is not one."""
    if isinstance(value, str) and value.isascii() and value.isdigit():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    errors.add(field_path, _required(field_path) if value in (None, "") else _INVALID_NUMBER)
    return None


def _bulk_of(call: Call, parameter: str) -> IppanelBulk | ApiResponse:
    """Return the bulk named by a query parameter, or the 422/404 answer."""
    errors = _FieldErrors()
    outbox_id = _positive_int(call.request.query.get(parameter), parameter, errors)
    if outbox_id is None:
        return errors.response()
    return call.store.bulks.get(outbox_id) or _not_found()


def _state_id(bulk: IppanelBulk, call: Call) -> int:
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


def _recipient_statuses(bulk: IppanelBulk, call: Call) -> list[str] | None:
    """Return each recipient's ``message_status``, or ``None`` before state 6."""
    if _state_id(bulk, call) != STATE_SENT:
        return None
    if phase_at(bulk.starts_at, call.now, call.config.delivery_seconds) is Phase.AT_OPERATOR:
        return ["1"] * len(bulk.recipients)
    return [final_outcome(recipient).ippanel_status for recipient in bulk.recipients]


def _cost(bulk: IppanelBulk, call: Call) -> float:
    """Price the recipients the operator took, once the bulk is final."""
    if (
        _state_id(bulk, call) != STATE_SENT
        or phase_at(bulk.starts_at, call.now, call.config.delivery_seconds) is not Phase.FINAL
    ):
        return 0.0
    charged = sum(1 for recipient in bulk.recipients if final_outcome(recipient).charged)
    return PRICE_PER_PART * bulk.parts * charged
