"""Durable memory of what a task already sent, so a retry never texts anyone twice.

Neither gateway has idempotency keys, so the operator keeps its own ledger, scoped to the task
instance (DAG, run, task, map index) and kept across tries:

* ``<prefix>.inflight.<n>``: the message keys of batches that are about to be sent, or were sent and
  never answered, as one string of 16-hex-digit keys. They are written *before* those batches go on
  the wire. A key that was later accepted may stay in its chunk: reading the ledger subtracts the
  accepted keys.
* ``<prefix>.sent.<n>``: accepted messages, as one string of ``"<key> <recipient> <message id>"``
  lines.

Values are strings (the task state store checks and writes a string far faster than an object of
lists) cut into numbered chunks of at most :data:`CHUNK_BYTES` of JSON, so that none grows past the
task state store's default limit of 64 KB (``[state_store] max_value_storage_bytes``).

A message key is a hash of (recipient, text), so resumption does not depend on the order in which
rows come back from the source. On a retry, keys found in a ``sent`` chunk are not sent again; keys
found only in ``inflight`` are *uncertain* (the gateway may or may not have them).

Two stores exist: Airflow 3.3's task state store (``context["task_state_store"]``), and, for older
Airflow or by choice, an :class:`~airflow.sdk.ObjectStoragePath` folder (local disk, S3, GCS...),
which every worker that may run a retry must be able to read.
"""

from __future__ import annotations

import json
import logging
from hashlib import blake2b
from typing import TYPE_CHECKING, Any, Protocol

from airflow_provider_p2psms.exceptions import SmsConfigurationError

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

#: The most JSON one checkpoint value holds, measured as Airflow measures it (``json.dumps``):
#: below the task state store's default ``max_value_storage_bytes`` of 65,535, with room to spare.
CHUNK_BYTES = 48_000

#: Accepted messages worth recording at once: a Bitel receipt line takes about 60 bytes of a chunk.
CHUNK_SIZE = 750

#: Message keys per ``inflight`` chunk (16 hex digits each, no separator).
_INFLIGHT_PER_CHUNK = CHUNK_BYTES // 16


