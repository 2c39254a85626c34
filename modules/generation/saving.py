"""Saving images the way A1111 does: numbered files named by the user's patterns, in the folders of the
saving settings, the infotext inside (and beside, in a .txt), grids for batches."""
from __future__ import annotations

import io
import math
import os
import re
from pathlib import Path

from PIL import Image, PngImagePlugin

from modules import user_files
from modules.generation.filenames import NAME_MAX_BYTES, FilenameGenerator, NameInfo, safe_name, truncate_bytes
from modules.options import Options

EXIF_IFD = 0x8769
USER_COMMENT = 0x9286
_UNICODE_PREFIX = b"UNICODE\x00"
_NUMBER = re.compile(r"[0-9]+")
_TEMP_NAME_EXTRA = len(".") + len(".XXXXXXXX") + len(".tmp")  # user_files' temporary name around a file's name

# Where each kind of picture goes: the setting that overrides a group (A1111's "if empty, defaults to ... below")
# and the kind's own setting. Empty values (config.json files from before these had A1111's defaults) mean
# the kind's usual folder under outputs/.
FOLDER_SETTINGS = {
    "txt2img-images": ("outdir_samples", "outdir_txt2img_samples"),
    "img2img-images": ("outdir_samples", "outdir_img2img_samples"),
    "extras-images": ("outdir_samples", "outdir_extras_samples"),
    "txt2img-grids": ("outdir_grids", "outdir_txt2img_grids"),
    "img2img-grids": ("outdir_grids", "outdir_img2img_grids"),
    "init-images": ("outdir_init_images", "outdir_init_images"),
    "save": ("outdir_save", "outdir_save"),  # the page's Save button
}
_USUAL = {"save": Path("log") / "images"}  # relative to the data folder; the others lie in outputs/
_DEFAULTS = {own: Options.__dataclass_fields__[own].default for _, own in FOLDER_SETTINGS.values()}


LAST_PARAMETERS_FILE = "params.txt"  # the last generation's infotext, in the data folder (A1111's file; ↙️ reads it)


def output_folder(opts: Options, outputs_dir: Path, kind: str) -> Path:
    """The folder a kind of picture ("txt2img-images", "img2img-grids", "save"...) is saved to. `outputs_dir` is
    <data folder>/outputs; a relative setting ("outputs/txt2img-images", A1111's defaults) is taken from the data
    folder."""
    group, own = FOLDER_SETTINGS[kind]
    value = (getattr(opts, group) or getattr(opts, own) or "").strip()
    if not value or value == _DEFAULTS.get(own):  # the usual folder, wherever `outputs_dir` is
        usual = _USUAL.get(kind)
        return outputs_dir.parent / usual if usual else outputs_dir / kind
    folder = Path(value).expanduser()
    return folder if folder.is_absolute() else outputs_dir.parent / folder


def next_sequence_number(folder: Path, basename: str = "") -> int:
    """One past the highest number of the folder's files named 'NNNNN...' (or 'BASENAME-NNNN...' for a basename,
    as grids are), so numbering survives restarts (A1111's rule)."""
    prefix = f"{basename}-" if basename else ""
    highest = -1
    if folder.is_dir():
        for entry in os.scandir(folder):
            if not entry.name.startswith(prefix) or not entry.is_file():
                continue
            first = os.path.splitext(entry.name[len(prefix):])[0].split("-")[0]
            if _NUMBER.fullmatch(first):
                highest = max(highest, int(first))
    return highest + 1


def _user_comment(text: str) -> bytes:
    return _UNICODE_PREFIX + text.encode("utf-16-be")


def _decode_user_comment(raw) -> str | None:
    if isinstance(raw, str):
        return raw
    if not isinstance(raw, bytes | bytearray):
        return None
    head, body = bytes(raw[:8]), bytes(raw[8:])
    if head == _UNICODE_PREFIX:
        for enc in ("utf-16-be", "utf-16-le"):
            try:
                text = body.decode(enc)
                if text.isprintable() or "\n" in text:
                    return text
            except UnicodeDecodeError:
                continue
    return body.decode("utf-8", errors="replace").rstrip("\x00")


