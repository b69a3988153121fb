"""The tracking scenario: the deferrable sensor confirming 100,000 Bitel messages, beside raw status GETs.

Bitel has no bulk status endpoint: one ``GET /api/v2/sms/status/{id}`` per message. The DAG sends the
messages (``max_concurrency`` 16), then ``P2PSmsDeliverySensor`` defers; ``airflow dags test`` runs its
trigger in the same process. The sandbox answers at once (latency 0) and makes messages final
:data:`DELIVERY_SECONDS` after acceptance, so the sensor's first full poll finds every message final.
Its rate is messages confirmed per second, from the sensor's first ``execute()`` to its end (the
trigger, its event and the report included). Beside it, in the same run, ``bench/raw_status.py`` asks
for the same ids with plain ``httpx`` GETs at the connection's status concurrency.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from harness import BENCH_DIR, BenchError
from scenarios import BITEL_STATUS_ROUTE, Result, Row, _check_sent

if TYPE_CHECKING:
    from harness import AirflowHome, Sandbox
    from scenarios import Sizes

DELIVERY_SECONDS = 0.5
GOAL = 0.8


@dataclass(frozen=True)
class TrackingSizes:
    messages: int

    @property
    def tables(self) -> list[int]:
        return [self.messages]


FULL = TrackingSizes(messages=100_000)
QUICK = TrackingSizes(messages=2_000)


def tracking_scenario(home: AirflowHome, sandbox: Sandbox, sizes: Sizes, *, quick: bool = False) -> Result:
    """The deferred sensor, then the raw probe on the same ids; once: at 100,000 messages each takes minutes."""
    from airflow_provider_p2psms.hooks.settings import DEFAULT_STATUS_CONCURRENCY

    n = (QUICK if quick else FULL).messages
    concurrency = DEFAULT_STATUS_CONCURRENCY
    ours: list[float] = []
    raw: list[float] = []
    runs: list[dict[str, Any]] = []
    ids_file = home.root / "status-ids.txt"
    for _ in range(1):
        load = os.getloadavg()[0]
        sandbox.reset(latency_ms=0, delivery_seconds=DELIVERY_SECONDS)
        run = home.run_dag("p2psms_bench_track_deferrable_bitel", {"table": f"recipients_{n}"}, timeout=1200)
        run.check("send", "wait")
        _check_sent(home, sandbox, run, n)
        requests = sandbox.stats()["by_route"].get(BITEL_STATUS_ROUTE, 0)
        report = home.xcom(run, "wait") or {}
        if report.get("ending") != "all_final" or report.get("final") != n:
            raise BenchError(f"the sensor ended {report.get('ending')!r} with {report.get('final')} of {n} final")
        seconds = run.deferred_task_seconds("wait")
        ours.append(n / seconds)
        ids = [message["id"] for message in sandbox.messages()]
        ids_file.write_text("\n".join(ids) + "\n", encoding="utf-8")
        raw.append(_raw(home, ids_file, concurrency))
        runs.append({"seconds": round(seconds, 2), "status_requests": requests, "load_1min": round(load, 2)})
        print(f"   ours {ours[-1]:,.0f} msg/s ({requests:,} requests), raw {raw[-1]:,.0f} req/s (load {load:.1f})")
    best, best_raw = max(ours), max(raw)
    requests = runs[ours.index(best)]["status_requests"]
    ratio = best / best_raw
    row = Row(
        f"Track {n:,} Bitel messages: deferrable sensor vs raw status GETs (httpx), concurrency {concurrency}",
        f"{best:,.0f} msg/s ({requests / n:.2f} requests/msg)",
        f"{best_raw:,.0f} requests/s (raw)",
        ratio,
        f"≥ {GOAL}×",
        ratio >= GOAL,
    )
    report_bytes = len(json.dumps(report))
    size_row = Row(
        f"Delivery report XCom of the sensor, {n:,} messages (len(json.dumps(value)))",
        f"{report_bytes:,} bytes",
        "65,536 bytes (limit)",
        report_bytes / 65_536,
        "≤ 64 KB",
        report_bytes <= 65_536,
    )
    raw_numbers = {
        "messages": n,
        "concurrency": concurrency,
        "ours_msg_per_s": ours,
        "raw_per_s": raw,
        "runs": runs,
        "report_bytes": report_bytes,
    }
    return Result("tracking", [row, size_row], raw_numbers)


def _raw(home: AirflowHome, ids_file: Any, concurrency: int) -> float:
    result = home.run_python(
        str(BENCH_DIR / "raw_status.py"), "--ids", str(ids_file), "--concurrency", str(concurrency), timeout=900
    )
    if result.returncode != 0:
        raise BenchError(f"raw_status.py failed:\n{result.stderr[-2000:]}")
    return float(json.loads(result.stdout.strip().splitlines()[-1])["requests_per_second"])
