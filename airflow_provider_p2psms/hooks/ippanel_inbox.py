"""IPPanel Edge's inbox: ``POST /api/report/messages-inbox``, the messages received on the account's lines.

The request is ``{"page": n, "per_page": k, "filters": {"from_id": <id>}}``: the answer lists only the
messages received after the one with id ``from_id``, newest first, and ``meta`` paginates it like the
recipients report (``current_page``, ``last_page``, ``per_page``, ``total``). Each row is
``{"messages_inbox_id", "from", "number", "message", "type", "time", "seen"}``, ``time`` in epoch seconds.

Newest first means that a message arriving while the pages are read pushes the older ones one place
further: a message may come again on the next page, and ``last_page`` may grow. So every page's own
``meta`` decides whether another one follows, and a message already yielded is not yielded again. None
is lost: a message only ever moves to a later page, so every message older than one read is read too,
and a message that is not read is newer, with a greater id, than every one read: the next read after the
greatest id read finds it.

The Edge documentation does not say how large ``per_page`` may be (the hook asks for
:data:`INBOX_PAGE_SIZE` and follows whatever the answers say), whether ids grow in the order messages
arrive (the cursor relies on it), whether messages ever leave the inbox (one removed while the pages are
read would pull a later one onto a page already read), which other filters exist, or whether reading
changes ``seen``.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Final, Protocol

from airflow_provider_p2psms.exceptions import P2PSmsError
from airflow_provider_p2psms.hooks.inbox import IncomingSms

if TYPE_CHECKING:
    from collections.abc import Iterator

    from airflow_provider_p2psms.hooks.settings import GatewaySettings
    from airflow_provider_p2psms.hooks.transport import GatewayResponse, RequestKind

INBOX_PATH: Final = "/api/report/messages-inbox"
#: Messages asked for per inbox page.
INBOX_PAGE_SIZE: Final = 100


class _Gateway(Protocol):
    """What the inbox needs of the hook it is mixed into."""

    sms_conn_id: str

    @property
    def settings(self) -> GatewaySettings: ...

    def request(
        self, method: str, path: str, *, kind: RequestKind, json: Any = None, params: Any = None
    ) -> GatewayResponse: ...


class IPPanelInbox:
    """The inbox of an IPPanel account: mixed into the IPPanel hook, it makes it an inbox reader."""

    def inbox_pages(self: _Gateway, after_id: int | None = None) -> Iterator[list[IncomingSms]]:
        """
        Yield the messages received after the one with id ``after_id`` (every message the inbox holds for
        ``None``), one page at a time, newest first as IPPanel lists them. Each message is yielded once.

        Requests are reads: retried on 429, 5xx and network errors, like the status reports.

        :param after_id: the greatest ``messages_inbox_id`` already handled (IPPanel's ``filters.from_id``).
        :raises P2PSmsError: when an answer is not an inbox page.
        """
        seen: set[int] = set()
        page = 1
        while True:
            body: dict[str, Any] = {"page": page, "per_page": INBOX_PAGE_SIZE}
            if after_id is not None:
                body["filters"] = {"from_id": int(after_id)}
            answer = self.request("POST", INBOX_PATH, kind="read", json=body)
            payload = answer.payload if isinstance(answer.payload, dict) else {}
            rows = payload.get("data")
            if not isinstance(rows, list):
                raise _unexpected(self, page, "without a list of messages")
            found = []
            for row in rows:
                message = _incoming(row)
                if message is None:
                    raise _unexpected(self, page, "with a message that has no messages_inbox_id")
                # Newest first: a message arriving meanwhile shows older ones again on the next page.
                if message.inbox_id not in seen and (after_id is None or message.inbox_id > after_id):
                    seen.add(message.inbox_id)
                    found.append(message)
            if found:
                yield found
            meta = payload.get("meta")
            last_page = meta.get("last_page") if isinstance(meta, dict) else None
            if not rows or not isinstance(last_page, int) or page >= last_page:
                return
            page += 1


def _incoming(row: Any) -> IncomingSms | None:
    """An inbox row as an :class:`IncomingSms`; ``None`` when it has no usable id."""
    if not isinstance(row, dict):
        return None
    inbox_id = row.get("messages_inbox_id")
    if isinstance(inbox_id, str) and inbox_id.strip().isdigit():
        inbox_id = int(inbox_id)
    if not isinstance(inbox_id, int) or isinstance(inbox_id, bool):
        return None
    return IncomingSms(
        inbox_id=inbox_id,
        sender=str(row.get("from") or ""),
        line=str(row.get("number") or ""),
        text=str(row.get("message") or ""),
        received_at=_received_at(row.get("time")),
    )


def _received_at(value: Any) -> datetime | None:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
        try:
            return datetime.fromtimestamp(value, tz=timezone.utc)
        except (OverflowError, OSError, ValueError):
            return None
    return None


def _unexpected(hook: _Gateway, page: int, what: str) -> P2PSmsError:
    return P2PSmsError(
        f"IPPanel answered page {page} of the inbox ({INBOX_PATH}) {what}. Is {hook.settings.base_url} "
        f"(connection '{hook.sms_conn_id}') the IPPanel Edge API?"
    )
