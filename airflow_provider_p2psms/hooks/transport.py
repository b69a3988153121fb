"""HTTP transport of the gateway hooks: the pooled session, and the retry rules every request follows.

Retry rules (one table, used by the synchronous path here and the triggerer's asynchronous path in
:mod:`~airflow_provider_p2psms.hooks.async_transport`):

* Reads (status and report requests) are retried on 429, 5xx and network errors, with exponential
  backoff that honours ``Retry-After``.
* Sends are retried only when the gateway provably did not process the request: the connection
  was refused or never established, or it answered 429 or 503. A send that timed out, lost its
  connection after the request was written, or got any other 5xx raises
  :class:`~airflow_provider_p2psms.exceptions.SmsUncertainSendError` and is never resent here.
* 401 raises :class:`~airflow_provider_p2psms.exceptions.SmsAuthenticationError` and other 4xx
  raise :class:`~airflow_provider_p2psms.exceptions.SmsRequestRejected` (through the gateway's
  ``error_for``, which reads its error envelope); neither is retried.
"""

from __future__ import annotations

import email.utils
import os
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from airflow_provider_p2psms.exceptions import (
    P2PSmsError,
    SmsConfigurationError,
    SmsGatewayUnavailable,
    SmsUncertainSendError,
)

if TYPE_CHECKING:
    import requests

    from airflow_provider_p2psms.hooks.base import P2PSmsHook
    from airflow_provider_p2psms.hooks.settings import GatewaySettings
    from airflow_provider_p2psms.models import OutgoingSms

RequestKind = Literal["send", "read"]
#: What to do with an attempt's outcome: hand the answer back, try again, or give up as uncertain.
Verdict = Literal["answer", "retry", "uncertain"]

#: Longest wait between two attempts, whatever ``Retry-After`` asks for.
MAX_BACKOFF_SECONDS = 120.0


@dataclass(frozen=True)
class GatewayResponse:
    """An HTTP answer reduced to what the hooks need: the status and the decoded JSON."""

    status_code: int
    payload: Any


@dataclass(frozen=True)
class ApiCall:
    """One request a gateway wants made: the documented path (appended to the base URL) and its data."""

    method: str
    path: str
    params: Mapping[str, Any] | None = None
    json: Any = None


def verdict_for_status(kind: RequestKind, status: int) -> Verdict:
    """What an HTTP status means for a request of ``kind`` (see the module's retry rules)."""
    if status != 429 and status < 500:
        return "answer"
    if kind == "send" and status not in (429, 503):
        return "uncertain"
    return "retry"


def verdict_for_network_error(kind: RequestKind, never_reached_server: bool) -> Verdict:
    """What a failed connection means: a send that may have reached the gateway is uncertain."""
    return "retry" if kind == "read" or never_reached_server else "uncertain"


def backoff_seconds(settings: GatewaySettings, attempt: int, retry_after: float | None) -> float:
    """How long to wait before attempt ``attempt + 1``: ``Retry-After`` if given, else jittered doubling."""
    if retry_after is not None:
        return min(retry_after, MAX_BACKOFF_SECONDS)
    base = settings.retry_backoff * (2**attempt)
    return min(base * random.uniform(0.5, 1.0), MAX_BACKOFF_SECONDS)


class RetryBudget:
    """The attempts of one call: how long to wait before the next one, or the error once none is left."""

    def __init__(self, hook: P2PSmsHook, call: ApiCall) -> None:
        self.hook = hook
        self.call = call
        self.attempt = 0

    def next_delay(self, problem: str, retry_after: float | None) -> float:
        """Seconds to wait before trying again after ``problem``; raises when ``max_retries`` are spent."""
        hook, call, settings = self.hook, self.call, self.hook.settings
        if self.attempt >= settings.max_retries:
            raise SmsGatewayUnavailable(
                f"{hook.provider_name} did not answer {call.method} {call.path} usefully after "
                f"{self.attempt + 1} attempts (last: {problem}). Connection '{hook.sms_conn_id}', "
                f"base URL {settings.base_url}. Check the gateway's status, or raise the "
                "connection's 'max_retries' extra."
            )
        delay = backoff_seconds(settings, self.attempt, retry_after)
        hook.log.warning(
            "%s %s %s: %s; retrying in %.2fs (attempt %d of %d)",
            hook.provider_name,
            call.method,
            call.path,
            problem,
            delay,
            self.attempt + 2,
            settings.max_retries + 1,
        )
        self.attempt += 1
        return delay


