"""Plain data passed between the hooks, the operator, the sensor and the trigger.

Nothing here knows about a particular gateway: hooks translate their provider's JSON into these
types, and everything downstream of a hook works only with them. The XCom formats (the send
receipt and the delivery report) are JSON-ready ``TypedDict``\\s.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from hashlib import blake2b
from typing import Any, TypedDict


class DeliveryStatus(str, Enum):
    """One vocabulary for delivery states, whatever the gateway."""

    PENDING = "pending"
    """Accepted by the gateway, not yet handed to the mobile operator."""
    SENT = "sent"
    """Handed to the mobile operator; no delivery report yet."""
    DELIVERED = "delivered"
    """Delivered to the handset. Final."""
    FAILED = "failed"
    """The operator could not deliver it. Final."""
    BLACKLISTED = "blacklisted"
    """Not delivered: the recipient blocks this sender or advertising. Final."""
    REJECTED = "rejected"
    """Never sent (refused by the gateway, the operator or its monitoring). Final."""
    UNKNOWN = "unknown"
    """The gateway answered with a state this provider does not know. Not final."""

    @property
    def is_final(self) -> bool:
        return self in _FINAL

    @property
    def is_failure(self) -> bool:
        return self in _FINAL and self is not DeliveryStatus.DELIVERED


_FINAL = frozenset(
    {DeliveryStatus.DELIVERED, DeliveryStatus.FAILED, DeliveryStatus.BLACKLISTED, DeliveryStatus.REJECTED}
)


@dataclass(frozen=True, slots=True)
class OutgoingSms:
    """One text for one recipient, ready for the wire.

    :param recipient: the number in the gateway's wire format (see ``P2PSmsHook.normalize_number``).
    :param text: the rendered message.
    :param row: the input row it was rendered from, numbered from 1 (0 when not from a row). Not part
        of the message's identity, and never sent.
    :param row_key: that row's key (the operator's ``key_field``), when it has one. Not sent either.
    :param parts: the SMS parts the text takes, when counted already (0: not counted).
    """

    recipient: str
    text: str
    row: int = field(default=0, compare=False)
    row_key: str | None = field(default=None, compare=False)
    parts: int = field(default=0, compare=False)


def message_key(recipient: str, text: str) -> int:
    """
    A 64-bit key of (recipient, text): the identity of a message.

    Two rows with the same number and text are one message (sent once), and a retry recognizes what an
    earlier try sent by it, whatever order the rows come back in. Resume checkpoints store it: it must
    never change between versions.
    """
    digest = blake2b(f"{recipient}\x1f{text}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


@dataclass(frozen=True, slots=True)
class SmsReceipt:
    """The gateway's acknowledgement of one accepted message.

    :param message_id: the gateway's handle for status look-ups (Bitel message id, IPPanel outbox id).
    :param recipient: the number the message went to, in wire format.
    :param parts: SMS parts billed, when the gateway says.
    :param price: the price, when the gateway says.
    """

    message_id: str
    recipient: str
    parts: int | None = None
    price: float | None = None


@dataclass(frozen=True, slots=True)
class BatchResult:
    """What came of one batch of a bulk send (``P2PSmsHook.send_messages``).

    One of three outcomes: accepted (``receipts``, one per message), uncertain (``uncertain`` says why),
    or rejected (``rejected`` says why). A batch the gateway refused for some of its recipients comes
    back as several results: its accepted parts and its rejected messages.

    :param keys: the messages' keys (:func:`message_key`), in batch order.
    :param messages: the batch (or the part of it this result is about), in the order sent.
    :param receipts: one per message when the gateway accepted them; empty otherwise.
    :param uncertain: why the gateway may or may not have the messages (a timeout, a dropped
        connection, a 5xx); ``None`` when it answered.
    :param rejected: the gateway's reason for refusing these messages (a number it does not take);
        they were not sent. ``None`` unless refused.
    """

    keys: tuple[int, ...]
    messages: tuple[OutgoingSms, ...]
    receipts: tuple[SmsReceipt, ...] = ()
    uncertain: str | None = None
    rejected: str | None = None

    @property
    def accepted(self) -> bool:
        return self.uncertain is None and self.rejected is None


@dataclass(frozen=True, slots=True)
class DeliveryState:
    """The delivery state of one message at the time it was read.

    :param message_id: the gateway's handle, as in the receipt.
    :param recipient: the number, in wire format.
    :param status: the normalized status.
    :param provider_status: the gateway's own words for it (code and name), for reports.
    :param parts: the SMS parts the gateway counted for the message, when its report says.
    :param price: what the gateway charged for it, when its report says; a price read before the
        message is final may still change.
    """

    message_id: str
    recipient: str
    status: DeliveryStatus
    provider_status: str
    parts: int | None = None
    price: float | None = None

    @property
    def is_final(self) -> bool:
        return self.status.is_final


@dataclass(frozen=True, slots=True)
class PriceQuote:
    """What the gateway charges for one text, to one recipient (``P2PSmsHook.price_quote``).

    :param parts: the SMS parts the gateway counts for the text.
    :param mci_price: the price to a recipient on MCI (Hamrah-e Avval), in the gateway's price unit.
    :param other_price: the price to a recipient on any other network.
    """

    parts: int
    mci_price: float
    other_price: float


class ReceiptCounts(TypedDict):
    """Counts in a send receipt.

    ``requested`` rows were read; ``sent`` messages were accepted by the gateway (in this try or an
    earlier one); ``resumed`` of those were accepted by an earlier try and not sent again;
    ``invalid`` rows were left out; ``duplicate`` rows repeated an earlier (number, text) pair;
    ``excluded`` rows had a number on the suppression list (``exclude``, ``exclude_sql``);
    ``uncertain`` messages may or may not have been accepted; ``rejected`` messages were refused by
    the gateway (a number it does not take) and not sent; ``dry_run`` messages were only rendered and
    validated. ``parts`` is the SMS parts of the ``sent`` messages (as the gateway counted them, else
    as their texts take); ``price`` the sum of the prices the gateway gave at send, ``None`` when it
    gave none (Bitel prices a message only once it is processed: the sensor's report has them).
    """

    requested: int
    sent: int
    resumed: int
    invalid: int
    duplicate: int
    excluded: int
    uncertain: int
    rejected: int
    dry_run: int
    parts: int
    price: float | None


class SendReceipt(TypedDict):
    """What ``P2PSmsOperator`` returns through XCom, and what ``P2PSmsDeliverySensor`` reads.

    ``messages`` packs one line ``"<message id> <recipient>"`` per accepted message (recipient in
    wire format), lines joined by ``"\\n"``, while they take at most :data:`INLINE_MESSAGES` characters.
    A larger campaign's messages are kept out of the XCom, and ``messages`` refers to them: ``"outcomes:"``
    when the send wrote an outcomes table (its rows of this task instance with a message id), else
    ``"detail:<URL>"``, a compressed file under ``[p2psms] detail_path`` (see
    :mod:`airflow_provider_p2psms.campaign.detail`). Read them with
    :func:`airflow_provider_p2psms.campaign.receipt_detail.iter_receipt_messages`, whatever the size. (Receipts of
    earlier versions may hold ``"zlib:" + base64`` lines: read the same way.) ``problems`` holds at most a
    few hundred masked examples of invalid rows, uncertain and rejected messages; the counts are exact. A
    receipt stays under 64 KB however large the campaign.

    ``task`` is the send task instance (``dag_id``, ``run_id``, ``task_id``, ``map_index``), and
    ``outcomes`` the outcomes table it wrote (``{"conn_id": ..., "table": ...}``) or ``None``: the sensor
    updates the rows of that task instance in that table.
    """

    version: int
    provider: str
    sms_conn_id: str
    counts: ReceiptCounts
    messages: str
    problems: list[str]
    task: dict[str, Any] | None
    outcomes: dict[str, str] | None


class PartsEstimate(TypedDict):
    """The messages of one parts count in a :class:`CostEstimate`, and the gateway's prices for them."""

    messages: int
    mci_price: float
    other_price: float
    cost: float


class CostEstimate(TypedDict):
    """What a campaign would cost, worked out before it is sent (``check_credit``, ``max_cost``, a dry run).

    ``cost`` is the sum over ``by_parts`` (keyed by the parts count as a string, JSON's keys): each
    message at the gateway's price for its text on its recipient's network, MCI or other; a number
    whose network the carrier metadata does not know is priced at the higher of the two. ``networks``
    counts the messages per network (``mci``, ``other``, ``unknown``), by the number's original
    allocation (a number ported since is priced as its old network). ``credit`` is the account's
    balance when it was read (``None`` when it was not, or the gateway has no credit endpoint).
    """

    cost: float
    by_parts: dict[str, PartsEstimate]
    networks: dict[str, int]
    credit: float | None


class EstimatedReceipt(SendReceipt, total=False):
    """A :class:`SendReceipt` with its campaign's :class:`CostEstimate`.

    A dry run's receipt always has ``estimate`` (``None`` when the gateway prices nothing before a send);
    a send's has it when ``check_credit`` or ``max_cost`` made one, for the messages that try sent.
    """

    estimate: CostEstimate | None


#: A receipt's ``messages`` longer than this many characters (a few hundred messages) are kept out of it.
INLINE_MESSAGES = 16_384
#: Kept for readers of receipts written by earlier versions, which compressed past this many characters.
PACK_THRESHOLD = 65_536

_PACKED_PREFIX = "zlib:"


def receipt_messages(messages: str | list[list[str]]) -> list[list[str]]:
    """
    ``[message_id, recipient]`` pairs from a receipt's ``messages`` (lines, compressed lines, a detail
    file's reference, or a list), all in memory: for a receipt of any size, and for one whose messages
    are in its outcomes table, use :func:`airflow_provider_p2psms.campaign.receipt_detail.iter_receipt_messages`.
    """
    if isinstance(messages, str):
        if messages.startswith("outcomes:"):
            raise ValueError(
                "This receipt's messages are in its outcomes table: read them with "
                "airflow_provider_p2psms.campaign.receipt_detail.iter_receipt_messages(receipt), "
                "given the whole receipt."
            )
        if messages.startswith("detail:"):
            from airflow_provider_p2psms.campaign.detail import read_text

            messages = read_text(messages)
        elif messages.startswith(_PACKED_PREFIX):
            import base64
            import zlib

            messages = zlib.decompress(base64.b64decode(messages[len(_PACKED_PREFIX) :])).decode()
        return [line.split(" ", 1) for line in messages.split("\n") if line]
    return [list(pair) for pair in messages]


class MessagesPacker:
    """
    Build a receipt's ``messages`` as messages are accepted: plain lines while they are few; past
    :data:`INLINE_MESSAGES` characters, written out as they come to ``detail`` (a writer with ``write`` and
    ``commit``, see :class:`~airflow_provider_p2psms.campaign.detail.DetailWriter`), or not kept at all when
    ``detail`` is ``"outcomes:"`` (the outcomes table has them). Memory stays the same whatever the size.

    :param detail: where a large receipt's messages go; ``None`` keeps them in memory, compressed (a
        receipt that is not an XCom, such as a hook user's).
    """

    def __init__(self, detail: Any = None) -> None:
        self._detail = detail
        self._lines: list[str] = []
        self._size = 0
        self._compressor: Any = None
        self._packed: list[bytes] = []
        self._value: str | None = None
        self._out = False

    def add(self, pairs: Iterable[Sequence[str]]) -> None:
        """Add ``(message_id, recipient)`` pairs."""
        text = "\n".join(f"{message_id} {recipient}" for message_id, recipient in pairs)
        if not text:
            return
        if self._out:
            if self._detail != "outcomes:":
                self._detail.write(text + "\n")
            return
        if self._compressor is not None:
            self._packed.append(self._compressor.compress(b"\n" + text.encode()))
            return
        self._lines.append(text)
        self._size += len(text) + 1
        if self._detail is not None and self._size > INLINE_MESSAGES:
            if self._detail != "outcomes:":
                self._detail.write("\n".join(self._lines) + "\n")
            self._lines = []
            self._out = True
        elif self._detail is None and self._size > PACK_THRESHOLD:
            import zlib

            self._compressor = zlib.compressobj(6)
            self._packed.append(self._compressor.compress("\n".join(self._lines).encode()))
            self._lines = []

    @property
    def kept_out(self) -> bool:
        """Whether the messages went out of the receipt (to a detail file or the outcomes table)."""
        return self._out

    def value(self) -> str:
        """The receipt's ``messages``, once every message is added (a detail file is committed then)."""
        if self._value is not None:
            return self._value
        if self._out:
            self._value = "outcomes:" if self._detail == "outcomes:" else str(self._detail.commit())
        elif self._compressor is None:
            self._value = "\n".join(self._lines)
        else:
            import base64

            packed = b"".join(self._packed) + self._compressor.flush()
            self._packed = []
            self._value = (_PACKED_PREFIX.encode() + base64.b64encode(packed)).decode()
        return self._value

    def discard(self) -> None:
        """Drop a detail file that will not be committed (the send failed)."""
        if self._out and self._value is None and self._detail != "outcomes:":
            self._detail.discard()


class DeliveryReport(TypedDict):
    """What ``P2PSmsDeliverySensor`` returns through XCom, however its wait ends.

    ``ending`` says how the wait ended (``all_final``, ``unreachable``, ``gave_up``, ``timeout``,
    ``nothing_attempted`` or ``error``). ``attempted`` = ``total`` (the receipt's messages, tracked) +
    ``uncertain_at_send`` + ``rejected_at_send``; ``delivered_ratio`` is delivered / attempted (``None``
    when nothing was attempted). ``counts`` maps every normalized status to its number of tracked
    messages. ``messages`` holds one ``[message_id, masked recipient, status]`` triple per message when
    there are at most 500 (``messages_listed`` is then true); a larger report lists none, so that it
    stays under 64 KB, and ``not_delivered_sample`` holds up to 20 masked numbers that ended other than
    delivered, in every report. ``outcomes`` names the outcomes table that has every message's status
    (``{"conn_id", "table"}``), or is ``None``. ``parts`` is the sum of the SMS parts the gateway's status
    reports gave for tracked messages (0 when none did); ``price`` the sum of the prices in the reports
    that made messages final, ``None`` when none gave one. The sensor writes the same values into the rows
    of an outcomes table, so the rows' sums can be checked against them.
    """

    provider: str
    sms_conn_id: str
    ending: str
    attempted: int
    total: int
    final: int
    uncertain_at_send: int
    rejected_at_send: int
    delivered_ratio: float | None
    min_delivered_ratio: float
    counts: dict[str, int]
    parts: int
    price: float | None
    messages: list[list[str]]
    messages_listed: bool
    not_delivered_sample: list[str]
    outcomes: dict[str, str] | None
