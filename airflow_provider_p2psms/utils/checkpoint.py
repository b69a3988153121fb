"""Durable memory of what a task already sent, so a retry never texts anyone twice.

Neither gateway has idempotency keys, so the operator keeps its own ledger, scoped to the task
instance (DAG, run, task, map index) and kept across tries:

* ``<prefix>.inflight.<n>``: the message keys of batches that are about to be sent, or were sent and
  never answered. They are written *before* those batches go on the wire.
* ``<prefix>.sent.<n>``: accepted messages, as message key -> ``[message_id, recipient]``.

Values are cut into numbered chunks of at most :data:`CHUNK_BYTES` of JSON, so that none grows past
the task state store's default limit of 64 KB (``[state_store] max_value_storage_bytes``).

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

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

#: The most JSON one checkpoint value holds, measured as Airflow measures it (``json.dumps``):
#: below the task state store's default ``max_value_storage_bytes`` of 65,535, with room to spare.
CHUNK_BYTES = 48_000

#: Accepted messages worth recording at once: a Bitel receipt takes about 85 bytes of a chunk.
CHUNK_SIZE = 500

#: Message keys per ``inflight`` chunk (20 bytes each).
_INFLIGHT_PER_CHUNK = CHUNK_BYTES // 20


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
        # In-flight keys, in chunks. A key stays in the chunk it was first written to, so every
        # write changes one value and a crash between two writes never drops a mark.
        self._inflight: list[set[int]] = []
        self._chunk_of: dict[int, int] = {}

    def _key(self, name: str) -> str:
        return f"{self._prefix}.{name}"

    def load(self) -> None:
        """Read what earlier tries left behind."""
        while (chunk := self._store.get(self._key(f"sent.{self._chunks}"))) is not None:
            for key, receipt in chunk.items():
                self.sent[int(key, 16)] = receipt
            self._chunks += 1
        while (keys := self._store.get(self._key(f"inflight.{len(self._inflight)}"))) is not None:
            chunk = {int(key, 16) for key in keys} - self.sent.keys()
            self._chunk_of.update(dict.fromkeys(chunk, len(self._inflight)))
            self._inflight.append(chunk)
        self.uncertain = set(self._chunk_of)

    def mark_in_flight(self, keys: Iterable[int]) -> None:
        """Durably note that these messages are about to be sent. Call before sending them."""
        changed: set[int] = set()
        index = 0
        for key in keys:
            if key in self._chunk_of:
                continue
            while index < len(self._inflight) and len(self._inflight[index]) >= _INFLIGHT_PER_CHUNK:
                index += 1
            if index == len(self._inflight):
                self._inflight.append(set())
            self._inflight[index].add(key)
            self._chunk_of[key] = index
            changed.add(index)
        self._write_inflight(changed)

    def record(self, accepted: Mapping[int, list[str]], released: Iterable[int] = ()) -> None:
        """
        Durably note accepted messages, and drop in-flight marks that no longer apply.

        :param accepted: message key -> ``[message_id, recipient]`` of newly accepted messages.
        :param released: keys of messages that provably did not go out (the gateway refused the batch,
            or it was never sent), so a retry may send them.
        """
        chunk: dict[str, list[str]] = {}
        size = 2
        for key, receipt in accepted.items():
            entry = f"{key:016x}"
            # '"<key>": <receipt>, ' as json.dumps writes it.
            entry_size = len(entry) + len(json.dumps(receipt)) + 6
            if chunk and size + entry_size > CHUNK_BYTES:
                self._write_sent(chunk)
                chunk, size = {}, 2
            chunk[entry] = receipt
            size += entry_size
        if chunk:
            self._write_sent(chunk)
        changed: set[int] = set()
        for keys in (accepted, released):
            for key in keys:
                index = self._chunk_of.pop(key, None)
                if index is not None:
                    self._inflight[index].discard(key)
                    changed.add(index)
        self._write_inflight(changed)

    def _write_sent(self, chunk: dict[str, list[str]]) -> None:
        self._store.set(self._key(f"sent.{self._chunks}"), chunk)
        self._chunks += 1

    def _write_inflight(self, changed: set[int]) -> None:
        # Empty chunks at the end are deleted, last first: chunks are read up to the first missing
        # one, so a gap must never hide the chunks after it. An empty chunk in the middle stays.
        while self._inflight and not self._inflight[-1]:
            self._inflight.pop()
            self._store.delete(self._key(f"inflight.{len(self._inflight)}"))
        for index in sorted(changed):
            if index < len(self._inflight):
                self._store.set(self._key(f"inflight.{index}"), [f"{key:016x}" for key in self._inflight[index]])

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


def _safe(value: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_.+" else "_" for ch in value)
