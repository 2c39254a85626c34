"""A1111's `modules.paths_internal`: where the program and its data are."""
from __future__ import annotations

from pathlib import Path

from modules.paths import REPO_ROOT

script_path = str(REPO_ROOT)
extensions_builtin_dir = str(REPO_ROOT / "extensions-builtin")


def __getattr__(name: str):
    """The data folders follow --data-dir, known once the program is bound (modules.shared.bind)."""
    from modules import shared_services
    data = shared_services.services().paths.data_dir if shared_services.bound() else REPO_ROOT
    found = {"data_path": data, "models_path": data / "models", "extensions_dir": data / "extensions",
             "default_output_dir": data / "outputs", "sd_configs_path": REPO_ROOT / "configs"}
    if name in found:
        return str(found[name])
    raise AttributeError(f"module 'modules.paths_internal' has no attribute {name!r}")


def cwd() -> Path:
    return Path.cwd()
