"""IPPanel Edge SMS gateway: ``POST /api/send`` (``peer_to_peer``) to send, the report endpoints to track."""

from __future__ import annotations

import re
from datetime import timezone
from typing import TYPE_CHECKING, Any

from airflow_provider_p2psms.exceptions import (
    InvalidPhoneNumber,
    P2PSmsError,
    SmsRecipientsRefused,
    SmsRequestRejected,
    SmsUncertainSendError,
)
from airflow_provider_p2psms.hooks import transport
from airflow_provider_p2psms.hooks.base import P2PSmsHook
from airflow_provider_p2psms.hooks.flows import StatusFlow, StatusLookup
from airflow_provider_p2psms.hooks.ippanel_cancel import IPPanelCancel
from airflow_provider_p2psms.hooks.ippanel_inbox import IPPanelInbox
from airflow_provider_p2psms.hooks.transport import ApiCall, GatewayResponse
from airflow_provider_p2psms.models import DeliveryState, DeliveryStatus, PriceQuote, SmsReceipt
from airflow_provider_p2psms.utils.phone import to_ascii_digits, to_national_mobile

if TYPE_CHECKING:
    from collections.abc import Generator, Sequence
    from datetime import datetime

    from airflow_provider_p2psms.models import OutgoingSms

#: ``state_id`` of an outbox entry (``/api/report/by_bulk``). Final failures mean nobody gets the text.
IPPANEL_BULK_STATES: dict[int, tuple[str, DeliveryStatus]] = {
    0: ("being created", DeliveryStatus.PENDING),
    1: ("in the monitoring queue", DeliveryStatus.PENDING),
    2: ("being sent", DeliveryStatus.PENDING),
    3: ("rejected by monitoring", DeliveryStatus.REJECTED),
    4: ("recipients invalid", DeliveryStatus.REJECTED),
    5: ("in the send queue", DeliveryStatus.PENDING),
    6: ("sent", DeliveryStatus.SENT),
    7: ("cancelled", DeliveryStatus.REJECTED),
    8: ("insufficient credit", DeliveryStatus.REJECTED),
    9: ("system error", DeliveryStatus.REJECTED),
}

#: Per-recipient ``message_status`` (``/api/report/recipients``), present once the bulk is sent.
IPPANEL_RECIPIENT_STATUSES: dict[str, tuple[str, DeliveryStatus]] = {
    "0": ("sent to the operator", DeliveryStatus.SENT),
    "1": ("operator received it", DeliveryStatus.SENT),
    "2": ("delivered", DeliveryStatus.DELIVERED),
    "3": ("not delivered", DeliveryStatus.FAILED),
    "4": ("blacklisted", DeliveryStatus.BLACKLISTED),
}

#: Recipients asked for per report page; the hook follows ``meta.last_page`` whatever the server uses.
REPORT_PAGE_SIZE = 100

_SEND_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
PRICE_PATH = "/api/send/calculate-price"
CREDIT_PATH = "/api/payment/credit/mine"

#: 422 fields of a send that concern the whole request, not its recipients: splitting it cannot help.
_REQUEST_FIELDS = ("from_number", "send_time", "sending_type")
#: How a 422 might name one recipient: ``params.<i>.recipients.<j>``, the path into the request body.
#: The Edge documentation gives no example of a recipient's field error, so this shape is an
#: assumption (the sandbox answers so); any other key makes the refusal one that names nobody.
_RECIPIENT_FIELD = re.compile(r"params\.(\d+)\.recipients\.(\d+)")


