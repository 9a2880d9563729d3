# Sourced by scripts/run and scripts/test: make .venv with the project installed, once per
# change of pyproject.toml. Needs only Python >= 3.11 with venv on the machine.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-python3}"
if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "livecommerce needs Python >= 3.11 (found: $("$PY" --version 2>&1)); set PYTHON=..." >&2
  exit 1
fi
EXTRAS="${1:-}"
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv || { echo "python venv failed: install python3-venv" >&2; exit 1; }
fi
STAMP=".venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)${EXTRAS:+-$EXTRAS}"
if [ ! -f "$STAMP" ]; then
  .venv/bin/python -m pip install --quiet --upgrade pip >/dev/null 2>&1 || true
  .venv/bin/python -m pip install --quiet -e ".${EXTRAS:+[$EXTRAS]}" 2>&1 | grep -v "is ignored" || true
  .venv/bin/python -c "import livecommerce" || { echo "install failed" >&2; exit 1; }
  touch "$STAMP"
fi
