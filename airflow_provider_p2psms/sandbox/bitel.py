"""Bitel v2 stand-in: ``/api/v2/sms/...``, Bearer auth, ``{"result", "error"}`` envelopes.

Validation answers HTTP 400 with one error code, checked in this order:
``InvalidRequest`` (body not an object, a field missing or of the wrong type, an empty
list or text, list lengths differing, more than :data:`MAX_BATCH` messages),
``InvalidPhoneNumber`` (a number not ``09`` + 9 digits, or one the account may not text: last five
digits ``00666``, :data:`~.lifecycle.SUFFIX_REFUSED`), ``InvalidGateway`` (``gatewayNumber`` not one
of the account's; a ``null`` one counts as absent). An error names no recipient, as Bitel's do not.
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING, Final

from airflow_provider_p2psms.sandbox.lifecycle import (
    PRICE_PER_PART,
    Phase,
    final_outcome,
    phase_at,
    refused,
    sms_parts,
)
from airflow_provider_p2psms.sandbox.store import BitelMessage
from airflow_provider_p2psms.sandbox.wire import KIND_SEND, KIND_STATUS, ApiResponse, Call, Route

if TYPE_CHECKING:
    from collections.abc import Callable

    from airflow_provider_p2psms.sandbox.config import SandboxConfig

MAX_BATCH: Final = 100

INVALID_REQUEST: Final = "InvalidRequest"
INVALID_PHONE_NUMBER: Final = "InvalidPhoneNumber"
INVALID_GATEWAY: Final = "InvalidGateway"

_PHONE_NUMBER: Final = re.compile(r"09[0-9]{9}")

WAITING: Final = 0
CHECK_OK: Final = 2

# code -> (name in the "code" status shape, statusText in the "v2" shape)
STATUS_NAMES: Final = {
    0: ("WAITING", "Waiting"),
    1: ("DELIVERED", "Delivered"),
    2: ("CHECK_OK", "CheckOk"),
    4: ("DELIVERY_FAILED", "DeliveryFailed"),
    5: ("BLACKLIST", "Blacklist"),
    9: ("ERROR", "Error"),
    10: ("CHECK_ERROR", "CheckError"),
}

Body = dict[str, object]
Pairs = list[tuple[str, str]]


class _Rejected(Exception):
    """A request failed validation with a Bitel error code."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


def _envelope(status: int, result: object = None, error: str | None = None) -> ApiResponse:
    return ApiResponse(status, {"result": result, "error": error})


