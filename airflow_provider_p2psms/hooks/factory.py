"""Pick the gateway hook from a connection's type, so DAGs switch gateways by switching connections."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from airflow_provider_p2psms.exceptions import SmsConfigurationError
from airflow_provider_p2psms.get_provider_info import hook_class_names

if TYPE_CHECKING:
    from airflow_provider_p2psms.hooks.base import P2PSmsHook


def get_sms_hook(sms_conn_id: str) -> P2PSmsHook:
    """
    Return the hook for ``sms_conn_id``, its connection read and checked.

    :raises SmsConfigurationError: if the connection is not of an SMS gateway type, or is incomplete.
    """
    from airflow.sdk import BaseHook

    connection = BaseHook.get_connection(sms_conn_id)
    classes = hook_class_names()
    path = classes.get(connection.conn_type or "")
    if path is None:
        raise SmsConfigurationError(
            f"Connection '{sms_conn_id}' has type '{connection.conn_type}', which is not an SMS gateway. "
            f"Use a connection of type {' or '.join(repr(t) for t in classes)}."
        )
    hook = _hook_class(path)(sms_conn_id=sms_conn_id, send_time_hint=scheduling_hint)
    hook.settings  # noqa: B018 - read and validate the connection now, before any work starts
    return hook


def scheduling_gateways() -> list[str]:
    """The names of the gateways whose hook can schedule a send (``supports_send_time``), for hints."""
    classes = [_hook_class(path) for path in hook_class_names().values()]
    return [hook_class.provider_name for hook_class in classes if hook_class.supports_send_time]


def scheduling_hint() -> str:
    """What to do instead of setting ``send_time`` on a gateway that cannot schedule."""
    gateways = scheduling_gateways()
    if not gateways:
        return "Leave send_time unset: no installed gateway can schedule a send."
    return f"Leave send_time unset, or use a connection of a gateway that can schedule: {' or '.join(gateways)}."


def _hook_class(path: str) -> type[P2PSmsHook]:
    module_name, _, class_name = path.rpartition(".")
    hook_class: type[P2PSmsHook] = getattr(importlib.import_module(module_name), class_name)
    return hook_class
