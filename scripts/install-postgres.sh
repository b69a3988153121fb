#!/usr/bin/env bash
# Install what the outcomes-table tests need: a PostgreSQL server from Debian's "postgresql" package
# (binaries in /usr/lib/postgresql/<version>/bin). The tests start their own throwaway server
# (tests/postgres.py) as the "postgres" OS user the package creates; nothing else is configured here.
#
# Usage: scripts/install-postgres.sh
# Idempotent and non-interactive; meant for CI running as root on Debian/Ubuntu (uses sudo otherwise).
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive

installed() {
    compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null
}

if installed; then
    echo "install-postgres: PostgreSQL server binaries are already installed"
else
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then
        SUDO="sudo"
    fi
    echo "install-postgres: apt-get update"
    $SUDO apt-get update -qq
    echo "install-postgres: apt-get install postgresql"
    $SUDO apt-get install -y -qq --no-install-recommends postgresql >/dev/null
    installed || { echo "install-postgres: no /usr/lib/postgresql/*/bin/initdb after the install" >&2; exit 1; }
fi
for initdb in /usr/lib/postgresql/*/bin/initdb; do
    echo "install-postgres: $("$initdb" --version)"
done
