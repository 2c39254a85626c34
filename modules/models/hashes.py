"""SHA-256 of model files, cached in a JSON file so a restart does not re-read gigabytes.

A1111 shows the first 10 hex digits ("Model hash: 6ce0161689"). An entry is reused while the
file's size and modification time are unchanged.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from pathlib import Path

log = logging.getLogger(__name__)

CHUNK = 1 << 20


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
    return h.hexdigest()


class HashCache:
    def __init__(self, cache_file: Path):
        self.cache_file = cache_file
        self._lock = threading.Lock()
        self._entries: dict[str, dict] = {}
        if cache_file.is_file():
            try:
                self._entries = json.loads(cache_file.read_text(encoding="utf-8")).get("hashes", {})
            except (OSError, ValueError) as e:
                log.warning("ignoring unreadable hash cache %s: %s", cache_file, e)

    @staticmethod
    def _stamp(path: Path) -> tuple[float, int]:
        st = path.stat()
        return st.st_mtime, st.st_size

    def cached(self, path: Path) -> str | None:
        """The known hash if the file is unchanged since it was hashed, else None (no file read)."""
        entry = self._entries.get(str(Path(path).resolve()))
        try:
            mtime, size = self._stamp(path)
        except OSError:
            return None
        if entry and entry.get("mtime") == mtime and entry.get("size") == size:
            return entry["sha256"]
        return None

    def sha256(self, path: Path) -> str:
        """The file's hash, computed now if unknown or stale, and remembered."""
        known = self.cached(path)
        if known:
            return known
        log.info("calculating sha256 for %s", path)
        digest = sha256_of(path)
        mtime, size = self._stamp(path)
        with self._lock:
            self._entries[str(Path(path).resolve())] = {"mtime": mtime, "size": size, "sha256": digest}
            self._save()
        return digest

    def _save(self) -> None:
        self.cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.cache_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"hashes": self._entries}, indent=1), encoding="utf-8")
        os.replace(tmp, self.cache_file)