def unusable_base_url(hook: P2PSmsHook, error: Exception) -> SmsConfigurationError:
    return SmsConfigurationError(
        f"Connection '{hook.sms_conn_id}' has an unusable base URL {hook.settings.base_url!r} "
        f"({type(error).__name__}). Set its host to a URL like {hook.default_base_url}."
    )


def interpret(
    hook: P2PSmsHook, status: int, payload: Any, kind: RequestKind, batch: Sequence[OutgoingSms]
) -> GatewayResponse:
    """Return a 2xx answer with a JSON body; raise the gateway's error for 4xx, or for a body that is not JSON."""
    answer = GatewayResponse(status, payload)
    if status >= 400:
        raise hook.error_for(answer)
    if payload is None:
        reason = f"HTTP {status} with a body that is not JSON"
        if kind == "send":
            raise SmsUncertainSendError(hook.provider_name, batch, reason)
        raise P2PSmsError(
            f"{hook.provider_name} answered {reason}. Is the base URL {hook.settings.base_url} of "
            f"connection '{hook.sms_conn_id}' the gateway's API?"
        )
    return answer


def json_or_none(response: Any) -> Any:
    """The decoded JSON body of a ``requests`` or ``httpx`` response, ``None`` if it is not JSON."""
    try:
        return response.json()
    except ValueError:
        return None


def retry_after_seconds(value: str | None) -> float | None:
    """``Retry-After`` in seconds, from either of its forms (seconds, or an HTTP date); ``None`` if absent."""
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


def user_agent() -> str:
    from airflow_provider_p2psms import __version__

    return f"airflow-provider-p2psms/{__version__}"


def open_session(settings: GatewaySettings, auth_headers: Mapping[str, str]) -> requests.Session:
    """One pooled, authenticated session, shared by the threads that send batches or read statuses."""
    import requests
    from requests.adapters import HTTPAdapter

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
            "User-Agent": user_agent(),
            **auth_headers,
        }
    )
    return session


def request(
    hook: P2PSmsHook, call: ApiCall, *, kind: RequestKind, batch: Sequence[OutgoingSms] = ()
) -> GatewayResponse:
    """Make ``call`` over the hook's session with the retry rules above and return the decoded answer."""
    import requests

    settings = hook.settings
    url = f"{settings.base_url}{call.path}"
    budget = RetryBudget(hook, call)
    while True:
        retry_after: float | None = None
        try:
            response = hook.session.request(
                call.method, url, json=call.json, params=call.params, timeout=settings.timeout
            )
        except (
            requests.exceptions.InvalidURL,
            requests.exceptions.InvalidSchema,
            requests.exceptions.MissingSchema,
        ) as error:
            raise unusable_base_url(hook, error) from None
        except requests.RequestException as error:
            if verdict_for_network_error(kind, _never_reached_server(error)) == "uncertain":
                raise SmsUncertainSendError(
                    hook.provider_name, batch, f"{type(error).__name__} after the request was sent"
                ) from None
            problem = f"{type(error).__name__} ({_short_reason(error)})"
        else:
            status = response.status_code
            verdict = verdict_for_status(kind, status)
            if verdict == "answer":
                return interpret(hook, status, json_or_none(response), kind, batch)
            if verdict == "uncertain":
                raise SmsUncertainSendError(hook.provider_name, batch, f"HTTP {status} from {call.method} {call.path}")
            retry_after = retry_after_seconds(response.headers.get("Retry-After"))
            problem = f"HTTP {status}"
        time.sleep(budget.next_delay(problem, retry_after))


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
