"""
How fast the Bitel hook alone can send prebuilt messages to the sandbox: the ceiling of any operator.

    python bench/transport_ceiling.py --messages 20000 --concurrency 4

Reads the ``bench_bitel`` connection from the environment (``bench/run.py`` sets it), sends
``--messages`` prebuilt messages in batches of 100 with ``--concurrency`` threads sharing one hook,
and prints ``{"messages_per_second": ...}``. No Airflow task, no rows, no templates, no checkpoint:
what is left is the client's and the sandbox's cost per request on top of the added latency.
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ThreadPoolExecutor

from airflow_provider_p2psms.hooks.bitel import BitelHook
from airflow_provider_p2psms.models import OutgoingSms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    hook = BitelHook("bench_bitel")
    size = hook.batch_size
    batches = [
        [
            OutgoingSms(f"0912{index * 10 + 5:07d}", f"سلام رضا، کد تخفیف شما C{index:08d} است.")
            for index in range(start, min(start + size, args.messages))
        ]
        for start in range(0, args.messages, size)
    ]
    hook.send_batch(batches[0][:1])
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=args.concurrency) as pool:
        sent = sum(len(receipts) for receipts in pool.map(hook.send_batch, batches))
    elapsed = time.perf_counter() - started
    print(json.dumps({"messages": sent, "seconds": elapsed, "messages_per_second": sent / elapsed}))


if __name__ == "__main__":
    main()
