"""Prompt styles kept in an A1111-compatible CSV file (`styles.csv`: name, prompt, negative_prompt).

A style's text either contains `{prompt}`, which the user's prompt replaces, or is appended to
the prompt after ", ". `extract_styles` undoes that, so a prompt read back from an image's
parameters can be shown as the user's own text plus the styles that were applied to it.
"""
from __future__ import annotations

import csv
import logging
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields
from pathlib import Path

log = logging.getLogger(__name__)

PLACEHOLDER = "{prompt}"


class StyleError(Exception):
    """The styles file cannot be read or written; the message says which and why."""


@dataclass(frozen=True)
class PromptStyle:
    name: str
    prompt: str = ""
    negative_prompt: str = ""


COLUMNS = [f.name for f in fields(PromptStyle)]


def merge_prompt(style_text: str, prompt: str) -> str:
    """Apply one style's text to a prompt."""
    if PLACEHOLDER in style_text:
        return style_text.replace(PLACEHOLDER, prompt)
    return ", ".join(part for part in (prompt.strip(), style_text.strip()) if part)


def unmerge_prompt(style_text: str, prompt: str) -> str | None:
    """The prompt that `merge_prompt(style_text, ...)` turned into `prompt`, or None if it did not.

    Both sides are compared stripped, since saved parameters lose outer whitespace. An appended
    style must sit after a comma (or be the whole prompt): "bored" does not end with style "red".
    """
    text, style = prompt.strip(), style_text.strip()
    if PLACEHOLDER in style:
        parts = [re.escape(p) for p in style.split(PLACEHOLDER)]
        # every placeholder received the same prompt, hence the back-references
        pattern = parts[0] + "(?P<p>.*)" + "(?P=p)".join(parts[1:])
        m = re.fullmatch(pattern, text, flags=re.DOTALL)
        return m.group("p") if m else None
    if not style:  # an empty style only stripped the prompt
        return text
    if not text.endswith(style):
        return None
    rest = text[:len(text) - len(style)].rstrip()
    if not rest:
        return ""
    return rest[:-1].rstrip() if rest.endswith(",") else None


class StyleDatabase:
    """The styles of one CSV file. A file that cannot be read leaves the database empty and
    `error` set; saving is then refused so that the user's file is not overwritten."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.styles: dict[str, PromptStyle] = {}
        self.error: str | None = None
        self._lock = threading.Lock()
        self.reload()

    def reload(self) -> None:
        with self._lock:
            styles, error = {}, None
            try:
                if self.path.exists():
                    styles = self._read()
            except (OSError, UnicodeDecodeError, csv.Error, StyleError) as e:
                error = f"cannot read styles from {self.path}: {e}"
                log.warning("%s", error)
            self.styles, self.error = styles, error

    def _read(self) -> dict[str, PromptStyle]:
        styles: dict[str, PromptStyle] = {}
        with open(self.path, encoding="utf-8-sig", newline="") as f:
            reader = csv.DictReader(f, skipinitialspace=True)
            header = reader.fieldnames or []
            if not header:  # an empty file holds no styles
                return styles
            prompt_column = "prompt" if "prompt" in header else "text"  # "text": A1111's oldest format
            if "name" not in header or prompt_column not in header:
                raise StyleError(f"expected a header line with the columns {', '.join(COLUMNS)}; "
                                 f"found {', '.join(str(h) for h in header) or 'nothing'}")
            for row in reader:
                name = row["name"] or ""
                if not name.strip() or name.startswith("#"):  # blank name or a comment line
                    continue
                styles[name] = PromptStyle(name, row[prompt_column] or "", row.get("negative_prompt") or "")
        return styles

    def names(self) -> list[str]:
        return list(self.styles)

    def apply_to_prompt(self, prompt: str, style_names: Iterable[str]) -> str:
        for name in style_names:
            if style := self.styles.get(name):
                prompt = merge_prompt(style.prompt, prompt)
        return prompt

    def apply_to_negative(self, negative_prompt: str, style_names: Iterable[str]) -> str:
        for name in style_names:
            if style := self.styles.get(name):
                negative_prompt = merge_prompt(style.negative_prompt, negative_prompt)
        return negative_prompt

    def extract_styles(self, prompt: str, negative_prompt: str) -> tuple[str, str, list[str]]:
        """Split styles off prompts that `apply_to_*` produced: (prompt, negative, style names in
        the order they were applied). The last applied style is the outermost, so styles are
        peeled off one at a time, each used at most once."""
        candidates = [s for s in self.styles.values() if s.prompt or s.negative_prompt]
        found: list[str] = []
        while True:
            for style in candidates:
                positive = unmerge_prompt(style.prompt, prompt)
                if positive is None:
                    continue
                negative = unmerge_prompt(style.negative_prompt, negative_prompt)
                if negative is not None:
                    prompt, negative_prompt = positive, negative
                    found.append(style.name)
                    candidates.remove(style)
                    break
            else:
                return prompt, negative_prompt, found[::-1]

    def save_style(self, style: PromptStyle) -> None:
        """Add the style, or replace the one of that name in its place, and write the file."""
        if not style.name.strip() or style.name.startswith("#"):
            raise ValueError("a style needs a name, not starting with '#' (that marks a comment line)")
        with self._lock:
            self._check_writable()
            self._write({**self.styles, style.name: style})

    def delete_style(self, name: str) -> bool:
        """Remove a style and write the file; False if there was no such style."""
        with self._lock:
            self._check_writable()
            if name not in self.styles:
                return False
            self._write({k: v for k, v in self.styles.items() if k != name})
            return True

    def _check_writable(self) -> None:
        if self.error:
            raise StyleError(f"{self.error}. Fix or remove that file before saving styles, "
                             f"so that it is not overwritten.")

    def _write(self, styles: dict[str, PromptStyle]) -> None:
        """Write `styles` to a temporary file next to the real one, keep the old file as .bak, swap
        the new one in, and only then adopt `styles`: a failed write changes nothing."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=self.path.name + ".", suffix=".tmp", dir=self.path.parent)
        try:
            # utf-8-sig and \r\n line ends, as A1111 writes the file
            with os.fdopen(fd, "w", encoding="utf-8-sig", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=COLUMNS)
                writer.writeheader()
                writer.writerows(asdict(s) for s in styles.values())
                f.flush()
                os.fsync(f.fileno())
            if self.path.exists():
                shutil.copymode(self.path, tmp)
                shutil.copy2(self.path, self.path.with_name(self.path.name + ".bak"))
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self.styles = styles
