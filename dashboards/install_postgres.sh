#!/bin/sh
# Install Debian's PostgreSQL server for the team tracking-server test (tests/test_team_server.py)
# and for `bench server` on a machine of your own.
#
# PostgreSQL comes from the distribution's packages. Only the binaries are wanted: the test
# starts a private cluster of its own in a temporary folder (initdb + pg_ctl on a free port), so
# Debian's default cluster ("main", a server on port 5432) is not created. The Python driver,
# psycopg, comes from PyPI with the project's test extras (pip install -e ".[test]").
# Already installed -> no-op. Needs root (or passwordless sudo) the first time; prints where
# initdb is.
set -eu
found() { ls /usr/lib/postgresql/*/bin/initdb 2>/dev/null | sort -V | tail -n 1; }
if [ -n "$(found)" ]; then
    found
    exit 0
fi
SUDO=""
if [ "$(id -u)" != "0" ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO="sudo -n"; else
        echo "install_postgres.sh: PostgreSQL is missing and this is not root; run: apt-get install -y postgresql" >&2
        exit 1
    fi
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# postgresql-common first: its createcluster.conf decides whether installing the server makes
# (and starts) a default cluster; this machine needs none.
$SUDO apt-get install -y -qq --no-install-recommends postgresql-common >/dev/null
if [ -f /etc/postgresql-common/createcluster.conf ]; then
    $SUDO sed -i 's/^#* *create_main_cluster *=.*/create_main_cluster = false/' /etc/postgresql-common/createcluster.conf
fi
$SUDO apt-get install -y -qq --no-install-recommends postgresql >/dev/null
found
