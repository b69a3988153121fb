"""IPPanel Edge's cancel of a scheduled send: ``POST /api/send/cancel`` with ``{"message_outbox_id": <id>}``.

Only a send scheduled with ``send_time`` can be cancelled, and only until 5 minutes before that time;
an unknown id answers 404. The documentation does not say what a cancel answers on success beyond a
2xx, nor what it answers for a send that was cancelled already (the package's sandbox answers 422).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final, Protocol

from airflow_provider_p2psms.exceptions import P2PSmsError, SmsRequestRejected

if TYPE_CHECKING:
    from airflow_provider_p2psms.hooks.transport import GatewayResponse, RequestKind

CANCEL_PATH: Final = "/api/send/cancel"


class _Gateway(Protocol):
    def request(
        self, method: str, path: str, *, kind: RequestKind, json: Any = None, params: Any = None
    ) -> GatewayResponse: ...


class IPPanelCancel:
    """Cancelling scheduled sends: mixed into the IPPanel hook."""

    supports_cancel = True

    def cancel_scheduled(self: _Gateway, message_id: str) -> str | None:
        """
        Cancel the scheduled send ``message_id`` (an outbox id); ``None`` once cancelled, else why it was not.

        A cancel is retried like a read (on 429, 5xx and network errors): cancelling twice cancels once.
        """
        try:
            self.request("POST", CANCEL_PATH, kind="read", json={"message_outbox_id": int(message_id)})
        except SmsRequestRejected as error:
            if error.http_status == 404:
                return "the gateway does not know it (404)"
            if error.http_status == 422:
                return f"not cancellable: less than 5 minutes before its send_time, or cancelled already ({error})"
            return str(error)
        except P2PSmsError as error:
            return str(error)
        return None
