"""Where a campaign's per-message detail lives once it is too large for an XCom, and how long it stays.

A receipt lists the (message id, recipient) of every accepted message, and a tracker one state per message:
fine inline for a few hundred messages, far too much for an XCom, a trigger's arguments or a checkpoint
at a million. Past :data:`INLINE_LIMIT` characters the detail moves out, and the payload keeps a reference:

* with an outcomes table, the table is the detail: it has a row per message with its id, recipient and
  status, and every worker and the triggerer can read it (``"outcomes:"``);
* without one, a compressed file under ``[p2psms] detail_path``, any ``ObjectStoragePath`` URL
  (``"detail:" + URL``); by default ``$AIRFLOW_HOME/p2psms_detail``, which only works when every task runs
  on this machine, so with another executor than LocalExecutor ``detail_path`` must be shared storage
  (``s3://...``), checked before anything is sent.

Retention (``[p2psms] detail_retention``): full numbers at rest are personal data. ``after_sensor`` (the
default) removes a receipt's file when the sensor that follows it ends for good (it succeeds, or fails on
its last try), never when the send task ends, since a sensor may still have to read it; ``keep`` leaves it
for the user to remove (:func:`remove_detail`). A send that no sensor follows keeps its file.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator
from typing import Any, Final

from airflow_provider_p2psms.exceptions import SmsConfigurationError, SmsInputError

#: A payload's detail longer than this many characters is kept out of it. With the few hundred masked
#: problem lines a receipt carries, the receipt stays well under 64 KB.
INLINE_LIMIT: Final = 16_384
#: A reference to the detail in the send's outcomes table.
OUTCOMES_REF: Final = "outcomes:"
#: A reference to a detail file (followed by its ``ObjectStoragePath`` URL).
FILE_REF: Final = "detail:"
#: The longest line a receipt's messages can have: a message id of 100 characters, a number of 32, a space
#: and a newline. A campaign of fewer rows than ``INLINE_LIMIT / MAX_LINE`` always stays inline.
MAX_LINE: Final = 134
#: ``[p2psms] detail_retention`` values.
RETENTIONS: Final = ("after_sensor", "keep")

_CHUNK = 1 << 20


def is_ref(value: Any) -> bool:
    """Whether a payload value is a reference to detail kept elsewhere."""
    return isinstance(value, str) and (value.startswith(FILE_REF) or value == OUTCOMES_REF)


def detail_root(executor_check_for: str | None, checkpoint_path: str | None = None) -> str:
    """
    The folder of detail files: ``[p2psms] detail_path``; else, when resume checkpoints are kept in files
    that every worker reads (the task's ``checkpoint_path``, or ``[p2psms] checkpoint_path``), a ``detail``
    folder there; else ``$AIRFLOW_HOME/p2psms_detail``.

    :param executor_check_for: the task, for the error raised when the default is a local folder and this
        Airflow runs another executor than LocalExecutor; ``None`` to skip the check.
    :param checkpoint_path: the task's own ``checkpoint_path``, if set.
    """
    from airflow_provider_p2psms.campaign.stores import local_default, remote_executors
    from airflow_provider_p2psms.version_compat import conf

    configured = conf.get("p2psms", "detail_path", fallback=None)
    if configured:
        return str(configured)
    shared = checkpoint_path or conf.get("p2psms", "checkpoint_path", fallback=None)
    if shared:
        return str(shared).rstrip("/") + "/detail"
    executors = remote_executors()
    if executors and executor_check_for is not None:
        raise SmsConfigurationError(
            f"Task '{executor_check_for}' keeps the detail of a large campaign (every message's id and number) "
            f"out of its XComs, and this Airflow runs {', '.join(executors)}, so the sensor or the triggerer that "
            "reads it may run on another machine. Set [p2psms] detail_path (AIRFLOW__P2PSMS__DETAIL_PATH) to "
            "shared storage such as s3://bucket/p2psms-detail (a shared checkpoint_path works too), or give the "
            "send an outcomes table (outcomes_conn_id), which then holds the detail. Nothing was sent."
        )
    return local_default("p2psms_detail")


def retention() -> str:
    """``[p2psms] detail_retention``, checked."""
    from airflow_provider_p2psms.version_compat import conf

    value = str(conf.get("p2psms", "detail_retention", fallback="after_sensor") or "after_sensor").strip()
    if value not in RETENTIONS:
        raise SmsConfigurationError(
            f"[p2psms] detail_retention is {value!r}: use one of {', '.join(RETENTIONS)} "
            "(AIRFLOW__P2PSMS__DETAIL_RETENTION)."
        )
    return value


class DetailWriter:
    """
    A detail file written as it comes, compressed: opened on the first write, published by :meth:`commit`.

    It is written under a temporary name and renamed at the end, so a reader never sees half a file.

    :param folder: the task instance's folder (:func:`~airflow_provider_p2psms.campaign.stores.task_folder`).
    :param name: the file's name, e.g. ``"messages-1.zlib"``.
    """

    def __init__(self, folder: Any, name: str) -> None:
        self._folder = folder
        self._name = name
        self._compressor = zlib.compressobj(6)
        self._file: Any = None
        self._staging: Any = None

    def write(self, text: str) -> None:
        if self._file is None:
            self._folder.mkdir(parents=True, exist_ok=True)
            self._staging = self._folder / f".{self._name}.tmp"
            self._file = self._staging.open("wb")
        self._file.write(self._compressor.compress(text.encode()))

    def commit(self) -> str:
        """Finish the file; its reference (``"detail:" + URL``)."""
        if self._file is None:
            self.write("")
        self._file.write(self._compressor.flush())
        self._file.close()
        self._file = None
        final = self._folder / self._name
        if final.exists():
            final.unlink()
        self._staging.rename(final)
        return FILE_REF + str(final)

    def discard(self) -> None:
        """Drop a file that will not be committed (the send failed)."""
        if self._file is not None:
            self._file.close()
            self._file = None
            if self._staging.exists():
                self._staging.unlink()


def read_text(ref: str) -> str:
    """The text of a detail file, from its reference."""
    return "".join(iter_text(ref))


def iter_text(ref: str) -> Iterator[str]:
    """The text of a detail file in pieces, decompressed as it is read."""
    from airflow.sdk import ObjectStoragePath

    if not ref.startswith(FILE_REF):
        raise SmsInputError(f"{ref[:40]!r} is not a reference to a detail file.")
    path = ObjectStoragePath(ref[len(FILE_REF) :])
    if not path.exists():
        raise SmsInputError(
            f"The detail file {path} is gone: it is removed once the sensor that follows its send has ended "
            "([p2psms] detail_retention), or was removed by hand. Run the send again to track it."
        )
    decompressor = zlib.decompressobj()
    with path.open("rb") as handle:
        while True:
            chunk = handle.read(_CHUNK)
            if not chunk:
                break
            yield decompressor.decompress(chunk).decode()
    yield decompressor.flush().decode()


def spill(text: str, folder_of: Callable[[], Any], name: str) -> str:
    """``text`` as is when short, else written to ``folder_of()``/``name`` and referenced."""
    if len(text) <= INLINE_LIMIT:
        return text
    writer = DetailWriter(folder_of(), name)
    writer.write(text)
    return writer.commit()


def unspill(value: str) -> str:
    """:func:`spill`'s ``text`` back."""
    return read_text(value) if value.startswith(FILE_REF) else value


def remove_detail(value: Any) -> bool:
    """Remove the detail file a payload value refers to (a receipt's ``messages``); whether one was removed."""
    if not isinstance(value, str) or not value.startswith(FILE_REF):
        return False
    from airflow.sdk import ObjectStoragePath

    path = ObjectStoragePath(value[len(FILE_REF) :])
    if not path.exists():
        return False
    path.unlink()
    return True
