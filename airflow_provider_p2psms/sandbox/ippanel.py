"""IPPanel Edge stand-in: ``/v1/api/...``, raw-key auth, ``{"data", "meta"}`` envelopes.

:class:`IppanelApi` is what the dispatcher serves: the route table, the key check, the
answers to auth failures, injected faults and unknown paths. The endpoints are split by concept:

- :mod:`.ippanel_send`: sending and cancelling, with the validation of send requests;
- :mod:`.ippanel_account`: the credit, the token check and the price of a text;
- :mod:`.ippanel_reports`: the bulk, recipients and statistics reports;
- :mod:`.ippanel_inbox`: the inbox of received messages (replies), and the control that fills it;
- :mod:`.ippanel_states`: the ``state_id`` a bulk is in, its recipients' statuses and cost;
- :mod:`.ippanel_envelope`: the response envelope and the 422 field validation errors.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from airflow_provider_p2psms.sandbox import ippanel_account, ippanel_inbox, ippanel_reports, ippanel_send
from airflow_provider_p2psms.sandbox.ippanel_envelope import envelope
from airflow_provider_p2psms.sandbox.ippanel_envelope import not_found as _not_found
from airflow_provider_p2psms.sandbox.wire import KIND_ACCOUNT, KIND_CANCEL, KIND_REPORT, KIND_SEND, Route

if TYPE_CHECKING:
    from airflow_provider_p2psms.sandbox.config import SandboxConfig
    from airflow_provider_p2psms.sandbox.wire import ApiResponse

_UNAUTHORIZED: Final = "اطلاعات وارد شده صحیح نمی باشد"
_UNAVAILABLE: Final = "سرویس موقتا در دسترس نیست"
_RATE_LIMITED: Final = "تعداد درخواست ها بیش از حد مجاز است"
_METHOD_NOT_ALLOWED: Final = "متد درخواست مجاز نیست"


class IppanelApi:
    """The IPPanel Edge endpoints the provider uses, served under ``/v1``."""

    name = "ippanel"
    prefix = "/v1/"

    def routes(self) -> list[Route]:
        """Return the endpoints."""
        return [
            Route("POST", "/v1/api/send", KIND_SEND, ippanel_send.send),
            Route("POST", "/v1/api/send/cancel", KIND_CANCEL, ippanel_send.cancel),
            Route("POST", "/v1/api/send/calculate-price", KIND_ACCOUNT, ippanel_account.calculate_price),
            Route("GET", "/v1/api/report/by_bulk", KIND_REPORT, ippanel_reports.by_bulk),
            Route("GET", "/v1/api/report/recipients", KIND_REPORT, ippanel_reports.recipients),
            Route("GET", "/v1/api/report/bulk_stats", KIND_REPORT, ippanel_reports.bulk_stats),
            Route("POST", "/v1/api/report/messages-inbox", KIND_REPORT, ippanel_inbox.messages_inbox),
            Route("GET", "/v1/api/payment/credit/mine", KIND_ACCOUNT, ippanel_account.credit),
            Route("POST", "/v1/api/acl/auth/check_token", KIND_ACCOUNT, ippanel_account.check_token),
        ]

    def authorized(self, authorization: str | None, config: SandboxConfig) -> bool:
        """Accept the raw key (no ``Bearer`` prefix) if it is configured."""
        return authorization is not None and authorization.strip() in config.ippanel_tokens

    def unauthorized(self) -> ApiResponse:
        """Return the 401 answer."""
        return envelope(401, None, message=_UNAUTHORIZED, code="400-1")

    def unavailable(self) -> ApiResponse:
        """Return the 503 answer."""
        return envelope(503, None, message=_UNAVAILABLE, code="503-1")

    def rate_limited(self) -> ApiResponse:
        """Return the 429 answer."""
        return envelope(429, None, message=_RATE_LIMITED, code="429-1")

    def not_found(self) -> ApiResponse:
        """Return the 404 answer."""
        return _not_found()

    def method_not_allowed(self) -> ApiResponse:
        """Return the 405 answer."""
        return envelope(405, None, message=_METHOD_NOT_ALLOWED, code="405-1")
