"""
The raw transport: what sending costs on this machine with nothing but HTTP, for the send scenario's ratios.

    python bench/raw_transport.py --messages 200000 --concurrency 8 --batch-size 100

Reads the ``bench_bitel`` connection from the environment (``bench/run.py`` sets it). Builds every
request body first (JSON bytes of ``--batch-size`` messages, texts like the bench DAG's), then sends
them with ``--concurrency`` threads over one pooled ``requests.Session``, one request after another per
thread, checking only each answer's status. No provider code, no rows, no templates, no ledger, no
receipts: the rate of the operator divided by this one is how much of the transport it keeps.
Prints ``{"messages": ..., "seconds": ..., "messages_per_second": ...}``.
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time

import requests
from requests.adapters import HTTPAdapter


def bodies(messages: int, batch_size: int, gateway: str) -> list[bytes]:
    """Request bodies of ``batch_size`` messages each, built before the clock starts."""
    built = []
    for start in range(0, messages, batch_size):
        indices = range(start, min(start + batch_size, messages))
        body = {
            "messages": [f"سلام رضا، کد تخفیف شما C{index:08d} است." for index in indices],
            "phoneNumbers": [f"0912{index * 10 + 5:07d}" for index in indices],
            "gatewayNumber": gateway,
        }
        built.append(json.dumps(body).encode())
    return built


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=100)
    args = parser.parse_args()
    connection = json.loads(os.environ["AIRFLOW_CONN_BENCH_BITEL"])
    url = f"{connection['host'].rstrip('/')}/api/v2/sms/batch/p2p"
    work = bodies(args.messages, args.batch_size, connection["extra"]["sender"])

    session = requests.Session()
    adapter = HTTPAdapter(pool_connections=1, pool_maxsize=max(args.concurrency, 1), max_retries=0)
    session.mount("http://", adapter)
    session.trust_env = False
    session.headers.update({"Authorization": f"Bearer {connection['password']}", "Content-Type": "application/json"})
    session.post(url, data=bodies(1, 1, connection["extra"]["sender"])[0], timeout=30).raise_for_status()

    lock = threading.Lock()
    position = iter(range(len(work)))
    failures: list[int] = []

    def sender() -> None:
        while True:
            with lock:
                index = next(position, None)
            if index is None:
                return
            response = session.post(url, data=work[index], timeout=30)
            response.content  # noqa: B018 - read the whole answer, as any client must
            if response.status_code != 200:
                failures.append(response.status_code)

    threads = [threading.Thread(target=sender) for _ in range(args.concurrency)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    if failures:
        raise SystemExit(f"{len(failures)} requests failed, e.g. HTTP {failures[0]}")
    print(json.dumps({"messages": args.messages, "seconds": elapsed, "messages_per_second": args.messages / elapsed}))


if __name__ == "__main__":
    main()