FORMATS = {"png": "PNG", "jpg": "JPEG", "jpeg": "JPEG", "webp": "WEBP", "avif": "AVIF"}


def image_bytes(image: Image.Image, infotext: str | None, extension: str = "png", quality: int = 95,
                lossless: bool = False) -> bytes:
    """The one writer of pictures: PNG with the infotext as a `parameters` text chunk, JPEG/WebP/AVIF with it
    as the EXIF user comment (A1111's places); None: no infotext at all. `quality` is JPEG/WebP/AVIF's,
    `lossless` WebP's. Saving, the API answer, zips and folder batches all use it."""
    ext = extension.lower().lstrip(".")
    if ext not in FORMATS:
        raise ValueError(f"unsupported image format {extension!r}; use png, jpg, webp or avif")
    buf = io.BytesIO()
    if ext == "png":
        meta = PngImagePlugin.PngInfo()
        if infotext:
            meta.add_text("parameters", infotext)
        image.save(buf, format="PNG", pnginfo=meta)
    else:
        exif = Image.Exif()
        if infotext:
            exif.get_ifd(EXIF_IFD)[USER_COMMENT] = _user_comment(infotext)
        img = image.convert("RGB") if ext in ("jpg", "jpeg") or image.mode not in ("RGB", "RGBA", "L") else image
        extra = {"lossless": lossless} if ext == "webp" else {}
        img.save(buf, format=FORMATS[ext], exif=exif.tobytes(), quality=quality, **extra)
    return buf.getvalue()


def _write_atomically(path: Path, data: bytes) -> None:
    user_files.write_atomically(path, data)  # a fresh temporary file each time: two writers never share one


def write_image(image: Image.Image, path: Path, infotext: str | None, opts: Options | None = None) -> Path:
    """Write `path` (format from its suffix) atomically: a crash leaves the old file or none, never half a file.
    With `opts`: its JPEG quality, WebP lossless, and enable_pnginfo (off: no infotext inside)."""
    if opts is None:
        data = image_bytes(image, infotext, path.suffix)
    else:
        data = image_bytes(image, infotext if opts.enable_pnginfo else None, path.suffix, quality=opts.jpeg_quality,
                           lossless=opts.webp_lossless)
    _write_atomically(path, data)
    return path


def _fitting_extension(image: Image.Image, ext: str) -> str:
    """JPEG stops at 65535 pixels a side and WebP at 16383: larger pictures are saved as PNG (A1111)."""
    side = max(image.size)
    if (ext in ("jpg", "jpeg") and side > 65535) or (ext == "webp" and side > 16383):
        return "png"
    return ext


