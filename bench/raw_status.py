"""
The raw status-request rate: plain Bitel status GETs with ``httpx``, for the tracking scenario's ratio.

    python bench/raw_status.py --ids ids.txt --concurrency 16

Reads the ``bench_bitel`` connection from the environment (``bench/run.py`` sets it) and one Bitel message
id per line from ``--ids``, then asks ``GET /api/v2/sms/status/{id}`` for each of them on one
``httpx.AsyncClient`` (the library the provider's trigger uses), ``--concurrency`` requests at a time,
checking only each answer's status. No provider code, no parsing, no tracker: what the same machine can
do at that concurrency. Prints ``{"requests": ..., "seconds": ..., "requests_per_second": ...}``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time

import httpx


async def probe(base_url: str, token: str, ids: list[str], concurrency: int) -> float:
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(headers=headers, limits=limits, timeout=30) as client:
        await client.get(f"{base_url}/api/v2/sms/status/{ids[0]}")
        queue = iter(ids)
        failures: list[int] = []

        async def worker() -> None:
            for message_id in queue:
                response = await client.get(f"{base_url}/api/v2/sms/status/{message_id}")
                if response.status_code != 200:
                    failures.append(response.status_code)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    if failures:
        raise SystemExit(f"{len(failures)} status requests failed, e.g. HTTP {failures[0]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
    parser.add_argument("--ids", required=True, help="a file with one Bitel message id per line")
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    connection = json.loads(os.environ["AIRFLOW_CONN_BENCH_BITEL"])
    with open(args.ids, encoding="utf-8") as lines:
        ids = [line.strip() for line in lines if line.strip()]
    elapsed = asyncio.run(probe(connection["host"].rstrip("/"), connection["password"], ids, args.concurrency))
    print(json.dumps({"requests": len(ids), "seconds": elapsed, "requests_per_second": len(ids) / elapsed}))


if __name__ == "__main__":
    main()
