"""What a gateway hook reads from its Airflow connection: the settings, parsed and checked once.

Every gateway reads the same fields (see :class:`~airflow_provider_p2psms.hooks.base.P2PSmsHook`);
errors name the connection and the field, and never contain the token.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow_provider_p2psms.exceptions import SmsConfigurationError

if TYPE_CHECKING:
    from airflow_provider_p2psms.hooks.base import P2PSmsHook

#: Status requests one hook makes at once by default, in a worker (threads) or the triggerer (async).
#: Bitel reads one message per request, so this is what bounds how fast a campaign is confirmed.
DEFAULT_STATUS_CONCURRENCY = 16
#: The most status requests one hook may make at once.
MAX_STATUS_CONCURRENCY = 256

_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


@dataclass(frozen=True)
class GatewaySettings:
    """What a hook reads from its Airflow connection. The token is kept out of ``repr``."""

    base_url: str
    token: str
    sender: str | None
    timeout: float
    verify: bool
    max_retries: int
    retry_backoff: float
    max_concurrency: int
    batch_size: int
    #: Status requests in flight at once (extra ``status_concurrency``; else ``max_concurrency`` when set).
    status_concurrency: int = DEFAULT_STATUS_CONCURRENCY
    #: The most messages a second a send from this connection makes, per task instance (extra ``max_rate``);
    #: ``None``: no limit. An operator's own ``max_rate`` wins over it.
    max_rate: float | None = None

    def __repr__(self) -> str:
        return (
            f"GatewaySettings(base_url={self.base_url!r}, sender={self.sender!r}, timeout={self.timeout}, "
            f"verify={self.verify}, max_retries={self.max_retries}, max_concurrency={self.max_concurrency}, "
            f"batch_size={self.batch_size}, status_concurrency={self.status_concurrency}, max_rate={self.max_rate})"
        )


def read_settings(hook: P2PSmsHook, conn: Any) -> GatewaySettings:
    """Read and check the settings of ``hook``'s gateway from the Airflow connection ``conn``."""
    extras = _Extras(conn.extra_dejson if conn.extra else {}, hook.sms_conn_id)
    # A pasted token often carries a line break; requests would echo the whole header in its error.
    token = (conn.password or "").strip()
    label, provider = hook.token_label, hook.provider_name
    if not token:
        raise SmsConfigurationError(
            f"Connection '{hook.sms_conn_id}' has no {label}. Set its password field "
            f"(labelled '{label}' in the Airflow UI) to your {provider} {label}."
        )
    if not (token.isascii() and token.isprintable()):
        raise SmsConfigurationError(
            f"Connection '{hook.sms_conn_id}': the {label} in the password field contains a line "
            "break, a control character or a non-ASCII character, which cannot go in an HTTP header. "
            f"Paste the {provider} {label} again."
        )
    senders = (str(extras.get(k) or "").strip() for k in ("sender", "gateway_number", "from_number"))
    sender = next((value for value in senders if value), None)
    if sender is None and hook.sender_required:
        raise SmsConfigurationError(
            f"Connection '{hook.sms_conn_id}' has no sender line. {provider} needs one: set the "
            f"'sender' extra to a sender number of your account, e.g. {hook.sender_example}."
        )
    batch_size = extras.whole("batch_size", hook.max_batch_size, minimum=1)
    if batch_size > hook.max_batch_size:
        raise SmsConfigurationError(
            f"Connection '{hook.sms_conn_id}': extra 'batch_size' is {batch_size}, but "
            f"{provider} takes at most {hook.max_batch_size} messages per request."
        )
    max_concurrency = extras.whole("max_concurrency", 8, minimum=1)
    # max_concurrency was the status concurrency before status_concurrency existed: it still is, when set alone.
    status_default = max_concurrency if extras.get("max_concurrency") not in (None, "") else DEFAULT_STATUS_CONCURRENCY
    status_concurrency = extras.whole("status_concurrency", status_default, minimum=1, maximum=MAX_STATUS_CONCURRENCY)
    return GatewaySettings(
        base_url=base_url(conn, extras, hook.default_base_url),
        token=token,
        sender=hook.normalize_sender(sender) if sender else None,
        timeout=extras.number("timeout", 30.0),
        verify=extras.flag("verify_ssl", True),
        max_retries=extras.whole("max_retries", 5, minimum=0),
        retry_backoff=extras.number("retry_backoff", 1.0, minimum=0.0),
        max_concurrency=max_concurrency,
        batch_size=batch_size,
        status_concurrency=status_concurrency,
        max_rate=extras.rate("max_rate"),
    )


def base_url(conn: Any, extras: Mapping[str, Any], default: str) -> str:
    """The API base URL from the connection's host, port and schema; ``default`` when no host is set."""
    host = (conn.host or "").strip()
    if not host:
        return default
    if "://" in host:
        scheme, _, host = host.partition("://")
    else:
        scheme = str(extras.get("scheme") or "https")
    # Airflow's URI form ``ippanel://http://host:8080/v1`` keeps the protocol in the host but the
    # port and the path in their own fields; a full URL in the host carries them itself.
    netloc, slash, path = host.partition("/")
    if conn.port and not (":" in netloc and netloc.rpartition(":")[2].isdigit()):
        netloc = f"{netloc}:{conn.port}"
    if conn.schema and not path.strip("/"):
        slash, path = "/", conn.schema.strip("/")
    return f"{scheme}://{netloc}{slash}{path}".rstrip("/")


class _Extras(dict[str, Any]):
    """A connection's extras, with typed readers whose errors name the connection and the field."""

    def __init__(self, values: Mapping[str, Any], sms_conn_id: str) -> None:
        super().__init__(values)
        self.sms_conn_id = sms_conn_id

    def _error(self, name: str, value: Any, expected: str) -> SmsConfigurationError:
        return SmsConfigurationError(
            f"Connection '{self.sms_conn_id}': extra '{name}' is {value!r}, expected {expected}."
        )

    def number(self, name: str, default: float, minimum: float = 0.001) -> float:
        value = self.get(name)
        if value in (None, ""):
            return default
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise self._error(name, value, "a number of seconds") from None
        if number < minimum:
            raise self._error(name, value, f"a number of at least {minimum}")
        return number

    def rate(self, name: str) -> float | None:
        """A number of messages a second above 0; ``None`` when unset."""
        value = self.get(name)
        if value in (None, ""):
            return None
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = 0.0
        if isinstance(value, bool) or not 0 < number < float("inf"):
            raise self._error(name, value, "a number of messages a second above 0, such as 50")
        return number

    def whole(self, name: str, default: int, minimum: int, maximum: int | None = None) -> int:
        value = self.get(name)
        if value in (None, ""):
            return default
        expected = f"a whole number from {minimum} to {maximum}" if maximum is not None else "a whole number"
        # int(2.5) and int(True) would pass silently: a count is an int, or the digits of one.
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise self._error(name, value, expected)
        try:
            number = int(value)
        except (TypeError, ValueError):
            raise self._error(name, value, expected) from None
        if maximum is not None and not minimum <= number <= maximum:
            raise self._error(name, value, expected)
        if number < minimum:
            raise self._error(name, value, f"a whole number of at least {minimum}")
        return number

    def flag(self, name: str, default: bool) -> bool:
        value = self.get(name)
        if value in (None, ""):
            return default
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise self._error(name, value, "true or false")
