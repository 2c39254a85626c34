"""A1111's `modules.scripts_postprocessing`: scripts that join the Extras tab (upscaling, face restoration...).

A `ScriptPostprocessing` subclass in an extension's `scripts/` builds its controls with `ui()` (a dict of name ->
component) and changes each picture in `process(pp, **args)`.
"""
from __future__ import annotations

from PIL import Image


class PostprocessedImage:
    """One picture going through Extras, with the text it will carry (`info`: infotext key -> value)."""

    def __init__(self, image: Image.Image):
        self.image = image
        self.info: dict = {}
        self.shared = PostprocessedImageSharedInfo()
        self.extra_images: list[Image.Image] = []
        self.nametags: list[str] = []
        self.disable_processing = False
        self.caption = None

    def get_suffix(self, used_suffixes=None) -> str:
        suffix = "-".join(self.nametags)
        return f"-{suffix}" if suffix else ""

    def create_copy(self, new_image: Image.Image, *, nametags=None, disable_processing: bool = False):
        copy = PostprocessedImage(new_image)
        copy.info = dict(self.info)
        copy.shared = self.shared
        copy.nametags = list(self.nametags) + list(nametags or [])
        copy.disable_processing = disable_processing
        copy.caption = self.caption
        return copy


class PostprocessedImageSharedInfo:
    target_width = None
    target_height = None


class ScriptPostprocessing:
    filename = None
    controls = None
    args_from = None
    args_to = None
    order = 1000  # A1111's: lower runs first
    name = None  # shown as the section's title
    group = None

    def ui(self) -> dict:
        """The controls, by the name their value is passed to `process` under."""
        return {}

    def process(self, pp: PostprocessedImage, **args) -> None:
        """Change `pp.image` (and add to `pp.info`)."""

    def process_firstpass(self, pp: PostprocessedImage, **args) -> None:
        """Before any script's `process`: may set the target size in `pp.shared`."""

    def image_changed(self) -> None:
        """The Extras input picture changed."""
