"""The send scenario: ``P2PSmsOperator`` at 200,000 recipients beside the raw transport, run after run.

For each ``max_concurrency`` (4, 8, 16) the operator's DAG (its defaults: resume ledger on, no outcomes
table) and the raw transport (``bench/raw_transport.py``: threads over one pooled ``requests.Session``,
prebuilt request bodies, the same batch size and concurrency, nothing else) run one after the other,
against the same sandbox at 50 ms a request, ``repeat`` times, interleaved. The best of each is kept; the
goal is the operator's share of the raw transport's rate. The naive loop (one request after another, no
session) and the operator with an outcomes table are information rows of the same run.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from harness import BENCH_DIR, BenchError
from scenarios import BATCH_SIZE, SEND_LATENCY_MS, Result, Row, _check_sent

if TYPE_CHECKING:
    from harness import AirflowHome, Sandbox
    from scenarios import Sizes

#: The operator's share of the raw transport's rate to reach, per ``max_concurrency``.
GOALS = {4: 0.95, 8: 0.9, 16: 0.8}


@dataclass(frozen=True)
class SendSizes:
    recipients: int
    concurrencies: tuple[int, ...]
    #: Rows the naive loop sends (one request after another: 200,000 would take minutes).
    naive: int

    @property
    def tables(self) -> list[int]:
        return sorted({self.recipients, self.naive})


FULL = SendSizes(recipients=200_000, concurrencies=(4, 8, 16), naive=20_000)
QUICK = SendSizes(recipients=2_000, concurrencies=(4,), naive=2_000)


def send_scenario(home: AirflowHome, sandbox: Sandbox, sizes: Sizes, *, quick: bool = False) -> Result:
    """Ours and the raw transport at each concurrency, interleaved, ``sizes.repeat`` times; then the info rows."""
    plan = QUICK if quick else FULL
    n = plan.recipients
    ours: dict[int, list[float]] = {c: [] for c in plan.concurrencies}
    raw: dict[int, list[float]] = {c: [] for c in plan.concurrencies}
    loads: list[dict[str, Any]] = []
    for attempt in range(sizes.repeat):
        for concurrency in plan.concurrencies:
            load = os.getloadavg()[0]
            ours[concurrency].append(_ours(home, sandbox, f"p2psms_bench_send_c{concurrency}", n))
            raw[concurrency].append(_raw(home, sandbox, n, concurrency))
            loads.append({"repeat": attempt, "concurrency": concurrency, "load_1min": round(load, 2)})
            print(
                f"   c={concurrency}: ours {ours[concurrency][-1]:,.0f} msg/s, raw {raw[concurrency][-1]:,.0f} msg/s "
                f"(load {load:.1f})",
                flush=True,
            )
    naive = _ours(home, sandbox, "p2psms_bench_naive_send", plan.naive, receipt=False)
    outcomes = _ours(home, sandbox, "p2psms_bench_send_outcomes_c4", n)
    # Beside the table's run, on the same machine at the same moment (a smoke run reuses its c=4 rate).
    without = max(ours[4]) if quick else _ours(home, sandbox, "p2psms_bench_send_c4", n)
    best_ours = {c: max(values) for c, values in ours.items()}
    best_raw = {c: max(values) for c, values in raw.items()}
    rows = []
    for concurrency in plan.concurrencies:
        ratio = best_ours[concurrency] / best_raw[concurrency]
        goal = GOALS.get(concurrency)
        rows.append(
            Row(
                f"Send {n:,} (SQLite → sandbox, {SEND_LATENCY_MS:.0f} ms/request), c={concurrency}: "
                "ours vs raw transport",
                f"{best_ours[concurrency]:,.0f} msg/s",
                f"{best_raw[concurrency]:,.0f} msg/s (raw)",
                ratio,
                f"≥ {goal}×" if goal else "info",
                ratio >= goal if goal else None,
            )
        )
    rows.append(
        Row(
            f"Send: naive loop, {plan.naive:,} rows, one request after another, no session (info)",
            f"{best_ours[plan.concurrencies[0]]:,.0f} msg/s (ours c={plan.concurrencies[0]})",
            f"{naive:,.0f} msg/s (naive)",
            best_ours[plan.concurrencies[0]] / naive,
            "info",
            None,
        )
    )
    rows.append(
        Row(
            f"Send {n:,}: ours c=4 with key_field and an outcomes table (same SQLite file) vs without",
            f"{outcomes:,.0f} msg/s",
            f"{without:,.0f} msg/s (no table)",
            outcomes / without,
            "info",
            None,
        )
    )
    raw_numbers = {
        "recipients": n,
        "batch_size": BATCH_SIZE,
        "ours_msg_per_s": ours,
        "raw_msg_per_s": raw,
        "naive_msg_per_s": naive,
        "outcomes_c4_msg_per_s": outcomes,
        "without_outcomes_c4_msg_per_s": without,
        "loads": loads,
    }
    return Result("send", rows, raw_numbers)


def _ours(home: AirflowHome, sandbox: Sandbox, dag_id: str, n: int, *, receipt: bool = True) -> float:
    sandbox.reset(latency_ms=SEND_LATENCY_MS)
    run = home.run_dag(dag_id, {"table": f"recipients_{n}"}, timeout=900).check("send")
    _check_sent(home, sandbox, run, n, receipt=receipt)
    return n / run.task_seconds("send")


def _raw(home: AirflowHome, sandbox: Sandbox, n: int, concurrency: int) -> float:
    sandbox.reset(latency_ms=SEND_LATENCY_MS)
    result = home.run_python(
        str(BENCH_DIR / "raw_transport.py"),
        *("--messages", str(n), "--concurrency", str(concurrency), "--batch-size", str(BATCH_SIZE)),
        timeout=600,
    )
    if result.returncode != 0:
        raise BenchError(f"raw_transport.py failed:\n{result.stderr[-2000:]}")
    got = sandbox.stats()["messages"]
    if got != n + 1:  # and the one message that opened the connection
        raise BenchError(f"the raw transport sent {got - 1} of {n} messages")
    return float(json.loads(result.stdout.strip().splitlines()[-1])["messages_per_second"])
