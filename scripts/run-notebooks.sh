#!/usr/bin/env bash
# Executes every notebook in notebooks/ with the evcxr Jupyter kernel, headless.
#   scripts/run-notebooks.sh            # what CI runs: fails if a committed notebook has an
#                                       # unexecuted code cell, an error output, a machine path or
#                                       # is over 5 MB; then executes them all and fails on any
#                                       # cell error (executed copies in $COVID_CXR_CACHE/notebooks-out)
#   scripts/run-notebooks.sh --update   # executes them and writes them back with their outputs
#   scripts/run-notebooks.sh --check    # only the checks of the committed notebooks
#   scripts/run-notebooks.sh --rerun    # as CI, then every cell of the main notebook again in the same kernel
#                                       # (combines with --update: writes back only when both passed)
# Runs on the synthetic default: COVID_CXR_DATA is unset here (the committed outputs are the
# synthetic run's).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/env.sh
VENV="$CACHE/jupyter-venv"
[[ -x "$VENV/bin/python" ]] || { echo "run scripts/setup.sh --jupyter first" >&2; exit 1; }
unset COVID_CXR_DATA
exec "$VENV/bin/python" scripts/run_notebooks.py "$@"
