"""The triggerer's async status reads, on real loopback sockets: the same answers and rules as the worker's.

``aget_statuses`` runs the gateways' status flows over ``httpx`` instead of the pooled ``requests``
session. A user must not be able to tell which one read a state: the same states in the same order,
the same retries and waits, the same errors with the same messages, at most ``max_concurrency``
requests at a time. Where both paths must behave alike, a test runs on both (``[sync]``/``[async]``).
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from airflow_provider_p2psms.exceptions import P2PSmsError, SmsAuthenticationError, SmsGatewayUnavailable
from airflow_provider_p2psms.hooks import ippanel
from airflow_provider_p2psms.hooks.bitel import BitelHook
from airflow_provider_p2psms.hooks.ippanel import IPPanelHook
from airflow_provider_p2psms.models import DeliveryState, DeliveryStatus, OutgoingSms, SmsReceipt
from airflow_provider_p2psms.sandbox import DEFAULT_BITEL_GATEWAY, DEFAULT_IPPANEL_SENDER
from tests.helpers import GATEWAYS
from tests.hooks import SECRET_TOKEN, Answer, LoopbackServer, ScriptedServer, closed_port, send_one_bulk, use_connection

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from airflow_provider_p2psms.hooks.base import P2PSmsHook

P = DeliveryStatus
HOOKS: dict[str, type[P2PSmsHook]] = {"bitel": BitelHook, "ippanel": IPPanelHook}
SENDERS = {"bitel": DEFAULT_BITEL_GATEWAY, "ippanel": DEFAULT_IPPANEL_SENDER}
WIRE_NUMBERS = {"bitel": "09121234567", "ippanel": "+989121234567"}
UNKNOWN_IDS = {"bitel": "f" * 32, "ippanel": "999"}

#: The one status request a receipt of ``MESSAGE_IDS`` needs, and a 200 saying it was delivered.
MESSAGE_IDS = {"bitel": "a" * 32, "ippanel": "7"}
STATUS_PATHS = {"bitel": f"/api/v2/sms/status/{'a' * 32}", "ippanel": "/v1/api/report/recipients"}
DELIVERED_ANSWERS: dict[str, Answer] = {
    "bitel": (200, {"result": {"statusCode": 1, "status": "DELIVERED"}, "error": None}, {}),
    "ippanel": (200, {"data": [{"recipient": "+989121234567", "message_status": "2"}], "meta": {"last_page": 1}}, {}),
}
DELIVERED = {"bitel": (P.DELIVERED, "1 DELIVERED"), "ippanel": (P.DELIVERED, "2 delivered")}


@pytest.fixture(params=GATEWAYS)
def gateway(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def connect_to(monkeypatch, gateway):
    """Define ``sms_test`` for ``gateway`` on the server at ``url``, holding the secret token; return a hook."""
    hooks: list[P2PSmsHook] = []

    def connect_to(url: str, password: str = SECRET_TOKEN, **extra: object) -> P2PSmsHook:
        host = url if gateway == "bitel" else f"{url}/v1"
        extra = {"sender": SENDERS[gateway], "retry_backoff": 0.01, **extra}
        use_connection(monkeypatch, "sms_test", gateway, password=password, host=host, **extra)
        hooks.append(HOOKS[gateway]("sms_test"))
        return hooks[-1]

    yield connect_to
    for hook in hooks:
        hook.close()


@pytest.fixture
def connect(sandbox, connect_to):
    """``connect_to`` the sandbox, which accepts the secret token."""
    sandbox.configure(bitel_tokens=[SECRET_TOKEN], ippanel_tokens=[SECRET_TOKEN])
    return lambda **extra: connect_to(sandbox.url, **extra)


def read_sync(hook: P2PSmsHook, receipts: Sequence[SmsReceipt]) -> list[DeliveryState]:
    return hook.get_statuses(receipts)


def read_async(hook: P2PSmsHook, receipts: Sequence[SmsReceipt]) -> list[DeliveryState]:
    """As the trigger reads: ``aget_statuses`` on the hook's own async client, in an event loop."""

    async def read() -> list[DeliveryState]:
        async with hook.async_client() as client:
            return await hook.aget_statuses(receipts, client)

    return asyncio.run(read())


READS: dict[str, Callable[[P2PSmsHook, Sequence[SmsReceipt]], list[DeliveryState]]] = {
    "sync": read_sync,
    "async": read_async,
}


