"""UI translations: `localizations/NAME.json` maps English UI text to its translation (A1111's format)."""
from __future__ import annotations

import json
import logging
from pathlib import Path

log = logging.getLogger(__name__)


def list_localizations(folders: list[Path]) -> list[str]:
    names = []
    for folder in folders:
        if folder.is_dir():
            names += [p.stem for p in sorted(folder.glob("*.json")) if p.stem not in names]
    return names


def load_localization(folders: list[Path], name: str) -> dict[str, str]:
    """The mapping for `name` ("None" or unknown: none); a broken file is logged and ignored."""
    if not name or name == "None":
        return {}
    for folder in folders:
        path = folder / f"{name}.json"
        if path.is_file():
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as e:
                log.warning("localization %s is unreadable: %s", path, e)
                return {}
            return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}
    log.warning("localization %r not found in %s", name, ", ".join(map(str, folders)))
    return {}
