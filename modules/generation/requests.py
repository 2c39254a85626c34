"""Typed requests in, results out: what the UI and the HTTP API fill and what a job hands back.

Field names are A1111's /sdapi/v1 names, so the API's models derive from these classes.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

LATENT_UPSCALE_MODES = {
    "Latent": ("bilinear", False),
    "Latent (antialiased)": ("bilinear", True),
    "Latent (bicubic)": ("bicubic", False),
    "Latent (bicubic antialiased)": ("bicubic", True),
    "Latent (nearest)": ("nearest", False),
    "Latent (nearest-exact)": ("nearest-exact", False),
}
IMAGE_UPSCALERS = {"None": None, "Lanczos": Image.LANCZOS, "Nearest": Image.NEAREST}
RESIZE_MODES = ("Just resize", "Crop and resize", "Resize and fill", "Just resize (latent upscale)")
MASKED_CONTENT = ("fill", "original", "latent noise", "latent nothing")
VERSION = "0.1.0"


class GenerationError(Exception):
    """A request that cannot be carried out; the message is for the user."""


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
    eta: float | None = None
    s_churn: float | None = None
    s_tmin: float | None = None
    s_tmax: float | None = None
    s_noise: float | None = None
    clip_skip: int | None = None
    save_images: bool = True
    do_not_save_grid: bool = False

    mode = ""  # "txt2img" / "img2img": names the output folders


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
    hr_sampler_name: str | None = None
    hr_scheduler: str | None = None
    hr_prompt: str = ""
    hr_negative_prompt: str = ""
    # SDXL refiner
    refiner_checkpoint: str | None = None
    refiner_switch_at: float = 0.8

    mode = "txt2img"


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
