"""Formats that outlive a release: a message's identity and the resume ledger written by a try.

A task retried after an upgrade of this package reads the ledger its earlier try wrote with the
older version. These values were written by the package before its engine moved into its own
modules; if one of them changes, a checkpoint written before the change no longer resumes, and the
retry would send everything again.
"""

from __future__ import annotations

from typing import Any

import pytest

from airflow_provider_p2psms.campaign.ledger import SendLedger
from airflow_provider_p2psms.models import message_key

#: (recipient, text) -> key, as written by every released version.
GOLDEN_KEYS = {
    ("09121234567", "سلام نازنین، کد شما NOWRUZ-41"): 0x81F0F8B47FF11918,
    ("+989351234567", "Hello"): 0xBFEC2CFCF74226F5,
    ("", ""): 0xF638D19843E7C9F9,
}

#: A ledger left by a try that marked four messages, had two accepted and one released, then died.
GOLDEN_LEDGER = {
    "p2psms.log.0": "iJz1OYaw9k7GQF90CsQNQlN3BfdRHwxxCwtmhME0+gY=::",
    "p2psms.log.1": ":CwtmhME0+gY=:eAEFwQcBACAIBMAqRuCfIcQRR/8I3mXWfq6V0fLC7pACQTWPOVCHZ0lv2jWQ2XTCJxTrQOoDz3QO0w==",
    "p2psms.log.2": "::eAEFwQkBACAIBLAqRuA5EeIASv8Ibm2gPQeUDbqQRcHCotjmy4dGO+6zEmhkpVUiBe+QpfMH2RQPuQ==",
}

A, B, C, D = (("09121234567", "a"), ("09121234568", "b"), ("09121234569", "c"), ("09121234560", "d"))


class MemoryStore:
    def __init__(self, values: dict[str, Any] | None = None) -> None:
        self.values = dict(values or {})

    def get(self, key: str) -> Any:
        return self.values.get(key)

    def set(self, key: str, value: Any) -> None:
        self.values[key] = value

    def delete(self, key: str) -> None:
        self.values.pop(key, None)

    def clear(self) -> bool:
        self.values.clear()
        return True


@pytest.mark.parametrize(("message", "key"), GOLDEN_KEYS.items())
def test_message_key_is_stable(message: tuple[str, str], key: int) -> None:
    assert message_key(*message) == key


def test_a_ledger_written_by_an_earlier_version_resumes() -> None:
    ledger = SendLedger(MemoryStore(GOLDEN_LEDGER))
    ledger.load()

    assert ledger.sent == {
        message_key(*A): ["19d2da0bc24e41228b252157131ad109", "09121234567"],
        message_key(*B): ["8f0f3c9de6b2439aba6ba4a24e706a81", "09121234568"],
    }
    # Marked and never answered: the gateway may or may not have it. Released: provably not sent.
    assert ledger.uncertain == {message_key(*C)}


def test_the_ledger_is_still_written_in_the_same_format() -> None:
    store = MemoryStore()
    ledger = SendLedger(store)
    keys = [message_key(*message) for message in (A, B, C, D)]
    ledger.mark_in_flight(keys)
    ledger.stage({keys[0]: ["19d2da0bc24e41228b252157131ad109", "09121234567"]}, released=[keys[3]])
    ledger.flush()
    ledger.stage({keys[1]: ["8f0f3c9de6b2439aba6ba4a24e706a81", "09121234568"]})
    ledger.flush()

    assert sorted(store.values) == sorted(GOLDEN_LEDGER)
    # The marks and releases are plain base64 of the keys: pinned to the character.
    for name, value in store.values.items():
        assert value.split(":")[:2] == GOLDEN_LEDGER[name].split(":")[:2]
    # The receipts part is compressed; what it holds is pinned by reading it back.
    reread = SendLedger(MemoryStore(store.values))
    reread.load()
    golden = SendLedger(MemoryStore(GOLDEN_LEDGER))
    golden.load()
    assert (reread.sent, reread.uncertain) == (golden.sent, golden.uncertain)
