"""Received messages (replies to a campaign): what a gateway's inbox holds, and which hooks can read one.

Reading an inbox is a capability some gateways have: their hook offers :meth:`InboxReader.inbox_pages`.
Code that needs it asks :func:`inbox_reader` for it, which names the gateway when its hook has none, so
that nothing downstream of a hook branches on the gateway.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from airflow_provider_p2psms.exceptions import SmsConfigurationError

if TYPE_CHECKING:
    from datetime import datetime

    from airflow_provider_p2psms.hooks.base import P2PSmsHook


@dataclass(frozen=True, slots=True)
class IncomingSms:
    """
    One message a person sent to a line of the account.

    The sender and the text are personal data: they are left out of the ``repr``, so that a message
    logged by mistake shows neither.

    :param inbox_id: the gateway's id of the message; ids grow as messages arrive, so the greatest one read
        is the cursor to read after next time.
    :param sender: who sent it, as the gateway spells the number.
    :param line: the account's line that received it.
    :param text: what they wrote.
    :param received_at: when it arrived (UTC), when the gateway says.
    """

    inbox_id: int
    sender: str = field(repr=False)
    line: str
    text: str = field(repr=False)
    received_at: datetime | None = None


@runtime_checkable
class InboxReader(Protocol):
    """A hook that reads the messages its gateway received."""

    def inbox_pages(self, after_id: int | None = None) -> Iterator[list[IncomingSms]]:
        """
        Yield the messages received after the one with id ``after_id`` (all of them for ``None``), one page
        of the gateway's listing at a time. Every message is yielded once, whatever order the pages are in.
        """
        ...


def inbox_reader(hook: P2PSmsHook) -> InboxReader:
    """
    ``hook`` as an :class:`InboxReader`.

    :raises SmsConfigurationError: when its gateway's hook cannot read received messages, naming the
        gateways whose hooks can.
    """
    if isinstance(hook, InboxReader):
        return hook
    readers = ", ".join(_inbox_gateways()) or "none installed"
    raise SmsConfigurationError(
        f"Connection '{hook.sms_conn_id}' is a {hook.provider_name} connection, and this provider cannot read "
        f"the messages {hook.provider_name} received. Use a connection of a gateway it reads replies from "
        f"({readers})."
    )


def _inbox_gateways() -> list[str]:
    import importlib

    from airflow_provider_p2psms.get_provider_info import hook_class_names

    names = []
    for path in hook_class_names().values():
        module_name, _, class_name = path.rpartition(".")
        hook_class = getattr(importlib.import_module(module_name), class_name)
        if callable(getattr(hook_class, "inbox_pages", None)):
            names.append(str(hook_class.provider_name))
    return names
