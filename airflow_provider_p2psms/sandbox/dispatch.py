"""Routes API requests to the gateway stand-ins, injects faults and records everything.

One lock guards all state, so concurrent requests and control calls see a consistent
sandbox; the configured latency is waited out by the caller, outside the lock.

A gateway's rate limit (``bitel_rate_limit``, ``ippanel_rate_limit``) is a token bucket over messages,
filled at the limit and holding one second of it: a send with an authorized token whose messages are not
in the bucket is answered 429 with a ``Retry-After`` saying when they would be, and is not processed.
A send larger than the whole bucket goes once the bucket is full, and leaves it owing the rest.
"""

from __future__ import annotations

import enum
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from airflow_provider_p2psms.sandbox import ippanel_inbox
from airflow_provider_p2psms.sandbox.bitel import BitelApi
from airflow_provider_p2psms.sandbox.ippanel import IppanelApi
from airflow_provider_p2psms.sandbox.store import Store
from airflow_provider_p2psms.sandbox.wire import KIND_REPORT, KIND_SEND, KIND_STATUS, KIND_UNKNOWN, ApiResponse, Call

if TYPE_CHECKING:
    from collections.abc import Mapping

    from airflow_provider_p2psms.sandbox.config import SandboxConfig
    from airflow_provider_p2psms.sandbox.wire import ApiRequest, GatewayApi, Route


class _Fault(enum.Enum):
    UNAVAILABLE = "503"
    RATE_LIMITED = "429"
    DROP = "drop"


@dataclass(frozen=True)
class Processed:
    """What to do with an API request once the sandbox has handled it.

    :param response: the answer, or ``None`` to close the connection without one.
    :param delay_seconds: how long to wait before answering (the configured latency).
    """

    response: ApiResponse | None
    delay_seconds: float


def format_seconds(seconds: float) -> str:
    """Render seconds for a ``Retry-After`` header: ``"1"``, ``"0.5"``, ``"2.25"``."""
    return f"{seconds:.3f}".rstrip("0").rstrip(".")


