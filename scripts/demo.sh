#!/usr/bin/env bash
# The main job end to end on the embedded synthetic default (no download needed):
# synthetic films -> Augmentor-style augmentation -> 80/20 split -> loading -> figures.
# Installs what it needs first (idempotent). Extra arguments go to `covid-cxr demo`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
source scripts/env.sh
cargo run --release --bin covid-cxr -- demo "$@"
