"""The interface every SMS gateway hook offers, and the HTTP plumbing they share.

The operator, the sensor, the trigger and the notifier talk only to :class:`P2PSmsHook`: send a
batch, read delivery states, normalize a number, know the batch limit. A gateway is one subclass
that knows its URLs, its envelopes and its status codes; adding one is a new module in this
package plus one ``connection-types`` entry in ``get_provider_info``.

Retry rules (the reason this module exists):

* Reads (status and report requests) are retried on 429, 5xx and network errors, with exponential
  backoff that honours ``Retry-After``.
* Sends are retried only when the gateway provably did not process the request: the connection
  was refused or never established, or it answered 429 or 503. A send that timed out, lost its
  connection after the request was written, or got any other 5xx raises
  :class:`~airflow_provider_p2psms.exceptions.SmsUncertainSendError` and is never resent here.
* 401 raises :class:`~airflow_provider_p2psms.exceptions.SmsAuthenticationError` and other 4xx
  raise :class:`~airflow_provider_p2psms.exceptions.SmsRequestRejected`; neither is retried.
"""

from __future__ import annotations

import email.utils
import os
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from airflow.sdk import BaseHook

from airflow_provider_p2psms.exceptions import (
    P2PSmsError,
    SmsAuthenticationError,
    SmsConfigurationError,
    SmsGatewayUnavailable,
    SmsRequestRejected,
    SmsUncertainSendError,
)
from airflow_provider_p2psms.utils.phone import to_ascii_digits, to_national_mobile

if TYPE_CHECKING:
    import requests

    from airflow_provider_p2psms.models import DeliveryState, OutgoingSms, SmsReceipt

RequestKind = Literal["send", "read"]

#: Longest wait between two attempts, whatever ``Retry-After`` asks for.
MAX_BACKOFF_SECONDS = 120.0


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

    def __repr__(self) -> str:
        return (
            f"GatewaySettings(base_url={self.base_url!r}, sender={self.sender!r}, timeout={self.timeout}, "
            f"verify={self.verify}, max_retries={self.max_retries}, max_concurrency={self.max_concurrency}, "
            f"batch_size={self.batch_size})"
        )


@dataclass(frozen=True)
class GatewayResponse:
    """An HTTP answer reduced to what the hooks need: the status, the decoded JSON and the headers."""

    status_code: int
    payload: Any
    headers: Mapping[str, str]


_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


