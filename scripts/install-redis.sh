#!/usr/bin/env bash
# Install what the multi-worker deployment test needs for its Celery broker: a Redis server from Debian's
# "redis-server" package (/usr/bin/redis-server). The test starts its own throwaway server on a free
# loopback port (tests/deployment/services.py); the system service the package sets up is not used, and is
# stopped and disabled here when systemd runs it, so that nothing listens on 6379 for no one.
#
# Usage: scripts/install-redis.sh
# Idempotent and non-interactive; meant for CI running as root on Debian/Ubuntu (uses sudo otherwise).
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive

installed() {
    command -v redis-server >/dev/null 2>&1 || [ -x /usr/bin/redis-server ]
}

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

if installed; then
    echo "install-redis: the Redis server is already installed"
else
    echo "install-redis: apt-get update"
    $SUDO apt-get update -qq
    echo "install-redis: apt-get install redis-server"
    # policy-rc.d-less containers may refuse to start the service; the package itself still installs.
    $SUDO apt-get install -y -qq --no-install-recommends redis-server >/dev/null
    installed || { echo "install-redis: no redis-server after the install" >&2; exit 1; }
fi
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    $SUDO systemctl disable --now redis-server >/dev/null 2>&1 || true
fi
echo "install-redis: $(redis-server --version)"
