#!/bin/sh
# Install Debian's Chromium and its WebDriver for the dashboard browser test
# (tests/test_dashboards*.py drive /usr/bin/chromium through /usr/bin/chromedriver).
#
# Chromium comes from the distribution's packages, never from a test tool's browser download
# (`playwright install` and friends fetch builds from the internet, which this project's
# machines cannot reach and which would not be pinned by the OS). Both present -> no-op.
# Needs root (or passwordless sudo) the first time; prints where chromium and its driver are.
set -eu
if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
    command -v chromium
    command -v chromedriver
    exit 0
fi
SUDO=""
if [ "$(id -u)" != "0" ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO="sudo -n"; else
        echo "install_chromium.sh: chromium or chromedriver is missing and this is not root; run: apt-get install -y chromium chromium-driver" >&2
        exit 1
    fi
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# fonts-dejavu-core: without any font a page renders as boxes (Recommends are skipped to stay small)
$SUDO apt-get install -y -qq --no-install-recommends chromium chromium-driver fonts-dejavu-core >/dev/null
command -v chromium
command -v chromedriver
