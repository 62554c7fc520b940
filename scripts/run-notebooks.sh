#!/usr/bin/env bash
# Executes every notebook in notebooks/ with the evcxr Jupyter kernel, headless, and fails
# on any cell error. Executed copies go to $COVID_CXR_CACHE/notebooks-out (the notebooks
# in the work tree are never rewritten).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/env.sh
VENV="$CACHE/jupyter-venv"
[[ -x "$VENV/bin/python" ]] || { echo "run scripts/setup.sh --jupyter first" >&2; exit 1; }
exec "$VENV/bin/python" scripts/run_notebooks.py "$@"
