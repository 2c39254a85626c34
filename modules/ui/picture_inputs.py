"""Picture inputs of the page that refuse what they cannot read in plain words, before decoding it.

Gradio decodes an uploaded picture before any event handler runs. A tiny file whose header claims
20000x20000 pixels (a decompression bomb) or a broken file would otherwise fail inside Gradio with a
developer's traceback; these check the header against the size limit of the API first and answer a
short message naming the control.
"""
from __future__ import annotations

import io
from pathlib import Path

import gradio as gr
from gradio.data_classes import FileData
from PIL import Image, UnidentifiedImageError

from modules.generation.requests import MAX_INPUT_PIXELS

UNREADABLE = (Image.DecompressionBombError, UnidentifiedImageError, OSError, ValueError, SyntaxError)


def _check_header(label: str, source: Path | bytes) -> None:
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes | bytearray) else source) as picture:
            width, height = picture.size
    except Image.DecompressionBombError as e:  # PIL's own limit, twice ours, refuses some before we can look
        raise gr.Error(f"{label}: the picture is too large; at most {MAX_INPUT_PIXELS // 1_000_000} "
                       f"megapixels are supported") from e
    except UNREADABLE as e:
        raise gr.Error(f"{label}: not a readable picture ({e.__class__.__name__})") from e
    if width * height > MAX_INPUT_PIXELS:
        raise gr.Error(f"{label}: the picture is {width}x{height}; at most {MAX_INPUT_PIXELS // 1_000_000} "
                       f"megapixels are supported")


def _decoded(label: str, decode):
    try:
        return decode()
    except UNREADABLE as e:
        raise gr.Error(f"{label}: not a readable picture ({e.__class__.__name__}: {e})") from e


def picture_input(**kwargs) -> gr.Image:
    """gr.Image that checks an upload's size before decoding it. (Wrapped, not subclassed: Gradio writes a
    .pyi stub beside every module that subclasses a component.)"""
    image = gr.Image(**kwargs)
    label = image.label or "picture"
    decode = image.preprocess

    def preprocess(payload):
        if payload is not None and payload.path:
            _check_header(label, Path(payload.path))
        return _decoded(label, lambda: decode(payload))

    image.preprocess = preprocess
    return image


def picture_editor(**kwargs) -> gr.ImageEditor:
    """gr.ImageEditor whose background, layers and composite are each checked before decoding."""
    editor = gr.ImageEditor(**kwargs)
    label = editor.label or "picture"
    convert = editor.convert_and_format_image

    def convert_and_format_image(file, flatten_on_white: bool = False):
        if file is not None:
            _check_header(label, Path(file.path) if isinstance(file, FileData) else bytes(file))
        return _decoded(label, lambda: convert(file, flatten_on_white))

    editor.convert_and_format_image = convert_and_format_image
    return editor
