"""The receipt's ``messages``: plain lines while small, compressed past a threshold, read back the same."""

from __future__ import annotations

import json

from airflow_provider_p2psms.models import PACK_THRESHOLD, MessagesPacker, receipt_messages


def pairs(start: int, count: int) -> list[list[str]]:
    return [[f"{index:032x}", f"0912{1000000 + index:07d}"] for index in range(start, start + count)]


def test_a_small_receipt_stays_readable_lines():
    packer = MessagesPacker()
    packer.add(pairs(0, 2))
    packer.add([])
    packer.add(pairs(2, 1))
    assert packer.value() == "\n".join(f"{m} {r}" for m, r in pairs(0, 3))
    assert receipt_messages(packer.value()) == pairs(0, 3)


def test_a_large_receipt_is_compressed_and_reads_back_in_order():
    packer = MessagesPacker()
    batches = [pairs(start, 100) for start in range(0, 20_000, 100)]
    for batch in batches:
        packer.add(batch)
    value = packer.value()

    plain = "\n".join(f"{m} {r}" for batch in batches for m, r in batch)
    assert len(plain) > PACK_THRESHOLD
    assert value.startswith("zlib:")
    assert len(json.dumps(value)) < 0.7 * len(json.dumps(plain))
    assert receipt_messages(value) == [pair for batch in batches for pair in batch]
    assert packer.value() == value


def test_nothing_accepted_is_an_empty_string():
    packer = MessagesPacker()
    packer.add([])
    assert packer.value() == ""
    assert receipt_messages("") == []


def test_a_list_of_pairs_is_read_as_is():
    assert receipt_messages([("1", "0912"), ["2", "0935"]]) == [["1", "0912"], ["2", "0935"]]
