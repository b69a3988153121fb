"""IPPanel Edge answers: the ``{"data", "meta"}`` envelope and field validation errors.

Every IPPanel endpoint answers through :func:`envelope`. Validation failures answer 422
with ``message_code`` ``"400-2"``; ``meta.errors`` maps each failing field path
(``from_number``, ``params.0.recipients.1``, ``params.1.message``, ``send_time``...) to
Persian messages, and ``meta.message`` is the first of them. A request body that is not
a JSON object is reported under the path ``body``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from airflow_provider_p2psms.sandbox.wire import ApiResponse

if TYPE_CHECKING:
    from collections.abc import Mapping

    from airflow_provider_p2psms.sandbox.wire import Call

_DONE: Final = "انجام شد"
_NOT_FOUND: Final = "موردی یافت نشد"
_INVALID_NUMBER: Final = "مقدار باید یک عدد صحیح مثبت باشد"
_BODY_NOT_OBJECT: Final = "بدنه درخواست باید یک شیء JSON باشد"
_INVALID_SENDER: Final = "شماره فرستنده معتبر نیست"

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


def required(field_name: str) -> str:
    """Return the "field is required" message for a field of :data:`_LABELS`."""
    return f"تکمیل گزینه {_LABELS[field_name]} الزامی است"


def envelope(
    status: int,
    data: object,
    *,
    message: str,
    code: str,
    errors: dict[str, list[str]] | None = None,
    extra_meta: Mapping[str, object] | None = None,
) -> ApiResponse:
    """Wrap ``data`` in the ``{"data", "meta"}`` envelope."""
    meta = {
        "status": 200 <= status < 300,
        "message": message,
        "message_parameters": [],
        "message_code": code,
        "errors": errors or {},
        **(extra_meta or {}),
    }
    return ApiResponse(status, {"data": data, "meta": meta})


def ok(data: object, extra_meta: Mapping[str, object] | None = None) -> ApiResponse:
    """Return the 200 answer."""
    return envelope(200, data, message=_DONE, code="200-1", extra_meta=extra_meta)


def not_found() -> ApiResponse:
    """Return the 404 answer."""
    return envelope(404, None, message=_NOT_FOUND, code="404-1")


class FieldErrors:
    """Validation errors by field path, in the order they were found."""

    def __init__(self) -> None:
        self.by_field: dict[str, list[str]] = {}

    def add(self, field_path: str, message: str) -> None:
        self.by_field.setdefault(field_path, []).append(message)

    def response(self) -> ApiResponse:
        first = next(iter(self.by_field.values()))[0]
        return envelope(422, None, message=first, code="400-2", errors=self.by_field)


def json_object(call: Call, errors: FieldErrors, *, empty_is_object: bool = False) -> dict[str, object] | None:
    """The request's JSON object; ``None``, with the ``body`` error recorded, when the body is not one."""
    try:
        body = call.request.json() if call.request.body.strip() or not empty_is_object else {}
    except ValueError:
        body = None
    if not isinstance(body, dict):
        errors.add("body", _BODY_NOT_OBJECT)
        return None
    return body


def check_sender(value: object, field_path: str, call: Call, errors: FieldErrors) -> None:
    """Record an error unless ``value`` is one of the account's sender lines (``ippanel_senders``)."""
    if value in (None, ""):
        errors.add(field_path, required("from_number"))
    elif value not in call.config.ippanel_senders:
        errors.add(field_path, _INVALID_SENDER)


def positive_int(value: object, field_path: str, errors: FieldErrors) -> int | None:
    """Parse a positive integer from JSON or a query string; record an error if it is not one."""
    if isinstance(value, str) and value.isascii() and value.isdigit():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    errors.add(field_path, required(field_path) if value in (None, "") else _INVALID_NUMBER)
    return None
