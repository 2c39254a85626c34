"""Writing and reading the user's own files (config.json, styles.csv, cache.json, ui-config.json) safely.

A file is written to a fresh temporary file next to it and renamed over it, under one lock per file, so a
reader never sees half a file, two writers never share a temporary file, and a writer killed mid-save leaves
the old file whole. A file that cannot be read is moved aside as `name.bad-<date>` rather than overwritten.
Standard library only: every layer may use it.
"""
from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)

NEW_FILE_MODE = 0o644
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)

_locks: dict[Path, threading.RLock] = {}
_locks_guard = threading.Lock()


class DiskFullError(OSError):
    """A write failed for lack of space; the message says so in plain words."""


def _lock_for(path: Path) -> threading.RLock:
    key = Path(os.path.abspath(path))
    with _locks_guard:
        return _locks.setdefault(key, threading.RLock())


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold the file's lock, e.g. around read, merge and write. Re-entrant: writing inside is fine."""
    with _lock_for(path):
        yield


def write_atomically(path: Path, data: bytes | str, encoding: str = "utf-8") -> None:
    """Replace `path` with `data` in one step. On failure the old file is untouched and no temporary file is
    left; a full disk raises DiskFullError."""
    path = Path(path)
    raw = data.encode(encoding) if isinstance(data, str) else data
    with locked(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(raw)
                f.flush()
                os.fsync(f.fileno())
            if path.exists():
                shutil.copymode(path, tmp)
            else:
                os.chmod(tmp, NEW_FILE_MODE)
            os.replace(tmp, path)
        except BaseException as e:
            Path(tmp).unlink(missing_ok=True)
            if isinstance(e, OSError) and e.errno in _NO_SPACE:
                full = DiskFullError(f"disk full: {path} could not be saved; free some space and try again")
                full.errno = e.errno
                raise full from e
            raise


def write_json(path: Path, data: object) -> None:
    """`data` as indented JSON; NaN and infinities are refused (they are not JSON)."""
    write_atomically(path, json.dumps(data, indent=4, ensure_ascii=False, allow_nan=False))


def quarantine(path: Path, reason: str) -> Path | None:
    """Move an unreadable file aside as `name.bad-<date>` so that nothing overwrites it, and say so.
    Returns the new name (None if it could not be moved)."""
    path = Path(path)
    with locked(path):
        stamp = time.strftime("%Y%m%d-%H%M%S")
        target = path.with_name(f"{path.name}.bad-{stamp}")
        n = 1
        while target.exists():
            n += 1
            target = path.with_name(f"{path.name}.bad-{stamp}-{n}")
        try:
            os.replace(path, target)
        except OSError as e:
            log.error("%s is unreadable (%s) and could not be moved aside (%s)", path, reason, e)
            return None
    log.error("%s is unreadable (%s): kept it as %s and started from the defaults", path, reason, target)
    return target


def remove_leftover_temp_files(path: Path, older_than_s: float = 60.0) -> None:
    """Temporary files of `path` left by a writer that was killed mid-save (kill -9, power loss). Only old
    ones go, so another process saving right now keeps its own."""
    path = Path(path)
    cutoff = time.time() - older_than_s
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        try:
            if tmp.stat().st_mtime < cutoff:
                tmp.unlink()
                log.info("removed %s, left by an interrupted save", tmp)
        except OSError:
            continue


def read_json_object(path: Path) -> dict:
    """The JSON object in `path`; {} when there is no file. A file that is not a JSON object is quarantined
    and {} returned; one that cannot be opened is reported and left alone."""
    path = Path(path)
    with locked(path):
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return {}
        except OSError as e:
            log.error("cannot read %s (%s); using the defaults", path, e)
            return {}
        try:
            data = json.loads(raw.decode("utf-8-sig"))
        except ValueError as e:  # UnicodeDecodeError included
            quarantine(path, f"not valid JSON: {e}")
            return {}
        if not isinstance(data, dict):
            quarantine(path, f"expected a JSON object, found {type(data).__name__}")
            return {}
        return data
