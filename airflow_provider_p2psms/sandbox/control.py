"""The unauthenticated ``/__sandbox__/`` endpoints that tests and scripts use.

- ``GET /__sandbox__/health``: ``{"ok": true}``.
- ``GET /__sandbox__/messages``: every accepted message (:meth:`.SandboxState.messages`).
- ``GET /__sandbox__/requests``: every API request (:meth:`.SandboxState.requests`).
- ``GET /__sandbox__/stats``: request counts by route and by status code.
- ``GET /__sandbox__/config``: the configuration in force.
- ``POST /__sandbox__/config``: change the fields given in a JSON object; returns the
  whole configuration.
- ``POST /__sandbox__/reset``: forget all messages, requests and counters and restore the
  start configuration, changed by the fields of an optional JSON object; returns the
  whole configuration.
- ``POST /__sandbox__/inbox``: put replies (a JSON list of ``{"from", "text"}``, optionally
  ``"to"`` and ``"time"``) in the IPPanel inbox; returns their inbox rows (see :mod:`.ippanel_inbox`).

A bad body or config field answers 400 ``{"error": "..."}``.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Final

from airflow_provider_p2psms.sandbox.wire import ApiResponse

if TYPE_CHECKING:
    from airflow_provider_p2psms.sandbox.dispatch import SandboxState

CONTROL_PREFIX: Final = "/__sandbox__/"


def handle_control(state: SandboxState, method: str, path: str, body: bytes) -> ApiResponse:
    """Answer a control request.

    :param state: the sandbox state.
    :param method: HTTP method.
    :param path: path without the query string.
    :param body: raw request body.
    """
    endpoint = path.removeprefix(CONTROL_PREFIX).rstrip("/")
    if method == "GET":
        if endpoint == "health":
            return ApiResponse(200, {"ok": True})
        if endpoint == "messages":
            return ApiResponse(200, state.messages())
        if endpoint == "requests":
            return ApiResponse(200, state.requests())
        if endpoint == "stats":
            return ApiResponse(200, state.stats())
        if endpoint == "config":
            return ApiResponse(200, state.config.to_dict())
    elif method == "POST" and endpoint in ("config", "reset"):
        try:
            changes = json.loads(body.decode("utf-8")) if body.strip() else {}
            if not isinstance(changes, dict):
                raise ValueError("the body must be a JSON object of config fields")
            config = state.configure(changes) if endpoint == "config" else state.reset(changes)
        except ValueError as error:
            return ApiResponse(400, {"error": str(error)})
        return ApiResponse(200, config.to_dict())
    elif method == "POST" and endpoint == "inbox":
        try:
            return ApiResponse(200, state.receive_replies(json.loads(body.decode("utf-8") or "null")))
        except ValueError as error:
            return ApiResponse(400, {"error": str(error)})
    return ApiResponse(404, {"error": f"no sandbox endpoint {method} {path}"})
