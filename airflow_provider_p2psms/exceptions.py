"""The errors this provider raises.

Every message says which gateway and connection is involved and what to do about it. None of them
ever contains an API token, and phone numbers in them are masked.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow_provider_p2psms.version_compat import AirflowException, AirflowFailException

if TYPE_CHECKING:
    from airflow_provider_p2psms.models import OutgoingSms


class P2PSmsError(AirflowException):
    """Base class of every error raised by this provider."""


class SmsConfigurationError(P2PSmsError, AirflowFailException):
    """A connection or an argument is set up wrongly; retrying the task will not help."""


class SmsInputError(P2PSmsError, AirflowFailException):
    """The recipients, the message template or a source query cannot be used as given."""


class InvalidPhoneNumber(P2PSmsError, ValueError):
    """
    A value is not an Iranian mobile number the gateway can text.

    :param masked: the offending value, masked for logs.
    :param reason: why it was refused, in words a user can act on.
    """

    def __init__(self, masked: str, reason: str) -> None:
        self.masked = masked
        self.reason = reason
        super().__init__(f"{masked!s}: {reason}")


class SmsAuthenticationError(P2PSmsError, AirflowFailException):
    """The gateway refused the API token (HTTP 401). Never retried."""


class SmsRequestRejected(P2PSmsError, AirflowFailException):
    """
    The gateway refused a request as invalid (HTTP 4xx). Never retried.

    :param provider: the gateway's display name.
    :param http_status: the HTTP status code.
    :param provider_code: the gateway's own error code, such as ``InvalidGateway`` or ``400-2``.
    :param field_errors: field name to the gateway's messages about it (passed through untranslated).
    :param hint: what the user can do about it.
    """

    def __init__(
        self,
        provider: str,
        http_status: int,
        provider_code: str | None,
        field_errors: Mapping[str, Sequence[str]] | None = None,
        hint: str = "",
        detail: str = "",
    ) -> None:
        self.provider = provider
        self.http_status = http_status
        self.provider_code = provider_code
        self.field_errors = {k: list(v) for k, v in (field_errors or {}).items()}
        self.hint = hint
        code = f", {provider_code}" if provider_code else ""
        text = f"{provider} rejected the request ({http_status}{code})"
        if self.field_errors:
            text += ": " + "; ".join(f"{k}: {' '.join(v)}" for k, v in self.field_errors.items())
        elif detail:
            text += f": {detail}"
        text += "."
        if hint:
            text += f" {hint}"
        super().__init__(text)


class SmsRecipientsRefused(SmsRequestRejected):
    """
    The gateway refused a send as invalid because of its recipients or texts (Bitel ``InvalidRequest`` /
    ``InvalidPhoneNumber``, IPPanel 422 on anything but ``from_number``), not because of the account or
    the sender line. It accepted nothing of the batch and armed no duplicate guard, so the batch can be
    split to find the recipients it refuses (see the send-answer table in ``hooks/transport.py``).

    :param refused: the recipients (wire format) the gateway named, when it names them; ``None`` when
        it only says that something in the batch is wrong.
    """

    def __init__(self, *args: Any, refused: Sequence[str] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.refused = list(refused) if refused is not None else None


class SmsDeliveryFailed(P2PSmsError, AirflowFailException):
    """Every message is final, but fewer were delivered than ``min_delivered_ratio`` asks for."""


class SmsGatewayUnavailable(P2PSmsError):
    """The gateway kept answering 429/5xx or could not be reached, after every retry."""


class SendWindowClosed(P2PSmsError):
    """
    The send window closed while the campaign was sending: nothing more left, the ledger is written.

    Not a failure: the operator catches it and waits (defers) until the window opens again, then resumes.
    """


class SmsUncertainSendError(P2PSmsError):
    """
    A send request may or may not have been accepted: the gateway cannot tell us.

    Raised when a send request timed out or its connection dropped after the request was written,
    or the gateway answered in a way that does not say whether the messages went out. The hook
    never resends such a batch by itself; the operator records it as uncertain.

    :param provider: the gateway's display name.
    :param messages: the batch whose fate is unknown.
    :param reason: what happened.
    """

    def __init__(self, provider: str, messages: Sequence[OutgoingSms], reason: str) -> None:
        self.provider = provider
        self.messages = tuple(messages)
        self.reason = reason
        super().__init__(
            f"{provider} may or may not have accepted a batch of {len(self.messages)} messages: {reason}. "
            "It was not resent automatically, so no recipient gets the text twice."
        )
