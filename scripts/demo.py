"""The main job, end to end, on an embedded default: SQLite recipients, the sandbox gateway, a real Airflow.

What it does, in order:

1. makes a throwaway Airflow home (SQLite metadata DB) under ``.demo/`` and migrates it;
2. starts the sandbox API in the background (a local stand-in for Bitel and IPPanel);
3. creates a SQLite table of sample customers (Persian names, a landline, a duplicate, numbers the
   sandbox fails or blacklists);
4. sets the connections by environment variable, exactly as a deployment would;
5. runs ``example_dags/example_p2p_sms_sql.py`` with ``airflow dags test``;
6. prints the send receipt and the delivery report, and stops the sandbox.

Run it with ``make demo``; ``--gateway ippanel`` sends through the IPPanel stand-in instead.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DAG_ID = "example_p2p_sms_sql"

CUSTOMERS = [
    ("0912 123 4567", "نازنین", "NOWRUZ-41", 1),
    ("+98 935 765 4321", "رضا", "NOWRUZ-42", 1),
    ("۰۹۱۳۵۵۵۱۲۱۲", "مهسا", "NOWRUZ-43", 1),
    ("00989371112233", "Sara", "NOWRUZ-44", 1),
    ("09120000001", "کامران", "NOWRUZ-45", 1),  # the sandbox reports this one as not delivered
    ("09190000002", "لیلا", "NOWRUZ-46", 1),  # ... and this one as blacklisted
    ("021 8888 1234", "دفتر", "NOWRUZ-47", 1),  # a landline: reported invalid, not sent
    ("0912-123-4567", "نازنین", "NOWRUZ-41", 1),  # the same number and text again: sent once
    ("09351112233", "Old customer", "NOWRUZ-48", 0),  # inactive: not selected by the query
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gateway", choices=["bitel", "ippanel"], default="bitel")
    parser.add_argument("--keep", action="store_true", help="keep .demo/ (Airflow home, logs) afterwards")
    args = parser.parse_args()

    home = ROOT / ".demo"
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "example_dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
    }

    step("Creating a throwaway Airflow home with a SQLite metadata DB in .demo/")
    run([sys.executable, "-m", "airflow", "db", "migrate"], env, home / "migrate.log")

    step("Starting the sandbox gateway API in the background")
    port_file = home / "sandbox.port"
    sandbox = subprocess.Popen(
        [sys.executable, "-m", "airflow_provider_p2psms.sandbox", "--port", "0", "--port-file", str(port_file)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        base = f"http://127.0.0.1:{wait_for_port(port_file, sandbox)}"
        print(f"  sandbox listening on {base}")

        step("Creating a SQLite table of sample customers")
        database = home / "customers.db"
        with sqlite3.connect(database) as db:
            db.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, phone TEXT, name TEXT, code TEXT, active INT)")
            db.executemany("INSERT INTO customers (phone, name, code, active) VALUES (?, ?, ?, ?)", CUSTOMERS)
        print(f"  {len(CUSTOMERS)} rows in {database.name}")

        step(f"Setting the connections by environment variable ({args.gateway} gateway)")
        gateway = {
            "bitel": {"conn_type": "bitel", "password": "sandbox-bitel-token", "host": base},
            "ippanel": {
                "conn_type": "ippanel",
                "password": "sandbox-ippanel-key",
                "host": f"{base}/v1",
                "extra": {"sender": "+983000505"},
            },
        }[args.gateway]
        env["AIRFLOW_CONN_P2PSMS_GATEWAY"] = json.dumps(gateway)
        env["AIRFLOW_CONN_P2PSMS_DEMO_DB"] = json.dumps({"conn_type": "sqlite", "host": str(database)})
        print("  AIRFLOW_CONN_P2PSMS_GATEWAY=" + json.dumps({**gateway, "password": "***"}))
        print("  AIRFLOW_CONN_P2PSMS_DEMO_DB=" + env["AIRFLOW_CONN_P2PSMS_DEMO_DB"])

        step(f"Running {DAG_ID} with airflow dags test")
        started = time.monotonic()
        log = home / "dags-test.log"
        code = run([sys.executable, "-m", "airflow", "dags", "test", DAG_ID], env, log, check=False)
        print(f"  finished in {time.monotonic() - started:.1f}s, exit code {code}; full log: {log.relative_to(ROOT)}")
        for line in log.read_text().splitlines():
            if any(mark in line for mark in ("P2P SMS via", "] Row ", "Delivery so far", "All messages final")):
                print("  " + line.split("] ", 1)[-1].split(" [airflow.task")[0])

        receipt = read_xcom(home / "airflow.db", "send_codes")
        report = read_xcom(home / "airflow.db", "wait_for_delivery")
        if receipt:
            step("Send receipt (XCom of send_codes)")
            print("  " + json.dumps(receipt["counts"], ensure_ascii=False))
            for problem in receipt["problems"]:
                print(f"  {problem}")
        if report:
            step("Delivery report (XCom of wait_for_delivery)")
            print(
                f"  {report['total']} messages, {report['delivered_ratio']:.0%} delivered: " + counts(report["counts"])
            )
            for message_id, masked, status in report["messages"]:
                print(f"  {masked:<16} {status:<12} {message_id}")
        if code != 0 or not report:
            print(f"\nThe demo DAG did not succeed; see {log}.", file=sys.stderr)
            return 1
        print("\nDone: the DAG read the customers, sent one personal SMS each, and waited for delivery.")
        return 0
    finally:
        sandbox.terminate()
        sandbox.wait(timeout=10)
        if not args.keep:
            shutil.rmtree(home, ignore_errors=True)


def step(text: str) -> None:
    print(f"\n==> {text}", flush=True)


def run(command: list[str], env: dict[str, str], log: Path, check: bool = True) -> int:
    with log.open("w") as out:
        code = subprocess.run(
            command, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        ).returncode
    if check and code != 0:
        sys.stderr.write(log.read_text()[-4000:])
        raise SystemExit(f"{' '.join(command[2:])} failed with exit code {code}; see {log}")
    return code


def wait_for_port(port_file: Path, process: subprocess.Popen[bytes], timeout: float = 30) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_file.exists() and port_file.read_text().strip():
            return int(port_file.read_text().strip())
        if process.poll() is not None:
            raise SystemExit("the sandbox API exited before it started listening")
        time.sleep(0.1)
    raise SystemExit("the sandbox API did not start within 30 s")


def read_xcom(database: Path, task_id: str) -> dict | None:
    with sqlite3.connect(database) as db:
        row = db.execute(
            "SELECT value FROM xcom WHERE dag_id = ? AND task_id = ? AND key = 'return_value'", (DAG_ID, task_id)
        ).fetchone()
    return json.loads(row[0]) if row else None


def counts(by_status: dict[str, int]) -> str:
    return ", ".join(f"{name} {count}" for name, count in by_status.items() if count) or "nothing"


if __name__ == "__main__":
    raise SystemExit(main())
