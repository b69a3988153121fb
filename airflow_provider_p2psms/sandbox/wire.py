"""Plain request/response values shared by the gateway stand-ins and the dispatcher.

Keeping HTTP parsing in :mod:`.server` and the gateways' behaviour in :mod:`.bitel` and
:mod:`.ippanel` lets each gateway be read as a list of routes and handler functions.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, Protocol

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from airflow_provider_p2psms.sandbox.config import SandboxConfig
    from airflow_provider_p2psms.sandbox.store import Store

KIND_SEND: Final = "send"
KIND_STATUS: Final = "status"
KIND_REPORT: Final = "report"
KIND_CANCEL: Final = "cancel"
KIND_ACCOUNT: Final = "account"
KIND_UNKNOWN: Final = "unknown"


@dataclass(frozen=True)
class ApiRequest:
    """One HTTP request to a gateway stand-in.

    :param method: HTTP method.
    :param target: path with query string, as received.
    :param path: path without the query string.
    :param query: query parameters (the last value of a repeated one).
    :param body: raw body bytes.
    :param authorization: the ``Authorization`` header, or ``None``.
    """

    method: str
    target: str
    path: str
    query: Mapping[str, str]
    body: bytes
    authorization: str | None

    @property
    def text(self) -> str:
        """The body decoded as UTF-8 (undecodable bytes replaced)."""
        return self.body.decode("utf-8", errors="replace")

    def json(self) -> object:
        """Parse the body as JSON.

        :raises ValueError: if the body is empty, not UTF-8 or not JSON.
        """
        return json.loads(self.body.decode("utf-8"))


@dataclass(frozen=True)
class ApiResponse:
    """A JSON response.

    :param status: HTTP status code.
    :param payload: JSON-ready body.
    :param headers: extra response headers.
    """

    status: int
    payload: object
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Call:
    """Everything a route handler may use.

    :param request: the request.
    :param params: values of the ``{placeholders}`` in the route template.
    :param config: the configuration in force.
    :param now: epoch seconds, one reading per request.
    :param store: the accepted messages.
    """

    request: ApiRequest
    params: Mapping[str, str]
    config: SandboxConfig
    now: float
    store: Store


@dataclass(frozen=True)
class Route:
    """One endpoint of a gateway stand-in.

    :param method: HTTP method.
    :param template: full path with ``{placeholders}``, e.g. ``/api/v2/sms/status/{id}``;
        also the key of the per-route statistics.
    :param kind: ``send``, ``status``, ``report``, ``cancel`` or ``account``; decides which
        fault knobs apply.
    :param handler: builds the response.
    """

    method: str
    template: str
    kind: str
    handler: Callable[[Call], ApiResponse]

    def match(self, path: str) -> dict[str, str] | None:
        """Return the placeholder values if ``path`` fits the template, else ``None``."""
        found = _compile(self.template).fullmatch(path)
        return None if found is None else found.groupdict()


@functools.cache
def _compile(template: str) -> re.Pattern[str]:
    return re.compile(re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(template)))


class GatewayApi(Protocol):
    """What the dispatcher needs from a gateway stand-in."""

    @property
    def name(self) -> str:
        """Provider name recorded with each request: ``bitel`` or ``ippanel``."""

    @property
    def prefix(self) -> str:
        """Path prefix of the gateway's requests (``/api/`` or ``/v1/``)."""

    def routes(self) -> Sequence[Route]:
        """Return the endpoints."""

    def authorized(self, authorization: str | None, config: SandboxConfig) -> bool:
        """Tell whether the ``Authorization`` header carries an accepted credential."""

    def unauthorized(self) -> ApiResponse:
        """Return the 401 answer."""

    def unavailable(self) -> ApiResponse:
        """Return the 503 answer of an injected server error."""

    def rate_limited(self) -> ApiResponse:
        """Return the 429 answer (the dispatcher adds ``Retry-After``)."""

    def not_found(self) -> ApiResponse:
        """Return the 404 answer for an unknown path."""

    def method_not_allowed(self) -> ApiResponse:
        """Return the 405 answer for a known path with the wrong method."""
