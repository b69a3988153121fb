"""What the reliability tests share: recipients, connections, a task state store stand-in, sandbox readings."""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from airflow_provider_p2psms.campaign.ledger import SendLedger
from airflow_provider_p2psms.campaign.stores import TaskStateKeyValueStore

if TYPE_CHECKING:
    from pathlib import Path

    from airflow_provider_p2psms.sandbox import SandboxServer

#: Airflow's default ``[state_store] max_value_storage_bytes``.
STATE_VALUE_LIMIT = 65535


def phone(index: int) -> str:
    """
    A valid mobile number, distinct per ``index`` below 9,000 (masked, only its last two digits show).

    The last four digits are ``1000 + index``: the sandbox delivers those, unlike ``0001``-``0009``.
    """
    return f"0912{1000 + index:07d}"


def people(count: int, start: int = 0) -> list[dict[str, Any]]:
    """Rows as a user's table would hold them: a phone, a name and a personal code."""
    return [{"phone": phone(i), "name": f"user{i}", "code": f"C{i:05d}"} for i in range(start, start + count)]


def write_people_db(path: Path, rows: list[dict[str, Any]]) -> Path:
    """A SQLite file with a ``people`` table holding ``rows`` in insertion order."""
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE people (phone TEXT, name TEXT, code TEXT)")
        connection.executemany("INSERT INTO people VALUES (:phone, :name, :code)", rows)
    return path


def sqlite_conn_env(conn_id: str, path: Path) -> dict[str, str]:
    return {f"AIRFLOW_CONN_{conn_id.upper()}": json.dumps({"conn_type": "sqlite", "host": str(path)})}


def gateway_conn_env(conn_id: str, conn_type: str, server: SandboxServer, token: str, **extra: Any) -> dict[str, str]:
    """An ``AIRFLOW_CONN_*`` variable for a Bitel or IPPanel connection to ``server``."""
    host = server.url if conn_type == "bitel" else server.ippanel_url
    sender = "10009909" if conn_type == "bitel" else "+983000505"
    value = {"conn_type": conn_type, "password": token, "host": host, "extra": {"sender": sender, **extra}}
    return {f"AIRFLOW_CONN_{conn_id.upper()}": json.dumps(value)}


class MemoryTaskState:
    """
    Stands in for ``context["task_state_store"]`` in in-process tests: JSON values under string keys.

    Values are stored as JSON text, so what comes back is what a real store would give back; the keys
    ever written and the largest value are remembered, to check the checkpoint's layout and sizes.
    """

    def __init__(self) -> None:
        self.values: dict[str, str] = {}
        self.written: set[str] = set()
        self.sets = 0
        self.largest = 0

    def get(self, key: str, default: Any = None) -> Any:
        return json.loads(self.values[key]) if key in self.values else default

    def set(self, key: str, value: Any) -> None:
        if value is None:
            raise ValueError("Cannot set value as None")
        text = json.dumps(value)
        self.largest = max(self.largest, len(text))
        self.written.add(key)
        self.sets += 1
        self.values[key] = text

    def delete(self, key: str) -> None:
        self.values.pop(key, None)


def read_ledger(values: Mapping[str, str] | Iterable[Sequence[Any]]) -> SendLedger:
    """
    The ledger that checkpoint values read back as: what a retry would take for sent and uncertain.

    :param values: checkpoint key -> value as JSON text (``MemoryTaskState.values``), or the
        ``[key, size, JSON text]`` entries of a retry-callback snapshot.
    """
    state = MemoryTaskState()
    state.values = dict(values) if isinstance(values, Mapping) else {entry[0]: entry[2] for entry in values}
    ledger = SendLedger(TaskStateKeyValueStore(state))
    ledger.load()
    return ledger


def run_success_callbacks(operator: Any, context: dict[str, Any]) -> None:
    """What Airflow does once ``execute()`` returned and the receipt is stored: run the success callbacks."""
    context.setdefault("task", operator)  # as in every context Airflow builds
    for callback in operator.on_success_callback:
        callback(context)


def task_context(state: MemoryTaskState | None = None, *, try_number: int = 1, **extra: Any) -> dict[str, Any]:
    """The part of a task context the operator uses: the task instance and the task state store."""
    ti = SimpleNamespace(dag_id="reliability", run_id="manual__1", task_id="send", map_index=-1, try_number=try_number)
    context: dict[str, Any] = {"ti": ti, "ds": "2026-01-01", "params": {}, **extra}
    if state is not None:
        context["task_state_store"] = state
    return context


def sent_counts(server: SandboxServer) -> Counter[str]:
    """How many texts the sandbox accepted per recipient."""
    return Counter(message["recipient"] for message in server.messages())


def dropped_recipients(server: SandboxServer) -> list[str]:
    """Recipients of send requests the sandbox accepted and then answered by dropping the connection."""
    dropped = {
        entry["request_seq"]
        for entry in server.requests()
        if entry["kind"] == "send" and entry["status"] is None and entry["request_seq"] is not None
    }
    return [message["recipient"] for message in server.messages() if message["request_seq"] in dropped]


def send_statuses(server: SandboxServer) -> Counter[str]:
    """Answers to send requests by HTTP status (``"dropped"`` for a closed connection)."""
    return Counter(
        "dropped" if entry["status"] is None else str(entry["status"])
        for entry in server.requests()
        if entry["kind"] == "send"
    )


def state_store_keys(db: Path, dag_id: str) -> list[tuple[str, str, int]]:
    """``(task_id, key, value size)`` of every task state store row of a DAG in the metadata DB."""
    with sqlite3.connect(db) as connection:
        return connection.execute(
            "SELECT task_id, key, length(value) FROM task_state_store WHERE dag_id = ? ORDER BY task_id, key",
            (dag_id,),
        ).fetchall()


#: DAG-file source of ``on_retry_callback`` factories. ``heal(url, changes, snapshot)`` returns a
#: callback that writes the task's checkpoints (task state store rows, or files under a folder) to
#: ``snapshot`` as JSON ``[key, size, value as JSON text]`` lists, then changes the sandbox's
#: configuration through its control endpoint. :func:`read_ledger` reads such values back.
RETRY_CALLBACK_SOURCE = """
import json as _json
import os as _os
import pathlib as _pathlib
import sqlite3 as _sqlite3
import urllib.request as _request


def heal(url, changes, snapshot, folder=None):
    def callback(context):
        ti = context["ti"]
        if folder is None:
            database = _os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].removeprefix("sqlite:///")
            with _sqlite3.connect(database) as connection:
                found = connection.execute(
                    "SELECT key, length(value), value FROM task_state_store"
                    " WHERE dag_id = ? AND run_id = ? AND task_id = ? ORDER BY key",
                    (ti.dag_id, ti.run_id, ti.task_id),
                ).fetchall()
        else:
            found = sorted(
                (p.name.removesuffix(".json"), p.stat().st_size, p.read_text())
                for p in _pathlib.Path(folder).rglob("*.json")
            )
        earlier = _json.loads(_pathlib.Path(snapshot).read_text()) if _pathlib.Path(snapshot).exists() else []
        earlier.append({"try": ti.try_number, "keys": found})
        _pathlib.Path(snapshot).write_text(_json.dumps(earlier))
        request = _request.Request(
            url + "/__sandbox__/config",
            data=_json.dumps(changes).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        _request.urlopen(request, timeout=10).read()

    return callback
"""


def record(ledger: SendLedger, accepted: Mapping[int, list[str]], released: Iterable[int] = ()) -> None:
    """Durably note accepted and released messages, as the sender does: stage them, then flush."""
    ledger.stage(accepted, released)
    ledger.flush()
