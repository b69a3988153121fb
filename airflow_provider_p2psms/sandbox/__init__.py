"""Local stand-in for the Bitel and IPPanel SMS APIs, for demos, tests and staging.

One port serves both gateways (Bitel under ``/api/v2``, IPPanel under ``/v1/api``) and
the control endpoints under ``/__sandbox__/``; see :class:`SandboxServer` for the Python
API and ``python -m airflow_provider_p2psms.sandbox --help`` for the command line.

Delivery is simulated from the clock: a message is ``WAITING`` / state 2, then at the
operator, and final after ``delivery_seconds``. The final status depends on the last
four digits of the recipient's number:

- ``...0001`` (:data:`SUFFIX_DELIVERY_FAILED`): Bitel ``DELIVERY_FAILED`` 4, IPPanel ``"3"``
- ``...0002`` (:data:`SUFFIX_BLACKLISTED`): Bitel ``BLACKLIST`` 5, IPPanel ``"4"``
- ``...0003`` (:data:`SUFFIX_ERROR`): Bitel ``ERROR`` 9, IPPanel ``"3"``
- ``...0004`` (:data:`SUFFIX_OPERATOR_DENIED`): Bitel ``CHECK_ERROR`` 10, IPPanel ``"3"``
- ``...0009`` (:data:`SUFFIX_NEVER_FINAL`): never final, Bitel ``CHECK_OK`` 2, IPPanel ``"1"``
- anything else: delivered, Bitel ``DELIVERED`` 1, IPPanel ``"2"``

A send to a number ending in ``00666`` (:data:`SUFFIX_REFUSED`) is refused whole: Bitel answers
``400 {"result": null, "error": "InvalidPhoneNumber"}``, IPPanel a 422 whose field error names the
recipient (``params.0.recipients.3``; only ``recipients`` with ``ippanel_names_refused`` off). IPPanel's
duplicate guard answers 429 to a send identical to one accepted in the last
``duplicate_window_seconds`` (40).

An IPPanel text containing :data:`MARKER_REJECT` (``[sandbox:reject]``) ends its bulk in
state 3, one containing :data:`MARKER_NO_CREDIT` (``[sandbox:nocredit]``) in state 8.
The full timeline is in :mod:`airflow_provider_p2psms.sandbox.lifecycle`.

Only the standard library is imported.
"""

from __future__ import annotations

from airflow_provider_p2psms.sandbox.config import (
    DEFAULT_BITEL_GATEWAY,
    DEFAULT_BITEL_TOKEN,
    DEFAULT_IPPANEL_KEY,
    DEFAULT_IPPANEL_SENDER,
    SandboxConfig,
)
from airflow_provider_p2psms.sandbox.lifecycle import (
    MARKER_NO_CREDIT,
    MARKER_REJECT,
    SUFFIX_BLACKLISTED,
    SUFFIX_DELIVERY_FAILED,
    SUFFIX_ERROR,
    SUFFIX_NEVER_FINAL,
    SUFFIX_OPERATOR_DENIED,
    SUFFIX_REFUSED,
)
from airflow_provider_p2psms.sandbox.server import SandboxServer
from airflow_provider_p2psms.sandbox.store import FIRST_OUTBOX_ID

__all__ = [
    "DEFAULT_BITEL_GATEWAY",
    "DEFAULT_BITEL_TOKEN",
    "DEFAULT_IPPANEL_KEY",
    "DEFAULT_IPPANEL_SENDER",
    "FIRST_OUTBOX_ID",
    "MARKER_NO_CREDIT",
    "MARKER_REJECT",
    "SUFFIX_BLACKLISTED",
    "SUFFIX_DELIVERY_FAILED",
    "SUFFIX_ERROR",
    "SUFFIX_NEVER_FINAL",
    "SUFFIX_OPERATOR_DENIED",
    "SUFFIX_REFUSED",
    "SandboxConfig",
    "SandboxServer",
]