class P2PSmsHook(BaseHook):
    """
    Base class of the SMS gateway hooks.

    Connection fields, the same for every gateway:

    * ``password``: the API token or key (required).
    * ``host``: base URL override, e.g. ``http://127.0.0.1:8080``; default :attr:`default_base_url`.
    * extra ``sender``: the sender line (aliases ``gateway_number``, ``from_number``).
    * extra ``timeout`` (seconds, default 30), ``max_retries`` (default 5), ``retry_backoff``
      (seconds, first backoff, default 1), ``max_concurrency`` (parallel status requests, default 8),
      ``batch_size`` (messages per send request, at most :attr:`max_batch_size`),
      ``verify_ssl`` (default true; turn off only for a test server with a self-signed certificate).

    :param sms_conn_id: the Airflow connection to use; default :attr:`default_conn_name`.
    """

    conn_name_attr = "sms_conn_id"
    default_conn_name: ClassVar[str] = "sms_default"
    conn_type: ClassVar[str] = ""
    hook_name: ClassVar[str] = ""
    #: The gateway's name in messages, e.g. "Bitel".
    provider_name: ClassVar[str] = ""
    #: The documented API base URL; connection ``host`` overrides it.
    default_base_url: ClassVar[str] = ""
    #: The most messages one send request may carry.
    max_batch_size: ClassVar[int] = 100
    #: Whether :meth:`send_batch` accepts ``send_time``.
    supports_send_time: ClassVar[bool] = False
    #: Whether the ``sender`` extra is required.
    sender_required: ClassVar[bool] = False
    #: What the UI calls the password field.
    token_label: ClassVar[str] = "API token"

    def __init__(self, sms_conn_id: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.sms_conn_id = sms_conn_id or self.default_conn_name

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # Airflow before 3.2 builds the connection form from these two class methods, and only
        # looks for them in the hook class's own namespace; 3.2+ reads get_provider_info instead.
        if cls.conn_type:
            cls.get_ui_field_behaviour = classmethod(_ui_field_behaviour)  # type: ignore[assignment]
            cls.get_connection_form_widgets = classmethod(_connection_form_widgets)  # type: ignore[assignment]

    # ------------------------------------------------------------------ connection

    @cached_property
    def settings(self) -> GatewaySettings:
        """The connection's settings, read and validated once."""
        conn = self.get_connection(self.sms_conn_id)
        extras = conn.extra_dejson if conn.extra else {}
        # A pasted token often carries a line break; requests would echo the whole header in its error.
        token = (conn.password or "").strip()
        if not token:
            raise SmsConfigurationError(
                f"Connection '{self.sms_conn_id}' has no {self.token_label}. Set its password field "
                f"(labelled '{self.token_label}' in the Airflow UI) to your {self.provider_name} {self.token_label}."
            )
        if not (token.isascii() and token.isprintable()):
            raise SmsConfigurationError(
                f"Connection '{self.sms_conn_id}': the {self.token_label} in the password field contains a line "
                "break, a control character or a non-ASCII character, which cannot go in an HTTP header. "
                f"Paste the {self.provider_name} {self.token_label} again."
            )
        senders = (str(extras.get(k) or "").strip() for k in ("sender", "gateway_number", "from_number"))
        sender = next((value for value in senders if value), None)
        if sender is None and self.sender_required:
            raise SmsConfigurationError(
                f"Connection '{self.sms_conn_id}' has no sender line. {self.provider_name} needs one: set the "
                f"'sender' extra to a sender number of your account, e.g. {self.sender_example()}."
            )
        batch_size = self._int_extra(extras, "batch_size", self.max_batch_size, minimum=1)
        if batch_size > self.max_batch_size:
            raise SmsConfigurationError(
                f"Connection '{self.sms_conn_id}': extra 'batch_size' is {batch_size}, but "
                f"{self.provider_name} takes at most {self.max_batch_size} messages per request."
            )
        return GatewaySettings(
            base_url=self._base_url(conn, extras),
            token=token,
            sender=self.normalize_sender(sender) if sender else None,
            timeout=self._float_extra(extras, "timeout", 30.0),
            verify=self._bool_extra(extras, "verify_ssl", True),
            max_retries=self._int_extra(extras, "max_retries", 5, minimum=0),
            retry_backoff=self._float_extra(extras, "retry_backoff", 1.0, minimum=0.0),
            max_concurrency=self._int_extra(extras, "max_concurrency", 8, minimum=1),
            batch_size=batch_size,
        )

    def _base_url(self, conn: Any, extras: Mapping[str, Any]) -> str:
        host = (conn.host or "").strip()
        if not host:
            return self.default_base_url
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

    def _extra_error(self, name: str, value: Any, expected: str) -> SmsConfigurationError:
        return SmsConfigurationError(
            f"Connection '{self.sms_conn_id}': extra '{name}' is {value!r}, expected {expected}."
        )

    def _float_extra(self, extras: Mapping[str, Any], name: str, default: float, minimum: float = 0.001) -> float:
        value = extras.get(name)
        if value in (None, ""):
            return default
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise self._extra_error(name, value, "a number of seconds") from None
        if number < minimum:
            raise self._extra_error(name, value, f"a number of at least {minimum}")
        return number

    def _int_extra(self, extras: Mapping[str, Any], name: str, default: int, minimum: int) -> int:
        value = extras.get(name)
        if value in (None, ""):
            return default
        try:
            number = int(value)
        except (TypeError, ValueError):
            raise self._extra_error(name, value, "a whole number") from None
        if number < minimum:
            raise self._extra_error(name, value, f"a whole number of at least {minimum}")
        return number

    def _bool_extra(self, extras: Mapping[str, Any], name: str, default: bool) -> bool:
        value = extras.get(name)
        if value in (None, ""):
            return default
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise self._extra_error(name, value, "true or false")

    @cached_property
    def session(self) -> requests.Session:
        """One pooled session per hook, shared by the threads that send batches or read statuses."""
        import requests
        from requests.adapters import HTTPAdapter

        from airflow_provider_p2psms import __version__

        settings = self.settings
        session = requests.Session()
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=max(settings.max_concurrency, 32), max_retries=0)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        session.verify = settings.verify
        # requests reads the proxy and CA-bundle variables for every request, scanning the whole
        # environment twice each time; read them once, for this connection's base URL.
        session.proxies = requests.utils.get_environ_proxies(settings.base_url)
        bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
        if settings.verify and bundle:
            session.verify = bundle
        session.trust_env = False
        session.headers.update(
            {
                "Accept": "application/json",
                "Content-Type": "application/json",
                "User-Agent": f"airflow-provider-p2psms/{__version__}",
                **self._auth_headers(settings.token),
            }
        )
        return session

    def get_conn(self) -> requests.Session:
        """Return the pooled, authenticated HTTP session."""
        return self.session

    def close(self) -> None:
        """Close the pooled connections, if any were opened."""
        session = self.__dict__.pop("session", None)
        if session is not None:
            session.close()

    # ------------------------------------------------------------------ the interface

    @property
    def batch_size(self) -> int:
        """Messages per send request: the connection's ``batch_size`` extra, at most :attr:`max_batch_size`."""
        return self.settings.batch_size

    def normalize_number(self, value: Any) -> str:
        """
        Return ``value`` as an Iranian mobile number in this gateway's wire format.

        :raises InvalidPhoneNumber: if it is not one (the message carries a masked copy).
        """
        return self.format_national(to_national_mobile(value))

    def format_national(self, national: str) -> str:
        """Turn a 10-digit national mobile number (``9121234567``) into the wire format."""
        raise NotImplementedError

    def normalize_sender(self, sender: str) -> str:
        """Bring the ``sender`` extra into the form the gateway expects."""
        return to_ascii_digits(sender)

    def sender_example(self) -> str:
        return "10009909"

    def send_batch(self, messages: Sequence[OutgoingSms], *, send_time: datetime | None = None) -> list[SmsReceipt]:
        """
        Send one peer-to-peer batch: each message to its own recipient.

        :param messages: at most :attr:`batch_size` messages, recipients in wire format.
        :param send_time: schedule the batch (timezone-aware); only where :attr:`supports_send_time`.
        :return: one receipt per message, in the order given.
        :raises SmsUncertainSendError: the gateway may or may not have accepted the batch.
        """
        raise NotImplementedError

    def get_statuses(self, receipts: Sequence[SmsReceipt]) -> list[DeliveryState]:
        """Read the delivery state of each receipt; one result per receipt, in the order given."""
        raise NotImplementedError

    def test_connection(self) -> tuple[bool, str]:
        """Make a harmless authenticated call; ``(True, message)`` if the token works."""
        raise NotImplementedError

    def connection_test_failure(self, error: P2PSmsError) -> tuple[bool, str]:
        """The answer of a failed connection test.

        The Airflow UI tests a connection under a temporary id, so a bad token is reported without one.
        """
        if isinstance(error, SmsAuthenticationError):
            return False, (
                f"{self.provider_name} refused the {self.token_label} (HTTP 401). "
                f"Put a valid {self.token_label} in the password field."
            )
        return False, str(error)

    # ------------------------------------------------------------------ shared helpers

    def check_batch(self, messages: Sequence[OutgoingSms], send_time: datetime | None) -> None:
        """Refuse a batch the gateway would refuse, before anything goes on the wire."""
        if not messages:
            raise ValueError("send_batch() needs at least one message")
        if len(messages) > self.batch_size:
            raise ValueError(f"{len(messages)} messages exceed {self.provider_name}'s batch size of {self.batch_size}")
        if send_time is not None:
            if not self.supports_send_time:
                raise SmsConfigurationError(
                    f"{self.provider_name} cannot schedule a send (send_time); connection "
                    f"'{self.sms_conn_id}' is a {self.provider_name} connection. {scheduling_hint()}"
                )
            if send_time.tzinfo is None:
                raise SmsConfigurationError("send_time must be timezone-aware (e.g. pendulum.datetime(..., tz='UTC')).")

    def request(
        self,
        method: str,
        path: str,
        *,
        kind: RequestKind,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        batch: Sequence[OutgoingSms] = (),
    ) -> GatewayResponse:
        """
        Make one API call with this module's retry rules and return the decoded answer.

        2xx answers are returned; 401 and other 4xx are raised through :meth:`error_for`.

        :param path: the documented path, appended to the base URL.
        :param kind: ``"send"`` (never resent unless provably unprocessed) or ``"read"``.
        :param batch: for sends, the messages, carried by an uncertain-send error.
        """
        import requests

        settings = self.settings
        url = f"{settings.base_url}{path}"
        attempt = 0
        while True:
            retry_after: float | None = None
            try:
                response = self.session.request(method, url, json=json, params=params, timeout=settings.timeout)
            except (
                requests.exceptions.InvalidURL,
                requests.exceptions.InvalidSchema,
                requests.exceptions.MissingSchema,
            ) as error:
                raise SmsConfigurationError(
                    f"Connection '{self.sms_conn_id}' has an unusable base URL {settings.base_url!r} "
                    f"({type(error).__name__}). Set its host to a URL like {self.default_base_url}."
                ) from None
            except requests.RequestException as error:
                if kind == "send" and not _never_reached_server(error):
                    raise SmsUncertainSendError(
                        self.provider_name, batch, f"{type(error).__name__} after the request was sent"
                    ) from None
                problem = f"{type(error).__name__} ({_short_reason(error)})"
            else:
                status = response.status_code
                if status != 429 and status < 500:
                    return self._decode(response, kind, batch)
                if kind == "send" and status not in (429, 503):
                    raise SmsUncertainSendError(self.provider_name, batch, f"HTTP {status} from {method} {path}")
                retry_after = _retry_after_seconds(response.headers.get("Retry-After"))
                problem = f"HTTP {status}"
            if attempt >= settings.max_retries:
                raise SmsGatewayUnavailable(
                    f"{self.provider_name} did not answer {method} {path} usefully after "
                    f"{attempt + 1} attempts (last: {problem}). Connection '{self.sms_conn_id}', "
                    f"base URL {settings.base_url}. Check the gateway's status, or raise the "
                    "connection's 'max_retries' extra."
                )
            delay = self._backoff(attempt, retry_after)
            self.log.warning(
                "%s %s %s: %s; retrying in %.2fs (attempt %d of %d)",
                self.provider_name,
                method,
                path,
                problem,
                delay,
                attempt + 2,
                settings.max_retries + 1,
            )
            time.sleep(delay)
            attempt += 1

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, MAX_BACKOFF_SECONDS)
        base = self.settings.retry_backoff * (2**attempt)
        return min(base * random.uniform(0.5, 1.0), MAX_BACKOFF_SECONDS)

    def _decode(self, response: requests.Response, kind: RequestKind, batch: Sequence[OutgoingSms]) -> GatewayResponse:
        try:
            payload = response.json()
        except ValueError:
            payload = None
        answer = GatewayResponse(response.status_code, payload, response.headers)
        if response.status_code >= 400:
            raise self.error_for(answer)
        if payload is None:
            reason = f"HTTP {response.status_code} with a body that is not JSON"
            if kind == "send":
                raise SmsUncertainSendError(self.provider_name, batch, reason)
            raise P2PSmsError(
                f"{self.provider_name} answered {reason}. Is the base URL {self.settings.base_url} of "
                f"connection '{self.sms_conn_id}' the gateway's API?"
            )
        return answer

    def error_for(self, response: GatewayResponse) -> P2PSmsError:
        """Turn a 4xx answer into the right exception; gateways override to read their envelope."""
        if response.status_code == 401:
            return self.authentication_error()
        return SmsRequestRejected(
            self.provider_name,
            response.status_code,
            None,
            hint=f"Check the base URL of connection '{self.sms_conn_id}' ({self.settings.base_url}).",
        )

    def authentication_error(self) -> SmsAuthenticationError:
        return SmsAuthenticationError(
            f"{self.provider_name} refused the {self.token_label} of connection '{self.sms_conn_id}' (HTTP 401). "
            f"Put a valid {self.token_label} in the connection's password field."
        )

    def _auth_headers(self, token: str) -> dict[str, str]:
        raise NotImplementedError


