"""How a sandbox message moves from accepted to final, for both gateways.

The lifecycle is computed from the clock whenever a status is read, so the sandbox
needs no background thread. With ``d = delivery_seconds`` and ``e = now - t0``, where
``t0`` is the acceptance time (or, for a scheduled IPPanel send, its ``send_time``):

=================  ==========================  =============================================
elapsed ``e``      Bitel status                IPPanel bulk ``state_id`` / ``message_status``
=================  ==========================  =============================================
``e < 0``          ``WAITING`` (0)             5 (in send queue) / absent
``0 <= e < d/2``   ``WAITING`` (0)             2 (being sent) / absent
``d/2 <= e < d``   ``CHECK_OK`` (2)            6 (sent) / ``"1"`` (operator received)
``e >= d``         final, by the number rule   6 (sent) / final, by the number rule
=================  ==========================  =============================================

The final status depends on the last four digits of the recipient's number (the same
rule for ``09121230001`` and ``+989121230001``):

=========================  ===============  ==================  ============================
last four digits           meaning          Bitel               IPPanel ``message_status``
=========================  ===============  ==================  ============================
``0001``                   delivery fails   DELIVERY_FAILED 4   ``"3"``
``0002``                   blacklisted      BLACKLIST 5         ``"4"``
``0003``                   error, not sent  ERROR 9             ``"3"``
``0004``                   operator denied  CHECK_ERROR 10      ``"3"``
``0009``                   never final      stays CHECK_OK 2    stays ``"1"``
anything else              delivered        DELIVERED 1         ``"2"``
=========================  ===============  ==================  ============================

A number ending in ``00666`` (:data:`SUFFIX_REFUSED`) is well formed but never accepted: a send
request carrying it is refused whole, before anything is stored (Bitel ``400 InvalidPhoneNumber``,
IPPanel ``422`` with a field error; see :mod:`.bitel` and :mod:`.ippanel_send`). Five digits, not four:
numbered test campaigns (``0912`` + ``1000 + n``, ``1000000 + n``...) reach every four-digit suffix, and a
refusal changes what a send does, not just how a delivery ends.

An IPPanel message text containing ``[sandbox:reject]`` ends its bulk in state 3
(rejected by monitoring), one containing ``[sandbox:nocredit]`` in state 8 (insufficient
credit); both happen at ``d/2``, where a normal bulk reaches state 6, and such bulks
never get per-recipient statuses.

A message costs :data:`PRICE_PER_PART` per SMS segment once it is final and the
operator took it (delivered or delivery failed); until then its price is 0.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final

from airflow_provider_p2psms.utils.text import count_sms_parts

SUFFIX_DELIVERY_FAILED: Final = "0001"
SUFFIX_BLACKLISTED: Final = "0002"
SUFFIX_ERROR: Final = "0003"
SUFFIX_OPERATOR_DENIED: Final = "0004"
SUFFIX_NEVER_FINAL: Final = "0009"
SUFFIX_REFUSED: Final = "00666"

MARKER_REJECT: Final = "[sandbox:reject]"
MARKER_NO_CREDIT: Final = "[sandbox:nocredit]"

PRICE_PER_PART: Final = 150.0


class Phase(enum.Enum):
    """Where a message is in its lifecycle at a given moment."""

    SCHEDULED = "scheduled"
    SENDING = "sending"
    AT_OPERATOR = "at_operator"
    FINAL = "final"


@dataclass(frozen=True)
class Outcome:
    """How a message ends, as each gateway reports it.

    :param bitel_code: Bitel status code once final.
    :param ippanel_status: IPPanel ``message_status`` once final.
    :param charged: whether the operator took the message, so it has a price.
    """

    bitel_code: int
    ippanel_status: str
    charged: bool


DELIVERED: Final = Outcome(bitel_code=1, ippanel_status="2", charged=True)

_SPECIAL_OUTCOMES: Final = {
    SUFFIX_DELIVERY_FAILED: Outcome(bitel_code=4, ippanel_status="3", charged=True),
    SUFFIX_BLACKLISTED: Outcome(bitel_code=5, ippanel_status="4", charged=False),
    SUFFIX_ERROR: Outcome(bitel_code=9, ippanel_status="3", charged=False),
    SUFFIX_OPERATOR_DENIED: Outcome(bitel_code=10, ippanel_status="3", charged=False),
    SUFFIX_NEVER_FINAL: Outcome(bitel_code=2, ippanel_status="1", charged=False),
}


def phase_at(started_at: float, now: float, delivery_seconds: float) -> Phase:
    """Return the lifecycle phase of a message.

    :param started_at: epoch seconds when the message was accepted or is scheduled.
    :param now: the current epoch seconds.
    :param delivery_seconds: seconds from start to the final status.
    """
    elapsed = now - started_at
    if elapsed < 0:
        return Phase.SCHEDULED
    if elapsed >= delivery_seconds:
        return Phase.FINAL
    if elapsed < delivery_seconds / 2:
        return Phase.SENDING
    return Phase.AT_OPERATOR


def final_outcome(phone_number: str) -> Outcome:
    """Return how a message to ``phone_number`` ends, by its last four digits."""
    return _SPECIAL_OUTCOMES.get(phone_number[-4:], DELIVERED)


def refused(phone_number: str) -> bool:
    """Whether the gateways refuse a send to ``phone_number`` (its last five digits are ``00666``)."""
    return phone_number.endswith(SUFFIX_REFUSED)


def sms_parts(text: str) -> int:
    """Count the SMS segments ``text`` is billed as: the client's own count, and at least one."""
    return max(1, count_sms_parts(text))
