"""The benchmark scenarios: each runs ours and its baseline in the same run and returns table rows.

A row is ``Row(scenario, ours, baseline, ratio, goal, passed)``; ``passed`` is ``None`` when the
row only informs. Every scenario also returns its raw numbers, written to ``bench/results``.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from harness import BenchError

if TYPE_CHECKING:
    from harness import AirflowHome, DagRun, Sandbox

BITEL_STATUS_ROUTE = "GET /api/v2/sms/status/{id}"
IPPANEL_REPORT_ROUTES = ("GET /v1/api/report/recipients", "GET /v1/api/report/by_bulk")


@dataclass
class Row:
    scenario: str
    ours: str
    baseline: str
    ratio: float | None
    goal: str
    passed: bool | None


@dataclass
class Result:
    name: str
    rows: list[Row]
    raw: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "rows": [asdict(row) for row in self.rows], "raw": self.raw}


@dataclass(frozen=True)
class Sizes:
    """How big each scenario is: the full suite, or the ``--quick`` smoke run."""

    send: int
    memory_small: int
    memory_large: int
    polling: int
    parse_runs: int
    repeat: int
    concurrencies: tuple[int, ...] = (4, 8)

    @property
    def tables(self) -> list[int]:
        """The tables made before the scenarios run; the memory scenario makes its large one when it runs."""
        return sorted({self.send, self.memory_small, self.polling})


FULL = Sizes(send=20_000, memory_small=20_000, memory_large=1_000_000, polling=2_000, parse_runs=9, repeat=2)
QUICK = Sizes(
    send=2_000, memory_small=2_000, memory_large=20_000, polling=200, parse_runs=1, repeat=1, concurrencies=(4,)
)

SEND_LATENCY_MS = 50.0
#: Messages per send request: Bitel's maximum, which the bench connection does not lower.
BATCH_SIZE = 100
DELIVERY_SECONDS = 3.0


def _table(size: int) -> dict[str, str]:
    return {"table": f"recipients_{size}"}


def _check_sent(home: AirflowHome, sandbox: Sandbox, run: DagRun, expected: int, *, receipt: bool = True) -> None:
    """Check that everything went out: the sandbox has every message, and the receipt counts them."""
    got = sandbox.stats()["messages"]
    if got != expected:
        raise BenchError(f"{run.dag_id}: the sandbox received {got} messages, {expected} were expected")
    if receipt:
        counts = (home.xcom(run, "send") or {}).get("counts", {})
        if counts.get("sent") != expected:
            raise BenchError(f"{run.dag_id}: the receipt counts {counts} for {expected} recipients")


#: The DAG of the memory scenario: ``P2PSmsOperator(max_concurrency=8)`` reading a table, its defaults otherwise.
MEMORY_DAG = "p2psms_bench_send_c8"

#: Rows ``0 .. :size - 1`` of a recipients table made inside SQLite: the spellings of ``harness.phone_number``
#: (the same numbers), a name of ``harness._NAMES`` and a code that look random, about a second a million.
_GENERATED_ROWS = """
WITH RECURSIVE seq(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM seq WHERE i + 1 < :size)
INSERT INTO {table} (id, phone, name, code)
SELECT i,
       CASE i % 3
           WHEN 0 THEN '0912' || printf('%07d', i * 10 + 5)
           WHEN 1 THEN '+98 912 ' || substr(printf('%07d', i * 10 + 5), 1, 3) || ' '
                       || substr(printf('%07d', i * 10 + 5), 4)
           ELSE '912' || printf('%07d', i * 10 + 5)
       END,
       CASE (i * 5 + i / 8) % {count} {names} END,
       printf('C%08d', (i * 2654435761 + 12345) % 100000000)
FROM seq
"""


def _ensure_recipients(home: AirflowHome, size: int) -> float:
    """Make table ``recipients_<size>`` in the bench's recipients file unless it is there; return its seconds."""
    import sqlite3
    import time

    from harness import _NAMES

    path = json.loads(home.env["AIRFLOW_CONN_BENCH_DB"])["host"]
    table = f"recipients_{size}"
    started = time.monotonic()
    with sqlite3.connect(path) as connection:
        if connection.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)).fetchone():
            return 0.0
        connection.execute(f"CREATE TABLE {table} (id INTEGER PRIMARY KEY, phone TEXT, name TEXT, code TEXT)")
        names = " ".join(f"WHEN {index} THEN :name{index}" for index in range(len(_NAMES)))
        parameters: dict[str, Any] = {f"name{index}": name for index, name in enumerate(_NAMES)}
        sql = _GENERATED_ROWS.format(table=table, count=len(_NAMES), names=names)
        connection.execute(sql, {"size": size, **parameters})
    return time.monotonic() - started


