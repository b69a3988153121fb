"""HTTP transport of the gateway hooks: the pooled session, and what every answer to a request means.

Reads (status and report requests, here and in the triggerer's
:mod:`~airflow_provider_p2psms.hooks.async_transport`) are retried on 429, 5xx and network errors, with
exponential backoff that honours ``Retry-After``; 401 and other 4xx are raised through the gateway's
``error_for``.

Sends follow one table, :data:`SEND_ANSWERS`: what an answer means depends on whether an earlier
attempt at the same messages left their fate unknown (``after_uncertain``: a retry of the task resending
what an earlier try left uncertain, with ``on_uncertain="resend"``). The hook's retries
(:func:`request`), the sender's handling of each batch and what it writes to the resume ledger
(:func:`verdict_for_error`, read by :mod:`~airflow_provider_p2psms.campaign.dispatch`) all read it:

====================================================  ===========================  ============================
answer to a send                                      first attempt of the batch   after an uncertain attempt
====================================================  ===========================  ============================
connection refused / never established                retry                        retry
429                                                   retry (``Retry-After``)      uncertain
503                                                   retry                        uncertain
other 5xx, timeout, connection lost after writing     uncertain                    uncertain
3xx/4xx validation (the recipients or the texts)      refused: isolate             refused
401, wrong sender line                                fail the task at once        fail the task at once
====================================================  ===========================  ============================

* *retry*: the gateway provably did not process the request; the hook sends it again.
* *uncertain*: the gateway may have it. Never resent here
  (:class:`~airflow_provider_p2psms.exceptions.SmsUncertainSendError`); its ledger marks stay, so a
  later try knows. A 429 after an uncertain attempt is uncertain because IPPanel's duplicate guard
  answers 429 to a request identical to one it accepted within 40 seconds.
* *refused*: the gateway accepted nothing of it and armed no duplicate guard
  (:class:`~airflow_provider_p2psms.exceptions.SmsRecipientsRefused`). The sender splits it to isolate
  the recipients the gateway refuses; resending a part is a first attempt again, unless the batch was
  itself a resend after an uncertain attempt. Refused messages are released in the ledger.
* *fail*: :class:`~airflow_provider_p2psms.exceptions.SmsAuthenticationError` or
  :class:`~airflow_provider_p2psms.exceptions.SmsRequestRejected`: nothing was processed, nothing can
  be: the batch is released (unless it was a resend after an uncertain attempt, which stays uncertain)
  and the send stops. So does a gateway that keeps answering *retry* until ``max_retries`` are spent.

Which 3xx/4xx are about the recipients and which about the account is the gateway's to say: each
hook's ``send_batch`` raises ``SmsRecipientsRefused`` for the first kind. Sends never follow redirects:
``requests`` turns a redirected POST into a GET, and Bitel's 3xx answers carry an error envelope
like its 4xx.

Bodies and answers are UTF-8 JSON bytes (:mod:`~airflow_provider_p2psms.hooks.codec`). A send's body may
be built ahead of the send (``ApiCall.body``), in the thread that reads the messages, so that the sending
threads only make the request.
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
    SmsAuthenticationError,
    SmsConfigurationError,
    SmsGatewayUnavailable,
    SmsRecipientsRefused,
    SmsRequestRejected,
    SmsUncertainSendError,
)
from airflow_provider_p2psms.hooks.codec import decode_json, encode_json

if TYPE_CHECKING:
    import requests

    from airflow_provider_p2psms.hooks.base import P2PSmsHook
    from airflow_provider_p2psms.hooks.settings import GatewaySettings
    from airflow_provider_p2psms.models import OutgoingSms

RequestKind = Literal["send", "read"]
#: What an attempt's outcome means: hand the answer back (its body says the rest), try again, the
#: gateway may have it, it refused the recipients or texts, or nothing can be sent.
Verdict = Literal["answer", "retry", "uncertain", "refused", "fail"]
#: The rows of :data:`SEND_ANSWERS`.
SendAnswer = Literal["not reached", "429", "503", "lost", "refused", "fail"]


@dataclass(frozen=True)
class SendMeaning:
    """What one kind of answer to a send means, for a first attempt and after an uncertain one."""

    first: Verdict
    after_uncertain: Verdict

    def verdict(self, after_uncertain: bool) -> Verdict:
        return self.after_uncertain if after_uncertain else self.first


#: The one table of what an answer to a send means (see the module's docstring).
SEND_ANSWERS: Mapping[SendAnswer, SendMeaning] = {
    # Connection refused, or never established: nothing reached the gateway.
    "not reached": SendMeaning("retry", "retry"),
    # Rate limited; but IPPanel's duplicate guard also answers 429 to a copy of a request it accepted.
    "429": SendMeaning("retry", "uncertain"),
    "503": SendMeaning("retry", "uncertain"),
    # Other 5xx, a timeout, a connection lost after the request was written, a 2xx without a usable body.
    "lost": SendMeaning("uncertain", "uncertain"),
    # 3xx/4xx validation of the recipients or texts (Bitel InvalidRequest / InvalidPhoneNumber, IPPanel 422).
    "refused": SendMeaning("refused", "refused"),
    # 401, the wrong sender line (Bitel InvalidGateway, IPPanel 422 on from_number), any other refusal.
    "fail": SendMeaning("fail", "fail"),
}

#: Longest wait between two attempts, whatever ``Retry-After`` asks for.
MAX_BACKOFF_SECONDS = 120.0


@dataclass(frozen=True)
class GatewayResponse:
    """An HTTP answer reduced to what the hooks need: the status and the decoded JSON."""

    status_code: int
    payload: Any


@dataclass(frozen=True)
class ApiCall:
    """
    One request a gateway wants made: the documented path (appended to the base URL) and its data.

    :param json: the JSON body, encoded when the request is made; or
    :param body: the same, encoded already (:func:`encode_json`).
    """

    method: str
    path: str
    params: Mapping[str, Any] | None = None
    json: Any = None
    body: bytes | None = None


def verdict_for_status(kind: RequestKind, status: int, *, after_uncertain: bool = False) -> Verdict:
    """
    What an HTTP status means for a request of ``kind``: ``"answer"`` when the body says the rest.

    :param after_uncertain: the send follows an attempt whose fate is unknown (see :data:`SEND_ANSWERS`).
    """
    if status != 429 and status < 500:
        return "answer"
    if kind == "read":
        return "retry"
    row: SendAnswer = "429" if status == 429 else "503" if status == 503 else "lost"
    return SEND_ANSWERS[row].verdict(after_uncertain)


def verdict_for_network_error(
    kind: RequestKind, never_reached_server: bool, *, after_uncertain: bool = False
) -> Verdict:
    """What a failed connection means: a send that may have reached the gateway is uncertain."""
    if kind == "read":
        return "retry"
    return SEND_ANSWERS["not reached" if never_reached_server else "lost"].verdict(after_uncertain)


def verdict_for_error(error: BaseException, *, after_uncertain: bool = False) -> Verdict:
    """
    What the error a send raised means for its messages: ``"uncertain"``, ``"refused"`` or ``"fail"``.

    The sender reads it to decide what comes of a batch and what the resume ledger learns of it. An
    error this module does not know may have happened after the request left: uncertain.
    """
    if isinstance(error, SmsUncertainSendError):
        return SEND_ANSWERS["lost"].verdict(after_uncertain)
    if isinstance(error, SmsRecipientsRefused):
        return SEND_ANSWERS["refused"].verdict(after_uncertain)
    if isinstance(error, SmsAuthenticationError | SmsRequestRejected | SmsConfigurationError):
        return SEND_ANSWERS["fail"].verdict(after_uncertain)
    if isinstance(error, SmsGatewayUnavailable):
        # Every attempt was answered "retry": the gateway provably processed none of them.
        return "fail"
    return "uncertain"


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
    """
    Return a 2xx answer with a JSON body; raise the gateway's error for 4xx (and, for sends, which never
    follow redirects, for 3xx), or for a body that is not JSON.
    """
    answer = GatewayResponse(status, payload)
    if status >= 400 or (kind == "send" and status >= 300):
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
        return decode_json(response.content)
    except (ValueError, UnicodeDecodeError):
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
    adapter = HTTPAdapter(pool_connections=1, pool_maxsize=max(settings.status_concurrency, 32), max_retries=0)
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
    hook: P2PSmsHook,
    call: ApiCall,
    *,
    kind: RequestKind,
    batch: Sequence[OutgoingSms] = (),
    after_uncertain: bool = False,
) -> GatewayResponse:
    """
    Make ``call`` over the hook's session with the rules above and return the decoded answer.

    :param batch: for sends, the messages, carried by an uncertain-send error.
    :param after_uncertain: for sends, whether an earlier attempt at these messages left their fate
        unknown (the second column of :data:`SEND_ANSWERS`).
    """
    import requests

    settings = hook.settings
    url = f"{settings.base_url}{call.path}"
    # The body once, for every attempt: the session's headers say it is JSON.
    body = call.body if call.body is not None else None if call.json is None else encode_json(call.json)
    budget: RetryBudget | None = None
    while True:
        retry_after: float | None = None
        try:
            response = hook.session.request(
                call.method,
                url,
                data=body,
                params=call.params,
                timeout=settings.timeout,
                # requests would resend a redirected POST as a GET; a send's 3xx is its answer.
                allow_redirects=kind != "send",
            )
        except (
            requests.exceptions.InvalidURL,
            requests.exceptions.InvalidSchema,
            requests.exceptions.MissingSchema,
        ) as error:
            raise unusable_base_url(hook, error) from None
        except requests.RequestException as error:
            never_reached = _never_reached_server(error)
            if verdict_for_network_error(kind, never_reached, after_uncertain=after_uncertain) == "uncertain":
                raise SmsUncertainSendError(
                    hook.provider_name, batch, f"{type(error).__name__} after the request was sent"
                ) from None
            problem = f"{type(error).__name__} ({_short_reason(error)})"
        else:
            status = response.status_code
            verdict = verdict_for_status(kind, status, after_uncertain=after_uncertain)
            if verdict == "answer":
                return interpret(hook, status, json_or_none(response), kind, batch)
            if verdict == "uncertain":
                reason = f"HTTP {status} from {call.method} {call.path}"
                if after_uncertain and status < 500:
                    reason += ", resending what an earlier attempt may have sent (a duplicate guard answers so)"
                raise SmsUncertainSendError(hook.provider_name, batch, reason)
            retry_after = retry_after_seconds(response.headers.get("Retry-After"))
            problem = f"HTTP {status}"
        budget = budget or RetryBudget(hook, call)
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
