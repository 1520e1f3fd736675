#!/usr/bin/env bash
# Create (or reuse) .venv with cyclestyle and its pinned dependencies. Idempotent: a second run
# with unchanged pyproject.toml/constraints.txt only checks a stamp and returns in well under a second.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
VENV="${CYCLESTYLE_VENV:-.venv}"
stamp="$VENV/.cyclestyle-setup"
want=$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x "$VENV/bin/cyclestyle" ]; then
  exit 0
fi
if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating $VENV with $($PYTHON --version 2>&1)" >&2
  "$PYTHON" -m venv "$VENV"
fi
echo "setup: installing cyclestyle and pinned dependencies into $VENV (first time: a few minutes)" >&2
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[dev]"
echo "$want" > "$stamp"
