#!/usr/bin/env bash
# Creates the project's environments (idempotent):
#   .venv         autolabel with the ML stack (torch, transformers, ultralytics, ...) and test tools
#   .venv-studio  the Label Studio server, kept apart because its pinned Django stack and
#                 opencv/numpy pins do not mix with the ML stack; autolabel talks to it over HTTP.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}

if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
# find_spec, not import: importing ultralytics would write its settings into ~/.config
if ! .venv/bin/python -c "import importlib.util as u, sys; sys.exit(any(u.find_spec(m) is None for m in
    ('autolabel', 'torch', 'ultralytics', 'transformers', 'pytest', 'openvino', 'ray', 'ruff',
     'groundingdino')))" 2>/dev/null \
   || [ pyproject.toml -nt .venv/.installed ]; then
  .venv/bin/pip install -q --upgrade pip
  # torch first, pinned: these wheels are the ones the pip constraint on this machine allows.
  .venv/bin/pip install -q torch==2.14.1 torchvision==0.29.1
  .venv/bin/pip install -q -c scripts/constraints.txt -e '.[test,groundingdino]'
  # --model groundingdino-py: the original package, pure Python (~5 s). --no-deps because its
  # declared pins (supervision==0.6.0, ...) do not fit; its real needs come with the extra above.
  .venv/bin/pip install -q -c scripts/constraints.txt --no-deps groundingdino-py==0.4.0
  touch .venv/.installed
fi

# The report's browser test (tests/test_report.py) loads the page in a headless Chromium from the
# OS packages; only installed when missing, and only where apt-get is there and we are root.
if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = "0" ]; then
    apt-get install -y -q chromium >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null; }
  else
    echo "setup: no Chromium (install the chromium package as root for the report's browser test)"
  fi
fi

if [ "${AUTOLABEL_SKIP_STUDIO:-0}" != "1" ]; then
  if [ ! -x .venv-studio/bin/label-studio ] || [ scripts/constraints-studio.txt -nt .venv-studio/.installed ]; then
    "$PYTHON" -m venv .venv-studio
    .venv-studio/bin/pip install -q --upgrade pip
    .venv-studio/bin/pip install -q -c scripts/constraints-studio.txt label-studio==1.23.2
    touch .venv-studio/.installed
  fi
fi
