"""Durable memory of what a task already sent, so a retry never texts anyone twice.

Neither gateway has idempotency keys, so the operator keeps its own ledger, scoped to the task
instance (DAG, run, task, map index) and kept across tries. It is an append-only log of values
``<prefix>.log.<n>``, each written once and never changed, so a crash between two writes never
loses or corrupts what was written before. One entry notes any of:

* messages about to be sent (*marks*), written before those batches go on the wire;
* messages that provably did not go out (*released*: the gateway refused the batch, or it was never
  sent), so that a retry sends them;
* accepted messages, with their message id and recipient.

A message key is a 64-bit hash of (recipient, text), so resumption does not depend on the order in
which rows come back from the source. Reading the log replays it: keys accepted are *sent* and not
sent again; keys marked and neither accepted nor released are *uncertain* (the gateway may or may
not have them).

Each task state store write costs the same whatever its size (about 20 ms under ``airflow dags
test``), so an entry packs as much as fits in :data:`CHUNK_BYTES`, below the store's default limit
of 64 KB a value (``[state_store] max_value_storage_bytes``): keys as base64 of 8 bytes, receipts
zlib-compressed. Receipts accepted meanwhile ride along with the next marks, ahead of them: a log cut
short anywhere never holds more messages in flight than the complete one.

Where the ledger lives is :mod:`~airflow_provider_p2psms.campaign.stores`' business. A message's key
is :func:`~airflow_provider_p2psms.models.message_key`.

What a retry reads back is held compactly, as the ledger of a large campaign holds a line per message:
the sent messages' lines in one buffer, found by key through a :class:`~.keyset.KeyMap` (17 bytes a
message besides its line: about 45 in all with short message ids, where a dict of lists takes about
155), and the uncertain keys in a :class:`~.keyset.KeySet`.
"""

from __future__ import annotations

import base64
import logging
import threading
import zlib
from collections.abc import ItemsView, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from airflow_provider_p2psms.campaign.keyset import KeyMap, KeySet
from airflow_provider_p2psms.exceptions import SmsConfigurationError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from airflow_provider_p2psms.campaign.stores import KeyValueStore

#: The most JSON one checkpoint value holds, measured as Airflow measures it (``json.dumps``):
#: below the task state store's default ``max_value_storage_bytes`` of 65,535, with room to spare.
CHUNK_BYTES = 48_000

#: Marked and released keys in one entry (base64 takes about 10.7 characters a key).
_KEYS_PER_ENTRY = 4_000

#: The least room worth starting a receipts part in, beside an entry's keys.
_MIN_RECEIPTS_ROOM = 2_000


