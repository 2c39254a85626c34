"""File and folder names from A1111's patterns: "[seed]-[prompt_spaces]", "[date]", "[datetime<%Y%m%d><UTC>]"...

A tag is `[name]`, optionally followed by arguments in angle brackets: `[datetime<format><time zone>]`. A tag
the generator does not know, or one whose value is not known here, stays in the name as written. Values are
cleaned the way A1111 cleans them (characters Windows forbids become "_", 128 characters at most); the names
built from a whole pattern are cleaned again, so no pattern can name a place outside the output folder.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import logging
import re
import string
from dataclasses import dataclass, field
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from PIL import Image

INVALID_CHARS = '#<>:"/\\|?*\n\r\t'  # A1111's: forbidden on Windows, or confusing in a URL or shell
MAX_PART_LENGTH = 128  # one tag's value (A1111's --filenames-max-length default)
NAME_MAX_BYTES = 255  # one file or folder name on common file systems
log = logging.getLogger(__name__)
MAX_SUBFOLDERS = 8
DEFAULT_TIME_FORMAT = "%Y%m%d%H%M%S"
WINDOWS_RESERVED = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)), *(f"LPT{i}" for i in range(1, 10))}

_TAG = re.compile(r"(.*?)(?:\[([^\[\]]+)\]|$)", re.DOTALL)  # text before a tag, and the tag
MAX_ARGS = 16  # of one tag: more are no tag we know (and a huge pattern stays quick)
_NON_LETTERS = re.compile(r"[\s" + re.escape(string.punctuation) + "]+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_SKIP = object()  # the tag and the text since the previous tag are left out ([seed_last] of a single picture)


def _split_args(tag: str) -> tuple[str, list[str]]:
    """"datetime<%Y><UTC>" -> ("datetime", ["%Y", "UTC"]): arguments are taken off the end, each the text
    between the last "<" and a final ">" with no ">" inside."""
    args: list[str] = []
    while tag.endswith(">") and len(args) < MAX_ARGS:
        start = tag.rfind("<", 0, len(tag) - 1)
        if start < 0 or ">" in tag[start + 1:-1]:
            break
        args.insert(0, tag[start + 1:-1])
        tag = tag[:start]
    return tag, args


def sanitize_part(text: str | None, replace_spaces: bool = True) -> str | None:
    """One tag's value as A1111 cleans it: no forbidden characters, no leading spaces, no trailing spaces or
    dots, at most MAX_PART_LENGTH characters; spaces become "_" unless `replace_spaces` is off."""
    if text is None:
        return None
    if replace_spaces:
        text = text.replace(" ", "_")
    text = text.translate({ord(c): "_" for c in INVALID_CHARS})
    return text.lstrip(" ")[:MAX_PART_LENGTH].rstrip(" .")


def truncate_bytes(text: str, limit: int) -> str:
    """`text` cut to at most `limit` bytes of UTF-8, never inside a character."""
    return text.encode("utf-8")[:max(limit, 0)].decode("utf-8", errors="ignore")


def safe_name(text: str, max_bytes: int = NAME_MAX_BYTES) -> str:
    """A single file or folder name made of `text`: no separators or forbidden characters, not "." or "..",
    not a device name Windows reserves, not ending in a dot or space, and short enough to create."""
    text = _CONTROL.sub("_", text.translate({ord(c): "_" for c in INVALID_CHARS})).strip(" ")
    if text.split(".")[0].rstrip(" ").upper() in WINDOWS_RESERVED:
        text = "_" + text
    return truncate_bytes(text, max_bytes).rstrip(" .")  # "." and ".." become ""


def safe_subfolders(text: str) -> list[str]:
    """A folder pattern's result as names of nested folders: "/" and "\\" separate them; empty parts, "." and
    ".." are dropped, so the folders always lie inside the output folder."""
    return [name for name in (safe_name(part) for part in re.split(r"[\\/]+", text)) if name]


@dataclass
class NameInfo:
    """What the tags of a pattern can name; None: not known (the tag stays as written)."""
    seed: int | None = None
    prompt: str | None = None
    prompt_no_styles: str | None = None  # the prompt as typed, before styles were added
    negative_prompt: str | None = None
    steps: int | None = None
    cfg_scale: float | None = None
    sampler: str | None = None
    scheduler: str | None = None
    styles: list[str] | None = None
    model_name: str | None = None
    model_hash: str | None = None
    vae_file: str | None = None  # the external VAE's file name; None: the checkpoint's own
    clip_skip: int | None = None
    denoising: float | None = None
    job_timestamp: str | None = None
    batch_size: int = 1
    n_iter: int = 1
    batch_index: int = 0  # the picture's place in its batch
    iteration: int = 0  # its batch's place in the job
    all_seeds: list[int] = field(default_factory=list)

    @classmethod
    def from_params(cls, params: dict) -> NameInfo:
        """What a picture's parsed infotext (infotext_utils.parse_generation_parameters) tells: for pictures saved
        after the job, as the page's Save button does."""
        def number(key: str, kind):
            try:
                return kind(params[key])
            except (KeyError, TypeError, ValueError):
                return None
        styles = params.get("Styles array")
        return cls(seed=number("Seed", int), prompt=params.get("Prompt"),
                   negative_prompt=params.get("Negative prompt"), steps=number("Steps", int),
                   cfg_scale=number("CFG scale", float), sampler=params.get("Sampler"),
                   scheduler=params.get("Schedule type"), styles=styles if isinstance(styles, list) else None,
                   model_name=params.get("Model"), model_hash=params.get("Model hash"), vae_file=params.get("VAE"),
                   clip_skip=number("Clip skip", int), denoising=number("Denoising strength", float))


