"""Durable memory of what a task already sent, so a retry never texts anyone twice.

Neither gateway has idempotency keys, so the operator keeps its own ledger, scoped to the task
instance (DAG, run, task, map index) and kept across tries:

* ``<prefix>.inflight``: the message keys of batches that are about to be sent, or were sent and
  never answered. It is written *before* those batches go on the wire.
* ``<prefix>.sent.<n>``: accepted messages, as message key -> ``[message_id, recipient]``, in
  chunks of a few hundred so that no value grows past the store's comfortable size.

A message key is a hash of (recipient, text), so resumption does not depend on the order in which
rows come back from the source. On a retry, keys found in a ``sent`` chunk are not sent again; keys
found only in ``inflight`` are *uncertain* (the gateway may or may not have them).

Two stores exist: Airflow 3.3's task state store (``context["task_state_store"]``), and, for older
Airflow or by choice, an :class:`~airflow.sdk.ObjectStoragePath` folder (local disk, S3, GCS...),
which every worker that may run a retry must be able to read.
"""

from __future__ import annotations

import json
from hashlib import blake2b
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

#: Accepted messages per ``sent`` chunk: about 70 bytes each keeps a chunk well under 64 KB.
CHUNK_SIZE = 800


def message_key(recipient: str, text: str) -> int:
    """A 64-bit key of (recipient, text): the identity of a message for duplicates and resumption."""
    digest = blake2b(f"{recipient}\x1f{text}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


class KeyValueStore(Protocol):
    """The little a checkpoint needs from a store: JSON values under string keys."""

    def get(self, key: str) -> Any: ...

    def set(self, key: str, value: Any) -> None: ...

    def delete(self, key: str) -> None: ...


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
        self._inflight: set[int] = set()

    def _key(self, name: str) -> str:
        return f"{self._prefix}.{name}"

    def load(self) -> None:
        """Read what earlier tries left behind."""
        while (chunk := self._store.get(self._key(f"sent.{self._chunks}"))) is not None:
            for key, receipt in chunk.items():
                self.sent[int(key, 16)] = receipt
            self._chunks += 1
        inflight = self._store.get(self._key("inflight")) or []
        self.uncertain = {int(key, 16) for key in inflight} - self.sent.keys()
        self._inflight = set(self.uncertain)

    def mark_in_flight(self, keys: Iterable[int]) -> None:
        """Durably note that these messages are about to be sent. Call before sending them."""
        self._inflight.update(keys)
        self._write_inflight()

    def record(self, accepted: Mapping[int, list[str]], released: Iterable[int] = ()) -> None:
        """
        Durably note accepted messages, and drop in-flight marks that no longer apply.

        :param accepted: message key -> ``[message_id, recipient]`` of newly accepted messages.
        :param released: keys of messages that provably did not go out (the gateway refused the batch,
            or it was never sent), so a retry may send them.
        """
        items = list(accepted.items())
        for start in range(0, len(items), CHUNK_SIZE):
            chunk = {f"{key:016x}": receipt for key, receipt in items[start : start + CHUNK_SIZE]}
            self._store.set(self._key(f"sent.{self._chunks}"), chunk)
            self._chunks += 1
        before = len(self._inflight)
        self._inflight.difference_update(accepted)
        self._inflight.difference_update(released)
        if len(self._inflight) != before:
            self._write_inflight()

    def _write_inflight(self) -> None:
        if self._inflight:
            self._store.set(self._key("inflight"), [f"{key:016x}" for key in sorted(self._inflight)])
        else:
            self._store.delete(self._key("inflight"))

    def clear(self) -> None:
        """Forget everything: the task succeeded, and a new run of it may send again."""
        for index in range(self._chunks):
            self._store.delete(self._key(f"sent.{index}"))
        self._store.delete(self._key("inflight"))
        self._chunks = 0
        self._inflight.clear()


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
