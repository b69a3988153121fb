"""The send receipt: what a campaign's send task returns, built in one place for real sends and dry runs.

Accepted messages are packed as they come (see :class:`~airflow_provider_p2psms.models.MessagesPacker`),
so the receipt never holds a campaign's messages as Python objects; past a few hundred they go to a detail
file, or stay only in the outcomes table (:mod:`.detail`), so the receipt's size does not grow with the
campaign. Problems keep at most :data:`MAX_PROBLEMS` masked examples, while the counts are exact.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow_provider_p2psms.campaign.keyset import KeySet
from airflow_provider_p2psms.models import MessagesPacker, ReceiptCounts, SendReceipt

if TYPE_CHECKING:
    from airflow_provider_p2psms.campaign.recipients import MessageBuilder

#: Masked examples of problems (invalid rows, uncertain and rejected messages) kept for the log and the receipt.
MAX_PROBLEMS = 100
#: A problem line longer than this is cut (a row key may be long): the receipt's size stays bounded.
MAX_PROBLEM_CHARS = 200

#: The version of the receipt's format.
RECEIPT_VERSION = 1


class ReceiptBuilder:
    """
    Collects what a send produced, and builds the receipt beside the rows' own counts.

    :param provider: the gateway's connection type, e.g. ``"bitel"``.
    :param sms_conn_id: the SMS connection the messages went through.
    :param detail: where the messages go once too many for the receipt: ``"outcomes:"`` (the outcomes
        table has them) or a :class:`~.detail.DetailWriter`; ``None`` keeps them in the receipt.
    """

    def __init__(self, provider: str, sms_conn_id: str, detail: Any = None) -> None:
        self.provider = provider
        self.sms_conn_id = sms_conn_id
        self._accepted = MessagesPacker(detail)
        self.accepted = 0
        self.resumed = 0
        self.parts = 0
        self.price: float | None = None
        # Compact sets of message keys (about 8 bytes each): a campaign may leave many uncertain.
        self.uncertain = KeySet(unsigned=True)
        self.rejected = KeySet(unsigned=True)
        self.problems: list[str] = []

    def accept(
        self, pairs: Sequence[Sequence[str]], *, resumed: bool = False, parts: int = 0, price: float | None = None
    ) -> None:
        """
        Add accepted ``(message_id, recipient)`` pairs; ``resumed`` when an earlier try sent them.

        :param parts: their SMS parts, all together.
        :param price: their price as the gateway gave it, all together; ``None`` when it gave none.
        """
        self._accepted.add(pairs)
        self.accepted += len(pairs)
        self.parts += parts
        if price is not None:
            self.price = price if self.price is None else self.price + price
        if resumed:
            self.resumed += len(pairs)

    def add_uncertain(self, keys: Iterable[int]) -> None:
        """Count messages whose fate is unknown (by key, so that one counted twice is counted once)."""
        self.uncertain.update(keys)

    def add_rejected(self, keys: Iterable[int]) -> None:
        """Count messages the gateway refused (by key, as :meth:`add_uncertain`)."""
        self.rejected.update(keys)

    def discard(self) -> None:
        """Drop what was written out for a receipt that will not be built (the send failed)."""
        self._accepted.discard()

    def problem(self, text: str) -> None:
        """Note a masked problem line, while fewer than :data:`MAX_PROBLEMS` are kept."""
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(text)

    def build(
        self,
        rows: MessageBuilder,
        *,
        dry_run: int = 0,
        task: Mapping[str, Any] | None = None,
        outcomes: Mapping[str, str] | None = None,
    ) -> SendReceipt:
        """
        The receipt: ``rows``' counts and problems beside what was sent (or, in a dry run, would be).

        :param task: the send task instance (``dag_id``, ``run_id``, ``task_id``, ``map_index``).
        :param outcomes: the outcomes table written, ``{"conn_id": ..., "table": ...}``.
        """
        counts = ReceiptCounts(
            requested=rows.requested,
            sent=self.accepted,
            resumed=self.resumed,
            invalid=rows.invalid,
            duplicate=rows.duplicate,
            excluded=rows.excluded,
            uncertain=len(self.uncertain),
            rejected=len(self.rejected),
            dry_run=dry_run,
            parts=self.parts,
            price=self.price,
        )
        return {
            "version": RECEIPT_VERSION,
            "provider": self.provider,
            "sms_conn_id": self.sms_conn_id,
            "counts": counts,
            "messages": self._accepted.value(),
            "problems": [_cut(line) for line in [*rows.problems, *self.problems][:MAX_PROBLEMS]],
            "task": dict(task) if task is not None else None,
            "outcomes": dict(outcomes) if outcomes is not None else None,
        }


def _cut(line: str) -> str:
    return line if len(line) <= MAX_PROBLEM_CHARS else line[: MAX_PROBLEM_CHARS - 1] + "…"
