"""What the sandbox remembers about accepted messages.

The store has no lock of its own: the dispatcher holds the sandbox lock around every
read and write.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

FIRST_OUTBOX_ID: Final = 1123594208


@dataclass(frozen=True)
class BitelMessage:
    """One message accepted by the Bitel stand-in.

    :param id: 32 lowercase hex characters, the status handle.
    :param phone_number: recipient as sent, ``09xxxxxxxxx``.
    :param text: message text.
    :param gateway: gateway number it was sent from.
    :param accepted_at: epoch seconds of acceptance; the lifecycle starts here.
    :param parts: SMS segments.
    """

    id: str
    phone_number: str
    text: str
    gateway: str
    accepted_at: float
    parts: int


@dataclass
class IppanelBulk:
    """One IPPanel outbox entry: one ``params`` element, one text to its recipients.

    :param outbox_id: the ``message_outbox_id``.
    :param from_number: sender line.
    :param text: message text.
    :param recipients: recipients in ``+989xxxxxxxxx`` form, in request order.
    :param accepted_at: epoch seconds of acceptance.
    :param send_time: the ``send_time`` string as sent, or ``None``.
    :param starts_at: epoch seconds when the lifecycle starts (the later of acceptance
        and ``send_time``).
    :param parts: SMS segments of the text.
    :param cancelled: whether the send was cancelled.
    """

    outbox_id: int
    from_number: str
    text: str
    recipients: tuple[str, ...]
    accepted_at: float
    send_time: str | None
    starts_at: float
    parts: int
    cancelled: bool = False


class Store:
    """Accepted messages of both gateways, plus the log served at ``/__sandbox__/messages``."""

    def __init__(self) -> None:
        self.bitel_messages: dict[str, BitelMessage] = {}
        self.bulks: dict[int, IppanelBulk] = {}
        self.accepted_sends = 0
        self.message_log: list[dict[str, object]] = []
        self._next_outbox_id = FIRST_OUTBOX_ID
        # IPPanel's duplicate guard: what each accepted send request carried -> when, oldest first.
        self._recent_sends: dict[object, float] = {}

    def accepted_recently(self, carried: object, now: float, window: float) -> bool:
        """Whether a send request carrying ``carried`` was accepted less than ``window`` seconds ago."""
        while self._recent_sends:
            oldest, at = next(iter(self._recent_sends.items()))
            if now - at < window:
                break
            del self._recent_sends[oldest]
        return carried in self._recent_sends

    def remember_send(self, carried: object, now: float) -> None:
        """Note an accepted send request, for :meth:`accepted_recently`."""
        self._recent_sends.pop(carried, None)
        self._recent_sends[carried] = now

    def accept_send(self) -> int:
        """Count one more accepted send request and return its 1-based ordinal."""
        self.accepted_sends += 1
        return self.accepted_sends

    def add_bitel(self, message: BitelMessage, request_seq: int) -> None:
        """Keep a Bitel message and log it.

        :param message: the accepted message.
        :param request_seq: ordinal of the send request that carried it.
        """
        self.bitel_messages[message.id] = message
        self._log(
            "bitel",
            message.id,
            message.phone_number,
            message.text,
            message.gateway,
            message.accepted_at,
            None,
            request_seq,
        )

    def add_bulk(self, bulk: IppanelBulk, request_seq: int) -> None:
        """Keep an IPPanel bulk and log one message per recipient.

        :param bulk: the accepted bulk.
        :param request_seq: ordinal of the send request that carried it.
        """
        self.bulks[bulk.outbox_id] = bulk
        for recipient in bulk.recipients:
            self._log(
                "ippanel",
                str(bulk.outbox_id),
                recipient,
                bulk.text,
                bulk.from_number,
                bulk.accepted_at,
                bulk.send_time,
                request_seq,
            )

    def next_outbox_id(self) -> int:
        """Allocate the next IPPanel ``message_outbox_id``."""
        outbox_id = self._next_outbox_id
        self._next_outbox_id += 1
        return outbox_id

    def _log(
        self,
        provider: str,
        message_id: str,
        recipient: str,
        text: str,
        sender: str,
        accepted_at: float,
        send_time: str | None,
        request_seq: int,
    ) -> None:
        self.message_log.append(
            {
                "provider": provider,
                "id": message_id,
                "recipient": recipient,
                "text": text,
                "sender": sender,
                "accepted_at": accepted_at,
                "send_time": send_time,
                "request_seq": request_seq,
            }
        )
