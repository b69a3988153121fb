"""KeySet and KeyMap: exact like a set and a dict of ints, in a fraction of their memory, at any size."""

from __future__ import annotations

import gc
import random
import time
import tracemalloc

import pytest

from airflow_provider_p2psms.campaign import keyset
from airflow_provider_p2psms.campaign.keyset import KeyMap, KeySet

SIGNED = (-(2**63), 2**63 - 1)
UNSIGNED = (0, 2**64 - 1)


def edge_values(low: int, high: int) -> list[int]:
    return [low, low + 1, low + 2, -1, 0, 1, high - 2, high - 1, high] if low < 0 else [0, 1, 2, high - 1, high]


def draws(generator: random.Random, low: int, high: int, count: int) -> list[int]:
    """Random keys, about half of them repeats of a small pool (duplicates), with the range's edges mixed in."""
    pool = [generator.randint(low, high) for _ in range(count // 20)] + edge_values(low, high)
    keys = [generator.choice(pool) if generator.random() < 0.5 else generator.randint(low, high) for _ in range(count)]
    return keys + edge_values(low, high)


@pytest.fixture
def small_leaves(monkeypatch: pytest.MonkeyPatch) -> None:
    """Leaves of 16 keys, so that a few thousand keys make hundreds of leaves, splits and removals."""
    monkeypatch.setattr(keyset, "LEAF_SIZE", 16)


@pytest.mark.parametrize("unsigned", [False, True], ids=["signed", "unsigned"])
@pytest.mark.parametrize("leaves", ["default", "small"])
def test_keyset_matches_a_set_on_random_keys_with_duplicates_and_edges(unsigned, leaves, request):
    if leaves == "small":
        request.getfixturevalue("small_leaves")
    low, high = UNSIGNED if unsigned else SIGNED
    generator = random.Random(20260101)
    keys = draws(generator, low, high, 60_000)
    ours, reference = KeySet(unsigned=unsigned), set()
    for key in keys:
        assert ours.add(key) is (key not in reference)
        reference.add(key)
    assert len(ours) == len(reference)
    assert list(ours) == sorted(reference)
    probes = keys[::7] + [generator.randint(low, high) for _ in range(5000)]
    assert [key in ours for key in probes] == [key in reference for key in probes]
    for edge in edge_values(low, high):
        assert edge in ours

    removed = [*generator.sample(sorted(reference), len(reference) // 2), low, high]
    absent = [key for key in (generator.randint(low, high) for _ in range(100)) if key not in reference]
    assert ours.difference_update(removed + absent) == len(set(removed))
    reference.difference_update(removed)
    assert len(ours) == len(reference) and list(ours) == sorted(reference)
    assert ours.discard(low) is False
    assert ours.add(low) is True and ours.add(low) is False
    reference.add(low)
    assert ours == reference


@pytest.mark.parametrize("unsigned", [False, True], ids=["signed", "unsigned"])
def test_keyset_from_an_iterable_and_as_a_set(unsigned):
    low, high = UNSIGNED if unsigned else SIGNED
    keys = draws(random.Random(7), low, high, 20_000)
    ours = KeySet(iter(keys), unsigned=unsigned)
    reference = set(keys)
    assert ours == reference and reference == ours
    assert len(ours) == len(reference)
    assert ours.copy() == ours and KeySet(ours, unsigned=unsigned) == reference
    some = set(keys[:500])
    assert some <= ours and ours >= some and not ours <= some
    assert (ours - some) == reference - some
    assert isinstance(ours | some, KeySet) and (some | ours) == reference
    assert (ours & some) == some
    assert ours.isdisjoint({key for key in (low + 3, high - 3) if key not in reference})
    ours.clear()
    assert len(ours) == 0 and list(ours) == [] and not ours
    assert KeySet() == set() and not KeySet([], unsigned=unsigned)


def test_keyset_refuses_what_is_not_a_64_bit_integer_and_finds_no_such_thing():
    signed, unsigned = KeySet([1, -5]), KeySet([1, 2**64 - 1], unsigned=True)
    for key in (2**63, -(2**63) - 1):
        with pytest.raises(OverflowError, match="signed 64-bit key"):
            signed.add(key)
        assert key not in signed
    for key in (-1, 2**64):
        with pytest.raises(OverflowError, match="unsigned 64-bit key"):
            unsigned.add(key)
        assert key not in unsigned
    with pytest.raises(TypeError):
        signed.add("12")
    with pytest.raises(TypeError):
        signed.add(1.5)
    assert "1" not in signed and None not in signed and 1.5 not in signed
    assert len(signed) == 2 and list(signed) == [-5, 1] and list(unsigned) == [1, 2**64 - 1]
    assert repr(unsigned) == "KeySet(2 unsigned keys)"


def test_keyset_iteration_notices_a_change():
    keys = KeySet(range(5000))
    with pytest.raises(RuntimeError, match="changed size during iteration"):
        for key in keys:
            keys.add(key + 10_000)


@pytest.mark.parametrize("unsigned", [False, True], ids=["signed", "unsigned"])
def test_keymap_matches_a_dict(unsigned, small_leaves):
    low, high = UNSIGNED if unsigned else SIGNED
    generator = random.Random(99)
    ours, reference = KeyMap(unsigned=unsigned), {}
    for key in draws(generator, low, high, 20_000):
        value = generator.getrandbits(64)
        ours[key] = value
        reference[key] = value
    assert ours == reference and len(ours) == len(reference)
    assert list(ours) == sorted(reference)
    assert list(ours.items()) == sorted(reference.items())
    for key in list(reference)[::3]:
        del ours[key]
        del reference[key]
    assert ours == reference
    missing = next(key for key in (generator.randint(low, high) for _ in range(100)) if key not in reference)
    assert ours.get(missing) is None and ours.get(missing, 5) == 5 and missing not in ours
    with pytest.raises(KeyError):
        ours[missing]
    with pytest.raises(KeyError):
        del ours[missing]
    with pytest.raises(OverflowError):
        ours[high + 1] = 1
    with pytest.raises(OverflowError):
        ours[low] = -1  # values are unsigned
    assert ours == reference  # a refused item leaves nothing behind
    assert KeyMap([(3, 30), (1, 10)]) == {1: 10, 3: 30}


def _traced_bytes_per_key(build) -> tuple[float, float, object]:
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        built = build()
        now, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return (now - before) / len(built), (peak - before) / len(built), built


def test_a_million_keys_take_at_most_20_bytes_each_at_any_moment():
    count = 1_000_000
    generator = random.Random(1)

    def build() -> KeySet:
        keys = KeySet(unsigned=True)
        add = keys.add
        for _ in range(count):
            add(generator.getrandbits(64))
        return keys

    per_key, peak_per_key, built = _traced_bytes_per_key(build)
    assert len(built) == count
    assert per_key <= 20, per_key
    assert peak_per_key <= 20, peak_per_key  # no merge or rehash doubles it on the way
    # A set of such ints, for the record: several times as much.
    per_key_set, _, _ = _traced_bytes_per_key(lambda: {generator.getrandbits(64) for _ in range(count // 5)})
    assert per_key_set > 3 * per_key


def test_keys_in_ascending_order_take_no_more():
    """Added in order, every key goes to the last leaf, and the leaves it leaves behind are half full."""
    per_key, peak_per_key, built = _traced_bytes_per_key(lambda: KeySet(range(-100_000, 100_000)))
    assert len(built) == 200_000
    assert per_key <= 20 and peak_per_key <= 20, (per_key, peak_per_key)


def test_adding_and_finding_cost_about_the_same_at_any_size():
    """A key costs about as much in a set of a million as in one of a thousand: no merge or rehash grows with it."""
    generator = random.Random(3)
    keys = [generator.getrandbits(64) for _ in range(1_000_000)]

    def seconds_per_add(count: int, runs: int) -> float:
        chosen = keys[:count]
        best = float("inf")
        for _ in range(runs):
            built = KeySet(unsigned=True)
            started = time.process_time()
            for key in chosen:
                built.add(key)
            best = min(best, (time.process_time() - started) / count)
        return best

    # Generous: a million keys no longer fit the processor's caches, and the machine may be busy. A cost
    # that grew with the size (a merge, a copy of everything) would be tens of times the small one.
    small, large = seconds_per_add(20_000, 5), seconds_per_add(1_000_000, 1)
    assert large < 8 * small, (small, large)
