#!/usr/bin/env bash
# Install the PostgreSQL server binaries the registry tests start a throwaway cluster from.
# Idempotent: does nothing when /usr/lib/postgresql/*/bin/initdb already exists.
# Never fails the build: without PostgreSQL the PG-parameterised tests are skipped with a reason.
set -uo pipefail

have_pg() { compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; }

if have_pg; then
  echo "install-postgres: already installed ($(ls -d /usr/lib/postgresql/*/bin | head -1))"
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-postgres: apt-get not available; PostgreSQL tests will be skipped" >&2
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO="sudo -n"; else
    echo "install-postgres: not root and no sudo; PostgreSQL tests will be skipped" >&2
    exit 0
  fi
fi
export DEBIAN_FRONTEND=noninteractive
# Only the binaries are needed: tests run their own cluster, so don't let the package start one.
$SUDO apt-get update -qq || true
if $SUDO apt-get install -y -qq --no-install-recommends postgresql >/dev/null; then
  echo "install-postgres: installed ($(ls -d /usr/lib/postgresql/*/bin | head -1))"
else
  echo "install-postgres: apt-get install postgresql failed; PostgreSQL tests will be skipped" >&2
fi
exit 0
