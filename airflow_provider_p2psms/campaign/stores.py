"""Where a task instance's resume ledger lives, so that every try of it reads what the others wrote.

Two stores exist: Airflow 3.3's task state store (``context["task_state_store"]``), and, for older
Airflow or by choice, an :class:`~airflow.sdk.ObjectStoragePath` folder (local disk, S3, GCS...),
which every worker that may run a retry must be able to read.
"""

from __future__ import annotations

import json
from typing import Any, Protocol

from airflow_provider_p2psms.exceptions import SmsConfigurationError


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

    ti = context["ti"]
    map_index = getattr(ti, "map_index", None)
    root = checkpoint_path or _default_checkpoint_root(context)
    return ObjectStorageKeyValueStore(
        task_folder(root, ti.dag_id, ti.run_id, ti.task_id, -1 if map_index is None else map_index)
    )


def task_folder(root: str, dag_id: str, run_id: str, task_id: str, map_index: int) -> Any:
    """The folder of one task instance under ``root`` (an ``ObjectStoragePath`` URL): ``dag/run/task/map``."""
    from airflow.sdk import ObjectStoragePath

    return ObjectStoragePath(root) / _safe(dag_id) / _safe(run_id) / _safe(task_id) / str(map_index)


def remote_executors() -> list[str]:
    """The executors ``[core] executor`` names that may run a task's tries on different machines."""
    from airflow_provider_p2psms.version_compat import conf

    return _remote_executors(str(conf.get("core", "executor", fallback="LocalExecutor") or ""))


def local_default(name: str) -> str:
    """``file://$AIRFLOW_HOME/<name>``: a folder only tasks on this machine can read."""
    import os

    home = os.environ.get("AIRFLOW_HOME") or os.path.expanduser("~/airflow")
    return f"file://{os.path.join(home, name)}"


def _default_checkpoint_root(context: Any) -> str:
    from airflow_provider_p2psms.version_compat import conf

    configured = conf.get("p2psms", "checkpoint_path", fallback=None)
    if configured:
        return str(configured)
    executors = remote_executors()
    if executors:
        task = context["ti"].task_id
        raise SmsConfigurationError(
            f"Task '{task}' keeps what it sent (or learnt) between tries, and this Airflow runs "
            f"{', '.join(executors)}, so a retry or a rescheduled poke may run on another machine than the "
            "try before it. Without the task state store (Airflow 3.3+) that state must live where every "
            "worker can read it: set checkpoint_path on the task, or [p2psms] checkpoint_path "
            "(AIRFLOW__P2PSMS__CHECKPOINT_PATH), to shared storage such as s3://bucket/p2psms. Nothing was done."
        )
    return local_default("p2psms_checkpoints")


def _remote_executors(setting: str) -> list[str]:
    """The executors named in ``[core] executor`` that may run a task's tries on different machines."""
    names = [part.split(":")[-1].strip() for part in setting.split(",") if part.strip()]
    return [name for name in names if name.rpartition(".")[2] != "LocalExecutor"]


def _safe(value: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_.+" else "_" for ch in value)
