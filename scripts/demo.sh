#!/usr/bin/env bash
# The main job end to end: install what is missing (scripts/bootstrap.sh), then record a
# scripted task on a virtual display and build a dataset from it (`demotrace demo`).
# Output goes to ./demo-output (ignored by git); extra arguments go to `demotrace demo`
# (e.g. --out /tmp/somewhere).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/bootstrap.sh"
cd "$ROOT"
exec .venv/bin/demotrace demo --out ./demo-output "$@"