def message_key(recipient: str, text: str) -> int:
    """A 64-bit key of (recipient, text): the identity of a message for duplicates and resumption."""
    digest = blake2b(f"{recipient}\x1f{text}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


class KeyValueStore(Protocol):
    """The little a checkpoint needs from a store: JSON values under string keys."""

    def get(self, key: str) -> Any: ...

    def set(self, key: str, value: Any) -> None: ...

    def delete(self, key: str) -> None: ...

    def clear(self) -> bool:
        """Delete every key of the task instance in one go, if the store can; return whether it did."""
        ...


class TaskStateKeyValueStore:
    """Keys in Airflow 3.3's task state store, which survives retries of the same task instance."""

    def __init__(self, accessor: Any) -> None:
        self._accessor = accessor

    def get(self, key: str) -> Any:
        return self._accessor.get(key)

    def set(self, key: str, value: Any) -> None:
        self._accessor.set(key, value)

    def delete(self, key: str) -> None:
        self._accessor.delete(key)

    def clear(self) -> bool:
        clear = getattr(self._accessor, "clear", None)
        if clear is None:
            return False
        clear()
        return True


class ObjectStorageKeyValueStore:
    """One JSON file per key under a folder (any ``ObjectStoragePath``: ``file://``, ``s3://``...)."""

    def __init__(self, folder: Any) -> None:
        self._folder = folder

    def _path(self, key: str) -> Any:
        return self._folder / f"{key}.json"

    def get(self, key: str) -> Any:
        path = self._path(key)
        if not path.exists():
            return None
        return json.loads(path.read_text())

    def set(self, key: str, value: Any) -> None:
        self._folder.mkdir(parents=True, exist_ok=True)
        staging = self._folder / f".{key}.json.tmp"
        staging.write_text(json.dumps(value, separators=(",", ":")))
        staging.rename(self._path(key))

    def delete(self, key: str) -> None:
        path = self._path(key)
        if path.exists():
            path.unlink()

    def clear(self) -> bool:
        if self._folder.exists():
            for path in self._folder.iterdir():
                path.unlink()
        return True


class SendLedger:
    """
    What this task instance sent in earlier tries, and the writes that keep it up to date.

    :param store: where the ledger lives.
    :param prefix: key prefix, so that other keys of the task are left alone.
    """

    def __init__(self, store: KeyValueStore, prefix: str = "p2psms") -> None:
        self._store = store
        self._prefix = prefix
        #: Accepted in an earlier try: message key -> [message_id, recipient].
        self.sent: dict[int, list[str]] = {}
        #: Marked in flight by an earlier try and never confirmed.
        self.uncertain: set[int] = set()
        self._chunks = 0
        # The keys of each in-flight chunk that are still in flight (neither accepted nor released).
        # A chunk is written whole when it is filled, and rewritten only when keys are released from it,
        # so a crash between two writes never drops a mark. A chunk none of whose keys is still in
        # flight is reused for the next marks.
        self._inflight: list[set[int]] = []
        self._chunk_of: dict[int, int] = {}

    def _key(self, name: str) -> str:
        return f"{self._prefix}.{name}"

    def load(self) -> None:
        """Read what earlier tries left behind."""
        while (chunk := self._store.get(self._key(f"sent.{self._chunks}"))) is not None:
            for line in _text(chunk, "sent", self._chunks).split("\n"):
                if line:
                    key, recipient, message_id = line.split(" ", 2)
                    self.sent[int(key, 16)] = [message_id, recipient]
            self._chunks += 1
        while (keys := self._store.get(self._key(f"inflight.{len(self._inflight)}"))) is not None:
            keys = _text(keys, "inflight", len(self._inflight))
            chunk = {int(keys[start : start + 16], 16) for start in range(0, len(keys), 16)} - self.sent.keys()
            self._chunk_of.update(dict.fromkeys(chunk, len(self._inflight)))
            self._inflight.append(chunk)
        self.uncertain = set(self._chunk_of)

    def mark_in_flight(self, keys: Iterable[int]) -> None:
        """Durably note that these messages are about to be sent. Call before sending them."""
        fresh = [key for key in keys if key not in self._chunk_of]
        for start in range(0, len(fresh), _INFLIGHT_PER_CHUNK):
            part = set(fresh[start : start + _INFLIGHT_PER_CHUNK])
            # Overwriting a chunk with no key left in flight loses nothing: each of its keys is in a
            # sent chunk already, or was released.
            index = next((i for i, live in enumerate(self._inflight) if not live), len(self._inflight))
            if index == len(self._inflight):
                self._inflight.append(set())
            self._inflight[index] = part
            self._chunk_of.update(dict.fromkeys(part, index))
            self._write_inflight(index)

    def record(self, accepted: Mapping[int, list[str]], released: Iterable[int] = ()) -> None:
        """
        Durably note accepted messages, and drop in-flight marks that no longer apply.

        Accepted keys stay in their in-flight chunk (``load`` subtracts what was sent), so recording
        costs one write per sent chunk; a chunk is rewritten only for released keys, so that a retry
        sends those again.

        :param accepted: message key -> ``[message_id, recipient]`` of newly accepted messages.
        :param released: keys of messages that provably did not go out (the gateway refused the batch,
            or it was never sent), so a retry may send them.
        """
        lines: list[str] = []
        size = 2
        for key, (message_id, recipient) in accepted.items():
            line = f"{key:016x} {recipient} {message_id}"
            # The line as json.dumps writes it: its two quotes stand for the escaped "\n" after it.
            line_size = len(json.dumps(line))
            if lines and size + line_size > CHUNK_BYTES:
                self._write_sent(lines)
                lines, size = [], 2
            lines.append(line)
            size += line_size
        if lines:
            self._write_sent(lines)
        for key in accepted:
            index = self._chunk_of.pop(key, None)
            if index is not None:
                self._inflight[index].discard(key)
        changed: set[int] = set()
        for key in released:
            index = self._chunk_of.pop(key, None)
            if index is not None:
                self._inflight[index].discard(key)
                changed.add(index)
        # Empty chunks at the end are deleted, last first (chunks are read up to the first missing one,
        # so a gap would hide the chunks after it); other changed chunks are rewritten.
        while self._inflight and not self._inflight[-1] and len(self._inflight) - 1 in changed:
            self._inflight.pop()
            self._store.delete(self._key(f"inflight.{len(self._inflight)}"))
        for index in sorted(changed):
            if index < len(self._inflight):
                self._write_inflight(index)

    def _write_sent(self, lines: list[str]) -> None:
        self._store.set(self._key(f"sent.{self._chunks}"), "\n".join(lines))
        self._chunks += 1

    def _write_inflight(self, index: int) -> None:
        self._store.set(self._key(f"inflight.{index}"), "".join(f"{key:016x}" for key in self._inflight[index]))

    def clear(self) -> None:
        """
        Forget everything: the task succeeded, and a new run of it may send again.

        Chunks are deleted last first, so that whatever stops the clean-up half-way leaves a ledger
        that still reads back as a prefix of what was sent. A store error does not fail the task:
        every message is handled by then, and a retry could only send some of them twice.
        """
        keys = [self._key(f"sent.{index}") for index in range(self._chunks)]
        keys += [self._key(f"inflight.{index}") for index in range(len(self._inflight))]
        self._chunks = 0
        self._inflight.clear()
        self._chunk_of.clear()
        try:
            # One call instead of one per key: the task state store takes ~20 ms a call. The ledger is
            # the only state the operator keeps for its task instance.
            if self._store.clear():
                return
        except Exception as error:
            logging.getLogger(__name__).warning(
                "Could not delete the resume checkpoints (%s: %s); they stay until the store expires them.",
                type(error).__name__,
                error,
            )
            return
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


def checkpoint_store(context: Any, checkpoint_path: str | None) -> KeyValueStore:
    """
    The store that keeps this task instance's checkpoints across its tries.

    :param context: the task context.
    :param checkpoint_path: an ``ObjectStoragePath`` URL; when unset, the task state store on
        Airflow 3.3+, else ``[p2psms] checkpoint_path``, else ``$AIRFLOW_HOME/p2psms_checkpoints``.
    """
    accessor = context.get("task_state_store")
    if accessor is not None and not checkpoint_path:
        return TaskStateKeyValueStore(accessor)
    from airflow.sdk import ObjectStoragePath

    ti = context["ti"]
    map_index = getattr(ti, "map_index", None)
    base = ObjectStoragePath(checkpoint_path or _default_checkpoint_root())
    folder = base / ti.dag_id / _safe(ti.run_id) / ti.task_id / str(-1 if map_index is None else map_index)
    return ObjectStorageKeyValueStore(folder)


def _default_checkpoint_root() -> str:
    import os

    from airflow_provider_p2psms.version_compat import conf

    configured = conf.get("p2psms", "checkpoint_path", fallback=None)
    if configured:
        return str(configured)
    home = os.environ.get("AIRFLOW_HOME") or os.path.expanduser("~/airflow")
    return f"file://{os.path.join(home, 'p2psms_checkpoints')}"


def _text(value: Any, kind: str, index: int) -> str:
    if not isinstance(value, str):
        raise SmsConfigurationError(
            f"The resume checkpoint '{kind}.{index}' is a {type(value).__name__}, not the string this version "
            "writes: it was left by another version of airflow-provider-p2psms. Finish the run with that "
            "version, or clear the task's state (its task state store, or its checkpoint_path folder) and "
            "accept that messages of the earlier try may be sent again."
        )
    return value


def _safe(value: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_.+" else "_" for ch in value)
