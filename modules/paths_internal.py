"""A1111's `modules.paths_internal`: where the program and its data are."""
from __future__ import annotations

from pathlib import Path

from modules import paths
from modules.paths import REPO_ROOT

script_path = paths.script_path
extensions_builtin_dir = paths.extensions_builtin_dir
sd_configs_path = str(REPO_ROOT / "configs")


def __getattr__(name: str):
    """The data folders follow --data-dir (see modules.paths)."""
    if name == "default_output_dir":
        return str(Path(paths.data_path) / "outputs")
    return getattr(paths, name)

cwd = str(Path.cwd())  # where the program was started from
