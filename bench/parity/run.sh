#!/usr/bin/env bash
# Regenerates tests/fixtures/parity/*.json with the Python libraries (pinned in requirements.txt), in a
# venv outside the work tree. The Rust tests (tests/parity.rs) compare against the committed fixtures.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
venv="${COVID_CXR_PARITY_VENV:-$HOME/.cache/covid-cxr/parity-venv}"
if [[ ! -x "$venv/bin/python" ]]; then
  python3 -m venv "$venv"
fi
"$venv/bin/pip" install -q -r requirements.txt
"$venv/bin/python" make_fixtures.py