def memory(home: AirflowHome, sandbox: Sandbox, sizes: Sizes) -> Result:
    """Peak RSS of the ``dags test`` process (the task runs in it) sending the small and the large table, c=8."""
    peaks: dict[int, int] = {}
    execute_peaks: dict[int, int | None] = {}
    seconds: dict[int, float] = {}
    receipt_bytes: dict[int, int] = {}
    table_seconds = _ensure_recipients(home, sizes.memory_large)
    for n in (sizes.memory_small, sizes.memory_large):
        sandbox.reset(latency_ms=0)
        run = home.run_dag(MEMORY_DAG, _table(n), timeout=max(900, n / 500)).check("send")
        _check_sent(home, sandbox, run, n)
        peak = run.max_rss_kb or run.sampled_peak_rss_kb()
        if peak is None:
            raise BenchError("no peak RSS: neither /usr/bin/time nor psutil is available")
        peaks[n] = peak
        execute_peaks[n] = run.execute_peak_rss_kb("send")
        seconds[n] = run.task_seconds("send")
        receipt_bytes[n] = len(json.dumps(home.xcom(run, "send")))
    small, large = sizes.memory_small, sizes.memory_large
    ratio = peaks[large] / peaks[small]
    rows = [
        Row(
            f"Peak RSS of the task, {large:,} vs {small:,} recipients from SQL (c=8, latency 0)",
            f"{peaks[large] / 1024:,.0f} MB",
            f"{peaks[small] / 1024:,.0f} MB ({small:,})",
            ratio,
            "≤ 1.3×",
            ratio <= 1.3,
        )
    ]
    rows.append(
        Row(
            f"Receipt XCom of the send, {large:,} vs {small:,} recipients (len(json.dumps(value)))",
            f"{receipt_bytes[large]:,} bytes",
            f"{receipt_bytes[small]:,} bytes ({small:,})",
            receipt_bytes[large] / 65_536,
            "≤ 64 KB",
            receipt_bytes[large] <= 65_536,
        )
    )
    small_execute, large_execute = execute_peaks[small], execute_peaks[large]
    if small_execute and large_execute:
        rows.append(
            Row(
                "… of which inside execute(), before Airflow pushes the receipt as XCom (sampled every 50 ms)",
                f"{large_execute / 1024:,.0f} MB",
                f"{small_execute / 1024:,.0f} MB ({small:,})",
                large_execute / small_execute,
                "info",
                None,
            )
        )
    raw = {
        "dag": MEMORY_DAG,
        "peak_rss_kb": peaks,
        "execute_peak_rss_kb": execute_peaks,
        "send_seconds": seconds,
        "receipt_bytes": receipt_bytes,
        "large_table_seconds": round(table_seconds, 1),
    }
    return Result("memory", rows, raw)


def _status_requests(stats: dict[str, Any], routes: tuple[str, ...]) -> int:
    return sum(stats["by_route"].get(route, 0) for route in routes)


def _extra_report_pages(requests: list[dict[str, Any]]) -> int:
    """Recipients-report requests for a page after the first: a big outbox needs them, whoever polls."""
    extra = 0
    for request in requests:
        if request.get("route") == "/v1/api/report/recipients":
            page = parse_qs(urlsplit(request["path"]).query).get("page", ["1"])[0]
            extra += page != "1"
    return extra