class IPPanelHook(IPPanelInbox, IPPanelCancel, P2PSmsHook):
    """
    Send peer-to-peer SMS through the IPPanel Edge API, and read delivery states.

    Wire format of numbers: ``+989121234567``. Authentication: ``Authorization: <api key>``, no
    prefix. The ``sender`` extra is IPPanel's ``from_number`` and is required. Recipients of one
    batch that share the exact same text travel in one ``params`` element, so the gateway stores
    them as one outbox entry. Scheduling (``send_time``) is supported. A text is priced before sending
    with ``/api/send/calculate-price`` (asked with the ``sender`` line as ``number``) and the balance
    read with ``/api/payment/credit/mine``: both serve ``check_credit`` and ``max_cost``.

    Batch size: IPPanel documents no limit. 100 recipients per request is the default and the
    maximum here: it keeps a request with long Persian texts around 30 KB, it is what Bitel allows
    (so both gateways behave alike), and it bounds what one request that times out leaves uncertain.
    The ``batch_size`` extra can lower it.

    A 422 about the recipients or texts raises ``SmsRecipientsRefused``, naming the recipients when its
    field errors read as ``params.<i>.recipients.<j>`` (an assumption: the documentation shows none);
    a 422 on ``from_number``, ``send_time`` or ``sending_type`` is about the request and fails the send.

    :param sms_conn_id: the Airflow connection of type ``ippanel``; default ``ippanel_default``.
    """

    default_conn_name = "ippanel_default"
    conn_type = "ippanel"
    max_batch_size = 100
    supports_send_time = True
    sender_required = True
    supports_price_quote = True
    supports_credit = True

    def format_national(self, national: str) -> str:
        return f"+98{national}"

    def normalize_sender(self, sender: str) -> str:
        compact = "".join(ch for ch in to_ascii_digits(sender) if ch in "+0123456789")
        if compact.startswith("+"):
            return compact
        if compact.startswith("0098"):
            return f"+{compact[2:]}"
        if compact.startswith("98"):
            return f"+{compact}"
        return f"+98{compact.removeprefix('0')}"

    def send_batch(
        self,
        messages: Sequence[OutgoingSms],
        *,
        send_time: datetime | None = None,
        after_uncertain: bool = False,
        prepared: Any = None,
    ) -> list[SmsReceipt]:
        self.check_batch(messages, send_time)
        groups: dict[str, list[str]] = {}
        for message in messages:
            groups.setdefault(message.text, []).append(message.recipient)
        body: dict[str, Any] = {
            "sending_type": "peer_to_peer",
            "from_number": self.settings.sender,
            "params": [{"recipients": recipients, "message": text} for text, recipients in groups.items()],
        }
        if send_time is not None:
            body["send_time"] = send_time.astimezone(timezone.utc).strftime(_SEND_TIME_FORMAT)
        call = ApiCall("POST", "/api/send", json=body)
        try:
            answer = transport.request(self, call, kind="send", batch=messages, after_uncertain=after_uncertain)
        except SmsRequestRejected as error:
            raise _refusal(error, list(groups.values())) from None
        data = answer.payload.get("data") if isinstance(answer.payload, dict) else None
        ids = data.get("message_outbox_ids") if isinstance(data, dict) else None
        if not isinstance(ids, list) or len(ids) != len(groups) or not all(ids):
            raise SmsUncertainSendError(
                self.provider_name,
                messages,
                f"the answer did not carry one outbox id per message text ({len(groups)} expected)",
            )
        outbox_of = {text: str(outbox_id) for text, outbox_id in zip(groups, ids, strict=True)}
        return [SmsReceipt(message_id=outbox_of[m.text], recipient=m.recipient) for m in messages]

    def status_lookups(self, receipts: Sequence[SmsReceipt]) -> list[StatusLookup]:
        # One look-up per outbox entry: its recipients report covers every receipt that shares the id.
        bulks: dict[str, list[int]] = {}
        for position, receipt in enumerate(receipts):
            bulks.setdefault(receipt.message_id, []).append(position)
        return [
            StatusLookup(positions, self._bulk_flow(bulk_id, [receipts[p] for p in positions]))
            for bulk_id, positions in bulks.items()
        ]

    def _bulk_flow(self, bulk_id: str, receipts: list[SmsReceipt]) -> StatusFlow:
        """States of the receipts of one outbox entry: the recipients report, and the bulk's state if needed."""
        # Prices: the recipients report has none per recipient, and by_bulk's ``cost`` is the whole outbox
        # entry's (every recipient of the text in the batch), so IPPanel states carry no price.
        reported = yield from self._recipient_report(bulk_id)
        states: dict[str, DeliveryState] = {}
        parts_of: dict[str, int | None] = {}
        for receipt in receipts:
            code, parts_of[receipt.recipient] = reported.get(_match_key(receipt.recipient), (None, None))
            if code is not None:
                label, status = IPPANEL_RECIPIENT_STATUSES.get(code, (f"unknown status {code}", DeliveryStatus.UNKNOWN))
                states[receipt.recipient] = DeliveryState(
                    bulk_id, receipt.recipient, status, f"{code} {label}", parts=parts_of[receipt.recipient]
                )
        if len(states) < len(receipts):
            state_id = yield from self._bulk_state_id(bulk_id)
            label, status = IPPANEL_BULK_STATES.get(
                state_id if state_id is not None else -1, (f"unknown state {state_id}", DeliveryStatus.UNKNOWN)
            )
            for receipt in receipts:
                known = states.get(receipt.recipient)
                if known is None or (status is DeliveryStatus.REJECTED and not known.is_final):
                    states[receipt.recipient] = DeliveryState(
                        bulk_id,
                        receipt.recipient,
                        status,
                        f"bulk state {state_id} {label}",
                        parts=parts_of[receipt.recipient],
                    )
        return [states[r.recipient] for r in receipts]

    def _recipient_report(
        self, bulk_id: str
    ) -> Generator[ApiCall, GatewayResponse, dict[str, tuple[str | None, int | None]]]:
        """
        Recipient (national digits) to its ``message_status`` (``None`` until the bulk is sent) and
        ``msg_parts``, over every page.
        """
        found: dict[str, tuple[str | None, int | None]] = {}
        page = 1
        while True:
            answer = yield ApiCall(
                "GET", "/api/report/recipients", params={"bulk_id": bulk_id, "page": page, "per_page": REPORT_PAGE_SIZE}
            )
            payload = answer.payload if isinstance(answer.payload, dict) else {}
            rows = payload.get("data")
            if not isinstance(rows, list):
                raise self._unexpected("a recipients report", bulk_id)
            for row in rows:
                if isinstance(row, dict):
                    status = row.get("message_status")
                    found[_match_key(str(row.get("recipient", "")))] = (
                        None if status in (None, "") else str(status),
                        _parts(row.get("msg_parts")),
                    )
            meta = payload.get("meta")
            last_page = meta.get("last_page") if isinstance(meta, dict) else None
            if not isinstance(last_page, int) or page >= last_page or not rows:
                return found
            page += 1

    def _bulk_state_id(self, bulk_id: str) -> Generator[ApiCall, GatewayResponse, int | None]:
        answer = yield ApiCall("GET", "/api/report/by_bulk", params={"messages_outbox_id": bulk_id})
        data = answer.payload.get("data") if isinstance(answer.payload, dict) else None
        if not isinstance(data, dict):
            raise self._unexpected("a bulk report", bulk_id)
        state_id = data.get("state_id")
        if isinstance(state_id, str) and state_id.isdigit():
            return int(state_id)
        return state_id if isinstance(state_id, int) else None

    def _unexpected(self, what: str, bulk_id: str) -> P2PSmsError:
        return P2PSmsError(
            f"IPPanel answered {what} request for outbox {bulk_id} without the expected data. "
            f"Is {self.settings.base_url} (connection '{self.sms_conn_id}') the IPPanel Edge API?"
        )

    def price_quote(self, text: str) -> PriceQuote:
        # ``number`` is the sender line the text would go out on, not a recipient.
        answer = self.request("POST", PRICE_PATH, kind="read", json={"number": self.settings.sender, "message": text})
        data = answer.payload.get("data") if isinstance(answer.payload, dict) else None
        found = data if isinstance(data, dict) else {}
        parts = _parts(found.get("parts"))
        mci, other = _amount(found.get("mci_price")), _amount(found.get("other_price"))
        if parts is None or mci is None or other is None:
            raise self._unexpected_account(PRICE_PATH, "data.mci_price, data.other_price and data.parts")
        return PriceQuote(parts=parts, mci_price=mci, other_price=other)

    def credit(self) -> float:
        answer = self.request("GET", CREDIT_PATH, kind="read")
        data = answer.payload.get("data") if isinstance(answer.payload, dict) else None
        credit = _amount(data.get("credit")) if isinstance(data, dict) else None
        if credit is None:
            raise self._unexpected_account(CREDIT_PATH, "data.credit")
        return credit

    def _unexpected_account(self, path: str, what: str) -> P2PSmsError:
        return P2PSmsError(
            f"IPPanel answered {path} without {what} as numbers. Is {self.settings.base_url} "
            f"(connection '{self.sms_conn_id}') the IPPanel Edge API?"
        )

    def test_connection(self) -> tuple[bool, str]:
        try:
            answer = self.request("GET", CREDIT_PATH, kind="read")
        except P2PSmsError as error:
            return self.connection_test_failure(error)
        data = answer.payload.get("data") if isinstance(answer.payload, dict) else None
        credit = data.get("credit") if isinstance(data, dict) else None
        balance = f" Credit: {credit}." if credit is not None else ""
        return (
            True,
            f"IPPanel accepted the API key at {self.settings.base_url}.{balance}",
        )

    def error_for(self, response: GatewayResponse) -> P2PSmsError:
        if response.status_code == 401:
            return self.authentication_error()
        meta = response.payload.get("meta") if isinstance(response.payload, dict) else None
        if not isinstance(meta, dict):
            return SmsRequestRejected(
                self.provider_name,
                response.status_code,
                None,
                hint=f"The answer was not an IPPanel envelope: check the base URL ({self.settings.base_url}) "
                f"of connection '{self.sms_conn_id}'.",
            )
        errors = meta.get("errors")
        field_errors = {
            str(k): [str(m) for m in (v if isinstance(v, list) else [v])]
            for k, v in (errors.items() if isinstance(errors, dict) else ())
        }
        return SmsRequestRejected(
            self.provider_name,
            response.status_code,
            str(meta.get("message_code") or "") or None,
            field_errors=field_errors,
            hint=self._hint(field_errors),
            detail=str(meta.get("message") or ""),
        )

    def _hint(self, field_errors: dict[str, list[str]]) -> str:
        fields = " ".join(field_errors)
        if "from_number" in fields or "number" in field_errors:  # calculate-price's ``number`` is the sender
            return (
                f"Check the 'sender' extra of connection '{self.sms_conn_id}': it must be a sender line of "
                "your IPPanel account, in E.164 form like +983000505."
            )
        if "send_time" in fields:
            return "send_time must be a future UTC time."
        if "recipients" in fields:
            return "A recipient was refused; recipients must be Iranian mobile numbers like +989121234567."
        return f"Check the request against the IPPanel account of connection '{self.sms_conn_id}'."

    def _auth_headers(self, token: str) -> dict[str, str]:
        return {"Authorization": token}


