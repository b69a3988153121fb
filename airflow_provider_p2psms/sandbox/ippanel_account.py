"""IPPanel account endpoints: the credit, the token check, and the price of a text before it is sent.

- ``GET /v1/api/payment/credit/mine`` answers ``data.credit``: the ``ippanel_credit`` of the
  configuration (default :data:`DEFAULT_CREDIT`). It is a fixed balance: sends do not lower it.
- ``POST /v1/api/acl/auth/check_token`` answers ``data.user_name`` and ``data.send_block``.
- ``POST /v1/api/send/calculate-price`` takes ``{"number": <sender line>, "message": <text>}``: ``number``
  must be one of the account's lines (``ippanel_senders``), as ``from_number`` of a send. It answers
  ``data.parts`` (the text's SMS parts, at least one) and the price of the text to one recipient:
  ``data.mci_price`` = :data:`MCI_PRICE_PER_PART` and ``data.other_price`` = :data:`OTHER_PRICE_PER_PART`
  per part, the figures of the Edge documentation's example. A field missing or wrong answers 422 with
  its field error, like a send.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from airflow_provider_p2psms.sandbox.ippanel_envelope import FieldErrors, check_sender, json_object, ok, required
from airflow_provider_p2psms.sandbox.lifecycle import sms_parts

if TYPE_CHECKING:
    from airflow_provider_p2psms.sandbox.wire import ApiResponse, Call

DEFAULT_CREDIT: Final = 1000000.0
#: The price of one SMS part to a recipient on MCI.
MCI_PRICE_PER_PART: Final = 2370.0
#: The price of one SMS part to a recipient on any other network.
OTHER_PRICE_PER_PART: Final = 2503.0


def credit(call: Call) -> ApiResponse:
    """Answer the account's balance."""
    return ok({"credit": call.config.ippanel_credit})


def check_token(call: Call) -> ApiResponse:
    """Answer the account behind the key (the key itself was checked before)."""
    return ok({"user_name": "sandbox", "send_block": False})


def calculate_price(call: Call) -> ApiResponse:
    """Price a text sent on one of the account's lines, per recipient network."""
    errors = FieldErrors()
    body = json_object(call, errors)
    if body is None:
        return errors.response()
    check_sender(body.get("number"), "number", call, errors)
    message = body.get("message")
    if not isinstance(message, str) or not message.strip():
        errors.add("message", required("message"))
    if errors.by_field:
        return errors.response()
    parts = sms_parts(str(message))
    return ok({"mci_price": MCI_PRICE_PER_PART * parts, "other_price": OTHER_PRICE_PER_PART * parts, "parts": parts})
