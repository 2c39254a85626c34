"""Saving images the way A1111 does: numbered files, the infotext inside, grids for batches."""
from __future__ import annotations

import io
import math
import os
import re
from datetime import date
from pathlib import Path

from PIL import Image, PngImagePlugin

EXIF_IFD = 0x8769
USER_COMMENT = 0x9286
_UNICODE_PREFIX = b"UNICODE\x00"
_NUMBERED = re.compile(r"^(\d+)-")


def next_sequence_number(folder: Path) -> int:
    """One past the highest 'NNNNN-' prefix in the folder, so numbering survives restarts."""
    highest = -1
    if folder.is_dir():
        for name in os.listdir(folder):
            m = _NUMBERED.match(name)
            if m:
                highest = max(highest, int(m.group(1)))
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


def image_bytes(image: Image.Image, infotext: str | None, extension: str = "png", quality: int = 95) -> bytes:
    """The one writer of pictures: PNG with the infotext as a `parameters` text chunk, JPEG/WebP/AVIF with it
    as the EXIF user comment (A1111's places). Saving, the API answer, zips and folder batches all use it."""
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
        img = image.convert("RGB") if ext in ("jpg", "jpeg") else image
        img.save(buf, format=FORMATS[ext], exif=exif.tobytes(), quality=quality)
    return buf.getvalue()


def write_image(image: Image.Image, path: Path, infotext: str | None) -> Path:
    """Write `path` (format from its suffix) atomically: a crash leaves the old file or none, never half a file."""
    data = image_bytes(image, infotext, path.suffix)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return path


def save_image(image: Image.Image, folder: Path, seed: int | None, infotext: str | None,
               extension: str = "png", suffix: str = "") -> Path:
    """Save as `folder/NNNNN-SEED{suffix}.{ext}` with the infotext embedded; returns the path."""
    ext = extension.lower().lstrip(".")
    folder.mkdir(parents=True, exist_ok=True)
    number = next_sequence_number(folder)
    stem = f"{number:05}" + (f"-{seed}" if seed is not None else "") + suffix
    path = folder / f"{stem}.{ext}"
    while path.exists():  # another process saved meanwhile
        number += 1
        path = folder / f"{number:05}{path.name[5:]}"
    return write_image(image, path, infotext)


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


def dated_folder(outputs: Path, kind: str, day: date | None = None) -> Path:
    """outputs/txt2img-images/2026-11-21 and the like."""
    return outputs / kind / (day or date.today()).isoformat()


def image_grid(images: list[Image.Image], rows: int | None = None) -> Image.Image:
    """Batch images in a near-square grid (A1111's default layout)."""
    if rows is None:
        rows = min(len(images), max(1, round(math.sqrt(len(images)))))
    cols = math.ceil(len(images) / rows)
    w, h = images[0].size
    grid = Image.new("RGB", (cols * w, rows * h), "black")
    for i, img in enumerate(images):
        grid.paste(img, (i % cols * w, i // cols * h))
    return grid
