# Sourced by the scripts: the environment every build and test uses.
# LIBTORCH is the resolved cache path (not the .libtorch link), so every clone on
# this machine shares one build of torch-sys in the shared target folder.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${COVID_CXR_CACHE:-$HOME/.cache/covid-cxr}"
export COVID_CXR_CACHE="$CACHE"
export LIBTORCH="$(readlink -f "$ROOT/.libtorch")"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$CACHE/target}"
export JUPYTER_PATH="$CACHE/jupyter${JUPYTER_PATH:+:$JUPYTER_PATH}"
