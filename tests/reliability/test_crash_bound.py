"""The crash-loss bound: whatever kills the worker, a retry finds at most 2 x max_concurrency x batch size uncertain.

The durable state of a send is the ledger's log, and it changes only when an entry is written. So checking
what the log reads back as after every single write covers every instant a SIGKILL could come at: marks of
batches that never left, batches on the wire, and batches accepted whose receipts were not written yet
are all "uncertain" then. The second test stops the store for good at a random write, as a dying worker
would, and runs the retry.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from typing import Any

import pytest

from airflow_provider_p2psms.campaign.marking import crash_bound
from airflow_provider_p2psms.models import message_key
from airflow_provider_p2psms.operators.p2p_sms import P2PSmsOperator
from tests.reliability.support import MemoryTaskState, people, read_ledger, sent_counts, task_context

MESSAGE = "Hi {{ row.name }}, your code is {{ row.code }}"
BATCH = 10


def make_operator(**kwargs: Any) -> P2PSmsOperator:
    arguments: dict[str, Any] = {"task_id": "send", "sms_conn_id": "bitel_default", "message": MESSAGE}
    return P2PSmsOperator(**{**arguments, **kwargs})


class WatchedStore(MemoryTaskState):
    """A store that reads the whole log back after every write, as a retry would after a crash there."""

    def __init__(self, seconds_per_write: float = 0.003) -> None:
        super().__init__()
        self.seconds_per_write = seconds_per_write
        self.open_after_write: list[int] = []

    def set(self, key: str, value: Any) -> None:
        time.sleep(self.seconds_per_write)
        super().set(key, value)
        self.open_after_write.append(len(read_ledger(self.values).uncertain))


class DyingStore(WatchedStore):
    """The worker dies at a write: that write and every later one never happen."""

    def __init__(self, writes_left: int) -> None:
        super().__init__()
        self.writes_left = writes_left

    def set(self, key: str, value: Any) -> None:
        if self.writes_left == 0:
            raise SystemExit("worker killed")
        self.writes_left -= 1
        super().set(key, value)


@pytest.mark.parametrize("max_concurrency", [1, 2, 4, 8])
def test_no_write_ever_leaves_more_open_than_the_bound(connect, max_concurrency):
    """1,500 messages, batches of 10: a crash after any write leaves at most 2 x c x 10 uncertain."""
    sandbox = connect(batch_size=BATCH)
    sandbox.configure(latency_ms=20)
    state = WatchedStore()
    receipt = make_operator(recipients=people(1500), max_concurrency=max_concurrency).execute(task_context(state))

    assert receipt["counts"]["sent"] == 1500
    bound = crash_bound(max_concurrency, BATCH)
    assert max(state.open_after_write) <= bound, (max(state.open_after_write), bound)
    # The bound is used, not just respected: marks go out ahead of the wire, as many as it allows.
    assert max(state.open_after_write) > bound // 2
    assert state.open_after_write[-1] == 0


@pytest.mark.parametrize("max_concurrency", [1, 3, 8])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_worker_dying_at_a_random_write_leaves_the_bound_at_most_and_the_retry_texts_nobody_twice(
    connect, max_concurrency, seed
):
    sandbox = connect(batch_size=BATCH)
    sandbox.configure(latency_ms=20)
    rows = people(1200)
    writes = len(rows) // BATCH // max_concurrency  # about one write per round of batches
    state = DyingStore(writes_left=random.Random(seed * 100 + max_concurrency).randrange(1, writes))
    with pytest.raises(SystemExit):
        make_operator(recipients=rows, max_concurrency=max_concurrency).execute(task_context(state))

    left = read_ledger(state.values)
    bound = crash_bound(max_concurrency, BATCH)
    assert len(left.uncertain) <= bound, (len(left.uncertain), bound)
    # Whatever the gateway took is known to the retry: written as sent, or still marked (uncertain).
    taken = {message_key(m["recipient"], m["text"]) for m in sandbox.messages()}
    assert taken <= set(left.sent) | left.uncertain
    assert set(left.sent) <= taken

    healthy = MemoryTaskState()
    healthy.values = dict(state.values)
    receipt = make_operator(recipients=rows, max_concurrency=max_concurrency).execute(
        task_context(healthy, try_number=2)
    )
    counts = sent_counts(sandbox)
    assert max(counts.values()) == 1, "a recipient got the text twice"
    assert receipt["counts"]["uncertain"] == len(left.uncertain)
    assert receipt["counts"]["sent"] == len(rows) - len(left.uncertain)
    never_texted = {row["phone"] for row in rows} - set(counts)
    assert len(never_texted) <= len(left.uncertain) <= bound
    assert Counter(counts.values()) == Counter({1: len(counts)})
