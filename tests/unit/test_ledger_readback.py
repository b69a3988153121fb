"""What a retry reads back from the resume ledger: what a replay into a dict and a set gives, in little memory."""

from __future__ import annotations

import gc
import random
import tracemalloc
from typing import Any

from airflow_provider_p2psms.campaign.ledger import SendLedger, SentMessages
from airflow_provider_p2psms.campaign.resume import Resumption
from airflow_provider_p2psms.models import OutgoingSms, message_key


class MemoryStore:
    def __init__(self) -> None:
        self.values: dict[str, Any] = {}

    def get(self, key: str) -> Any:
        return self.values.get(key)

    def set(self, key: str, value: Any) -> None:
        self.values[key] = value

    def delete(self, key: str) -> None:
        self.values.pop(key, None)

    def clear(self) -> bool:
        self.values.clear()
        return True


def written_ledger(generator: random.Random, batches: int) -> tuple[MemoryStore, dict[int, list[str]], set[int]]:
    """A ledger of tries that marked batches, had most accepted, some released and some never answered;
    with what a plain replay of it into a dict and a set gives."""
    store = MemoryStore()
    ledger = SendLedger(store)
    sent: dict[int, list[str]] = {}
    in_flight: set[int] = set()
    for batch in range(batches):
        keys = [generator.getrandbits(64) for _ in range(100)]
        ledger.mark_in_flight(keys)
        in_flight.update(keys)
        fate = generator.random()
        if fate < 0.8:
            accepted = {key: [f"id-{batch}-{i} x", f"0912{i:07d}"] for i, key in enumerate(keys)}
            ledger.stage(accepted)
            sent.update(accepted)
        elif fate < 0.9:
            ledger.stage(released=keys)
            in_flight.difference_update(keys)
            # Released keys are sent again later: marked anew, then accepted.
            ledger.mark_in_flight(keys)
            in_flight.update(keys)
            again = {key: [f"again-{batch}-{i}", f"0935{i:07d}"] for i, key in enumerate(keys)}
            ledger.stage(again)
            sent.update(again)
    ledger.flush()
    return store, sent, in_flight - sent.keys()


def test_the_read_back_ledger_is_the_replay():
    store, sent, uncertain = written_ledger(random.Random(11), 300)
    ledger = SendLedger(store)
    ledger.load()
    assert ledger.sent == sent and sent == ledger.sent
    assert len(ledger.sent) == len(sent)
    assert ledger.uncertain == uncertain and len(ledger.uncertain) == len(uncertain) > 0
    assert list(ledger.sent) == sorted(sent)
    assert dict(ledger.sent.items()) == sent
    key = next(iter(sent))
    assert ledger.sent[key] == sent[key] and ledger.sent.get(key) == sent[key]
    assert ledger.sent.get(12345) is None and 12345 not in ledger.sent
    assert ledger.sent.keys() == sent.keys()


def test_sent_messages_keep_message_ids_with_spaces_and_replace_a_repeated_key():
    messages = SentMessages()
    messages.note(7, "a b c", "0912")
    messages.note(2**64 - 1, "last", "+98935")
    messages.note(7, "newer", "0913")
    assert dict(messages) == {7: ["newer", "0913"], 2**64 - 1: ["last", "+98935"]}
    assert len(messages) == 2


def test_a_retry_of_a_large_campaign_reads_its_ledger_in_little_memory():
    """100,000 sent messages read back: about 45 bytes each here, where a dict of lists took about 155."""
    store, sent, _ = written_ledger(random.Random(5), 1250)
    count = len(sent)
    del sent
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        ledger = SendLedger(store)
        ledger.load()
        held, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(ledger.sent) == count > 90_000
    per_message = (held - before) / count
    assert per_message < 100, per_message
    assert (peak - before) / count < 120, (peak - before) / count


def test_a_first_try_passes_every_message_through_without_a_lookup():
    ledger = SendLedger(MemoryStore())
    ledger.load()
    messages = [(message_key(f"0912{i:07d}", "hi"), OutgoingSms(f"0912{i:07d}", "hi", i + 1)) for i in range(50)]
    resumption = Resumption(ledger, receipt=None, resend_uncertain=False)
    assert list(resumption.fresh(iter(messages))) == messages