def save_image(image: Image.Image, folder: Path, seed: int | None, infotext: str | None,
               extension: str = "png", suffix: str = "", *, opts: Options | None = None,
               names: FilenameGenerator | None = None, basename: str = "", grid: bool = False,
               save_to_dirs: bool | None = None, short_filename: bool = False,
               forced_filename: str | None = None) -> Path:
    """Save a picture into `folder` the way A1111's save_image does, and return its path.

    Its subfolder comes from directories_filename_pattern when save_to_dirs (grid_save_to_dirs for a grid; the
    argument overrides both); its name from samples_filename_pattern ("[seed]" by default), after a sequence
    number ("NNNNN-", or "BASENAME-NNNN-") when save_images_add_number or when the name would be empty; `suffix`
    ends it ("-mask"). `short_filename` or no seed: the number alone; `forced_filename`: exactly that name.
    `names` fills the patterns' tags (default: the seed only). The infotext goes inside (enable_pnginfo) and,
    with save_txt, into a .txt of the same name. `opts` None: the default settings."""
    opts = opts or Options()
    names = names or FilenameGenerator(NameInfo(seed=seed), image, max_prompt_words=opts.directories_max_prompt_words)
    ext = _fitting_extension(image, extension.lower().lstrip("."))
    if ext not in FORMATS:
        raise ValueError(f"unsupported image format {extension!r}; use png, jpg, webp or avif")
    if save_to_dirs is None:
        save_to_dirs = opts.grid_save_to_dirs if grid else opts.save_to_dirs
    if save_to_dirs:
        folder = folder.joinpath(*names.subfolders(opts.directories_filename_pattern or "[prompt_words]"))
    folder.mkdir(parents=True, exist_ok=True)
    room = NAME_MAX_BYTES - len(ext) - 1 - _TEMP_NAME_EXTRA  # bytes left for the name without its extension
    if forced_filename is not None:
        path = folder / f"{safe_name(forced_filename, room) or 'image'}.{ext}"
    else:
        if short_filename or seed is None:
            pattern = ""
        else:
            pattern = opts.samples_filename_pattern or ("[seed]" if opts.save_to_dirs else "[seed]-[prompt_spaces]")
        decoration = safe_name(names.apply(pattern) + suffix, room)
        if opts.save_images_add_number or not decoration:
            number = next_sequence_number(folder, basename)
            while True:  # past numbers another process took meanwhile
                head = f"{basename}-{number:04}" if basename else f"{number:05}"
                stem = truncate_bytes(f"{head}-{decoration}" if decoration else head, room).rstrip(" .")
                path = folder / f"{stem}.{ext}"
                try:  # reserve the name: two saves at once (Save beside a job, two users) never take the same
                    os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
                    break
                except FileExistsError:
                    number += 1
        else:  # the same name again replaces the file (A1111's default)
            path = folder / f"{decoration}.{ext}"
    if not path.resolve().is_relative_to(folder.resolve()):  # cannot happen: every name above is a safe one
        raise ValueError(f"{path} is not inside {folder}")
    try:
        write_image(image, path, infotext, opts)
    except BaseException:
        if path.exists() and path.stat().st_size == 0:  # the reserved name, never written
            path.unlink()
        raise
    if opts.save_txt and infotext is not None:
        _write_atomically(path.with_suffix(".txt"), (infotext + "\n").encode("utf-8"))
    return path


def read_infotext(image: Image.Image) -> str | None:
    """The generation parameters stored in an image by A1111 or by us (PNG text or EXIF comment)."""
    text = image.info.get("parameters")
    if isinstance(text, str):
        return text
    try:
        comment = image.getexif().get_ifd(EXIF_IFD).get(USER_COMMENT)
    except Exception:
        comment = None
    return _decode_user_comment(comment) if comment is not None else None


def grid_rows(count: int, n_rows: int = -1, batch_size: int = 1, prevent_empty_spots: bool = False) -> int:
    """A1111's grid layout: n_rows rows; 0: one row per picture of a batch; -1: near square, or with
    `prevent_empty_spots` the most rows up to the square root that fill every row."""
    if n_rows > 0:
        rows = n_rows
    elif n_rows == 0:
        rows = batch_size
    elif prevent_empty_spots:
        rows = max(1, math.floor(math.sqrt(count)))
        while count % rows:
            rows -= 1
    else:
        rows = round(math.sqrt(count))
    return max(1, min(rows, count))  # never more rows than pictures


def image_grid(images: list[Image.Image], rows: int | None = None) -> Image.Image:
    """Batch images in a grid of `rows` rows (None: near square, A1111's default layout)."""
    if rows is None:
        rows = grid_rows(len(images))
    cols = math.ceil(len(images) / rows)
    w, h = images[0].size
    grid = Image.new("RGB", (cols * w, rows * h), "black")
    for i, img in enumerate(images):
        grid.paste(img, (i % cols * w, i // cols * h))
    return grid
