#!/usr/bin/env bash
# Runs every test: unit tests, integration tests (real data where ../shared/data/cxr-small
# exists), doctests, and the notebooks executed by a real Jupyter kernel (evcxr).
# Installs what it needs first (idempotent, cached outside the work tree).
#   scripts/test.sh             # everything
#   scripts/test.sh --no-notebooks
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
notebooks=1
for a in "$@"; do
  case "$a" in
    --no-notebooks) notebooks=0 ;;
    *) echo "unknown option $a" >&2; exit 2 ;;
  esac
done
if ((notebooks)); then bash scripts/setup.sh --jupyter; else bash scripts/setup.sh; fi
source scripts/env.sh
echo "[test] cargo test (target dir $CARGO_TARGET_DIR)" >&2
# One profile for everything (release): the demo, the tests and the benches share one build.
cargo test --release --all-targets
cargo test --release --doc
if ((notebooks)); then
  echo "[test] notebooks" >&2
  bash scripts/run-notebooks.sh
fi
