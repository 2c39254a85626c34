#!/usr/bin/env bash
# Install (first run) and start the web UI: ./webui.sh [flags, see ./webui.sh --help]
set -euo pipefail
cd "$(dirname "$0")"
PYTHON="${PYTHON:-python3}"
VENV_DIR="${VENV_DIR:-venv}"

if [ ! -x "$VENV_DIR/bin/python" ]; then
    echo "Creating virtual environment in $VENV_DIR (first run)"
    "$PYTHON" -m venv "$VENV_DIR"
fi
stamp="$VENV_DIR/.requirements.sha256"
want="$(sha256sum requirements.txt | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
    echo "Installing requirements (first run or requirements.txt changed; this takes a few minutes)"
    "$VENV_DIR/bin/python" -m pip install --upgrade pip
    "$VENV_DIR/bin/python" -m pip install -r requirements.txt
    echo "$want" > "$stamp"
fi

export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 GRADIO_ANALYTICS_ENABLED=False
exec "$VENV_DIR/bin/python" webui.py "$@"
