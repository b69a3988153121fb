"""A tracker's state in compact form: the messages, one byte of status and of parts each, and a snapshot.

:class:`PackedMessages` keeps a receipt's ``(message_id, recipient)`` pairs as one string of lines and an
array of offsets; the statuses are one letter a message (:func:`pack_state` compresses a long one), the
parts one byte. :class:`TrackerSnapshot` is what a report needs of a tracker without its messages: what the
trigger's event carries, small whatever the campaign.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from airflow_provider_p2psms.models import DeliveryStatus, receipt_messages

#: A state longer than this many letters is kept compressed.
PACK_STATE_ABOVE = 1024

#: A delivery report lists every message (masked) up to this many; a larger one gives counts and a sample
#: of the numbers not delivered, and the outcomes table, when there is one, has every message's status.
REPORT_MESSAGES = 500

_LETTER = {
    DeliveryStatus.PENDING: "p",
    DeliveryStatus.SENT: "s",
    DeliveryStatus.DELIVERED: "d",
    DeliveryStatus.FAILED: "f",
    DeliveryStatus.BLACKLISTED: "b",
    DeliveryStatus.REJECTED: "r",
    DeliveryStatus.UNKNOWN: "u",
}
_CODE = {status: ord(letter) for status, letter in _LETTER.items()}
_BY_CODE = {code: status for status, code in _CODE.items()}
_FINAL_CODES = frozenset(code for status, code in _CODE.items() if status.is_final)
_KNOWN_CODES = bytes(sorted(_BY_CODE))
_STATUS_OF_VALUE = {status.value: status for status in DeliveryStatus}
_PACKED_PREFIX = "zlib:"
#: Parts are kept in one byte per message: a concatenated SMS counts its parts in one byte (at most 255).
_MAX_PARTS = 255


def pack_state(state: str) -> str:
    """A tracker state as kept between pokes: as is when short, else ``"zlib:" + base64``."""
    if len(state) <= PACK_STATE_ABOVE:
        return state
    import base64
    import zlib

    return _PACKED_PREFIX + base64.b64encode(zlib.compress(state.encode(), 9)).decode()


def unpack_state(state: str) -> str:
    """One letter per message, from :func:`pack_state`'s output."""
    if not state.startswith(_PACKED_PREFIX):
        return state
    import base64
    import zlib

    return zlib.decompress(base64.b64decode(state[len(_PACKED_PREFIX) :])).decode()


def pack_parts(parts: array[int]) -> str:
    """Parts per message (0: not known) as kept between pokes: ``""`` when none is known, else compressed."""
    if not any(parts):
        return ""
    import base64
    import zlib

    return base64.b64encode(zlib.compress(parts.tobytes(), 9)).decode()


def unpack_parts(packed: str | None, count: int) -> array[int]:
    """:func:`pack_parts`'s input back, for ``count`` messages."""
    if not packed:
        return array("B", bytes(count))
    import base64
    import zlib

    parts = array("B", zlib.decompress(base64.b64decode(packed)))
    if len(parts) != count:
        raise ValueError(f"parts of {len(parts)} messages cannot describe {count} messages")
    return parts


class PackedMessages:
    """
    A receipt's ``(message_id, recipient)`` pairs, kept as one string of lines and an array of offsets:
    about 30 bytes a message, where a list of pairs costs five times that.
    """

    def __init__(self, lines: str) -> None:
        if lines and not lines.endswith("\n"):
            lines += "\n"
        self._text = lines
        offsets = array("Q", [0])
        find = lines.find
        position = find("\n")
        while position != -1:
            offsets.append(position + 1)
            position = find("\n", position + 1)
        self._offsets = offsets

    @classmethod
    def of(cls, messages: str | list[list[str]] | PackedMessages) -> PackedMessages:
        """From a receipt's ``messages`` value (inline lines, compressed lines, a detail file, or pairs)."""
        if isinstance(messages, PackedMessages):
            return messages
        if isinstance(messages, str):
            from airflow_provider_p2psms.campaign.detail import FILE_REF, read_text

            if messages.startswith(FILE_REF):
                return cls(read_text(messages))
            if messages.startswith(_PACKED_PREFIX):
                return cls("\n".join(" ".join(pair) for pair in receipt_messages(messages)))
            return cls(messages)
        return cls("".join(f"{pair[0]} {pair[1]}\n" for pair in messages))

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def __getitem__(self, index: int) -> tuple[str, str]:
        if index < 0:
            index += len(self)
        line = self._text[self._offsets[index] : self._offsets[index + 1] - 1]
        message_id, _, recipient = line.partition(" ")
        return message_id, recipient

    def __iter__(self) -> Iterator[tuple[str, str]]:
        for index in range(len(self)):
            yield self[index]


class _Statuses:
    """One byte per message: the tracker's statuses, read as :class:`DeliveryStatus` values."""

    __slots__ = ("codes",)

    def __init__(self, codes: bytearray) -> None:
        self.codes = codes

    def __len__(self) -> int:
        return len(self.codes)

    def __getitem__(self, index: int) -> DeliveryStatus:
        return _BY_CODE[self.codes[index]]

    def __iter__(self) -> Iterator[DeliveryStatus]:
        return (_BY_CODE[code] for code in self.codes)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, _Statuses):
            return self.codes == other.codes
        return list(self) == other

    __hash__ = None  # type: ignore[assignment]


def describe_counts(total: int, counts: Mapping[str, int]) -> str:
    """``"<n> messages: delivered 3, failed 1"``."""
    described = ", ".join(f"{name} {count}" for name, count in counts.items() if count)
    return f"{total} messages: {described or 'none'}"


@dataclass(frozen=True)
class TrackerSnapshot:
    """
    A tracker's totals, as the trigger's event carries them to the sensor: counts, not messages.

    :param messages: the report's per-message triples for a campaign of at most :data:`REPORT_MESSAGES`
        messages; ``None`` for a larger one (its detail is in the outcomes table, when there is one).
    """

    total: int
    counts: Mapping[str, int]
    parts: int
    price: float | None
    polls: int
    not_delivered: list[str]
    messages: list[list[str]] | None

    @property
    def delivered(self) -> int:
        return int(self.counts.get(DeliveryStatus.DELIVERED.value, 0))

    @property
    def final(self) -> int:
        return sum(int(self.counts.get(status.value, 0)) for status in DeliveryStatus if status.is_final)

    @property
    def pending_count(self) -> int:
        return self.total - self.final

    @property
    def all_final(self) -> bool:
        return self.final == self.total

    def counts_dict(self) -> dict[str, int]:
        return {status.value: int(self.counts.get(status.value, 0)) for status in DeliveryStatus}

    def summary(self) -> str:
        return describe_counts(self.total, self.counts_dict())

    def failed_numbers(self) -> list[str]:
        return list(self.not_delivered)

    def to_event(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "counts": self.counts_dict(),
            "parts": self.parts,
            "price": self.price,
            "polls": self.polls,
            "not_delivered": self.not_delivered,
            "messages": self.messages,
        }

    @classmethod
    def from_event(cls, event: Mapping[str, Any]) -> TrackerSnapshot:
        return cls(
            total=int(event.get("total") or 0),
            counts=dict(event.get("counts") or {}),
            parts=int(event.get("parts") or 0),
            price=None if event.get("price") is None else float(event["price"]),
            polls=int(event.get("polls") or 0),
            not_delivered=[str(line) for line in event.get("not_delivered") or []],
            messages=event.get("messages"),
        )
