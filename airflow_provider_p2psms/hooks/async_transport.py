"""The triggerer's HTTP transport: status reads over ``httpx``'s async client, with the same retry rules.

One triggerer runs many triggers on one event loop, so a trigger must never block it: its reads go
through an :class:`httpx.AsyncClient`. ``httpx`` is what the Task SDK itself uses, so it comes with
every Airflow 3 install (``aiohttp``, which the http provider uses, would be one more dependency).
Only reads run here: sends happen in the worker, over :mod:`~airflow_provider_p2psms.hooks.transport`,
whose rules (:func:`~airflow_provider_p2psms.hooks.transport.verdict_for_status`, backoff with
``Retry-After``, error envelopes through the gateway's ``error_for``) this module follows as they are.

A Bitel campaign is one status request per message, so the path of one request is kept short: the
look-ups run on ``status_concurrency`` worker coroutines that take them in turn (not one task each), and
a retry budget is only made for a request that needs a second attempt.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import TYPE_CHECKING

from airflow_provider_p2psms.exceptions import P2PSmsError
from airflow_provider_p2psms.hooks import transport
from airflow_provider_p2psms.hooks.flows import FlowRunner
from airflow_provider_p2psms.hooks.transport import ApiCall, GatewayResponse

if TYPE_CHECKING:
    from collections.abc import Sequence

    import httpx

    from airflow_provider_p2psms.hooks.base import P2PSmsHook
    from airflow_provider_p2psms.hooks.flows import StatusLookup
    from airflow_provider_p2psms.hooks.settings import GatewaySettings
    from airflow_provider_p2psms.models import DeliveryState


def open_client(settings: GatewaySettings, auth_headers: Mapping[str, str]) -> httpx.AsyncClient:
    """An async client for one connection: its base URL, auth, timeout, TLS checks and pool size."""
    import os

    import httpx

    # The CA bundle the worker's requests session uses, so that TLS works the same in the triggerer.
    bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    return httpx.AsyncClient(
        headers={"Accept": "application/json", "User-Agent": transport.user_agent(), **auth_headers},
        timeout=settings.timeout,
        verify=bundle if settings.verify and bundle else settings.verify,
        limits=httpx.Limits(
            max_connections=settings.status_concurrency, max_keepalive_connections=settings.status_concurrency
        ),
        follow_redirects=False,
    )


async def read(hook: P2PSmsHook, client: httpx.AsyncClient, call: ApiCall) -> GatewayResponse:
    """Make the read ``call`` with the transport's retry rules and return the decoded answer."""
    import httpx

    url = f"{hook.settings.base_url}{call.path}"
    budget: transport.RetryBudget | None = None
    while True:
        retry_after: float | None = None
        try:
            response = await client.request(call.method, url, params=call.params, json=call.json)
        except (httpx.InvalidURL, httpx.UnsupportedProtocol) as error:
            raise transport.unusable_base_url(hook, error) from None
        except httpx.TransportError as error:
            problem = type(error).__name__
        else:
            status = response.status_code
            if transport.verdict_for_status("read", status) == "answer":
                return transport.interpret(hook, status, transport.json_or_none(response), "read", ())
            retry_after = transport.retry_after_seconds(response.headers.get("Retry-After"))
            problem = f"HTTP {status}"
        budget = budget or transport.RetryBudget(hook, call)
        await asyncio.sleep(budget.next_delay(problem, retry_after))


async def run_lookups(
    hook: P2PSmsHook, client: httpx.AsyncClient, lookups: Sequence[StatusLookup], concurrency: int
) -> list[list[DeliveryState]]:
    """
    Run the look-ups' flows over ``client``, at most ``concurrency`` at once; their states, in their order.

    If one fails, the others are cancelled before its error is raised: none outlives this call (the caller
    may close the client, or poll again next to them).
    """
    found: list[list[DeliveryState]] = [[] for _ in lookups]
    turns = iter(range(len(lookups)))  # shared by the workers: each look-up is taken once

    async def worker() -> None:
        for index in turns:
            runner = FlowRunner(lookups[index].flow)
            while (call := runner.next_call()) is not None:
                try:
                    runner.answered(await read(hook, client, call))
                except P2PSmsError as error:
                    runner.failed(error)
            found[index] = runner.states

    workers = [asyncio.ensure_future(worker()) for _ in range(min(concurrency, len(lookups)))]
    try:
        await asyncio.gather(*workers)
    except BaseException:
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        raise
    return found
