"""What a retry sends, given what its task instance's earlier tries left in the resume ledger.

Messages an earlier try had accepted are not sent again: their receipts go into this try's receipt,
so the sensor tracks every text that went out. Messages an earlier try left uncertain (sent, never
answered) are reported and left out, unless the operator resends them (``on_uncertain="resend"``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow_provider_p2psms.campaign.keyset import KeySet
from airflow_provider_p2psms.campaign.recipients import row_label, text_parts
from airflow_provider_p2psms.utils.phone import mask_phone

if TYPE_CHECKING:
    from collections.abc import Iterator

    from airflow_provider_p2psms.campaign.ledger import SendLedger
    from airflow_provider_p2psms.campaign.receipt import ReceiptBuilder
    from airflow_provider_p2psms.campaign.recording import OutcomeRecorder
    from airflow_provider_p2psms.models import OutgoingSms


class Resumption:
    """
    Filters a try's messages against the ledger, accounting for what it leaves out in the receipt.

    :param ledger: the loaded ledger of the task instance.
    :param receipt: the receipt of this try.
    :param resend_uncertain: send again what an earlier try left uncertain.
    :param recorder: the outcomes table's writer, when set: the rows of what an earlier try sent or left
        uncertain are written again from the ledger (the repair of rows a killed try did not write).
    """

    def __init__(
        self,
        ledger: SendLedger,
        receipt: ReceiptBuilder,
        *,
        resend_uncertain: bool,
        recorder: OutcomeRecorder | None = None,
    ) -> None:
        self.ledger = ledger
        self.receipt = receipt
        self.resend_uncertain = resend_uncertain
        self.recorder = recorder
        # The keys of this try's messages that an earlier try had sent or left uncertain: up to one per row.
        self._read_earlier = KeySet(unsigned=True)

    def fresh(self, messages: Iterator[tuple[int, OutgoingSms]]) -> Iterator[tuple[int, OutgoingSms]]:
        """Leave out what an earlier try had accepted (or left uncertain, unless resending)."""
        earlier, uncertain = self.ledger.sent, self.ledger.uncertain
        if not earlier and not uncertain:
            yield from messages  # a first try: nothing to look up
            return
        for key, message in messages:
            receipt = earlier.get(key)
            if receipt is not None:
                parts = text_parts(message)
                self.receipt.accept([receipt], resumed=True, parts=parts)
                self._read_earlier.add(key)
                if self.recorder is not None:
                    self.recorder.resumed(message, receipt[0], parts)
            elif key in uncertain:
                self._read_earlier.add(key)
                if not self.resend_uncertain:
                    self.receipt.add_uncertain([key])
                    where = f" in r{row_label(message.row, message.row_key)[1:]}" if message.row else ""
                    self.receipt.problem(
                        f"Uncertain (earlier try, not resent): {mask_phone(message.recipient)}{where}."
                    )
                    if self.recorder is not None:
                        reason = "an earlier try's send of it was never answered; not resent (on_uncertain='skip')"
                        self.recorder.uncertain(message, reason)
                else:
                    yield key, message
            else:
                yield key, message

    def merge_unread(self) -> None:
        """
        Account for what an earlier try left that this try's input no longer holds (the source changed).

        Accepted messages go into the receipt, so the sensor tracks every text that went out. Uncertain
        ones cannot be resent without their row: they are reported, and counted unless resending.
        """
        unread = 0
        for key, receipt in self.ledger.sent.items():
            if key not in self._read_earlier:
                self.receipt.accept([receipt], resumed=True)
        for key in self.ledger.uncertain:
            if key not in self._read_earlier:
                unread += 1
                if not self.resend_uncertain:
                    self.receipt.add_uncertain([key])
        if unread:
            self.receipt.problem(
                f"Uncertain (earlier try): {unread} messages whose rows this try did not read; not resent."
            )