class SendLedger:
    """
    What this task instance sent in earlier tries, and the writes that keep it up to date.

    :meth:`stage` may be called from any thread; :meth:`flush` (and the methods that call it) from
    one thread at a time, so that entries are written in order.

    :param store: where the ledger lives.
    :param prefix: key prefix, so that other keys of the task are left alone.
    """

    def __init__(self, store: KeyValueStore, prefix: str = "p2psms") -> None:
        self._store = store
        self._prefix = prefix
        #: Accepted in an earlier try: message key -> [message_id, recipient].
        self.sent = SentMessages()
        #: Marked in flight by an earlier try and never confirmed.
        self.uncertain = KeySet(unsigned=True)
        self._entries = 0
        self._lock = threading.Lock()
        # Staged, not written yet: receipt lines "<key> <recipient> <message id>", and released keys.
        self._lines: list[str] = []
        self._released: list[int] = []
        #: Called with the ``[message_id, recipient]`` of every batch staged as accepted, when set (the
        #: scheduled sends ``on_kill`` cancels: :mod:`~.cancel`).
        self.watch: Callable[[Iterable[list[str]]], None] | None = None

    def _key(self, index: int) -> str:
        return f"{self._prefix}.log.{index}"

    def load(self) -> None:
        """Read what earlier tries left behind."""
        # Marked and neither released nor accepted, so far: about the crash bound, not the campaign.
        in_flight = KeySet(unsigned=True)
        sent = self.sent
        while (value := self._store.get(self._key(self._entries))) is not None:
            marks, released, receipts = _parse_entry(value, self._key(self._entries))
            in_flight.update(marks)
            in_flight.difference_update(released)
            for line in receipts:
                hexadecimal, recipient, message_id = line.split(" ", 2)
                key = int(hexadecimal, 16)
                sent.note(key, message_id, recipient)
                # Accepted is accepted, whatever is marked later: such a key is left out below too.
                in_flight.discard(key)
            self._entries += 1
        self.uncertain = KeySet((key for key in in_flight if key not in sent), unsigned=True)

    @property
    def staged(self) -> int:
        """Accepted messages staged and not written yet."""
        return len(self._lines)

    def stage(self, accepted: Mapping[int, list[str]] | None = None, released: Iterable[int] = ()) -> None:
        """
        Note accepted and released messages, to be written by a later :meth:`flush` (any thread).

        :param accepted: message key -> ``[message_id, recipient]`` of newly accepted messages.
        :param released: keys of messages that provably did not go out (the gateway refused the batch,
            or it was never sent), so a retry may send them. Their marks must be written already: the
            log is replayed in order, and a release written before its marks is undone by them.
        """
        lines = [f"{key:016x} {recipient} {message_id}" for key, (message_id, recipient) in (accepted or {}).items()]
        if accepted and self.watch is not None:
            self.watch(accepted.values())
        with self._lock:
            self._lines.extend(lines)
            self._released.extend(released)

    @property
    def pending(self) -> int:
        """Messages staged as accepted or released and not written yet."""
        with self._lock:
            return len(self._lines) + len(self._released)

    def flush(self, marks: Iterable[int] = ()) -> int:
        """
        Durably write what is staged, then ``marks`` (messages about to be sent); return how many staged
        messages (accepted or released) were written.

        The marks come last, in the entry that carries the last of what was staged (or after it, when
        there are too many to fit): whatever stops the writes half-way, the log never holds more
        messages in flight than it holds once every write is done. The sender relies on that for its
        crash bound (:mod:`~airflow_provider_p2psms.campaign.dispatch`).
        """
        with self._lock:
            lines, self._lines = self._lines, []
            released, self._released = self._released, []
        keys = list(marks)
        written = 0
        try:
            while keys or released or lines:
                marked, freed, receipts, count = self._entry(keys, released, lines)
                self._store.set(self._key(self._entries), f"{_pack_keys(marked)}:{_pack_keys(freed)}:{receipts}")
                self._entries += 1
                written += len(freed) + count
                keys, released, lines = keys[len(marked) :], released[len(freed) :], lines[count:]
        finally:
            # Whatever was not written goes back, ahead of what was staged meanwhile.
            with self._lock:
                self._lines[:0] = lines
                self._released[:0] = released
        return written

    def _entry(self, keys: list[int], released: list[int], lines: list[str]) -> tuple[list[int], list[int], str, int]:
        """The next entry: marks only beside the last of what is staged, else staged messages alone."""
        for marked in (keys[:_KEYS_PER_ENTRY], []):
            freed = released[: _KEYS_PER_ENTRY - len(marked)]
            receipts, count = _pack_lines(lines, CHUNK_BYTES - len(_pack_keys(marked)) - len(_pack_keys(freed)) - 2)
            if not marked or (len(freed), count) == (len(released), len(lines)):
                break
        if not (marked or freed or count):
            raise ValueError(f"A receipt line of {len(lines[0])} characters does not fit a checkpoint value.")
        return marked, freed, receipts, count

    def mark_in_flight(self, keys: Iterable[int]) -> int:
        """
        Durably note that these messages are about to be sent, after what is staged. Call before sending.

        :return: how many staged messages were written first (see :meth:`flush`).
        """
        return self.flush(keys)

    def clear(self) -> None:
        """
        Forget everything: the task succeeded, and a new run of it may send again.

        Entries are deleted last first, so that whatever stops the clean-up half-way leaves a ledger
        that still reads back as a prefix of what was written. A store error is logged, not raised: the
        task has succeeded by then (the operator clears from a success callback), and what is left only
        waits for the store to expire it.
        """
        entries, self._entries = self._entries, 0
        try:
            # One call instead of one per key: the task state store takes ~20 ms a call. The ledger is
            # the only state the operator keeps for its task instance.
            if self._store.clear():
                return
            # A store that cannot: the entries are numbered from 0, without gaps.
            while self._store.get(self._key(entries)) is not None:
                entries += 1
        except Exception as error:
            logging.getLogger(__name__).warning(
                "Could not delete the resume checkpoints (%s: %s); they stay until the store expires them.",
                type(error).__name__,
                error,
            )
            return
        keys = [self._key(index) for index in range(entries)]
        for key in reversed(keys):
            try:
                self._store.delete(key)
            except Exception as error:
                logging.getLogger(__name__).warning(
                    "Could not delete the resume checkpoint %r (%s: %s); it and the %d before it stay until the "
                    "store expires them.",
                    key,
                    type(error).__name__,
                    error,
                    keys.index(key),
                )
                return


