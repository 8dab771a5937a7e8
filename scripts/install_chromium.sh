#!/usr/bin/env bash
# Headless Chromium for tests/test_report.py (the report opened in a real browser).
# Debian/Ubuntu: installs the `chromium` package with apt-get (as root, or with sudo).
# Idempotent: exits at once when a Chromium is already on PATH. Never fails the build on a
# machine where it cannot install (no apt, no root): the browser test then skips, saying why.
set -euo pipefail
for exe in chromium chromium-browser google-chrome; do
    if command -v "$exe" >/dev/null 2>&1; then
        exit 0
    fi
done
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install_chromium.sh: no apt-get here; install Chromium by hand for the browser test" >&2
    exit 0
fi
if [ "$(id -u)" -eq 0 ]; then
    SUDO=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO="sudo -n"
else
    echo "install_chromium.sh: not root and no sudo; skipping the Chromium install" >&2
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends chromium fonts-dejavu-core
