"""Command line: ``python -m airflow_provider_p2psms.sandbox --port 8080``.

Serves until SIGTERM or SIGINT, then shuts down cleanly and exits 0.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
from typing import TYPE_CHECKING

from airflow_provider_p2psms.sandbox.config import (
    BITEL_STATUS_SHAPES,
    DEFAULT_BITEL_GATEWAY,
    DEFAULT_BITEL_TOKEN,
    DEFAULT_IPPANEL_KEY,
    DEFAULT_IPPANEL_SENDER,
)
from airflow_provider_p2psms.sandbox.lifecycle import (
    MARKER_NO_CREDIT,
    MARKER_REJECT,
    SUFFIX_BLACKLISTED,
    SUFFIX_DELIVERY_FAILED,
    SUFFIX_ERROR,
    SUFFIX_NEVER_FINAL,
    SUFFIX_OPERATOR_DENIED,
    SUFFIX_REFUSED,
)
from airflow_provider_p2psms.sandbox.server import SandboxServer

if TYPE_CHECKING:
    from collections.abc import Sequence
    from types import FrameType

_EPILOG = f"""\
credentials (defaults):
  Bitel    Authorization: Bearer {DEFAULT_BITEL_TOKEN}   gatewayNumber {DEFAULT_BITEL_GATEWAY}
  IPPanel  Authorization: {DEFAULT_IPPANEL_KEY}          from_number {DEFAULT_IPPANEL_SENDER}

special numbers, by the last four digits of the recipient (both gateways):
  ...{SUFFIX_DELIVERY_FAILED}        delivery fails    Bitel DELIVERY_FAILED 4  IPPanel "3"
  ...{SUFFIX_BLACKLISTED}        blacklisted       Bitel BLACKLIST 5        IPPanel "4"
  ...{SUFFIX_ERROR}        error, not sent   Bitel ERROR 9            IPPanel "3"
  ...{SUFFIX_OPERATOR_DENIED}        operator denied   Bitel CHECK_ERROR 10     IPPanel "3"
  ...{SUFFIX_NEVER_FINAL}        never final       Bitel CHECK_OK 2         IPPanel "1"
  ..{SUFFIX_REFUSED}        never accepted    the whole send request is refused: Bitel 400 InvalidPhoneNumber,
                 IPPanel 422 naming the recipient (params.<i>.recipients.<j>); five digits
  anything else  delivered         Bitel DELIVERED 1        IPPanel "2"

IPPanel duplicate guard: a send identical to one accepted in the last 40 s (same sender,
recipients and texts) is answered 429 (--duplicate-window-seconds; 0 turns it off)

IPPanel message markers:
  {MARKER_REJECT}    the bulk ends in state 3 (rejected by monitoring)
  {MARKER_NO_CREDIT}  the bulk ends in state 8 (insufficient credit)

control endpoints (no auth): GET /__sandbox__/health, /messages, /requests, /stats,
/config; POST /__sandbox__/config, /__sandbox__/reset (JSON object of config fields).
"""


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of the sandbox command."""
    parser = argparse.ArgumentParser(
        prog="python -m airflow_provider_p2psms.sandbox",
        description="Local stand-in for the Bitel and IPPanel SMS APIs on one port.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=8080, help="port; 0 picks a free one (default: %(default)s)")
    parser.add_argument("--port-file", metavar="PATH", help="write the chosen port to this file once listening")
    parser.add_argument("--verbose", action="store_true", help="log each request line to stderr")
    knobs = parser.add_argument_group("behaviour (all changeable at runtime via POST /__sandbox__/config)")
    knobs.add_argument(
        "--delivery-seconds", type=float, metavar="SECONDS", help="seconds until the final status (default 2)"
    )
    knobs.add_argument(
        "--latency-ms", type=float, metavar="MS", help="delay before answering each API request (default 0)"
    )
    for scope, endpoints in (("send", "send"), ("status", "status/report")):
        for fault, effect in (
            ("5xx", "answered 503"),
            ("429", "answered 429 with Retry-After"),
            ("drop", "closed without a response" + (" after acceptance" if scope == "send" else "")),
        ):
            knobs.add_argument(
                f"--{scope}-{fault}-rate",
                type=float,
                metavar="RATE",
                help=f"share (0..1) of {endpoints} requests {effect}",
            )
    knobs.add_argument(
        "--retry-after-seconds", type=float, metavar="SECONDS", help="Retry-After value on a 429 (default 1)"
    )
    knobs.add_argument(
        "--duplicate-window-seconds",
        type=float,
        metavar="SECONDS",
        help="IPPanel answers 429 to a send identical to one accepted this recently (default 40; 0: off)",
    )
    knobs.add_argument(
        "--ippanel-unnamed-refusals",
        dest="ippanel_names_refused",
        action="store_const",
        const=False,
        help="IPPanel's 422 for a refused recipient says only 'recipients', not which one",
    )
    knobs.add_argument("--fail-sends-after", type=int, metavar="N", help="answer 503 to sends after N accepted")
    knobs.add_argument("--seed", type=int, metavar="N", help="seed of the fault generator, for reproducible runs")
    knobs.add_argument(
        "--bitel-token",
        dest="bitel_tokens",
        action="append",
        metavar="TOKEN",
        help="accepted Bitel token (repeatable; replaces the default)",
    )
    knobs.add_argument(
        "--ippanel-token",
        dest="ippanel_tokens",
        action="append",
        metavar="KEY",
        help="accepted IPPanel key (repeatable; replaces the default)",
    )
    knobs.add_argument(
        "--bitel-gateway",
        dest="bitel_gateways",
        action="append",
        metavar="NUMBER",
        help="Bitel gateway number, the first is the default (repeatable)",
    )
    knobs.add_argument(
        "--ippanel-sender",
        dest="ippanel_senders",
        action="append",
        metavar="NUMBER",
        help="IPPanel from_number (repeatable)",
    )
    knobs.add_argument(
        "--bitel-status-shape",
        choices=BITEL_STATUS_SHAPES,
        help="status result shape: code (statusCode + status name) or v2 (status + statusText)",
    )
    return parser


_NOT_CONFIG = frozenset({"host", "port", "port_file", "verbose"})


def main(argv: Sequence[str] | None = None) -> int:
    """Run the sandbox until SIGTERM or SIGINT.

    :param argv: command-line arguments; default ``sys.argv[1:]``.
    :return: the exit status.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    overrides = {name: value for name, value in vars(args).items() if name not in _NOT_CONFIG and value is not None}
    try:
        server = SandboxServer(args.host, args.port, verbose=args.verbose, **overrides)
    except ValueError as error:
        parser.error(str(error))
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    server.start()
    try:
        if args.port_file:
            # Write then rename, so a script polling the file never reads a partial port.
            temporary = f"{args.port_file}.tmp"
            with open(temporary, "w", encoding="utf-8") as port_file:
                port_file.write(f"{server.port}\n")
            os.replace(temporary, args.port_file)
        print(
            f"sandbox listening on {server.url} (bitel: {server.bitel_url}, ippanel: {server.ippanel_url})",
            flush=True,
        )
        stop.wait()
    finally:
        server.stop()
        if args.port_file:
            # A stale port file would point a restarting script at a dead port.
            with contextlib.suppress(FileNotFoundError):
                os.remove(args.port_file)
    if args.verbose:
        print("sandbox stopped", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
