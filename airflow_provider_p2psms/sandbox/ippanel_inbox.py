"""IPPanel's inbox: ``POST /v1/api/report/messages-inbox``, and the control that puts replies in it.

The inbox holds what people sent to the account's lines (replies to a campaign, such as opt-outs).
Replies get there through the unauthenticated control ``POST /__sandbox__/inbox``, whose body is a JSON
list of ``{"from": "+989121234567", "text": "لغو", "to": "+983000505", "time": 1747808125}``: ``from``
and ``text`` are required, ``to`` defaults to the first of ``ippanel_senders`` and ``time`` (epoch
seconds) to the moment of the call. ``from`` is kept as given, so a test can hand the hook any spelling
a gateway might use. Each reply gets the next ``messages_inbox_id``, in the order given, from
:data:`FIRST_INBOX_ID` up. The control answers the new rows as the API lists them.

The endpoint takes a JSON body ``{"page": 1, "per_page": 10, "filters": {"from_id": 125}}``, as the
Edge documentation shows it, and answers the messages whose ``messages_inbox_id`` is greater than
``from_id`` (all of them without it), newest first, one page of them, with ``meta`` paginating like the
recipients report (``current_page``, ``last_page``, ``per_page``, ``total``). What the documentation does
not say, this sandbox chooses: ``page`` defaults to 1, ``per_page`` to :data:`DEFAULT_PER_PAGE` and is
capped at :data:`MAX_PER_PAGE`, ``from_id`` may be 0, other filters are ignored, a page past the last is
empty, and reading leaves ``seen`` at ``"0"``. A bad ``page``, ``per_page`` or ``from_id`` answers 422
under its field path (``filters.from_id``).

The inbox belongs to the store it was made for (:func:`inbox_of`), so a reset, which starts a new
store, empties it.
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from airflow_provider_p2psms.sandbox.ippanel_envelope import FieldErrors, json_object, ok, positive_int

if TYPE_CHECKING:
    from airflow_provider_p2psms.sandbox.config import SandboxConfig
    from airflow_provider_p2psms.sandbox.store import Store
    from airflow_provider_p2psms.sandbox.wire import ApiResponse, Call

FIRST_INBOX_ID: Final = 50001
DEFAULT_PER_PAGE: Final = 10
MAX_PER_PAGE: Final = 100

_INVALID_FILTERS: Final = "فیلترها باید یک شیء باشد"
_INVALID_NUMBER: Final = "مقدار باید یک عدد صحیح نامنفی باشد"


@dataclass(frozen=True)
class Reply:
    """One message received on a line of the account.

    :param inbox_id: its ``messages_inbox_id``.
    :param sender: who sent it (the API's ``from``), as given to the control.
    :param line: the account's line that received it (the API's ``number``).
    :param text: what they wrote.
    :param time: epoch seconds of its arrival.
    """

    inbox_id: int
    sender: str
    line: str
    text: str
    time: int

    def row(self) -> dict[str, object]:
        """The reply as the inbox endpoint lists it."""
        return {
            "messages_inbox_id": self.inbox_id,
            "from": self.sender,
            "number": self.line,
            "message": self.text,
            "type": "normal",
            "time": self.time,
            "seen": "0",
        }


class Inbox:
    """The replies received so far, oldest first; ids only grow."""

    def __init__(self) -> None:
        self.replies: list[Reply] = []
        self._next_id = FIRST_INBOX_ID

    def add(self, sender: str, line: str, text: str, time: int) -> Reply:
        reply = Reply(self._next_id, sender, line, text, time)
        self._next_id += 1
        self.replies.append(reply)
        return reply

    def after(self, from_id: int) -> list[Reply]:
        """The replies with an id greater than ``from_id``, newest first."""
        return [reply for reply in reversed(self.replies) if reply.inbox_id > from_id]


_INBOXES: weakref.WeakKeyDictionary[Store, Inbox] = weakref.WeakKeyDictionary()


def inbox_of(store: Store) -> Inbox:
    """The inbox of ``store``, made empty on first use."""
    inbox = _INBOXES.get(store)
    if inbox is None:
        inbox = _INBOXES[store] = Inbox()
    return inbox


def messages_inbox(call: Call) -> ApiResponse:
    """Answer one page of the replies received after ``filters.from_id``."""
    errors = FieldErrors()
    body = json_object(call, errors, empty_is_object=True)
    if body is None:
        return errors.response()
    page = positive_int(body.get("page", 1), "page", errors)
    per_page = positive_int(body.get("per_page", DEFAULT_PER_PAGE), "per_page", errors)
    filters = body.get("filters") or {}
    from_id: object = 0
    if not isinstance(filters, dict):
        errors.add("filters", _INVALID_FILTERS)
    else:
        from_id = filters.get("from_id", 0)
        if from_id is None:
            from_id = 0
        if isinstance(from_id, str) and from_id.isascii() and from_id.isdigit():
            from_id = int(from_id)
        if not isinstance(from_id, int) or isinstance(from_id, bool) or from_id < 0:
            errors.add("filters.from_id", _INVALID_NUMBER)
    if page is None or per_page is None or errors.by_field:
        return errors.response()
    assert isinstance(from_id, int)
    per_page = min(per_page, MAX_PER_PAGE)
    found = inbox_of(call.store).after(from_id)
    start = (page - 1) * per_page
    pagination = {
        "current_page": page,
        "last_page": max(1, math.ceil(len(found) / per_page)),
        "per_page": per_page,
        "total": len(found),
    }
    return ok([reply.row() for reply in found[start : start + per_page]], pagination)


def receive(store: Store, replies: object, config: SandboxConfig, now: float) -> list[dict[str, object]]:
    """Put ``replies`` (the control's body) in the inbox of ``store``; return their rows, in the order given.

    :raises ValueError: naming the first bad reply; nothing is added then.
    """
    if not isinstance(replies, list):
        raise ValueError('the body must be a JSON list of {"from": ..., "text": ...} objects')
    checked: list[tuple[str, str, str, int]] = []
    for index, reply in enumerate(replies):
        if not isinstance(reply, dict):
            raise ValueError(f"reply {index} must be a JSON object")
        unknown = sorted(set(reply) - {"from", "to", "text", "time"})
        if unknown:
            raise ValueError(f"reply {index} has unknown fields: {', '.join(unknown)}")
        sender, text = reply.get("from"), reply.get("text")
        line = reply.get("to", config.ippanel_senders[0] if config.ippanel_senders else "")
        at = reply.get("time", int(now))
        if not isinstance(sender, str) or not sender.strip():
            raise ValueError(f"reply {index} needs 'from', the sender's number as a string")
        if not isinstance(text, str):
            raise ValueError(f"reply {index} needs 'text', a string")
        if not isinstance(line, str):
            raise ValueError(f"reply {index}: 'to' must be a string")
        if not isinstance(at, int) or isinstance(at, bool) or at < 0:
            raise ValueError(f"reply {index}: 'time' must be epoch seconds, a whole number")
        checked.append((sender, line, text, at))
    inbox = inbox_of(store)
    return [inbox.add(*reply).row() for reply in checked]