def scheduling_hint() -> str:
    """What to do instead of setting ``send_time`` on a gateway that cannot schedule."""
    from airflow_provider_p2psms.hooks.factory import scheduling_gateways

    gateways = scheduling_gateways()
    if not gateways:
        return "Leave send_time unset: no installed gateway can schedule a send."
    return f"Leave send_time unset, or use a connection of a gateway that can schedule: {' or '.join(gateways)}."


def _ui_field_behaviour(cls: type[P2PSmsHook]) -> dict[str, Any]:
    """Connection form layout, for Airflow before 3.2."""
    from airflow_provider_p2psms.get_provider_info import ui_field_behaviour

    return ui_field_behaviour(cls.conn_type)


def _connection_form_widgets(cls: type[P2PSmsHook]) -> dict[str, Any]:
    """Extra connection form fields, for Airflow before 3.2."""
    from airflow_provider_p2psms.get_provider_info import legacy_form_widgets

    return legacy_form_widgets(cls.conn_type)


def _never_reached_server(error: Exception) -> bool:
    """Whether a request error proves the request never reached the gateway."""
    import requests
    from urllib3.exceptions import NewConnectionError, ProxyError

    if isinstance(error, requests.exceptions.ConnectTimeout):
        return True
    if isinstance(error, requests.exceptions.ConnectionError):
        cause = error.args[0] if error.args else None
        reason = getattr(cause, "reason", cause)
        if isinstance(reason, ProxyError):
            # The proxy itself could not be reached, so it cannot have forwarded anything.
            reason = reason.original_error
        return isinstance(reason, NewConnectionError)
    return False


def _short_reason(error: Exception) -> str:
    reason = error.args[0] if error.args else error
    reason = getattr(reason, "reason", reason)
    return type(reason).__name__ if isinstance(reason, Exception) else str(reason)[:120]


def _retry_after_seconds(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