def polling(home: AirflowHome, sandbox: Sandbox, sizes: Sizes) -> Result:
    """Status requests of ``P2PSmsDeliverySensor`` and of a naive PythonSensor, messages final after 3 s."""
    from airflow_provider_p2psms.models import receipt_messages

    n = sizes.polling
    counted: dict[str, dict[str, Any]] = {}
    for gateway, routes in (("bitel", (BITEL_STATUS_ROUTE,)), ("ippanel", IPPANEL_REPORT_ROUTES)):
        for label in ("ours", "naive"):
            dag_id = f"p2psms_bench_track_{gateway}" if label == "ours" else f"p2psms_bench_naive_track_{gateway}"
            sandbox.reset(latency_ms=0, delivery_seconds=DELIVERY_SECONDS)
            run = home.run_dag(dag_id, _table(n)).check("send", "wait")
            _check_sent(home, sandbox, run, n)
            stats = sandbox.stats()
            messages = receipt_messages(home.xcom(run, "send")["messages"])
            entry = {
                "requests": _status_requests(stats, routes),
                "by_route": stats["by_route"],
                "messages": len(messages),
                "outbox_ids": len({message_id for message_id, _ in messages}),
            }
            if gateway == "ippanel":
                entry["extra_pages"] = _extra_report_pages(sandbox.requests())
            counted[f"{gateway}_{label}"] = entry
    rows = []
    ours, naive = counted["bitel_ours"], counted["bitel_naive"]
    per_message = ours["requests"] / n
    rows.append(
        Row(
            f"Bitel status requests, {n:,} messages final 3 s after acceptance (poke 1 s)",
            f"{ours['requests']:,} ({per_message:.2f}/msg)",
            f"{naive['requests']:,} ({naive['requests'] / n:.2f}/msg, naive)",
            per_message,
            "≤ 1.2/msg",
            per_message <= 1.2,
        )
    )
    ours, naive = counted["ippanel_ours"], counted["ippanel_naive"]
    per_id = (ours["requests"] - ours["extra_pages"]) / ours["outbox_ids"]
    naive_per_id = (naive["requests"] - naive["extra_pages"]) / naive["outbox_ids"]
    rows.append(
        Row(
            f"IPPanel report requests per outbox id, {ours['outbox_ids']:,} ids (extra pages: {ours['extra_pages']})",
            f"{ours['requests']:,} ({per_id:.2f}/id)",
            f"{naive['requests']:,} ({naive_per_id:.2f}/id, naive)",
            per_id,
            "≤ 1.2/id + pages",
            per_id <= 1.2,
        )
    )
    return Result("polling", rows, {"messages": n, "counted": counted})


_IMPORT_PROBE = """
import json, sys, time
started = time.perf_counter()
import airflow.sdk
sdk = time.perf_counter()
for name in sys.argv[1:]:
    __import__(name)
print(json.dumps([sdk - started, time.perf_counter() - sdk]))
"""

PARSE_TARGETS = {
    "ours": ("airflow_provider_p2psms.operators.p2p_sms", "airflow_provider_p2psms.sensors.p2p_sms"),
    "common_sql": ("airflow.providers.common.sql.operators.sql",),
    "http": ("airflow.providers.http.operators.http",),
}


def _import_seconds(home: AirflowHome, modules: tuple[str, ...]) -> float | None:
    """Seconds ``modules`` add after ``import airflow.sdk`` in a fresh interpreter, or None if not installed."""
    result = home.run_python("-c", _IMPORT_PROBE, *modules, timeout=120)
    if result.returncode != 0:
        if "ModuleNotFoundError" in result.stderr:
            return None
        raise BenchError(f"importing {modules} failed:\n{result.stderr[-2000:]}")
    _, seconds = json.loads(result.stdout.strip().splitlines()[-1])
    return float(seconds)


def parse_cost(home: AirflowHome, sandbox: Sandbox, sizes: Sizes) -> Result:
    """Median import time of the operator and sensor modules after ``airflow.sdk``, next to common.sql's."""
    samples: dict[str, list[float]] = {name: [] for name in PARSE_TARGETS}
    missing: set[str] = set()
    for _ in range(sizes.parse_runs):
        for name, modules in PARSE_TARGETS.items():
            if name in missing:
                continue
            seconds = _import_seconds(home, modules)
            if seconds is None:
                missing.add(name)
            else:
                samples[name].append(seconds)
    median_ms = {name: statistics.median(values) * 1000 for name, values in samples.items() if values}
    references = ", ".join(
        f"{'common.sql' if name == 'common_sql' else name} "
        + (f"{median_ms[name]:.0f} ms" if name in median_ms else "not installed")
        for name in ("common_sql", "http")
    )
    ours = median_ms["ours"]
    row = Row(
        "DAG-parse cost: import operator + sensor after airflow.sdk (median)",
        f"{ours:.0f} ms",
        f"{references} (reference)",
        ours / median_ms["common_sql"],
        "≤ 30 ms",
        ours <= 30.0,
    )
    return Result("parse", [row], {"runs": sizes.parse_runs, "samples_s": samples, "median_ms": median_ms})


# The send scenario is bench/scenario_send.py (registered in bench/run.py).
SCENARIOS = {"memory": memory, "polling": polling, "parse": parse_cost}
