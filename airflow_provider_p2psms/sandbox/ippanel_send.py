"""IPPanel send endpoints: ``POST /v1/api/send`` and ``POST /v1/api/send/cancel``.

Both ``peer_to_peer`` (``params`` = list of ``{recipients, message}``) and ``webservice``
(one ``message`` to ``params.recipients``) sends are accepted; each ``params`` element of
a peer-to-peer send (and a whole webservice send) is one bulk with its own
``message_outbox_id``. A bulk scheduled with a future ``send_time`` waits in state 5 (in
the send queue) until then.

Two refusals mimic the gateway's own. A recipient ending in ``00666``
(:data:`~.lifecycle.SUFFIX_REFUSED`) is refused with a 422 for the whole request; its field error is
``params.<i>.recipients.<j>``, the path of the number in the request, or just ``recipients`` when
``ippanel_names_refused`` is off. The Edge documentation gives no example of a recipient's field
error, so that path is this sandbox's choice. And IPPanel's duplicate guard: a send request carrying
the same sender and the same (recipient, text) pairs, in any order, as one accepted less than
``duplicate_window_seconds`` (default 40) ago is answered 429, and nothing is stored. Whether the
real guard compares requests so, and whether its 429 has a ``Retry-After``, is not documented; this
one sends none.

Only a scheduled bulk can be cancelled, once, and at least :data:`CANCEL_LEAD_SECONDS`
before it starts; any other cancel of a known bulk answers 422 under
``message_outbox_id``, and an unknown ``message_outbox_id`` answers 404.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Final

from airflow_provider_p2psms.sandbox.ippanel_envelope import (
    FieldErrors,
    check_sender,
    envelope,
    json_object,
    not_found,
    ok,
    positive_int,
    required,
)
from airflow_provider_p2psms.sandbox.ippanel_states import STATE_CANCELLED
from airflow_provider_p2psms.sandbox.lifecycle import refused, sms_parts
from airflow_provider_p2psms.sandbox.store import IppanelBulk

if TYPE_CHECKING:
    from airflow_provider_p2psms.sandbox.wire import ApiResponse, Call

SEND_TIME_FORMAT: Final = "%Y-%m-%d %H:%M:%S"
CANCEL_LEAD_SECONDS: Final = 300.0

_RECIPIENT: Final = re.compile(r"\+989[0-9]{9}")

_INVALID_SENDING_TYPE: Final = "نوع ارسال معتبر نیست"
_INVALID_RECIPIENT: Final = "شماره گیرنده معتبر نیست"
_REFUSED_RECIPIENT: Final = "ارسال به این شماره گیرنده امکان پذیر نیست"
_DUPLICATE: Final = "درخواست تکراری است؛ پس از ۴۰ ثانیه دوباره تلاش کنید"
_INVALID_SEND_TIME: Final = "فرمت زمان ارسال معتبر نیست"
_INVALID_PARAM: Final = "هر عضو پارامترها باید یک شیء باشد"
_NOT_CANCELLABLE: Final = "لغو فقط برای ارسال زمان بندی شده و حداقل ۵ دقیقه قبل از زمان ارسال ممکن است"

# One (recipients, text) pair per bulk to create.
_Outgoing = list[tuple[tuple[str, ...], str]]


def send(call: Call) -> ApiResponse:
    """Validate a send and create one bulk per ``params`` element (or per webservice send)."""
    errors = FieldErrors()
    body = json_object(call, errors)
    if body is None:
        return errors.response()
    sending_type = body.get("sending_type")
    if sending_type is None:
        errors.add("sending_type", required("sending_type"))
    elif sending_type not in ("peer_to_peer", "webservice"):
        errors.add("sending_type", _INVALID_SENDING_TYPE)
    from_number = body.get("from_number")
    check_sender(from_number, "from_number", call, errors)
    outgoing: _Outgoing = []
    if sending_type == "webservice":
        outgoing = _webservice(body, errors)
    elif sending_type in (None, "peer_to_peer"):
        outgoing = _peer_to_peer(body.get("params"), errors)
    _refuse_recipients(outgoing, "params.recipients" if sending_type == "webservice" else None, call, errors)
    send_time = body.get("send_time")
    send_at = _send_time(send_time, errors)
    if errors.by_field:
        return errors.response()
    carried = (
        from_number,
        tuple(sorted((recipient, text) for recipients, text in outgoing for recipient in recipients)),
    )
    window = call.config.duplicate_window_seconds
    if window and call.store.accepted_recently(carried, call.now, window):
        return envelope(429, None, message=_DUPLICATE, code="429-1")
    call.store.remember_send(carried, call.now)
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
    return ok({"message_outbox_ids": outbox_ids})


def cancel(call: Call) -> ApiResponse:
    """Cancel a scheduled bulk named by ``message_outbox_id``."""
    errors = FieldErrors()
    try:
        body = call.request.json()
    except ValueError:
        body = None
    outbox_id = positive_int(
        body.get("message_outbox_id") if isinstance(body, dict) else None,
        "message_outbox_id",
        errors,
    )
    if outbox_id is None:
        return errors.response()
    bulk = call.store.bulks.get(outbox_id)
    if bulk is None:
        return not_found()
    if bulk.cancelled or bulk.send_time is None or bulk.starts_at - call.now < CANCEL_LEAD_SECONDS:
        errors.add("message_outbox_id", _NOT_CANCELLABLE)
        return errors.response()
    bulk.cancelled = True
    return ok({"message_outbox_id": outbox_id, "state_id": STATE_CANCELLED})


def _refuse_recipients(outgoing: _Outgoing, webservice_path: str | None, call: Call, errors: FieldErrors) -> None:
    """Refuse the well-formed recipients the account may not text (see the module's docstring)."""
    for index, (recipients, _) in enumerate(outgoing):
        for position, recipient in enumerate(recipients):
            if _RECIPIENT.fullmatch(recipient) and refused(recipient):
                where = webservice_path or f"params.{index}.recipients"
                errors.add(
                    f"{where}.{position}" if call.config.ippanel_names_refused else "recipients", _REFUSED_RECIPIENT
                )


def _peer_to_peer(params: object, errors: FieldErrors) -> _Outgoing:
    if not isinstance(params, list) or not params:
        errors.add("params", required("params"))
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


def _webservice(body: dict[str, object], errors: FieldErrors) -> _Outgoing:
    text = _message(body.get("message"), "message", errors)
    params = body.get("params")
    if not isinstance(params, dict):
        errors.add("params", required("params"))
        return []
    return [(_recipients(params.get("recipients"), "params.recipients", errors), text)]


def _recipients(value: object, where: str, errors: FieldErrors) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        errors.add(where, required("recipients"))
        return ()
    for index, recipient in enumerate(value):
        if not isinstance(recipient, str) or not _RECIPIENT.fullmatch(recipient):
            errors.add(f"{where}.{index}", _INVALID_RECIPIENT)
    return tuple(str(recipient) for recipient in value)


def _message(value: object, where: str, errors: FieldErrors) -> str:
    if not isinstance(value, str) or not value.strip():
        errors.add(where, required("message"))
        return ""
    return value


def _send_time(value: object, errors: FieldErrors) -> float | None:
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
