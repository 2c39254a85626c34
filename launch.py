"""A1111's `launch` module, for extensions' install.py files (`import launch; launch.is_installed(...)`,
`launch.run_pip(...)`), which the Extensions loader runs with this program's python. `python launch.py [flags]`
starts the web UI, as `python webui.py` does.

Nothing here downloads by itself: `run_pip` and `git_clone` run pip and git when an install.py asks, and fail
plainly without a network (the extension is then reported as failed and not loaded).
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

python = sys.executable
git = os.environ.get("GIT", "git")
index_url = os.environ.get("INDEX_URL", "")
script_path = str(Path(__file__).resolve().parent)
dir_repos = "repositories"
skip_install = False


def is_installed(package: str) -> bool:
    """Whether a distribution (or an importable module) of that name is installed; a version requirement such as
    "foo>=1.2" is read for its name only."""
    name = re.split(r"[<>=!~\[; ]", package.strip(), maxsplit=1)[0]
    try:
        importlib.metadata.distribution(name)
        return True
    except importlib.metadata.PackageNotFoundError:
        pass
    try:
        return importlib.util.find_spec(name.replace("-", "_")) is not None
    except (ImportError, ValueError):
        return False


def run(command: str | list[str], desc: str | None = None, errdesc: str | None = None, custom_env: dict | None = None,
        live: bool = True) -> str:
    """Run a command (a list, or a string split as a shell would, never through a shell); its output, or
    RuntimeError with `errdesc` and the output when it fails."""
    if desc:
        print(desc, flush=True)
    argv = command if isinstance(command, list) else shlex.split(command)
    done = subprocess.run(argv, env=os.environ if custom_env is None else custom_env, capture_output=not live,
                          text=True)
    if done.returncode != 0:
        output = "" if live else f"\n{done.stdout}\n{done.stderr}"
        raise RuntimeError(f"{errdesc or 'Error running command'}.\nCommand: {argv}\n"
                           f"Error code: {done.returncode}{output}")
    return "" if live else done.stdout


def run_pip(command: str, desc: str | None = None, live: bool = True) -> str:
    """`pip <command>` with this program's python (A1111 prefixes "install" commands the same way)."""
    if skip_install:
        return ""
    index = ["--index-url", index_url] if index_url else []
    return run([python, "-m", "pip", *shlex.split(command), "--prefer-binary", *index],
               desc=f"Installing {desc}" if desc else None, errdesc=f"Couldn't install {desc or command}", live=live)


def repo_dir(name: str) -> str:
    return os.path.join(script_path, dir_repos, name)


def git_clone(url: str, dir: str, name: str, commithash: str | None = None) -> None:  # noqa: A002 - A1111's name
    """Clone `url` into `dir` (left alone when it is there), at `commithash` if given."""
    if os.path.exists(dir):
        return
    run([git, "clone", "--", url, dir], f"Cloning {name} into {dir}...", f"Couldn't clone {name}")
    if commithash:
        run([git, "-C", dir, "checkout", commithash], None, f"Couldn't checkout {name}'s hash: {commithash}")


def commit_hash() -> str:
    try:
        return subprocess.check_output([git, "-C", script_path, "rev-parse", "HEAD"], text=True).strip()
    except (OSError, subprocess.CalledProcessError):
        return "<none>"


if __name__ == "__main__":
    sys.path.insert(0, script_path)
    import webui
    sys.exit(webui.main())