def _refusal(error: SmsRequestRejected, recipients: list[list[str]]) -> SmsRequestRejected:
    """
    ``error`` as :class:`SmsRecipientsRefused` when it refuses the recipients or texts of a send.

    A 422 on anything but the request-wide fields is one. The recipients it names are found through
    their field paths (``params.<i>.recipients.<j>``, ``recipients`` being the ``params`` in request
    order); when any field is not such a path, it names nobody, and the sender splits the batch.
    """
    fields = list(error.field_errors)
    if error.http_status != 422 or any(name in field for field in fields for name in _REQUEST_FIELDS):
        return error
    named: list[str] = []
    for field in fields:
        found = _RECIPIENT_FIELD.fullmatch(field)
        group, index = (int(found[1]), int(found[2])) if found else (len(recipients), 0)
        if group >= len(recipients) or index >= len(recipients[group]):
            named = []
            break
        named.append(recipients[group][index])
    return SmsRecipientsRefused(
        error.provider,
        error.http_status,
        error.provider_code,
        error.field_errors,
        hint=error.hint,
        refused=named or None,
    )


def _parts(value: Any) -> int | None:
    """``msg_parts`` of a report row (a number, or digits in a string), ``None`` when absent or not one."""
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _amount(value: Any) -> float | None:
    """A price or balance (a number, or one in a string), ``None`` when absent, negative or not one."""
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            return None
    if isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value < float("inf"):
        return float(value)
    return None


def _match_key(number: str) -> str:
    """Compare report rows and receipts by national digits, whatever spelling the report uses."""
    try:
        return to_national_mobile(number)
    except InvalidPhoneNumber:
        return number
