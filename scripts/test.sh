#!/usr/bin/env bash
# Set up everything the test suite needs on a fresh machine (Python 3.11+ only), then run it.
# Idempotent: a second run reuses the virtual environments. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[dev]'

# Arize Phoenix is the real OTLP backend of the export tests. It lives in its own venv:
# its server and our client do not share dependencies (see docs/export.md).
if ! .venv-phoenix/bin/python -c 'import phoenix.server' 2>/dev/null; then
  "$PY" -m venv .venv-phoenix
  .venv-phoenix/bin/python -m pip install -q --disable-pip-version-check 'arize-phoenix==20.26.1'
fi
export PHOENIX_PYTHON="$PWD/.venv-phoenix/bin/python"

exec .venv/bin/python -m pytest "$@"