@pytest.fixture(params=list(READS))
def read(request: pytest.FixtureRequest) -> Callable[[P2PSmsHook, Sequence[SmsReceipt]], list[DeliveryState]]:
    return READS[request.param]


def statuses(sandbox) -> list[int | None]:
    return [r["status"] for r in sandbox.requests()]


def shape(message: str) -> str:
    """A give-up message without the last problem, which names the HTTP library's own error class."""
    before, _, rest = message.partition("(last: ")
    return f"{before}(last: ...){rest[rest.index('). Connection') :]}"


class _QuietHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gave up on a request (a cancelled look-up) is expected here, not an error.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class PacedServer(LoopbackServer):
    """
    A loopback HTTP server for what the sandbox cannot do: answers in sequence, and holding requests.

    :param answers: path (with or without its query) to the answers it gives in turn, the last one
        repeated; a ``str`` body is sent as HTML, anything else as JSON.
    :param default: the answer for any other path.
    :param hold: seconds every request is held before its answer.

    It records each request (arrival time, path with query, status answered) and the most requests
    it held at the same time.
    """

    def __init__(
        self,
        answers: dict[str, list[Answer]] | None = None,
        *,
        default: Answer = (404, "<html><body><h1>404 Not Found</h1></body></html>", {}),
        hold: float = 0.0,
    ) -> None:
        self.scripts = {path: list(script) for path, script in (answers or {}).items()}
        self.default = default
        self.hold = hold
        self.log: list[tuple[float, str, int]] = []
        self.most_open = 0
        self._open = 0
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                status, payload, headers = server._arrive(self.path)
                time.sleep(server.hold)
                with server._lock:
                    server._open -= 1
                if isinstance(payload, str):
                    data, content_type = payload.encode(), "text/html"
                else:
                    data, content_type = json.dumps(payload).encode(), "application/json"
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._serve(_QuietHTTPServer(("127.0.0.1", 0), Handler))

    def _arrive(self, target: str) -> Answer:
        with self._lock:
            script = self.scripts.get(target) or self.scripts.get(urlsplit(target).path)
            answer = (script.pop(0) if len(script) > 1 else script[0]) if script else self.default
            self.log.append((time.monotonic(), target, answer[0]))
            self._open += 1
            self.most_open = max(self.most_open, self._open)
            return answer

    @property
    def statuses(self) -> list[int]:
        return [status for _, _, status in self.log]


# ---------------------------------------------------------------- the same states


#: National numbers whose final state the sandbox decides by their last four digits.
MIX = ["9121234567", "9121230001", "9121230002", "9121230003", "9121230009"]
WAITING = {"bitel": (P.PENDING, "0 WAITING"), "ippanel": (P.PENDING, "bulk state 2 being sent")}
FINAL = {
    "bitel": [
        (P.DELIVERED, "1 DELIVERED"),
        (P.FAILED, "4 DELIVERY_FAILED"),
        (P.BLACKLISTED, "5 BLACKLIST"),
        (P.REJECTED, "9 ERROR"),
        (P.SENT, "2 CHECK_OK"),
    ],
    "ippanel": [
        (P.DELIVERED, "2 delivered"),
        (P.FAILED, "3 not delivered"),
        (P.BLACKLISTED, "4 blacklisted"),
        (P.FAILED, "3 not delivered"),
        (P.SENT, "1 operator received it"),
    ],
}


def test_the_async_path_reads_the_same_states_as_the_sync_path_in_the_order_given(connect, sandbox, gateway):
    """Waiting, then delivered / failed / blacklisted / rejected / never final: both paths agree at each step."""
    sandbox.configure(delivery_seconds=3600)
    hook = connect()
    # Two texts, so IPPanel keeps two outbox entries; reversed, so the answers must be put back in order.
    sent = hook.send_batch([OutgoingSms(hook.normalize_number(n), f"text {i % 2}") for i, n in enumerate(MIX)])
    receipts = sent[::-1]

    def read_both() -> list[DeliveryState]:
        """The worker's read, then the triggerer's: the same states, from the same requests."""
        before = len(sandbox.requests())
        worker = read_sync(hook, receipts)
        middle = len(sandbox.requests())
        triggerer = read_async(hook, receipts)
        routes = [r["route"] for r in sandbox.requests()]
        assert sorted(routes[middle:]) == sorted(routes[before:middle])
        assert triggerer == worker
        return triggerer

    waiting = read_both()
    assert [(s.status, s.provider_status) for s in waiting] == [WAITING[gateway]] * len(MIX)

    sandbox.configure(delivery_seconds=0)
    final = read_both()
    assert [(s.message_id, s.recipient) for s in final] == [(r.message_id, r.recipient) for r in receipts]
    assert [(s.status, s.provider_status) for s in final] == FINAL[gateway][::-1]
    assert [s.is_final for s in final] == [False, True, True, True, True]


