#!/usr/bin/env bash
# The main job, offline: set up, then run autolabel end to end on generated fastener scenes.
# Everything it writes goes under ./demo (delete it to start over; rerunning resumes).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python scripts/demo.py "$@"
