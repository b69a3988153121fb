"""HTTP front of the sandbox: one port serving Bitel, IPPanel and the control endpoints.

- Bitel under the root: ``http://HOST:PORT/api/v2/...`` (:attr:`SandboxServer.bitel_url`).
- IPPanel under ``/v1``: ``http://HOST:PORT/v1/api/...`` (:attr:`SandboxServer.ippanel_url`).
- Control endpoints, no auth, under ``/__sandbox__/`` (see :mod:`.control`).

HTTP/1.1 with keep-alive; every response is JSON with a ``Content-Length``. A request
with ``Transfer-Encoding`` (chunked upload) is answered 411 and its connection closed.
"""

from __future__ import annotations

import contextlib
import json
import socket
import socketserver
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

from airflow_provider_p2psms.sandbox.config import SandboxConfig
from airflow_provider_p2psms.sandbox.control import CONTROL_PREFIX, handle_control
from airflow_provider_p2psms.sandbox.dispatch import SandboxState
from airflow_provider_p2psms.sandbox.wire import ApiRequest, ApiResponse

if TYPE_CHECKING:
    from types import TracebackType


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "p2psms-sandbox/1.0"
    # Idle keep-alive connections are closed after this many seconds.
    timeout = 120
    # Headers and body go out in two writes; with Nagle's algorithm the second one waits
    # for the client's delayed ACK, adding ~40 ms to every keep-alive response.
    disable_nagle_algorithm = True
    server: _HTTPServer

    def do_GET(self) -> None:
        self._dispatch()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

    def _dispatch(self) -> None:
        # Without a usable Content-Length the next request's start is unknown: answer and close.
        close = {"Connection": "close"}
        if "Transfer-Encoding" in self.headers:
            self._respond(ApiResponse(411, {"error": "send the body with a Content-Length"}, close))
            return
        try:
            length = int(self.headers.get("Content-Length", "0"))
            if length < 0:
                raise ValueError(length)
        except ValueError:
            self._respond(ApiResponse(400, {"error": "invalid Content-Length"}, close))
            return
        body = self.rfile.read(length)
        target = urlsplit(self.path)
        state = self.server.state
        if target.path.startswith(CONTROL_PREFIX):
            self._respond(handle_control(state, self.command, target.path, body))
            return
        processed = state.process(
            ApiRequest(
                method=self.command,
                target=self.path,
                path=target.path,
                query=dict(parse_qsl(target.query)),
                body=body,
                authorization=self.headers.get("Authorization"),
            )
        )
        if processed.delay_seconds:
            time.sleep(processed.delay_seconds)
        if processed.response is None:
            self.log_message('"%s" dropped without a response', self.requestline)
            self.close_connection = True
            return
        self._respond(processed.response)

    def _respond(self, response: ApiResponse) -> None:
        body = json.dumps(response.payload, ensure_ascii=False).encode("utf-8")
        self.send_response(response.status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        # Only the request line and status reach here; headers (credentials) never do.
        if self.server.verbose:
            sys.stderr.write(f"{self.address_string()} - [{self.log_date_time_string()}] {format % args}\n")


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gave up (a timeout, a test closing its session) is ordinary here, not an error.
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)

    def __init__(self, address: tuple[str, int], state: SandboxState, verbose: bool) -> None:
        self.state = state
        self.verbose = verbose
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind does a reverse-DNS lookup of the host, which can stall
        # for seconds on machines without DNS; the sandbox does not need the name.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def process_request(self, request: socket.socket | tuple[bytes, socket.socket], client_address: Any) -> None:
        if isinstance(request, socket.socket):
            with self._connections_lock:
                self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: socket.socket | tuple[bytes, socket.socket]) -> None:
        if isinstance(request, socket.socket):
            with self._connections_lock:
                self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """End the open keep-alive connections, so a stopped sandbox answers nobody."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


class SandboxServer:
    """A local stand-in for the Bitel and IPPanel APIs, served from a daemon thread.

    .. code-block:: python

        with SandboxServer(delivery_seconds=0.2) as sandbox:
            requests.post(
                f"{sandbox.bitel_url}/api/v2/sms/single",
                json={"phoneNumber": "09121234567", "message": "hi"},
                headers={"Authorization": "Bearer sandbox-bitel-token"},
            )
            assert sandbox.messages()[0]["recipient"] == "09121234567"

    :param host: interface to listen on. Default ``127.0.0.1``.
    :param port: port to listen on; ``0`` (default) picks a free one, see :attr:`port`.
    :param config: start configuration; default :class:`SandboxConfig` ().
    :param verbose: log each request line to stderr.
    :param config_overrides: :class:`SandboxConfig` fields overriding ``config``.
    :raises ValueError: on an unknown or invalid configuration field.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        config: SandboxConfig | None = None,
        *,
        verbose: bool = False,
        **config_overrides: object,
    ) -> None:
        self._host = host
        self._port = port
        self._verbose = verbose
        self._state = SandboxState((config or SandboxConfig()).updated(config_overrides))
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> SandboxServer:
        """Bind the port and serve from a daemon thread.

        :return: this server, for ``server = SandboxServer().start()``.
        :raises RuntimeError: if it is already running.
        """
        if self._httpd is not None:
            raise RuntimeError("the sandbox is already running")
        self._httpd = _HTTPServer((self._host, self._port), self._state, self._verbose)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.1},
            name=f"p2psms-sandbox-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, close open connections and release the port. Idempotent."""
        if self._httpd is None or self._thread is None:
            return
        self._httpd.shutdown()
        self._httpd.close_connections()
        self._httpd.server_close()
        self._thread.join()
        self._httpd = self._thread = None

    def __enter__(self) -> SandboxServer:
        return self if self._httpd is not None else self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The port being served (the chosen one when started with ``port=0``)."""
        if self._httpd is None:
            raise RuntimeError("the sandbox is not running; call start() first")
        return self._httpd.server_port

    @property
    def url(self) -> str:
        """``http://HOST:PORT``; a wildcard host is shown as ``127.0.0.1``."""
        host = "127.0.0.1" if self._host in ("", "0.0.0.0") else self._host
        return f"http://{host}:{self.port}"

    @property
    def bitel_url(self) -> str:
        """Base URL for a Bitel hook (it appends ``/api/v2/...``)."""
        return self.url

    @property
    def ippanel_url(self) -> str:
        """Base URL for an IPPanel hook (it appends ``/api/...``)."""
        return f"{self.url}/v1"

    @property
    def config(self) -> SandboxConfig:
        """The configuration in force."""
        return self._state.config

    def messages(self) -> list[dict[str, Any]]:
        """Return every accepted message, oldest first (as ``GET /__sandbox__/messages``).

        Each is ``{provider, id, recipient, text, sender, accepted_at, send_time,
        request_seq}``; ``id`` is the Bitel hex id or the IPPanel outbox id as a string,
        ``request_seq`` the 1-based ordinal of the accepted send request that carried it.
        """
        return self._state.messages()

    def requests(self) -> list[dict[str, Any]]:
        """Return every API request received, oldest first (as ``GET /__sandbox__/requests``).

        Each is ``{seq, method, path, status, provider, kind, route, body, auth_ok,
        request_seq, received_at}``: ``path`` includes the query, ``status`` is ``None``
        for a dropped connection, ``body`` is the raw text, ``request_seq`` matches the
        messages it carried (``None`` unless the send was accepted). The
        ``Authorization`` value is never kept, only ``auth_ok``.
        """
        return self._state.requests()

    def stats(self) -> dict[str, Any]:
        """Return request counts (as ``GET /__sandbox__/stats``).

        ``{total, by_route: {"GET /api/v2/sms/status/{id}": n, ...}, by_status:
        {"200": n, "dropped": n, ...}, accepted_sends, messages}``.
        """
        return self._state.stats()

    def configure(self, **changes: object) -> SandboxConfig:
        """Change configuration fields at runtime; return the new configuration.

        :param changes: :class:`SandboxConfig` fields and their new values.
        :raises ValueError: on an unknown field or an invalid value.
        """
        return self._state.configure(changes)

    def reset(self, **changes: object) -> SandboxConfig:
        """Forget all messages, requests and counters and restore the start configuration.

        :param changes: fields to change from the start configuration.
        :raises ValueError: on an unknown field or an invalid value.
        """
        return self._state.reset(changes)
