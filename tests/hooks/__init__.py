"""Helpers the hook tests share: connections written as a user would, and a scripted HTTP server.

The sandbox answers like the real gateways. :class:`ScriptedServer` is for the few answers it cannot
give (a web server's HTML 404, a 500, a state code no gateway has produced yet); it still runs on a
real loopback socket, so the hooks' HTTP plumbing is exercised all the same.
"""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    import pytest
    from typing_extensions import Self

#: A token distinctive enough that finding it anywhere in a message or a log is a leak.
SECRET_TOKEN = "tok-DO-NOT-LEAK-7f3a9c"


def use_connection(
    monkeypatch: pytest.MonkeyPatch,
    conn_id: str,
    conn_type: str,
    *,
    password: str | None,
    host: str | None,
    **extra: Any,
) -> None:
    """Define ``conn_id`` as an ``AIRFLOW_CONN_*`` JSON variable, the way a user would."""
    connection: dict[str, Any] = {"conn_type": conn_type, "password": password, "host": host}
    if extra:
        connection["extra"] = extra
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(connection))


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


Answer = tuple[int, Any, dict[str, str]]


def send_one_bulk(sandbox: Any, recipients: list[str], token: str, text: str = "hi") -> str:
    """
    Send one IPPanel ``params`` element to ``recipients`` straight to the sandbox; return its outbox id.

    A hook batch holds at most 100 recipients; this makes a bulk larger than a report page.
    """
    import requests

    from airflow_provider_p2psms.sandbox import DEFAULT_IPPANEL_SENDER

    sent = requests.post(
        f"{sandbox.ippanel_url}/api/send",
        json={
            "sending_type": "peer_to_peer",
            "from_number": DEFAULT_IPPANEL_SENDER,
            "params": [{"recipients": recipients, "message": text}],
        },
        headers={"Authorization": token},
        timeout=5,
    )
    (outbox_id,) = sent.json()["data"]["message_outbox_ids"]
    return str(outbox_id)


class LoopbackServer:
    """A threaded HTTP server on 127.0.0.1, run for the length of a ``with`` block (subclasses set ``_httpd``)."""

    _httpd: ThreadingHTTPServer

    def _serve(self, httpd: ThreadingHTTPServer) -> None:
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_port}"

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()


class ScriptedServer(LoopbackServer):
    """
    A loopback HTTP server that answers each path with a fixed answer and records what it got.

    :param answers: ``path`` (without the query) to ``(status, body, headers)``; a ``str`` body is
        sent as HTML, anything else as JSON.
    :param default: the answer for any other path; a web server's HTML 404 page by default.
    """

    def __init__(
        self,
        answers: dict[str, Answer] | None = None,
        default: Answer = (404, "<html><body><h1>404 Not Found</h1></body></html>", {}),
    ) -> None:
        self.answers = dict(answers or {})
        self.default = default
        self.requests: list[dict[str, Any]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode("utf-8")
                path = urlsplit(self.path).path
                server.requests.append({"method": self.command, "path": self.path, "body": body})
                status, payload, headers = server.answers.get(path, server.default)
                if isinstance(payload, str):
                    data, content_type = payload.encode(), "text/html"
                else:
                    data, content_type = json.dumps(payload, ensure_ascii=False).encode(), "application/json"
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            do_POST = do_GET

            def log_message(self, format: str, *args: Any) -> None:
                pass

        httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        httpd.daemon_threads = True
        self._serve(httpd)
