"""The rate scenario: what ``max_rate`` costs when it never binds, ours beside ours in the same run.

``p2psms_bench_send_c4`` (``max_rate`` unset) and ``p2psms_bench_send_rate_c4`` (the same DAG with
``max_rate`` at :data:`FAR_RATE` messages a second, far above what this machine and the sandbox reach)
send the same table at 50 ms a request, one right after the other, ``repeat`` times; the best of each is
kept. The ratio is the rate-limited run's share of the unlimited one's rate: a limit that is not reached
should cost nothing, and an unset one takes no part in the send at all.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from scenarios import SEND_LATENCY_MS, Result, Row, _check_sent

if TYPE_CHECKING:
    from harness import AirflowHome, Sandbox
    from scenarios import Sizes

#: The ``max_rate`` of the limited DAG, in messages a second (set in ``bench/dags/p2psms_bench.py``).
FAR_RATE = 1_000_000
#: The limited run's share of the unlimited one's rate to reach.
GOAL = 0.95


@dataclass(frozen=True)
class RateSizes:
    recipients: int

    @property
    def tables(self) -> list[int]:
        return [self.recipients]


FULL = RateSizes(recipients=200_000)
QUICK = RateSizes(recipients=20_000)


def rate_scenario(home: AirflowHome, sandbox: Sandbox, sizes: Sizes, *, quick: bool = False) -> Result:
    """Ours without ``max_rate`` and ours with a far ``max_rate``, alternating ``sizes.repeat`` times."""
    n = (QUICK if quick else FULL).recipients
    unset: list[float] = []
    limited: list[float] = []
    loads: list[float] = []
    for _ in range(sizes.repeat):
        loads.append(round(os.getloadavg()[0], 2))
        unset.append(_ours(home, sandbox, "p2psms_bench_send_c4", n))
        limited.append(_ours(home, sandbox, "p2psms_bench_send_rate_c4", n))
        print(
            f"   c=4: max_rate unset {unset[-1]:,.0f} msg/s, max_rate {FAR_RATE:,} {limited[-1]:,.0f} msg/s", flush=True
        )
    best_unset, best_limited = max(unset), max(limited)
    ratio = best_limited / best_unset
    row = Row(
        f"Send {n:,} (SQLite → sandbox, {SEND_LATENCY_MS:.0f} ms/request), c=4: ours with max_rate={FAR_RATE:,} "
        "(never reached) vs ours with max_rate unset",
        f"{best_limited:,.0f} msg/s",
        f"{best_unset:,.0f} msg/s (unset)",
        ratio,
        f"≥ {GOAL}×",
        ratio >= GOAL,
    )
    raw: dict[str, Any] = {
        "recipients": n,
        "max_rate": FAR_RATE,
        "unset_msg_per_s": unset,
        "limited_msg_per_s": limited,
        "load_1min": loads,
    }
    return Result("rate", [row], raw)


def _ours(home: AirflowHome, sandbox: Sandbox, dag_id: str, n: int) -> float:
    sandbox.reset(latency_ms=SEND_LATENCY_MS)
    run = home.run_dag(dag_id, {"table": f"recipients_{n}"}, timeout=900).check("send")
    _check_sent(home, sandbox, run, n)
    return n / run.task_seconds("send")
