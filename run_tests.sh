#!/usr/bin/env bash
# Set up what the tests need (a venv with the pinned requirements) and run them: ./run_tests.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")"
PYTHON="${PYTHON:-python3}"
VENV_DIR="${VENV_DIR:-venv}"

if [ ! -x "$VENV_DIR/bin/python" ]; then
    echo "Creating virtual environment in $VENV_DIR"
    "$PYTHON" -m venv "$VENV_DIR"
fi
stamp="$VENV_DIR/.requirements-test.sha256"
want="$(cat requirements.txt requirements-test.txt | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
    echo "Installing requirements (first run or requirements changed)"
    "$VENV_DIR/bin/python" -m pip install --quiet --upgrade pip
    "$VENV_DIR/bin/python" -m pip install --quiet -r requirements.txt -r requirements-test.txt
    echo "$want" > "$stamp"
    # webui.sh's stamp too (computed as webui.sh does, with no TORCH_COMMAND), so that ./webui.sh after the
    # tests starts at once instead of installing the same requirements again
    printf '%s' "$(cat requirements.txt; echo "")" | sha256sum | cut -d' ' -f1 > "$VENV_DIR/.installed"
fi

# Browser tests drive Debian's Chromium (Playwright cannot download its own browser here).
if ! command -v chromium >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "Installing Chromium for the browser tests"
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
            || echo "Could not install Chromium: browser tests will be skipped"
    else
        echo "Chromium not found: browser tests will be skipped (install the 'chromium' package to run them)"
    fi
fi

export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 GRADIO_ANALYTICS_ENABLED=False
echo "Linting (ruff, settings in pyproject.toml)"
"$VENV_DIR/bin/ruff" check .
exec "$VENV_DIR/bin/python" -m pytest "$@"
