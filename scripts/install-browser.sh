#!/usr/bin/env bash
# Install what the browser test (tests/browser, marker "browser") needs: Debian's Chromium and
# chromedriver (/usr/bin/chromium, /usr/bin/chromedriver). Nothing is downloaded from browser
# vendors: no "playwright install", no selenium-manager.
#
# Usage: scripts/install-browser.sh [PYTHON]
#   With PYTHON (e.g. .venv-airflow-3.3.2/bin/python), also pip-installs the "selenium" package into
#   that interpreter's environment if it is missing (the project's "ui-test" extra does the same).
#
# Idempotent and non-interactive; meant for CI running as root on Debian/Ubuntu (uses sudo otherwise).
set -euo pipefail

PYTHON="${1:-}"
export DEBIAN_FRONTEND=noninteractive

need_apt=()
[ -x /usr/bin/chromium ] || need_apt+=(chromium)
[ -x /usr/bin/chromedriver ] || need_apt+=(chromium-driver)

if [ "${#need_apt[@]}" -gt 0 ]; then
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then
        SUDO="sudo"
    fi
    echo "install-browser: apt-get update"
    $SUDO apt-get update -qq
    echo "install-browser: apt-get install ${need_apt[*]} fonts-liberation"
    $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" fonts-liberation >/dev/null
else
    echo "install-browser: chromium and chromium-driver are already installed"
fi
echo "install-browser: $(/usr/bin/chromium --version 2>/dev/null || echo 'chromium: version unknown')"
echo "install-browser: $(/usr/bin/chromedriver --version 2>/dev/null | head -n1)"

if [ -n "$PYTHON" ]; then
    if "$PYTHON" -c "import selenium" 2>/dev/null; then
        echo "install-browser: selenium $("$PYTHON" -c 'import selenium; print(selenium.__version__)') is already installed for $PYTHON"
    else
        echo "install-browser: $PYTHON -m pip install 'selenium>=4.20'"
        "$PYTHON" -m pip install --quiet 'selenium>=4.20'
    fi
fi