class BitelApi:
    """The Bitel endpoints the provider uses, served under ``/api/v2``."""

    name = "bitel"
    prefix = "/api/"

    def routes(self) -> list[Route]:
        """Return the endpoints."""
        return [
            Route("POST", "/api/v2/sms/batch/p2p", KIND_SEND, lambda call: self._send(call, _p2p_pairs)),
            Route("POST", "/api/v2/sms/batch", KIND_SEND, lambda call: self._send(call, _batch_pairs)),
            Route(
                "POST",
                "/api/v2/sms/single",
                KIND_SEND,
                lambda call: self._send(call, _single_pair, single=True),
            ),
            Route("GET", "/api/v2/sms/status/{id}", KIND_STATUS, self._status),
        ]

    def authorized(self, authorization: str | None, config: SandboxConfig) -> bool:
        """Accept ``Bearer <token>`` with a configured token."""
        scheme, _, token = (authorization or "").partition(" ")
        return scheme.lower() == "bearer" and token.strip() in config.bitel_tokens

    def unauthorized(self) -> ApiResponse:
        """Return the 401 answer."""
        return _envelope(401, error="Unauthorized")

    def unavailable(self) -> ApiResponse:
        """Return the 503 answer."""
        return _envelope(503, error="ServiceUnavailable")

    def rate_limited(self) -> ApiResponse:
        """Return the 429 answer."""
        return _envelope(429, error="TooManyRequests")

    def not_found(self) -> ApiResponse:
        """Return the 404 answer."""
        return _envelope(404, error="NotFound")

    def method_not_allowed(self) -> ApiResponse:
        """Return the 405 answer."""
        return _envelope(405, error="MethodNotAllowed")

    def _send(self, call: Call, pairs_of: Callable[[Body], Pairs], *, single: bool = False) -> ApiResponse:
        try:
            pairs, gateway = _validated(call, pairs_of)
        except _Rejected as rejected:
            return _envelope(400, error=rejected.code)
        request_seq = call.store.accept_send()
        results = []
        # 32 random hex digits per message, drawn at once: a uuid4 per message costs a system call each.
        ids = os.urandom(16 * len(pairs)).hex()
        for index, (phone_number, text) in enumerate(pairs):
            message = BitelMessage(
                id=ids[32 * index : 32 * index + 32],
                phone_number=phone_number,
                text=text,
                gateway=gateway,
                accepted_at=call.now,
                parts=sms_parts(text),
            )
            call.store.add_bitel(message, request_seq)
            results.append(
                {
                    "id": message.id,
                    "gatewayNumber": gateway,
                    "phoneNumber": phone_number,
                    "message": text,
                    "requestDate": int(message.accepted_at),
                    "status": WAITING,
                    "statusText": STATUS_NAMES[WAITING][1],
                    "partCount": message.parts,
                    "price": 0.0,
                }
            )
        return _envelope(200, results[0] if single else results)

    def _status(self, call: Call) -> ApiResponse:
        message = call.store.bitel_messages.get(call.params["id"])
        if message is None:
            return _envelope(404, error="NotFound")
        code, price = WAITING, 0.0
        phase = phase_at(message.accepted_at, call.now, call.config.delivery_seconds)
        if phase is Phase.AT_OPERATOR:
            code = CHECK_OK
        elif phase is Phase.FINAL:
            outcome = final_outcome(message.phone_number)
            code = outcome.bitel_code
            price = PRICE_PER_PART * message.parts if outcome.charged else 0.0
        name, text = STATUS_NAMES[code]
        status = (
            {"statusCode": code, "status": name}
            if call.config.bitel_status_shape == "code"
            else {"status": code, "statusText": text}
        )
        result = {
            "id": message.id,
            "gatewayNumber": message.gateway,
            "message": message.text,
            "phoneNumber": message.phone_number,
            "requestDate": int(message.accepted_at),
            "smsCount": message.parts,
            "price": price,
            **status,
        }
        return _envelope(200, result)


def _p2p_pairs(body: Body) -> Pairs:
    texts = _texts(body.get("messages"))
    phone_numbers = _phone_numbers(body.get("phoneNumbers"))
    if len(texts) != len(phone_numbers):
        raise _Rejected(INVALID_REQUEST)
    return list(zip(phone_numbers, texts, strict=True))


def _batch_pairs(body: Body) -> Pairs:
    text = _text(body.get("message"))
    return [(phone_number, text) for phone_number in _phone_numbers(body.get("phoneNumbers"))]


def _single_pair(body: Body) -> Pairs:
    phone_number = body.get("phoneNumber")
    if not isinstance(phone_number, str):
        raise _Rejected(INVALID_REQUEST)
    return [(phone_number, _text(body.get("message")))]


def _text(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise _Rejected(INVALID_REQUEST)
    return value


def _texts(value: object) -> list[str]:
    if not isinstance(value, list) or not value or len(value) > MAX_BATCH:
        raise _Rejected(INVALID_REQUEST)
    return [_text(item) for item in value]


def _phone_numbers(value: object) -> list[str]:
    if (
        not isinstance(value, list)
        or not value
        or len(value) > MAX_BATCH
        or not all(isinstance(item, str) for item in value)
    ):
        raise _Rejected(INVALID_REQUEST)
    return value


def _validated(call: Call, pairs_of: Callable[[Body], Pairs]) -> tuple[Pairs, str]:
    """Return the (phone number, text) pairs and the gateway, or raise the error code."""
    try:
        body = call.request.json()
    except ValueError:
        raise _Rejected(INVALID_REQUEST) from None
    if not isinstance(body, dict):
        raise _Rejected(INVALID_REQUEST)
    pairs = pairs_of(body)
    gateway = body.get("gatewayNumber")
    if gateway is not None and not isinstance(gateway, str):
        raise _Rejected(INVALID_REQUEST)
    if not all(_PHONE_NUMBER.fullmatch(phone_number) and not refused(phone_number) for phone_number, _ in pairs):
        raise _Rejected(INVALID_PHONE_NUMBER)
    if gateway is None:
        return pairs, call.config.bitel_gateways[0]
    if gateway not in call.config.bitel_gateways:
        raise _Rejected(INVALID_GATEWAY)
    return pairs, gateway
