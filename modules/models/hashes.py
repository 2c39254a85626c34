"""SHA-256 of model files, cached in a JSON file so a restart does not re-read gigabytes.

A1111 shows the first 10 hex digits ("Model hash: 6ce0161689"). An entry is reused while the
file's size and modification time are unchanged. A cache file of the wrong shape is kept as
cache.json.bad-<date> and the cache starts empty; other top-level keys of the file are kept on save.
"""
from __future__ import annotations

import hashlib
import logging
import threading
from pathlib import Path

from modules import user_files

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
        user_files.remove_leftover_temp_files(cache_file)
        self._entries = self._read_entries()

    def _read_entries(self) -> dict[str, dict]:
        entries = user_files.read_json_object(self.cache_file).get("hashes", {})
        if not isinstance(entries, dict):
            user_files.quarantine(self.cache_file, f'"hashes" is a {type(entries).__name__}, not an object')
            return {}
        return {path: e for path, e in entries.items() if _is_entry(e)}

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
        """A cache that cannot be written (disk full...) costs a re-hash next time, nothing more."""
        try:
            with user_files.locked(self.cache_file):
                data = user_files.read_json_object(self.cache_file)
                theirs = data.get("hashes")  # another instance may have added entries since we read
                if isinstance(theirs, dict):
                    self._entries = {**{k: e for k, e in theirs.items() if _is_entry(e)}, **self._entries}
                data["hashes"] = self._entries
                user_files.write_json(self.cache_file, data)
        except OSError as e:
            log.warning("hash cache not saved: %s", e)


def _is_entry(entry: object) -> bool:
    return (isinstance(entry, dict) and isinstance(entry.get("sha256"), str)
            and isinstance(entry.get("mtime"), int | float) and isinstance(entry.get("size"), int))