@pytest.mark.parametrize("gateway", ["ippanel"])
def test_a_scheduled_ippanel_bulk_is_in_the_send_queue_on_both_paths(connect, sandbox, gateway):
    """A bulk with no recipient statuses yet is read from the bulk report, by both paths."""
    sandbox.configure(delivery_seconds=0)
    hook = connect()
    now = hook.send_batch([OutgoingSms("+989121234567", "now")])
    later = hook.send_batch(
        [OutgoingSms("+989351234567", "later")], send_time=datetime.now(timezone.utc) + timedelta(hours=1)
    )
    receipts = [*later, *now]

    states = read_async(hook, receipts)

    assert states == read_sync(hook, receipts)
    assert [(s.status, s.provider_status) for s in states] == [
        (P.PENDING, "bulk state 5 in the send queue"),
        (P.DELIVERED, "2 delivered"),
    ]


@pytest.mark.parametrize("gateway", ["ippanel"])
def test_the_async_path_reads_a_bulk_larger_than_one_report_page_across_all_pages(connect, sandbox, gateway):
    sandbox.configure(delivery_seconds=0)
    count = ippanel.REPORT_PAGE_SIZE + 30
    recipients = [f"+98912{index:07d}" for index in range(100, 100 + count)]
    recipients[-10] = "+989121230001"
    recipients[-5] = "+989121230002"
    hook = connect()
    outbox_id = send_one_bulk(sandbox, recipients, SECRET_TOKEN)
    receipts = [SmsReceipt(outbox_id, recipient) for recipient in recipients]

    states = read_async(hook, receipts)

    assert [s.recipient for s in states] == recipients
    assert states[-10].status is P.FAILED
    assert states[-5].status is P.BLACKLISTED
    assert sum(s.status is P.DELIVERED for s in states) == count - 2
    reports = [urlsplit(r["path"]) for r in sandbox.requests()[1:]]
    assert [r.path for r in reports] == ["/v1/api/report/recipients"] * 2
    assert [parse_qs(r.query) for r in reports] == [
        {"bulk_id": [str(outbox_id)], "page": [str(page)], "per_page": [str(ippanel.REPORT_PAGE_SIZE)]}
        for page in (1, 2)
    ]
    assert read_sync(hook, receipts) == states


@pytest.mark.parametrize("gateway", ["bitel"])
def test_an_id_bitel_does_not_know_is_unknown_and_not_final(connect, sandbox, gateway, read):
    (state,) = read(connect(), [SmsReceipt(UNKNOWN_IDS["bitel"], "09121234567")])
    assert (state.status, state.provider_status, state.is_final) == (P.UNKNOWN, "NotFound", False)
    assert statuses(sandbox) == [404]


# ---------------------------------------------------------------- retries


@pytest.mark.parametrize("status", [503, 500, 429])
def test_a_read_answered_5xx_or_429_then_200_is_retried_and_succeeds(connect_to, gateway, read, status):
    path = STATUS_PATHS[gateway]
    with PacedServer({path: [(status, {"error": "busy"}, {}), DELIVERED_ANSWERS[gateway]]}) as server:
        (state,) = read(
            connect_to(server.url, max_retries=1), [SmsReceipt(MESSAGE_IDS[gateway], WIRE_NUMBERS[gateway])]
        )
    assert (state.status, state.provider_status) == DELIVERED[gateway]
    assert server.statuses == [status, 200]


def test_a_429_is_retried_no_sooner_than_its_retry_after_asks(connect_to, gateway, read):
    """``Retry-After: 0.2`` against a 1 ms backoff: the second attempt waits 0.2 s all the same."""
    path = STATUS_PATHS[gateway]
    with PacedServer(
        {path: [(429, {"error": "slow down"}, {"Retry-After": "0.2"}), DELIVERED_ANSWERS[gateway]]}
    ) as server:
        hook = connect_to(server.url, max_retries=1, retry_backoff=0.001)
        started = time.monotonic()
        (state,) = read(hook, [SmsReceipt(MESSAGE_IDS[gateway], WIRE_NUMBERS[gateway])])
        elapsed = time.monotonic() - started
    assert state.status is P.DELIVERED
    assert server.statuses == [429, 200]
    (first, *_), (second, *_) = server.log
    assert second - first >= 0.2
    assert elapsed >= 0.2


