#!/usr/bin/env bash
# Opens JupyterLab on notebooks/ with the Rust (covid-cxr) kernel.
#   scripts/jupyter.sh                                   # synthetic films
#   COVID_CXR_DATA=/path/to/ImageFolder scripts/jupyter.sh   # real films (covid/, normal/, pneumonia/)
# Extra arguments go to `jupyter lab` (e.g. --no-browser --port 8890).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/env.sh
VENV="$CACHE/jupyter-venv"
[[ -x "$VENV/bin/jupyter-lab" ]] || { echo "run scripts/setup.sh --jupyter first" >&2; exit 1; }
exec "$VENV/bin/jupyter" lab --notebook-dir=notebooks "$@"
