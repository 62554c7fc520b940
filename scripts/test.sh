#!/usr/bin/env bash
# Runs every test: unit tests, integration tests (the ignored real-data ones too where
# ../shared/data/cxr-small exists), doctests, and the notebooks executed by a real Jupyter kernel (evcxr).
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
# The real-data tests are #[ignore]d so that a clone without ../shared reports them as ignored, not as
# passed; where the data exists they run here (and fail if it is unreadable). Only these: the other ignored
# tests are slow benchmarks.
data="${COVID_CXR_SHARED_DATA:-../shared/data/cxr-small}"
if [[ -d "$data/train" ]]; then
  echo "[test] real-data tests on $data" >&2
  cargo test --release --test cxr_small -- --ignored
else
  echo "[test] $data absent: the real-data tests (tests/cxr_small.rs) stay ignored" >&2
fi
if ((notebooks)); then
  echo "[test] notebooks" >&2
  bash scripts/run-notebooks.sh
fi
