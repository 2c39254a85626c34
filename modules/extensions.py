"""What is in extensions/: one folder per extension, as A1111 installs them (usually git clones).

Only listed: A1111 extensions are Python code written against A1111's internals, which this program
does not have, so none of them is run.
"""
from __future__ import annotations

import configparser
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Extension:
    name: str
    path: Path
    url: str  # the git remote, or "" when it is not a git clone
    branch: str
    commit: str  # short hash, or ""
    modified: str  # date of the newest top-level file


def _git_info(folder: Path) -> tuple[str, str, str]:
    """(remote url, branch, short commit) read from the .git folder, without running git."""
    git = folder / ".git"
    if git.is_file():  # a worktree / submodule: "gitdir: <path>"
        target = git.read_text(encoding="utf-8", errors="replace").partition("gitdir:")[2].strip()
        git = (folder / target).resolve()
    if not git.is_dir():
        return "", "", ""
    url = ""
    config = configparser.ConfigParser(strict=False)
    try:
        config.read(git / "config", encoding="utf-8")
        url = config.get('remote "origin"', "url", fallback="")
    except configparser.Error:
        pass
    branch, commit = "", ""
    try:
        head = (git / "HEAD").read_text(encoding="utf-8").strip()
    except OSError:
        return url, "", ""
    if head.startswith("ref:"):
        ref = head[4:].strip()
        branch = ref.rsplit("/", 1)[-1]
        ref_file = git / ref
        if ref_file.is_file():
            commit = ref_file.read_text(encoding="utf-8").strip()
        elif (git / "packed-refs").is_file():
            for line in (git / "packed-refs").read_text(encoding="utf-8").splitlines():
                if line.endswith(" " + ref):
                    commit = line.split()[0]
    else:
        commit = head  # detached
    return url, branch, commit[:8]


def list_extensions(folder: Path) -> list[Extension]:
    if not folder.is_dir():
        return []
    found = []
    for path in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        url, branch, commit = _git_info(path)
        try:
            newest = max((p.stat().st_mtime for p in path.iterdir()), default=path.stat().st_mtime)
        except OSError:
            newest = 0.0
        found.append(Extension(path.name, path, url, branch, commit,
                               time.strftime("%Y-%m-%d %H:%M", time.localtime(newest)) if newest else ""))
    return found
