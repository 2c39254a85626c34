#!/usr/bin/env bash
# Start the web UI, installing what it needs on the first run:  ./webui.sh [flags]   (./webui.sh --help)
# Your own settings (COMMANDLINE_ARGS, PYTHON, VENV_DIR, TORCH_COMMAND) go into webui-user.sh.
set -u
cd "$(dirname "$0")" || exit 1

if [ -f webui-user.sh ]; then
    # shellcheck disable=SC1091
    source ./webui-user.sh
fi
PYTHON="${PYTHON:-python3}"
VENV_DIR="${VENV_DIR:-venv}"
COMMANDLINE_ARGS="${COMMANDLINE_ARGS:-}"

# -f: allow running as root (as A1111's launcher); the other flags go to webui.py
force=0
args=()
for a in $COMMANDLINE_ARGS "$@"; do
    if [ "$a" = "-f" ]; then force=1; else args+=("$a"); fi
done
# (${args[@]+"${args[@]}"}: an empty array is "unbound" to the bash 3.2 that macOS ships)
has_flag() { local f; for f in ${args[@]+"${args[@]}"}; do [ "$f" = "$1" ] && return 0; done; return 1; }

if [ "$(id -u)" -eq 0 ] && [ "$force" -ne 1 ]; then
    echo "ERROR: do not run this as root: it would create files only root can change."
    echo "Run it as your normal user, or add -f to do it anyway."
    exit 1
fi

if ! command -v "$PYTHON" >/dev/null 2>&1; then
    echo "ERROR: '$PYTHON' was not found. Install Python 3.10 to 3.13 (e.g. 'sudo apt install python3 python3-venv'),"
    echo "or set PYTHON in webui-user.sh to the python you want to use."
    exit 1
fi
if ! "$PYTHON" -c 'import sys; sys.exit(0 if (3, 10) <= sys.version_info[:2] <= (3, 13) else 1)'; then
    echo "ERROR: Python 3.10 to 3.13 is needed; $PYTHON is $("$PYTHON" -c 'import platform; print(platform.python_version())')."
    echo "Install a supported version and set PYTHON in webui-user.sh (e.g. PYTHON=python3.11)."
    exit 1
fi

if has_flag --skip-prepare-environment; then
    :
else
    if [ ! -x "$VENV_DIR/bin/python" ]; then
        echo "Creating a Python environment in $VENV_DIR (first run)"
        if ! "$PYTHON" -m venv "$VENV_DIR"; then
            echo "ERROR: could not create the environment. On Debian/Ubuntu: sudo apt install python3-venv"
            exit 1
        fi
    fi
    if ! has_flag --skip-install; then
        stamp="$VENV_DIR/.installed"
        want="$(cat requirements.txt; echo "${TORCH_COMMAND:-}")"
        want="$(printf '%s' "$want" | sha256sum | cut -d' ' -f1)"
        if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
            echo "Installing requirements (first run or requirements changed; this takes a few minutes)"
            "$VENV_DIR/bin/python" -m pip install --upgrade pip >/dev/null || exit 1
            torch_pins="$(grep -E '^(torch|torchvision)==' requirements.txt | tr '\n' ' ')"
            if [ -n "${TORCH_COMMAND:-}" ]; then
                echo "Installing torch with: $TORCH_COMMAND"
                (source "$VENV_DIR/bin/activate" && eval "$TORCH_COMMAND") || exit 1
            elif ! "$VENV_DIR/bin/python" -c 'import torch, torchvision' >/dev/null 2>&1; then
                # shellcheck disable=SC2086
                "$VENV_DIR/bin/python" -m pip install $torch_pins || exit 1
            fi
            # the rest; torch lines left out so a torch build of the user's choice stays
            grep -vE '^(torch|torchvision)==' requirements.txt > "$VENV_DIR/.requirements-rest.txt"
            "$VENV_DIR/bin/python" -m pip install -r "$VENV_DIR/.requirements-rest.txt" || exit 1
            echo "$want" > "$stamp"
        fi
    fi
fi

export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 GRADIO_ANALYTICS_ENABLED=False
exec "$VENV_DIR/bin/python" webui.py ${args[@]+"${args[@]}"}