class SentMessages(Mapping[int, list[str]]):
    """
    What earlier tries had accepted, by message key: ``[message_id, recipient]`` (a new list each time).

    The lines ``"<recipient> <message id>"`` are kept one after another in one buffer, and a
    :class:`~.keyset.KeyMap` gives the offset of each key's line. Iteration is in ascending key order.
    """

    def __init__(self) -> None:
        self._offsets = KeyMap(unsigned=True)
        self._lines = bytearray()

    def note(self, key: int, message_id: str, recipient: str) -> None:
        """Add (or replace) the receipt of ``key``."""
        self._offsets[key] = len(self._lines)
        self._lines += f"{recipient} {message_id}\n".encode()

    def _line(self, offset: int) -> list[str]:
        recipient, message_id = self._lines[offset : self._lines.index(b"\n", offset)].decode().split(" ", 1)
        return [message_id, recipient]

    def __getitem__(self, key: int) -> list[str]:
        return self._line(self._offsets[key])

    def get(self, key: int, default: Any = None) -> Any:
        """The receipt of ``key``, or ``default`` (a lookup, without raising and catching ``KeyError``)."""
        offset = self._offsets.get(key)
        return default if offset is None else self._line(offset)

    def __contains__(self, key: object) -> bool:
        return key in self._offsets

    def __iter__(self) -> Iterator[int]:
        return iter(self._offsets)

    def __len__(self) -> int:
        return len(self._offsets)

    def items(self) -> ItemsView[int, list[str]]:
        return _SentItems(self)

    def _pairs(self) -> Iterator[tuple[int, list[str]]]:
        line = self._line
        for key, offset in self._offsets.items():
            yield key, line(offset)


class _SentItems(ItemsView[int, list[str]]):
    _mapping: SentMessages

    def __iter__(self) -> Iterator[tuple[int, list[str]]]:
        return self._mapping._pairs()


class NullLedger(SendLedger):
    """A ledger that remembers nothing: for a bulk send without resumption."""

    def __init__(self) -> None:
        super().__init__(_NoStore())

    def flush(self, marks: Iterable[int] = ()) -> int:
        with self._lock:
            written = len(self._lines) + len(self._released)
            self._lines, self._released = [], []
        return written


class _NoStore:
    def get(self, key: str) -> Any:
        return None

    def set(self, key: str, value: Any) -> None:
        return None

    def delete(self, key: str) -> None:
        return None

    def clear(self) -> bool:
        return True


def _pack_keys(keys: list[int]) -> str:
    return base64.b64encode(b"".join(key.to_bytes(8, "big") for key in keys)).decode()


def _unpack_keys(text: str) -> list[int]:
    raw = base64.b64decode(text, validate=True)
    if len(raw) % 8:
        raise ValueError("a key list is not a whole number of 8-byte keys")
    return [int.from_bytes(raw[start : start + 8], "big") for start in range(0, len(raw), 8)]


def _pack_lines(lines: list[str], room: int) -> tuple[str, int]:
    """The first lines that fit ``room`` characters once compressed, as base64, and how many they are."""
    count = len(lines)
    while count and room >= _MIN_RECEIPTS_ROOM:
        packed = base64.b64encode(zlib.compress("\n".join(lines[:count]).encode(), 1)).decode()
        if len(packed) <= room:
            return packed, count
        count = min(count - 1, int(count * room / len(packed) * 0.95))
    return "", 0


def _parse_entry(value: Any, name: str) -> tuple[list[int], list[int], list[str]]:
    """The marks, released keys and receipt lines of one log entry."""
    try:
        if not isinstance(value, str):
            raise TypeError(f"it is a {type(value).__name__}, not a string")
        marks, released, receipts = value.split(":")
        lines = zlib.decompress(base64.b64decode(receipts, validate=True)).decode().split("\n") if receipts else []
        return _unpack_keys(marks), _unpack_keys(released), lines
    except (TypeError, ValueError, zlib.error) as error:
        raise SmsConfigurationError(
            f"The resume checkpoint '{name}' cannot be read ({error}): another version of "
            "airflow-provider-p2psms, or something else, wrote it. Finish the run with the version that "
            "started it, or clear the task's state (its task state store, or its checkpoint_path folder) "
            "and accept that messages of the earlier try may be sent again."
        ) from None
