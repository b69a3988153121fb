"""Apache Airflow provider for peer-to-peer SMS through the Bitel and IPPanel gateways.

The exception classes are importable from the package itself
(``from airflow_provider_p2psms import SmsAuthenticationError``); they load on first use so that
importing the package (for instance to start the sandbox) stays cheap.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_EXCEPTIONS = frozenset(
    {
        "P2PSmsError",
        "SmsConfigurationError",
        "SmsAuthenticationError",
        "SmsRequestRejected",
        "SmsRecipientsRefused",
        "SmsGatewayUnavailable",
        "SmsUncertainSendError",
        "SmsDeliveryFailed",
        "InvalidPhoneNumber",
        "SmsInputError",
    }
)

__all__ = ["__version__", *sorted(_EXCEPTIONS)]


def __getattr__(name: str) -> Any:
    if name in _EXCEPTIONS:
        from airflow_provider_p2psms import exceptions

        return getattr(exceptions, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
