# Sourced by scripts/run and scripts/test: makes .venv with a Python >= 3.11 and installs the project into it.
# Usage: ensure_venv EXTRAS   (e.g. "dev" or "local")
ensure_venv() {
  local extras=$1 py=""
  if [ ! -x .venv/bin/python ]; then
    for candidate in "${PYTHON:-}" python3.13 python3.12 python3.11 python3; do
      [ -n "$candidate" ] || continue
      if command -v "$candidate" >/dev/null 2>&1 &&
        "$candidate" -c 'import sys; raise SystemExit(sys.version_info < (3, 11))' 2>/dev/null; then
        py=$candidate
        break
      fi
    done
    if [ -z "$py" ]; then
      echo "modelrouter needs Python >= 3.11 (set PYTHON=/path/to/python3.11)" >&2
      exit 2
    fi
    "$py" -m venv .venv
  fi
  # Re-installing is a no-op when nothing changed; it keeps the venv in step with pyproject.toml.
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[$extras]"
}
