@echo off
rem Your settings for webui.bat. Remove "rem" in front of what you need; this file is yours (webui.bat reads it).

rem Flags for webui.py, e.g. for a 6 GB card shared on your network:
rem set COMMANDLINE_ARGS=--medvram --listen

rem The python used to create the environment:
rem set PYTHON=C:\Python311\python.exe

rem Where the environment lives:
rem set VENV_DIR=venv

rem How torch is installed, for another build than the default one:
rem set TORCH_COMMAND=pip install torch torchvision --index-url ^<your torch package index^>