class FilenameGenerator:
    """Turns a pattern into text for one picture: `FilenameGenerator(info, image).apply("[seed]-[prompt]")`."""

    def __init__(self, info: NameInfo, image: Image.Image | None = None, *, max_prompt_words: int = 8,
                 zip: bool = False, now: dt.datetime | None = None):
        self.info = info
        self.image = image
        self.max_prompt_words = max_prompt_words
        self.zip = zip  # naming an archive: no per-picture numbers
        self.now = now or dt.datetime.now()

    # ---- the tags ----
    def _value(self, tag: str, args: list[str]):  # noqa: C901 (one table of tags)
        i = self.info
        single = i.batch_size == 1
        match tag:
            case "seed":
                return "" if i.seed is None else i.seed
            case "seed_first":
                return i.seed if single or not i.all_seeds else i.all_seeds[0]
            case "seed_last":
                return _SKIP if single or not i.all_seeds else i.all_seeds[-1]
            case "steps":
                return i.steps
            case "cfg":
                return i.cfg_scale
            case "width":
                return self.image.width if self.image is not None else None
            case "height":
                return self.image.height if self.image is not None else None
            case "sampler":
                return sanitize_part(i.sampler, replace_spaces=False)
            case "scheduler":
                return sanitize_part(i.scheduler, replace_spaces=False)
            case "sampler_scheduler":
                if i.sampler is None or i.scheduler is None:
                    return None
                return sanitize_part(f"{i.sampler} {i.scheduler}", replace_spaces=False)
            case "styles":
                if i.styles is None:
                    return None
                return sanitize_part(", ".join(s for s in i.styles if s != "None") or "None", replace_spaces=False)
            case "model_name":
                return sanitize_part(i.model_name, replace_spaces=False)
            case "model_hash":
                return sanitize_part(i.model_hash)
            case "vae_filename":
                return self._vae_filename()
            case "date":
                return self.now.strftime("%Y-%m-%d")
            case "datetime":
                return self._datetime(args)
            case "job_timestamp":
                return i.job_timestamp
            case "prompt":
                return sanitize_part(i.prompt)
            case "prompt_spaces":
                return sanitize_part(i.prompt, replace_spaces=False)
            case "prompt_no_styles":
                text = i.prompt_no_styles if i.prompt_no_styles is not None else i.prompt
                return sanitize_part(text, replace_spaces=False)
            case "prompt_words":
                return self._prompt_words()
            case "negative_prompt":
                return sanitize_part(i.negative_prompt)
            case "prompt_hash":
                return self._hash(i.prompt, args, 8)
            case "negative_prompt_hash":
                return self._hash(i.negative_prompt, args, 8)
            case "full_prompt_hash":
                return self._hash(None if i.prompt is None else f"{i.prompt} {i.negative_prompt or ''}", args, 8)
            case "image_hash":
                return self._hash(self.image.tobytes() if self.image is not None else None, args, None)
            case "hasprompt":
                return self._hasprompt(args)
            case "clip_skip":
                return i.clip_skip
            case "denoising":
                return i.denoising if i.denoising else _SKIP
            case "batch_number":
                return _SKIP if single or self.zip else i.batch_index + 1
            case "batch_size":
                return i.batch_size
            case "generation_number":
                if (i.n_iter == 1 and single) or self.zip:
                    return _SKIP
                return i.iteration * i.batch_size + i.batch_index + 1
            case "none":
                return ""
        return None

    def _vae_filename(self) -> str:
        """A1111's: the VAE file's name up to its first dot ("NoneType" when the checkpoint's own is used)."""
        if not self.info.vae_file:
            return "NoneType"
        parts = Path(self.info.vae_file).name.split(".")
        return sanitize_part(parts[1] if len(parts) > 1 and parts[0] == "" else parts[0], replace_spaces=False)

    def _prompt_words(self) -> str:
        words = [w for w in _NON_LETTERS.split(self.info.prompt or "") if w] or ["empty"]
        return sanitize_part(" ".join(words[:self.max_prompt_words]), replace_spaces=False)

    def _datetime(self, args: list[str]) -> str:
        fmt = args[0] if args and args[0] else DEFAULT_TIME_FORMAT
        zone = None
        if len(args) > 1 and args[1]:
            try:
                zone = ZoneInfo(args[1])
            except (ZoneInfoNotFoundError, ValueError, OSError):
                zone = None  # an unknown zone: local time, as A1111
        moment = self.now.astimezone(zone)
        try:
            text = moment.strftime(fmt)
        except (ValueError, TypeError):
            text = moment.strftime(DEFAULT_TIME_FORMAT)
        return sanitize_part(text, replace_spaces=False)

    def _hasprompt(self, args: list[str]) -> str | None:
        """[hasprompt<word|otherwise><word2>...]: each word the prompt contains, else its `otherwise` text."""
        if self.info.prompt is None:
            return None
        prompt = self.info.prompt.lower()
        out = ""
        for arg in args:
            if not arg:
                continue
            parts = arg.split("|")  # as A1111: the text after the first "|" (up to a second one) if absent
            wanted, otherwise = parts[0], parts[1] if len(parts) > 1 else ""
            out += wanted.lower() if wanted.lower() in prompt else otherwise
        return sanitize_part(out)

    @staticmethod
    def _hash(data: str | bytes | None, args: list[str], default_length: int | None) -> str | None:
        if data is None:
            return None
        if isinstance(data, str):
            data = data.encode("utf-8")
        digits = args[0] if args else ""
        length = int(digits) if digits.isascii() and digits.isdigit() and len(digits) <= 2 else default_length
        return hashlib.sha256(data).hexdigest()[:length]

    # ---- a pattern ----
    def apply(self, pattern: str) -> str:
        """The pattern with its tags replaced (not yet made a safe name: see `file_stem`, `subfolders`)."""
        out = ""
        for m in _TAG.finditer(pattern):
            text, tag = m.groups()
            if tag is None:
                out += text
                continue
            name, args = _split_args(tag)
            try:
                value = self._value(name.lower(), args)
            except Exception as e:  # noqa: BLE001 (as A1111: a tag that fails stays as written, the save goes on)
                log.warning("file name pattern: [%s] not replaced: %s", tag[:100], e)
                value = None
            if value is _SKIP:
                continue
            out += text + (f"[{name}]" if value is None else str(value))
        return out

    def file_stem(self, pattern: str) -> str:
        """A file name (without extension) from `pattern`: one name, whatever the pattern holds."""
        return safe_name(self.apply(pattern))

    def subfolders(self, pattern: str) -> list[str]:
        """Nested folder names from a folder pattern such as "[date]" or "[date]/[model_name]"; at most
        MAX_SUBFOLDERS deep, so that the path stays short enough to create."""
        return safe_subfolders(self.apply(pattern))[:MAX_SUBFOLDERS]
