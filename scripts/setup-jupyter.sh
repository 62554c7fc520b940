#!/usr/bin/env bash
# Jupyter + the evcxr Rust kernel for the notebooks, cached outside the work tree.
# Idempotent. Called by scripts/setup.sh --jupyter.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${COVID_CXR_CACHE:-$HOME/.cache/covid-cxr}"
EVCXR_VERSION=0.22.0
VENV="$CACHE/jupyter-venv"
EVCXR_ROOT="$CACHE/evcxr-$EVCXR_VERSION"
export JUPYTER_PATH="$CACHE/jupyter"
log() { printf '\033[1;34m[setup-jupyter]\033[0m %s\n' "$*" >&2; }

if [[ ! -x "$VENV/bin/jupyter" || ! -f "$VENV/.complete" ]]; then
  log "creating a Python venv with Jupyter in $VENV"
  python3 -m venv "$VENV" 2>/dev/null || { apt-get install -y -qq python3-venv >/dev/null && python3 -m venv "$VENV"; }
  "$VENV/bin/pip" install -q "jupyter_client>=8" "nbclient>=0.10" "nbformat>=5.10" "nbconvert>=7" "ipykernel>=6"
  touch "$VENV/.complete"
fi
if [[ ! -f "$VENV/.lab-complete" ]]; then
  log "installing JupyterLab in $VENV"
  "$VENV/bin/pip" install -q "jupyterlab>=4"
  touch "$VENV/.lab-complete"
fi
if [[ ! -x "$EVCXR_ROOT/bin/evcxr_jupyter" ]]; then
  log "building evcxr_jupyter $EVCXR_VERSION (about 16 minutes on 2 cores, once)"
  cargo install --locked "evcxr_jupyter@$EVCXR_VERSION" --root "$EVCXR_ROOT"
fi
LIBTORCH_DIR="$(readlink -f "$ROOT/.libtorch")"
# evcxr links cells against the dynamic libstd with a relative rpath that is one level off
# for a deep EVCXR_TMPDIR: put the toolchain's lib folder on the kernel's library path.
RUST_LIB="$(rustc --print sysroot)/lib/rustlib/$(rustc -vV | sed -n 's/^host: //p')/lib"
KDIR="$JUPYTER_PATH/kernels/rust"
mkdir -p "$KDIR"
# evcxr_jupyter reinstalls its kernel spec (dropping our env) when version.txt is missing or
# stale: let it install first, then write our kernel.json over its own.
if [[ ! -f "$KDIR/version.txt" ]]; then
  JUPYTER_DATA_DIR="$JUPYTER_PATH" "$EVCXR_ROOT/bin/evcxr_jupyter" --install >/dev/null
fi
# The kernel's cell crates link libtorch themselves: give them LIBTORCH and
# LD_LIBRARY_PATH (an rpath of this package does not reach them).
cat > "$KDIR/kernel.json.tmp" <<JSON
{
  "argv": ["$EVCXR_ROOT/bin/evcxr_jupyter", "--control_file", "{connection_file}"],
  "display_name": "Rust (covid-cxr)",
  "language": "rust",
  "interrupt_mode": "message",
  "env": {
    "LIBTORCH": "$LIBTORCH_DIR",
    "LD_LIBRARY_PATH": "$LIBTORCH_DIR/lib:$RUST_LIB",
    "EVCXR_TMPDIR": "$CACHE/evcxr-tmp"
  }
}
JSON
mv "$KDIR/kernel.json.tmp" "$KDIR/kernel.json"
mkdir -p "$CACHE/evcxr-tmp"
log "kernel 'rust' installed in $KDIR (JUPYTER_PATH=$JUPYTER_PATH)"

# Warm the kernel's build of the crate: execute a two-cell notebook with the notebooks' own
# `:dep` line from notebooks/ (evcxr resolves the path from there), so that the first cell of a
# notebook takes seconds. Cheap when already warm (cargo finds nothing to rebuild).
if [[ "${COVID_CXR_SKIP_WARM:-0}" != 1 ]]; then
  log "warming the kernel's build of covid_cxr (minutes the first time, seconds after)"
  t0=$(date +%s)
  "$VENV/bin/python" - "$ROOT/notebooks" <<'PY'
import sys, nbformat
from nbclient import NotebookClient
nb = nbformat.v4.new_notebook(cells=[
    nbformat.v4.new_code_cell(':dep covid_cxr = { path = ".." }'),
    nbformat.v4.new_code_cell('use covid_cxr::prelude::*;\nprintln!("{}", CLASSES.len());'),
])
NotebookClient(nb, kernel_name="rust", timeout=3000, startup_timeout=120,
               resources={"metadata": {"path": sys.argv[1]}}).execute()
out = "".join(o.get("text", "") for o in nb.cells[1].outputs)
if out.strip() != "3":
    sys.exit(f"warming the kernel failed: {nb.cells[1].outputs}")
PY
  log "kernel warm ($(( $(date +%s) - t0 )) s)"
fi