class SandboxState:
    """The whole mutable state of one sandbox server.

    :param config: the configuration at start; :meth:`reset` returns to it.
    """

    def __init__(self, config: SandboxConfig) -> None:
        self._lock = threading.Lock()
        self._initial_config = config
        self._apis: tuple[GatewayApi, ...] = (BitelApi(), IppanelApi())
        self._routes = {api.name: api.routes() for api in self._apis}
        self._clear(config)

    def _clear(self, config: SandboxConfig) -> None:
        self._config = config
        self._store = Store()
        self._random = random.Random(config.seed)
        self._fail_baseline = 0
        self._requests: list[dict[str, object]] = []
        self._by_route: Counter[str] = Counter()
        self._by_status: Counter[str] = Counter()
        # Per gateway: messages in its rate-limit bucket, and when they were counted.
        self._buckets: dict[str, tuple[float, float]] = {}

    @property
    def config(self) -> SandboxConfig:
        """The configuration in force."""
        with self._lock:
            return self._config

    def process(self, request: ApiRequest) -> Processed:
        """Handle one API request: route, inject faults, check auth, record.

        :param request: the parsed request.
        """
        with self._lock:
            config = self._config
            now = time.time()
            api = next((api for api in self._apis if request.path.startswith(api.prefix)), None)
            route, params, path_known = self._match(api, request)
            auth_ok = api is not None and api.authorized(request.authorization, config)
            accepted_before = self._store.accepted_sends
            fault = None if route is None else self._fault(route.kind, config)
            response: ApiResponse
            if api is None:
                response = ApiResponse(404, {"error": "NotFound"})
            elif route is None:
                response = api.method_not_allowed() if path_known else api.not_found()
            elif fault is _Fault.UNAVAILABLE:
                response = api.unavailable()
            elif fault is _Fault.RATE_LIMITED:
                retry_after = format_seconds(config.retry_after_seconds)
                response = replace(api.rate_limited(), headers={"Retry-After": retry_after})
            elif not auth_ok:
                response = api.unauthorized()
            elif (wait := self._over_rate(api.name, route.kind, request, config, now)) is not None:
                response = replace(api.rate_limited(), headers={"Retry-After": format_seconds(wait)})
            else:
                response = route.handler(Call(request, params, config, now, self._store))
            dropped = fault is _Fault.DROP
            status = None if dropped else response.status
            accepted = self._store.accepted_sends > accepted_before
            self._requests.append(
                {
                    "seq": len(self._requests) + 1,
                    "method": request.method,
                    "path": request.target,
                    "status": status,
                    "provider": None if api is None else api.name,
                    "kind": KIND_UNKNOWN if route is None else route.kind,
                    "route": None if route is None else route.template,
                    "body": request.text,
                    "auth_ok": auth_ok,
                    "request_seq": self._store.accepted_sends if accepted else None,
                    "received_at": now,
                }
            )
            self._by_route[f"{request.method} {request.path if route is None else route.template}"] += 1
            self._by_status["dropped" if status is None else str(status)] += 1
            return Processed(None if dropped else response, config.latency_ms / 1000)

    def _match(self, api: GatewayApi | None, request: ApiRequest) -> tuple[Route | None, dict[str, str], bool]:
        """Find the route for a request.

        :return: the route (``None`` if there is none for this method and path), its
            placeholder values, and whether some route has this path.
        """
        path_known = False
        for route in () if api is None else self._routes[api.name]:
            params = route.match(request.path)
            if params is not None:
                if route.method == request.method:
                    return route, params, True
                path_known = True
        return None, {}, path_known

    def _fault(self, kind: str, config: SandboxConfig) -> _Fault | None:
        if kind == KIND_SEND:
            if (
                config.fail_sends_after is not None
                and self._store.accepted_sends - self._fail_baseline >= config.fail_sends_after
            ):
                return _Fault.UNAVAILABLE
            rates = (
                (_Fault.UNAVAILABLE, config.send_5xx_rate),
                (_Fault.RATE_LIMITED, config.send_429_rate),
                (_Fault.DROP, config.send_drop_rate),
            )
        elif kind in (KIND_STATUS, KIND_REPORT):
            rates = (
                (_Fault.UNAVAILABLE, config.status_5xx_rate),
                (_Fault.RATE_LIMITED, config.status_429_rate),
                (_Fault.DROP, config.status_drop_rate),
            )
        else:
            return None
        # One draw per eligible request, whatever the rates, keeps a seeded sequence stable.
        roll = self._random.random()
        threshold = 0.0
        for fault, rate in rates:
            threshold += rate
            if roll < threshold:
                return fault
        return None

    def _over_rate(
        self, gateway: str, kind: str, request: ApiRequest, config: SandboxConfig, now: float
    ) -> float | None:
        """Seconds until a send over the gateway's rate limit would fit; ``None`` if it fits (and is counted)."""
        limit = getattr(config, f"{gateway}_rate_limit", None)
        if kind != KIND_SEND or limit is None:
            return None
        tokens, counted_at = self._buckets.get(gateway, (limit, now))
        tokens = min(limit, tokens + (now - counted_at) * limit)
        count = messages_in(request)
        needed = min(count, limit)
        if tokens < needed:
            self._buckets[gateway] = (tokens, now)
            return max((needed - tokens) / limit, 0.001)
        self._buckets[gateway] = (tokens - count, now)
        return None

    def messages(self) -> list[dict[str, Any]]:
        """Every accepted message, oldest first."""
        with self._lock:
            return [dict(message) for message in self._store.message_log]

    def requests(self) -> list[dict[str, Any]]:
        """Every API request received, oldest first (no credentials, only ``auth_ok``)."""
        with self._lock:
            return [dict(entry) for entry in self._requests]

    def stats(self) -> dict[str, Any]:
        """Request counts by route (``"GET /api/v2/sms/status/{id}"``) and by status code."""
        with self._lock:
            return {
                "total": len(self._requests),
                "by_route": dict(sorted(self._by_route.items())),
                "by_status": dict(sorted(self._by_status.items())),
                "accepted_sends": self._store.accepted_sends,
                "messages": len(self._store.message_log),
            }

    def receive_replies(self, replies: object) -> list[dict[str, Any]]:
        """Put replies in the IPPanel inbox (see :func:`.ippanel_inbox.receive`); return their inbox rows."""
        with self._lock:
            return ippanel_inbox.receive(self._store, replies, self._config, time.time())

    def configure(self, changes: Mapping[str, object]) -> SandboxConfig:
        """Change some configuration fields and return the new configuration.

        Setting ``seed`` re-seeds the fault generator; setting ``fail_sends_after``
        restarts its count of accepted sends.

        :param changes: field names and new values.
        :raises ValueError: on an unknown field or an invalid value.
        """
        with self._lock:
            config = self._config.updated(changes)
            if "seed" in changes:
                self._random = random.Random(config.seed)
            if "fail_sends_after" in changes:
                self._fail_baseline = self._store.accepted_sends
            for name in changes:
                if name.endswith("_rate_limit"):
                    self._buckets.pop(name.removesuffix("_rate_limit"), None)
            self._config = config
            return config

    def reset(self, changes: Mapping[str, object]) -> SandboxConfig:
        """Forget all messages, requests and counters; go back to the start configuration.

        :param changes: fields to change from the start configuration.
        :raises ValueError: on an unknown field or an invalid value (nothing is reset then).
        """
        with self._lock:
            config = self._initial_config.updated(changes)
            self._clear(config)
            return config


def messages_in(request: ApiRequest) -> int:
    """
    The messages a send request carries, as a gateway's rate limit counts them: Bitel's ``phoneNumbers``,
    or the recipients of IPPanel's ``params``; 1 for a single message or a body that says nothing clearer.
    """
    try:
        body = request.json()
    except ValueError:
        return 1
    if not isinstance(body, dict):
        return 1
    numbers, params = body.get("phoneNumbers"), body.get("params")
    if isinstance(numbers, list):
        return max(1, len(numbers))
    if isinstance(params, dict):
        params = [params]
    if isinstance(params, list):
        recipients = (p.get("recipients") for p in params if isinstance(p, dict))
        return max(1, sum(len(r) for r in recipients if isinstance(r, list)))
    return 1
