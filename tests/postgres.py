"""A real PostgreSQL server for the tests, from Debian's ``postgresql`` package.

:func:`running_postgres` makes a throwaway cluster in a temporary folder (``initdb``), starts it with
``pg_ctl`` on a free loopback port with its unix socket in that folder, creates a role and a database the
way an administrator would for a user, and hands back a :class:`PostgresServer` whose
:meth:`~PostgresServer.connection_json` is an Airflow ``postgres`` connection for ``AIRFLOW_CONN_...``.
At the end the server is stopped and the folder removed.

PostgreSQL refuses to run as root, so when the tests run as root (as CI does) the server runs as the
``postgres`` OS user that the Debian package creates, and the folder belongs to that user.

When the binaries are missing the tests that need the server are skipped locally (install them with
``scripts/install-postgres.sh``) and fail in CI (``CI`` set), where a skipped database test would hide a
missing install step.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import pytest

#: Where Debian's ``postgresql-<version>`` packages put their server binaries.
DEBIAN_BINARIES = Path("/usr/lib/postgresql")
#: The OS user the server runs as when the tests run as root.
SERVER_OS_USER = "postgres"

ROLE = "p2psms"
PASSWORD = "p2psms-test-password"
DATABASE = "p2psms_test"
#: The database superuser that ``initdb`` creates; it logs in over the unix socket only (trust).
ADMIN = "p2psms_admin"


@dataclass(frozen=True)
class PostgresServer:
    """
    A running test server, and how a user's Airflow connection reaches it.

    :param host: the loopback address it listens on.
    :param port: its TCP port.
    :param database: the database created for the tests, owned by ``login``.
    :param login: a role that is not a superuser, with a password (scram-sha-256 over TCP).
    :param password: that role's password.
    :param version: the server's major version, e.g. ``"15"``.
    :param started_in: seconds from ``initdb`` to a server ready for connections, role and database made.
    """

    host: str
    port: int
    database: str
    login: str
    password: str
    version: str
    started_in: float

    def connection_json(self) -> str:
        """The Airflow connection, in the JSON form of ``AIRFLOW_CONN_<ID>``."""
        return json.dumps(
            {
                "conn_type": "postgres",
                "host": self.host,
                "port": self.port,
                "login": self.login,
                "password": self.password,
                "schema": self.database,
            }
        )


def find_binaries() -> Path | None:
    """The ``bin`` folder of the newest PostgreSQL in :data:`DEBIAN_BINARIES` that has ``initdb``, if any."""
    found = [path.parent for path in DEBIAN_BINARIES.glob("*/bin/initdb") if path.is_file()]
    if not found:
        return None
    return max(found, key=lambda folder: int(folder.parent.name) if folder.parent.name.isdigit() else 0)


def _missing(reason: str) -> NoReturn:
    message = f"{reason}; run scripts/install-postgres.sh (Debian's postgresql package, as root)."
    if os.environ.get("CI"):
        pytest.fail(f"CI needs a real PostgreSQL for the outcomes tests: {message}", pytrace=False)
    pytest.skip(message)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def running_postgres() -> Iterator[PostgresServer]:
    """Start a throwaway PostgreSQL server on loopback; yield it; stop it and remove its files."""
    binaries = find_binaries()
    if binaries is None:
        _missing(f"no PostgreSQL server binaries in {DEBIAN_BINARIES}/<version>/bin")
    as_root = os.geteuid() == 0
    if as_root:
        try:
            server_user = pwd.getpwnam(SERVER_OS_USER)
        except KeyError:
            _missing(f"PostgreSQL refuses to run as root and there is no '{SERVER_OS_USER}' OS user")

    def as_server_user(*command: str | Path) -> list[str]:
        words = [str(word) for word in command]
        return ["runuser", "-u", SERVER_OS_USER, "--", *words] if as_root else words

    def run(command: list[str]) -> None:
        result = subprocess.run(command, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout}{result.stderr}")

    began = time.monotonic()
    # Not pytest's tmp_path: its folders are 0700 and root's, and the server user must reach this one.
    root = Path(tempfile.mkdtemp(prefix="p2psms-postgres-"))
    data, log = root / "data", root / "server.log"
    if as_root:
        os.chown(root, server_user.pw_uid, server_user.pw_gid)
    try:
        run(
            as_server_user(
                binaries / "initdb",
                "--pgdata",
                data,
                "--username",
                ADMIN,
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            )
        )
        port = _free_port()
        # Durability is of no use to a throwaway test server and costs seconds of fsync.
        options = f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={root} -c fsync=off"
        run(as_server_user(binaries / "pg_ctl", "start", "--pgdata", data, "--log", log, "--wait", "-o", options))
        try:
            psql = [str(binaries / "psql"), "--host", str(root), "--port", str(port), "--username", ADMIN]
            statements = [
                f"CREATE ROLE {ROLE} LOGIN PASSWORD '{PASSWORD}'",
                f"CREATE DATABASE {DATABASE} OWNER {ROLE}",
            ]
            for statement in statements:
                run([*psql, "--dbname", "postgres", "--no-psqlrc", "--set", "ON_ERROR_STOP=1", "--command", statement])
            yield PostgresServer(
                host="127.0.0.1",
                port=port,
                database=DATABASE,
                login=ROLE,
                password=PASSWORD,
                version=binaries.parent.name,
                started_in=time.monotonic() - began,
            )
        finally:
            run(as_server_user(binaries / "pg_ctl", "stop", "--pgdata", data, "--mode", "fast", "--wait"))
    finally:
        shutil.rmtree(root, ignore_errors=True)
