#!/usr/bin/env bash
# Your settings for ./webui.sh. Uncomment and change what you need; this file is yours (webui.sh reads it).

# Flags for webui.py, e.g. for a 6 GB card shared on your network:
#export COMMANDLINE_ARGS="--medvram --listen"

# The python used to create the environment:
#PYTHON=python3.11

# Where the environment lives:
#VENV_DIR=venv

# How torch is installed, for another build than the default one, e.g. AMD (ROCm) or CPU-only:
#export TORCH_COMMAND="pip install torch torchvision --index-url <your torch package index>"
