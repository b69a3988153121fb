"""Isolating the messages a gateway refuses, so that one refused number never sinks a campaign.

A batch refused for its recipients or texts (:class:`~airflow_provider_p2psms.exceptions.SmsRecipientsRefused`)
was accepted by nobody and armed no duplicate guard, so its parts can be sent again as first attempts.
When the gateway names the recipients it refuses, those messages are rejected and the rest of the batch is
sent once more; when it does not (Bitel never does; IPPanel when its field errors cannot be read as
recipients), the batch is halved, and each half is sent on its own, down to single messages. Finding ``k``
refused messages in a batch of ``n`` costs at most about ``2 k log2(n)`` requests, not ``n``.

A large batch every message of which is refused one by one says more about the request than about its
recipients (the account, the texts): the sender then stops, as with ``on_rejected="fail"``, rather than
take every batch of a campaign apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from airflow_provider_p2psms.utils.phone import mask_numbers_in_text

if TYPE_CHECKING:
    from airflow_provider_p2psms.campaign.dispatch import Batch
    from airflow_provider_p2psms.exceptions import SmsRecipientsRefused

#: The smallest batch whose messages, all refused one by one, stop the send. A smaller one is cheap to
#: take apart whatever its numbers are, so its messages are just rejected.
WHOLLY_REFUSED_MIN = 8


@dataclass(eq=False)
class Isolation:
    """
    A refused batch being taken apart without the gateway naming who it refuses.

    :param size: its messages.
    :param error: the refusal, raised if every message turns out refused.
    """

    size: int
    error: SmsRecipientsRefused
    rejected: int = 0

    def refuse(self, count: int) -> bool:
        """Count refused messages of the batch; return whether that makes all of them, in a large batch."""
        self.rejected += count
        return self.size >= WHOLLY_REFUSED_MIN and self.rejected >= self.size


def split_refused(batch: Batch, error: SmsRecipientsRefused) -> tuple[Batch | None, list[Batch], Isolation | None]:
    """
    What a refusal of ``batch`` makes of it: the refused messages, if known yet, and the parts to send again.

    :return: the messages to reject (``None`` while unknown), the parts to resend in order, and the
        isolation the rejected messages count towards.
    """
    named = set(error.refused or ())
    refused = [position for position, message in enumerate(batch.messages) if message.recipient in named]
    if refused:
        # The gateway refuses a number, whatever the text: every message of the batch to it is refused.
        rest = sorted(set(range(len(batch))) - set(refused))
        parts = [batch.part(rest, batch.isolation)] if rest else []
        return batch.part(refused, batch.isolation), parts, batch.isolation
    if len(batch) == 1:
        return batch.part([0], batch.isolation), [], batch.isolation
    isolation = batch.isolation or Isolation(len(batch), error)
    half = len(batch) // 2
    return None, [batch.part(range(half), isolation), batch.part(range(half, len(batch)), isolation)], isolation


def reject_reason(error: SmsRecipientsRefused) -> str:
    """The gateway's reason for a refusal, in a line: its HTTP status, its code and its field messages."""
    code = f", {error.provider_code}" if error.provider_code else ""
    reason = f"{error.provider} refused it (HTTP {error.http_status}{code})"
    messages = list(dict.fromkeys(message for found in error.field_errors.values() for message in found))
    if messages:
        reason += ": " + "; ".join(messages)
    return mask_numbers_in_text(reason)
