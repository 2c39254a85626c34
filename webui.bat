@echo off
rem Start the web UI, installing what it needs on the first run:  webui.bat [flags]   (webui.bat --help)
rem Your own settings (COMMANDLINE_ARGS, PYTHON, VENV_DIR, TORCH_COMMAND) go into webui-user.bat.
rem Same steps as webui.sh; keep the two in step.
setlocal enabledelayedexpansion
cd /d "%~dp0"

if exist webui-user.bat call webui-user.bat
if not defined PYTHON set "PYTHON=python"
if not defined VENV_DIR set "VENV_DIR=venv"

rem -f (run as root) means nothing on Windows; it is dropped so the same flags work everywhere
set "ARGS="
set "SKIP_INSTALL="
set "SKIP_PREPARE="
for %%a in (%COMMANDLINE_ARGS% %*) do (
    if /i not "%%~a"=="-f" set "ARGS=!ARGS! %%a"
    if /i "%%~a"=="--skip-install" set "SKIP_INSTALL=1"
    if /i "%%~a"=="--skip-prepare-environment" set "SKIP_PREPARE=1"
)

"%PYTHON%" --version >nul 2>&1
if errorlevel 1 (
    echo ERROR: "%PYTHON%" was not found. Install Python 3.10 to 3.13 and tick "Add python.exe to PATH",
    echo or set PYTHON in webui-user.bat to the python you want to use.
    exit /b 1
)
"%PYTHON%" -c "import sys; sys.exit(0 if (3, 10) <= sys.version_info[:2] <= (3, 13) else 1)"
if errorlevel 1 (
    echo ERROR: Python 3.10 to 3.13 is needed. Install a supported version and set PYTHON in webui-user.bat.
    exit /b 1
)

if defined SKIP_PREPARE goto launch
if not exist "%VENV_DIR%\Scripts\python.exe" (
    echo Creating a Python environment in %VENV_DIR% ^(first run^)
    "%PYTHON%" -m venv "%VENV_DIR%"
    if errorlevel 1 (
        echo ERROR: could not create the environment in %VENV_DIR%.
        exit /b 1
    )
)
if defined SKIP_INSTALL goto launch
set "VPY=%VENV_DIR%\Scripts\python.exe"
for /f "usebackq" %%h in (`"%VPY%" -c "import hashlib, os; print(hashlib.sha256(open('requirements.txt', 'rb').read() + os.environ.get('TORCH_COMMAND', '').encode()).hexdigest())"`) do set "WANT=%%h"
set "HAVE="
if exist "%VENV_DIR%\.installed" set /p HAVE=<"%VENV_DIR%\.installed"
if "!HAVE!"=="!WANT!" goto launch

echo Installing requirements (first run or requirements changed; this takes a few minutes)
"%VPY%" -m pip install --upgrade pip >nul || exit /b 1
if defined TORCH_COMMAND (
    echo Installing torch with: %TORCH_COMMAND%
    call "%VENV_DIR%\Scripts\activate.bat"
    %TORCH_COMMAND%
    if errorlevel 1 exit /b 1
) else (
    "%VPY%" -c "import torch, torchvision" >nul 2>&1
    if errorlevel 1 (
        set "PINS="
        for /f "usebackq delims=" %%p in (`findstr /r /c:"^torch==" /c:"^torchvision==" requirements.txt`) do set "PINS=!PINS! %%p"
        "%VPY%" -m pip install !PINS! || exit /b 1
    )
)
rem the rest; torch lines left out so a torch build of the user's choice stays
findstr /v /r /c:"^torch==" /c:"^torchvision==" requirements.txt > "%VENV_DIR%\.requirements-rest.txt"
"%VPY%" -m pip install -r "%VENV_DIR%\.requirements-rest.txt" || exit /b 1
> "%VENV_DIR%\.installed" echo !WANT!

:launch
set HF_HUB_OFFLINE=1
set TRANSFORMERS_OFFLINE=1
set GRADIO_ANALYTICS_ENABLED=False
"%VENV_DIR%\Scripts\python.exe" webui.py %ARGS%
exit /b %errorlevel%
