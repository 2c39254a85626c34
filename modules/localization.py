"""UI translations: `localizations/NAME.json` maps English UI text to its translation (A1111's format)."""
from __future__ import annotations

import json
import logging
from pathlib import Path

log = logging.getLogger(__name__)


def localization_folders(repo_root: Path, extensions_dir: Path) -> list[Path]:
    """localizations/ and each extension's localizations/ folder, as A1111 looks them up."""
    extension_folders = sorted(extensions_dir.glob("*/localizations")) if extensions_dir.is_dir() else []
    return [repo_root / "localizations", *extension_folders]


def list_localizations(folders: list[Path]) -> list[str]:
    names = []
    for folder in folders:
        if folder.is_dir():
            names += [p.stem for p in sorted(folder.glob("*.json")) if p.stem not in names]
    return names


def load_localization(folders: list[Path], name: str) -> dict[str, str]:
    """The mapping for `name` ("None" or unknown: none); a broken file is logged and ignored.

    Only the names list_localizations shows are looked up: the setting comes from the page and the API, and a
    path there must not serve some other JSON file to every visitor."""
    if not name or name == "None":
        return {}
    if name not in list_localizations(folders):
        log.warning("localization %r not found in %s", name, ", ".join(map(str, folders)))
        return {}
    path = next(folder / f"{name}.json" for folder in folders if (folder / f"{name}.json").is_file())
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        log.warning("localization %s is unreadable: %s", path, e)
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}
