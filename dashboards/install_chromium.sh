#!/bin/sh
# Install Debian's Chromium for the dashboard browser test (tests/test_dashboards*.py).
#
# Chromium comes from the distribution's package, never from a test tool's browser download
# (`playwright install` and friends fetch builds from the internet, which this project's
# machines cannot reach and which would not be pinned by the OS). Already installed -> no-op.
# Needs root (or passwordless sudo) the first time; prints where chromium is.
set -eu
if command -v chromium >/dev/null 2>&1; then
    command -v chromium
    exit 0
fi
SUDO=""
if [ "$(id -u)" != "0" ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO="sudo -n"; else
        echo "install_chromium.sh: chromium is missing and this is not root; run: apt-get install -y chromium" >&2
        exit 1
    fi
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# fonts-dejavu-core: without any font a page renders as boxes (Recommends are skipped to stay small)
$SUDO apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
command -v chromium
