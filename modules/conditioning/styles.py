"""Prompt styles kept in an A1111-compatible CSV file (`styles.csv`: name, prompt, negative_prompt).

A style's text either contains `{prompt}`, which the user's prompt replaces, or is appended to
the prompt after ", ". `extract_styles` undoes that, so a prompt read back from an image's
parameters can be shown as the user's own text plus the styles that were applied to it.
"""
from __future__ import annotations

import csv
import io
import logging
import re
import threading
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from modules import user_files

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
        with self._lock, user_files.locked(self.path):
            self._check_writable()
            styles = self._current()
            self._write({**styles, style.name: style})

    def delete_style(self, name: str) -> bool:
        """Remove a style and write the file; False if there was no such style."""
        with self._lock, user_files.locked(self.path):
            self._check_writable()
            styles = self._current()
            if name not in styles:
                self.styles = styles
                return False
            self._write({k: v for k, v in styles.items() if k != name})
            return True

    def _check_writable(self) -> None:
        if self.error:
            raise StyleError(self._refusal())

    def _refusal(self) -> str:
        return f"{self.error}. Fix or remove that file before saving styles, so that it is not overwritten."

    def _current(self) -> dict[str, PromptStyle]:
        """The file's styles as they are now: the user may have edited it since it was read."""
        try:
            return self._read() if self.path.exists() else {}
        except (OSError, UnicodeDecodeError, csv.Error, StyleError) as e:
            self.error = f"cannot read styles from {self.path}: {e}"
            raise StyleError(self._refusal()) from e

    def _write(self, styles: dict[str, PromptStyle]) -> None:
        """Keep the old file as .bak, swap the new one in (user_files.write_atomically), and only then adopt
        `styles`: a failed write changes nothing."""
        text = io.StringIO(newline="")
        writer = csv.DictWriter(text, fieldnames=COLUMNS)  # \r\n line ends and utf-8-sig, as A1111 writes it
        writer.writeheader()
        writer.writerows(asdict(s) for s in styles.values())
        try:
            with user_files.locked(self.path):
                if self.path.exists():
                    user_files.write_atomically(self.path.with_name(self.path.name + ".bak"), self.path.read_bytes())
                user_files.write_atomically(self.path, text.getvalue(), encoding="utf-8-sig")
        except user_files.DiskFullError as e:
            raise StyleError(str(e)) from e
        except OSError as e:
            raise StyleError(f"cannot write styles to {self.path}: {e}") from e
        self.styles = styles