@pytest.mark.parametrize(("knob", "status"), [("status_5xx_rate", 503), ("status_429_rate", 429)])
def test_after_max_retries_both_paths_give_up_with_the_same_message(connect, sandbox, gateway, knob, status):
    hook = connect(max_retries=2)
    sandbox.configure(**{knob: 1}, retry_after_seconds=0.01)
    receipts = [SmsReceipt(UNKNOWN_IDS[gateway], WIRE_NUMBERS[gateway])]

    with pytest.raises(SmsGatewayUnavailable) as worker:
        read_sync(hook, receipts)
    with pytest.raises(SmsGatewayUnavailable) as triggerer:
        read_async(hook, receipts)

    assert str(triggerer.value) == str(worker.value)
    assert f"usefully after 3 attempts (last: HTTP {status}). Connection 'sms_test'" in str(triggerer.value)
    assert "'max_retries' extra" in str(triggerer.value)
    assert statuses(sandbox) == [status] * 6


def test_a_read_whose_connection_drops_is_retried_then_unavailable(connect, sandbox, gateway):
    hook = connect(max_retries=2)
    sandbox.configure(status_drop_rate=1)
    receipts = [SmsReceipt(UNKNOWN_IDS[gateway], WIRE_NUMBERS[gateway])]

    with pytest.raises(SmsGatewayUnavailable) as worker:
        read_sync(hook, receipts)
    with pytest.raises(SmsGatewayUnavailable) as triggerer:
        read_async(hook, receipts)

    assert "usefully after 3 attempts (last: RemoteProtocolError)" in str(triggerer.value)
    assert shape(str(triggerer.value)) == shape(str(worker.value))
    assert statuses(sandbox) == [None] * 6


def test_a_read_from_a_closed_port_is_retried_then_unavailable(connect_to, gateway):
    url = f"http://127.0.0.1:{closed_port()}"
    hook = connect_to(url, max_retries=2, retry_backoff=0.001)
    receipts = [SmsReceipt(MESSAGE_IDS[gateway], WIRE_NUMBERS[gateway])]
    attempts: list[str] = []

    async def read() -> list[DeliveryState]:
        async with hook.async_client() as client:

            async def count(request: httpx.Request) -> None:
                attempts.append(request.url.path)

            client.event_hooks["request"].append(count)
            return await hook.aget_statuses(receipts, client)

    with pytest.raises(SmsGatewayUnavailable) as triggerer:
        asyncio.run(read())
    with pytest.raises(SmsGatewayUnavailable) as worker:
        read_sync(hook, receipts)

    message = str(triggerer.value)
    assert "usefully after 3 attempts (last: ConnectError)" in message
    assert f"Connection 'sms_test', base URL {hook.settings.base_url}." in message
    assert shape(message) == shape(str(worker.value))
    assert attempts == [STATUS_PATHS[gateway]] * 3


# ---------------------------------------------------------------- errors


def test_a_refused_token_is_not_retried_and_never_echoed(connect, sandbox, gateway, read, capfd):
    hook = connect(max_retries=5)
    sandbox.configure(bitel_tokens=["other"], ippanel_tokens=["other"])

    with pytest.raises(SmsAuthenticationError) as caught:
        read(hook, [SmsReceipt(UNKNOWN_IDS[gateway], WIRE_NUMBERS[gateway])])

    label = hook.token_label
    assert str(caught.value) == (
        f"{hook.provider_name} refused the {label} of connection 'sms_test' (HTTP 401). "
        f"Put a valid {label} in the connection's password field."
    )
    captured = capfd.readouterr()
    for text in (str(caught.value), repr(caught.value), captured.out, captured.err):
        assert SECRET_TOKEN not in text
    assert [(r["status"], r["auth_ok"]) for r in sandbox.requests()] == [(401, False)]


