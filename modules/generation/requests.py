"""Typed requests in, results out: what the UI and the HTTP API fill and what a job hands back.

Field names are A1111's /sdapi/v1 names, so the API's models derive from these classes.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from pathlib import Path

from PIL import Image

from modules import prompt_parser

LATENT_UPSCALE_MODES = {
    "Latent": ("bilinear", False),
    "Latent (antialiased)": ("bilinear", True),
    "Latent (bicubic)": ("bicubic", False),
    "Latent (bicubic antialiased)": ("bicubic", True),
    "Latent (nearest)": ("nearest", False),
    "Latent (nearest-exact)": ("nearest-exact", False),
}
RESIZE_MODES = ("Just resize", "Crop and resize", "Resize and fill", "Just resize (latent upscale)")
MASKED_CONTENT = ("fill", "original", "latent noise", "latent nothing")
VERSION = "0.1.0"

# What one request may ask for. A1111's page stops at 2048 px, 150 steps, batch size 8 and batch count 100; its
# API has no limits. These maxima leave the API room beyond the page while keeping one request from taking
# the machine's memory or the queue for hours; the memory a size and batch need is checked besides (job.py).
MAX_SIDE = 8192  # width, height, hires size, seed resize, inpaint padding
MAX_STEPS = 1000
MAX_HR_SCALE = 16  # A1111's slider stops at 4; the hires size is limited by MAX_SIDE besides (txt2img)
MAX_BATCH_SIZE = 64
MAX_BATCH_COUNT = 1000
MAX_CLIP_SKIP = 12  # A1111's slider; SD1's text encoder has 12 layers
MAX_SEED = 2**32 - 1  # A1111's seeds are 32-bit; -1 means random
MAX_MASK_BLUR = 256
MAX_INPUT_PIXELS = 100_000_000  # an input picture of up to 100 megapixels (10000x10000)


class GenerationError(Exception):
    """A request that cannot be carried out; the message is for the user."""


def _check(ok: bool, name: str, problem: str) -> None:
    if not ok:
        raise GenerationError(f"{name}: {problem}")


def check_int(name: str, value: int, low: int, high: int) -> None:
    _check(low <= value <= high, name, f"{value} is out of range; give {low} to {high}")


def check_number(name: str, value: float | None, low: float = -math.inf, high: float = math.inf) -> None:
    """A finite number within [low, high]; None (not given) passes."""
    if value is None:
        return
    _check(math.isfinite(value), name, f"{value} is not a finite number")
    _check(low <= value <= high, name, f"{value} is out of range; give {low:g} to {high:g}")


def check_prompt(name: str, prompt: str) -> None:
    try:
        prompt_parser.check_prompt_complexity(prompt)
    except prompt_parser.PromptTooComplexError as e:
        raise GenerationError(f"{name}: {e}") from e


def check_picture(name: str, picture: Image.Image | None) -> None:
    if picture is not None:
        _check(picture.width * picture.height <= MAX_INPUT_PIXELS, name,
               f"the picture is {picture.width}x{picture.height}; at most {MAX_INPUT_PIXELS // 1_000_000} "
               f"megapixels are supported")


def read_picture(path: Path) -> Image.Image:
    """A picture file, its size checked from the header before it is decoded (a small file can claim a huge
    picture). Too large: GenerationError; not a readable picture: OSError."""
    try:
        with Image.open(path) as picture:
            check_picture(path.name, picture)
            picture.load()
            return picture.copy()
    except Image.DecompressionBombError as e:  # PIL's own limit, above ours, refuses some before we can look
        raise GenerationError(f"{path.name}: the picture is too large; at most {MAX_INPUT_PIXELS // 1_000_000} "
                              f"megapixels are supported") from e
    except (ValueError, SyntaxError) as e:  # what PIL raises for some broken headers
        raise OSError(str(e)) from e


def _check_texts(request) -> None:
    """Every text field must be encodable: a lone surrogate (JSON's "\\ud800") fails in the tokenizer, the PNG
    writer or the reply."""
    for f in fields(request):
        value = getattr(request, f.name)
        for text in value if isinstance(value, list) else [value]:
            if isinstance(text, str):
                try:
                    text.encode("utf-8")
                except UnicodeEncodeError as e:
                    raise GenerationError(f"{f.name}: not valid text (an unpaired surrogate at {e.start})") from e


def _check_floats(request) -> None:
    """NaN and infinity make no sense anywhere, and a reply holding one cannot be written as JSON."""
    for f in fields(request):
        value = getattr(request, f.name)
        if isinstance(value, float):
            check_number(f.name, value)


@dataclass
class GenerationRequest:
    """What every mode shares: prompts, seeds, sampler, size, batch, saving."""
    prompt: str = ""
    negative_prompt: str = ""
    styles: list[str] = field(default_factory=list)
    seed: int = -1
    subseed: int = -1
    subseed_strength: float = 0.0
    seed_resize_from_h: int = 0
    seed_resize_from_w: int = 0
    sampler_name: str = "DPM++ 2M"
    scheduler: str = "Automatic"
    batch_size: int = 1
    n_iter: int = 1
    steps: int = 20
    cfg_scale: float = 7.0
    width: int = 512
    height: int = 512
    tiling: bool = False
    restore_faces: bool | None = None  # None: the face_restoration setting decides
    eta: float | None = None
    s_churn: float | None = None
    s_tmin: float | None = None
    s_tmax: float | None = None
    s_noise: float | None = None
    clip_skip: int | None = None
    save_images: bool = True
    do_not_save_grid: bool = False

    mode = ""  # "txt2img" / "img2img": names the output folders
    prompt_fields = ("prompt", "negative_prompt")  # checked for bracket nesting (prompt_parser)

    def validate(self) -> None:
        """Refuse what cannot be carried out, naming the field: the page and the API share this (via `Job`)."""
        _check_texts(self)
        _check_floats(self)
        check_int("width", self.width, 8, MAX_SIDE)
        check_int("height", self.height, 8, MAX_SIDE)
        _check(self.width % 8 == 0 and self.height % 8 == 0, "width/height",
               f"width and height must be positive multiples of 8 (got {self.width}x{self.height})")
        check_int("steps", self.steps, 1, MAX_STEPS)
        check_int("batch_size", self.batch_size, 1, MAX_BATCH_SIZE)
        check_int("n_iter", self.n_iter, 1, MAX_BATCH_COUNT)
        for name in ("seed", "subseed"):
            value = getattr(self, name)
            _check(-1 <= value <= MAX_SEED, name, f"{value} is out of range; a seed is 0 to {MAX_SEED}, or -1 for a "
                                                  f"random one")
        check_number("subseed_strength", self.subseed_strength, 0, 1)
        check_int("seed_resize_from_w", self.seed_resize_from_w, -1, MAX_SIDE)
        check_int("seed_resize_from_h", self.seed_resize_from_h, -1, MAX_SIDE)
        for name in ("eta", "s_churn", "s_tmin", "s_tmax", "s_noise"):
            check_number(name, getattr(self, name), 0)
        if self.clip_skip is not None:
            check_int("clip_skip", self.clip_skip, 1, MAX_CLIP_SKIP)
        for name in self.prompt_fields:
            check_prompt(name, getattr(self, name))


@dataclass
class Txt2ImgRequest(GenerationRequest):
    # hires fix
    enable_hr: bool = False
    hr_scale: float = 2.0
    hr_upscaler: str = "Latent"
    hr_second_pass_steps: int = 0
    hr_resize_x: int = 0
    hr_resize_y: int = 0
    denoising_strength: float = 0.7
    hr_checkpoint_name: str | None = None  # None or "Use same checkpoint": the first pass's
    hr_sampler_name: str | None = None
    hr_scheduler: str | None = None
    hr_prompt: str = ""
    hr_negative_prompt: str = ""
    # SDXL refiner
    refiner_checkpoint: str | None = None
    refiner_switch_at: float = 0.8

    mode = "txt2img"
    prompt_fields = ("prompt", "negative_prompt", "hr_prompt", "hr_negative_prompt")

    def validate(self) -> None:
        super().validate()
        check_number("hr_scale", self.hr_scale, 0.01, MAX_HR_SCALE)
        check_int("hr_second_pass_steps", self.hr_second_pass_steps, 0, MAX_STEPS)
        check_int("hr_resize_x", self.hr_resize_x, 0, MAX_SIDE)
        check_int("hr_resize_y", self.hr_resize_y, 0, MAX_SIDE)
        check_number("denoising_strength", self.denoising_strength, 0, 1)
        check_number("refiner_switch_at", self.refiner_switch_at, 0, 1)


@dataclass
class Img2ImgRequest(GenerationRequest):
    init_images: list[Image.Image] = field(default_factory=list)
    mask: Image.Image | None = None
    mask_blur: int = 4
    inpainting_mask_invert: bool = False
    inpainting_fill: int = 1  # index into MASKED_CONTENT
    inpaint_full_res: bool = False  # "Only masked"
    inpaint_full_res_padding: int = 32
    resize_mode: int = 0  # index into RESIZE_MODES
    denoising_strength: float = 0.75
    initial_noise_multiplier: float = 1.0

    mode = "img2img"

    def validate(self) -> None:
        super().validate()
        check_int("mask_blur", self.mask_blur, 0, MAX_MASK_BLUR)
        check_int("inpainting_fill", self.inpainting_fill, 0, len(MASKED_CONTENT) - 1)
        check_int("inpaint_full_res_padding", self.inpaint_full_res_padding, 0, MAX_SIDE)
        check_int("resize_mode", self.resize_mode, 0, len(RESIZE_MODES) - 1)
        check_number("denoising_strength", self.denoising_strength, 0, 1)
        check_number("initial_noise_multiplier", self.initial_noise_multiplier, 0, 10)
        for i, picture in enumerate(self.init_images):
            check_picture(f"init_images[{i}]", picture)
        check_picture("mask", self.mask)


@dataclass
class GenerationResult:
    images: list[Image.Image]
    infotexts: list[str]
    seeds: list[int]
    subseeds: list[int]
    paths: list[Path] = field(default_factory=list)
    grid: Image.Image | None = None
    warnings: list[str] = field(default_factory=list)
    interrupted: bool = False
    # what A1111's Processed reports besides the pictures (the API's `info`)
    all_prompts: list[str] = field(default_factory=list)  # one per picture, styles applied
    all_negative_prompts: list[str] = field(default_factory=list)
    extra_generation_params: dict = field(default_factory=dict)  # the mode's infotext keys (hires, denoising...)
    first_image: int = 0  # `images` before this one are grids a script made (A1111's index_of_first_image)
