"""Bitel SMS gateway (API v2): ``POST /api/v2/sms/batch/p2p`` to send, ``GET /api/v2/sms/status/{id}`` to track."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow_provider_p2psms.exceptions import (
    P2PSmsError,
    SmsRecipientsRefused,
    SmsRequestRejected,
    SmsUncertainSendError,
)
from airflow_provider_p2psms.hooks import transport
from airflow_provider_p2psms.hooks.base import P2PSmsHook
from airflow_provider_p2psms.hooks.codec import encode_json
from airflow_provider_p2psms.hooks.flows import StatusFlow, StatusLookup
from airflow_provider_p2psms.hooks.transport import ApiCall, GatewayResponse
from airflow_provider_p2psms.models import DeliveryState, DeliveryStatus, SmsReceipt

if TYPE_CHECKING:
    from collections.abc import Sequence
    from datetime import datetime

    from airflow_provider_p2psms.models import OutgoingSms

#: Bitel's delivery codes and names, from the SMS Status page.
BITEL_STATUSES: dict[int, tuple[str, DeliveryStatus]] = {
    0: ("WAITING", DeliveryStatus.PENDING),
    1: ("DELIVERED", DeliveryStatus.DELIVERED),
    2: ("CHECK_OK", DeliveryStatus.SENT),
    4: ("DELIVERY_FAILED", DeliveryStatus.FAILED),
    5: ("BLACKLIST", DeliveryStatus.BLACKLISTED),
    9: ("ERROR", DeliveryStatus.REJECTED),
    10: ("CHECK_ERROR", DeliveryStatus.REJECTED),
}
#: Names without separators, so the v2 ``statusText`` spelling (``DeliveryFailed``) is found too.
_BY_NAME: dict[str, int] = {name.replace("_", ""): code for code, (name, _) in BITEL_STATUSES.items()}

#: What to tell the user for each Bitel error code.
_HINTS: dict[str, str] = {
    "InvalidGateway": "Check the 'sender' extra of connection '{conn}': it must be a gateway number of your "
    "Bitel account, or be left empty to use the account's default gateway.",
    "InvalidPhoneNumber": "A recipient is not a valid Iranian mobile number in the local form 09xxxxxxxxx; "
    "pass recipients through the hook's normalize_number().",
    "InvalidRequest": "Bitel refuses empty message texts and more than 100 messages per request: check the "
    "rendered messages. If they are fine, this is a bug in the provider.",
}

#: Error codes by which Bitel refuses the recipients or texts of a send, not the account or its sender line.
#: ``InvalidRequest`` also stands for more than 100 messages or lists of different lengths, which
#: ``check_batch`` and the request's shape rule out. Bitel names no recipient in either: the sender
#: splits a refused batch to find them.
_REFUSED_CODES = frozenset({"InvalidRequest", "InvalidPhoneNumber"})

#: A well-formed id no message has: a status look-up for it tells a good token (404) from a bad one (401).
_PROBE_ID = "0" * 32


class BitelHook(P2PSmsHook):
    """
    Send peer-to-peer SMS through Bitel's v2 API, and read delivery states.

    Wire format of numbers: ``09121234567``. Authentication: ``Authorization: Bearer <token>``. The
    ``sender`` extra is Bitel's ``gatewayNumber``; empty means the account's default gateway (which
    does not deliver to blacklisted numbers). At most 100 messages per request. Delivery states are
    read one message per request, concurrently over the pooled session. ``InvalidRequest`` and
    ``InvalidPhoneNumber`` answers to a send raise ``SmsRecipientsRefused`` (naming nobody: Bitel does not
    say which number); ``InvalidGateway`` is about the sender line and fails the send. Bitel documents
    no price or credit endpoint: ``price_quote`` and ``credit`` raise ``SmsConfigurationError``, so
    ``check_credit`` and ``max_cost`` are refused before anything is read or sent.

    :param sms_conn_id: the Airflow connection of type ``bitel``; default ``bitel_default``.
    """

    default_conn_name = "bitel_default"
    conn_type = "bitel"
    max_batch_size = 100
    cost_hint = (
        "Bitel prices a message once it is processed: the delivery sensor's report and the outcomes table "
        "carry the prices. Leave check_credit and max_cost unset, or send through an IPPanel connection."
    )

    def format_national(self, national: str) -> str:
        return f"0{national}"

    def prepare_batch(self, messages: Sequence[OutgoingSms], *, send_time: datetime | None = None) -> bytes:
        """The body of the send request of ``messages``, encoded (for :meth:`send_batch`'s ``prepared``)."""
        body: dict[str, Any] = {
            "messages": [m.text for m in messages],
            "phoneNumbers": [m.recipient for m in messages],
        }
        if self.settings.sender:
            body["gatewayNumber"] = self.settings.sender
        return encode_json(body)

    def send_batch(
        self,
        messages: Sequence[OutgoingSms],
        *,
        send_time: datetime | None = None,
        after_uncertain: bool = False,
        prepared: Any = None,
    ) -> list[SmsReceipt]:
        self.check_batch(messages, send_time)
        body = prepared if isinstance(prepared, bytes) else self.prepare_batch(messages)
        call = ApiCall("POST", "/api/v2/sms/batch/p2p", body=body)
        try:
            answer = transport.request(self, call, kind="send", batch=messages, after_uncertain=after_uncertain)
        except SmsRequestRejected as error:
            if error.provider_code not in _REFUSED_CODES:
                raise
            raise SmsRecipientsRefused(
                error.provider, error.http_status, error.provider_code, hint=error.hint, refused=None
            ) from None
        results = answer.payload.get("result") if isinstance(answer.payload, dict) else None
        if not isinstance(results, list) or len(results) != len(messages):
            raise SmsUncertainSendError(
                self.provider_name,
                messages,
                f"the answer listed {len(results) if isinstance(results, list) else 'no'} results "
                f"for {len(messages)} messages",
            )
        receipts = []
        # One pass, no helper calls: this runs for every message sent, on the sending threads.
        for message, result in zip(messages, results, strict=True):
            message_id = result.get("id") if type(result) is dict else None
            if not message_id:
                raise SmsUncertainSendError(self.provider_name, messages, "a result had no message id")
            parts = result.get("partCount")
            price = result.get("price")
            receipts.append(
                SmsReceipt(
                    message_id if type(message_id) is str else str(message_id),
                    message.recipient,
                    parts if type(parts) is int else None,
                    # "price is 0 until the message is processed": 0 here means not known yet.
                    float(price) if type(price) in (int, float) and price else None,
                )
            )
        return receipts

    def status_lookups(self, receipts: Sequence[SmsReceipt]) -> list[StatusLookup]:
        # Bitel reads one message per request; the look-ups run concurrently over the pooled session.
        return [StatusLookup([position], self._status_flow(receipt)) for position, receipt in enumerate(receipts)]

    def _status_flow(self, receipt: SmsReceipt) -> StatusFlow:
        try:
            answer = yield ApiCall("GET", f"/api/v2/sms/status/{receipt.message_id}")
        except SmsRequestRejected as error:
            if error.provider_code is None:
                raise  # not a Bitel envelope: the base URL is wrong, waiting would not help
            return [DeliveryState(receipt.message_id, receipt.recipient, DeliveryStatus.UNKNOWN, error.provider_code)]
        result = answer.payload.get("result") if isinstance(answer.payload, dict) else None
        if not isinstance(result, dict):
            raise P2PSmsError(
                f"Bitel answered a status request for message {receipt.message_id} without a result. "
                f"Is {self.settings.base_url} (connection '{self.sms_conn_id}') the Bitel API?"
            )
        code, name = parse_bitel_status(result)
        known = BITEL_STATUSES.get(code) if code is not None else None
        status = known[1] if known else DeliveryStatus.UNKNOWN
        label = known[0] if known else (name or "?")
        price = _float_or_none(result.get("price"))
        if not status.is_final:
            # "price is 0 until the message is processed": before a final status, 0 means not known yet.
            # A final message's 0 is a price: one the operator never took is not charged.
            price = price or None
        return [
            DeliveryState(
                receipt.message_id,
                receipt.recipient,
                status,
                f"{code} {label}",
                parts=_int_or_none(_as_int(result.get("smsCount"))),
                price=price,
            )
        ]

    def test_connection(self) -> tuple[bool, str]:
        try:
            self.request("GET", f"/api/v2/sms/status/{_PROBE_ID}", kind="read")
        except SmsRequestRejected as error:
            # Bitel's error envelope for the unknown id proves the token; any other 4xx proves nothing.
            if error.provider_code is None:
                return self.connection_test_failure(error)
        except P2PSmsError as error:
            return self.connection_test_failure(error)
        return True, f"Bitel accepted the API token at {self.settings.base_url}."

    def error_for(self, response: GatewayResponse) -> P2PSmsError:
        if response.status_code == 401:
            return self.authentication_error()
        code = response.payload.get("error") if isinstance(response.payload, dict) else None
        hint = _HINTS.get(str(code), "").format(conn=self.sms_conn_id)
        if not code:
            hint = (
                f"The answer was not a Bitel error envelope: check the base URL ({self.settings.base_url}) "
                f"of connection '{self.sms_conn_id}'."
            )
        return SmsRequestRejected(self.provider_name, response.status_code, str(code) if code else None, hint=hint)

    def _auth_headers(self, token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}


def parse_bitel_status(result: dict[str, Any]) -> tuple[int | None, str | None]:
    """
    Read the delivery code and name from a Bitel status result.

    Bitel's pages show two shapes: ``statusCode`` (int) with ``status`` (name), and ``status`` (int)
    with ``statusText`` (name). Both are accepted; a name alone is mapped back to its code.
    """
    code: Any = _as_int(result.get("statusCode"))
    name: Any = None
    status = _as_int(result.get("status"))
    if isinstance(code, int) and not isinstance(code, bool):
        name = status if isinstance(status, str) else result.get("statusText")
    elif isinstance(status, int):
        code, name = status, result.get("statusText")
    else:
        name = status if isinstance(status, str) else result.get("statusText")
        code = None
    if code is None and isinstance(name, str):
        code = _BY_NAME.get(name.strip().upper().replace(" ", "").replace("_", ""))
    return code, name if isinstance(name, str) else None


def _as_int(value: Any) -> Any:
    """``"4"`` and ``4`` as ``4``; ``None`` for booleans; anything else unchanged."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return value


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _float_or_none(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