def test_a_read_answered_200_with_a_body_that_is_not_json_asks_about_the_base_url(connect_to, gateway, read):
    with ScriptedServer(default=(200, "<html>Welcome</html>", {})) as server:
        hook = connect_to(server.url, max_retries=3)
        with pytest.raises(P2PSmsError) as caught:
            read(hook, [SmsReceipt(MESSAGE_IDS[gateway], WIRE_NUMBERS[gateway])])
    assert type(caught.value) is P2PSmsError
    assert str(caught.value) == (
        f"{hook.provider_name} answered HTTP 200 with a body that is not JSON. "
        f"Is the base URL {hook.settings.base_url} of connection 'sms_test' the gateway's API?"
    )
    assert len(server.requests) == 1


# ---------------------------------------------------------------- concurrency


def nine_receipts(gateway: str) -> list[SmsReceipt]:
    """Nine receipts that need one status request each (nine Bitel ids, nine IPPanel outbox entries)."""
    ids = [f"{i:032x}" for i in range(1, 10)] if gateway == "bitel" else [str(i) for i in range(1, 10)]
    return [SmsReceipt(message_id, WIRE_NUMBERS[gateway]) for message_id in ids]


def read_on_a_wide_client(hook: P2PSmsHook, receipts: Sequence[SmsReceipt]) -> list[DeliveryState]:
    """``aget_statuses`` on a caller's client whose pool (100) would not stop a fourth request."""

    async def read() -> list[DeliveryState]:
        async with httpx.AsyncClient() as client:
            return await hook.aget_statuses(receipts, client)

    return asyncio.run(read())


@pytest.mark.parametrize(
    "way", [read_sync, read_async, read_on_a_wide_client], ids=["sync", "async", "async-wide-pool"]
)
def test_at_most_max_concurrency_status_requests_are_open_at_once(connect_to, gateway, way):
    """Nine look-ups held 0.15 s each, ``max_concurrency=3``: three at a time, never four, never one."""
    with PacedServer(default=DELIVERED_ANSWERS[gateway], hold=0.15) as server:
        hook = connect_to(server.url, max_concurrency=3)
        started = time.monotonic()
        states = way(hook, nine_receipts(gateway))
        elapsed = time.monotonic() - started
    assert [(s.status, s.provider_status) for s in states] == [DELIVERED[gateway]] * 9
    assert len(server.log) == 9
    assert server.most_open == 3
    assert elapsed >= 0.45


@pytest.mark.parametrize("way", [read_sync, read_async], ids=["sync", "async"])
def test_status_concurrency_bounds_the_status_requests_open_at_once(connect_to, gateway, way):
    """``status_concurrency`` wins over ``max_concurrency``: two at a time, on both paths."""
    with PacedServer(default=DELIVERED_ANSWERS[gateway], hold=0.1) as server:
        hook = connect_to(server.url, status_concurrency=2, max_concurrency=5)
        states = way(hook, nine_receipts(gateway))
    assert [(s.status, s.provider_status) for s in states] == [DELIVERED[gateway]] * 9
    assert len(server.log) == 9
    assert server.most_open == 2


def test_a_failed_look_up_leaves_nothing_running_after_the_error(connect_to, gateway):
    """
    The trigger catches ``SmsGatewayUnavailable`` and polls again later, on the same client: the
    look-ups of the failed poll must be over by then, not still sending requests next to the new ones.
    """
    receipts = nine_receipts(gateway)
    first = (
        f"/api/v2/sms/status/{receipts[0].message_id}"
        if gateway == "bitel"
        else f"/v1/api/report/recipients?bulk_id=1&page=1&per_page={ippanel.REPORT_PAGE_SIZE}"
    )
    with PacedServer({first: [(503, {"error": "down"}, {})]}, default=DELIVERED_ANSWERS[gateway], hold=0.2) as server:
        hook = connect_to(server.url, max_concurrency=3, max_retries=0)

        async def poll() -> tuple[float, int]:
            async with hook.async_client() as client:
                with pytest.raises(SmsGatewayUnavailable):
                    await hook.aget_statuses(receipts, client)
                failed_at = time.monotonic()
                left_running = sum(
                    not task.done() for task in asyncio.all_tasks() if task is not asyncio.current_task()
                )
                await asyncio.sleep(0.6)  # the poke interval: long enough for leftovers to make requests
                return failed_at, left_running

        failed_at, left_running = asyncio.run(poll())

    assert left_running == 0
    assert [path for arrived, path, _ in server.log if arrived > failed_at + 0.1] == []
    assert server.statuses.count(503) == 1
    assert len(server.log) < len(receipts)
