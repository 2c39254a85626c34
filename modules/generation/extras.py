"""Extras: upscaling finished pictures (resize by a factor or to a size, two upscalers blended), then restoring
their faces (GFPGAN, then CodeFormer, each with its visibility), in A1111's order.

Upscalers are the resamplers and the model files of `Upscalers`. The generation parameters an image carries are
kept, with the upscale settings added, as A1111 does.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from modules.generation import saving
from modules.generation.progress import GenerationState
from modules.generation.requests import GenerationError, read_picture
from modules.options import Options
from modules.postprocessing.face_restoration import FaceRestorers, RestoreInterruptedError, RestorerError
from modules.postprocessing.upscalers import TILE_OVERLAP, TILE_SIZE, UpscaleInterruptedError, UpscalerError, Upscalers

MAX_SCALE = 16  # A1111's page stops at 8
MAX_SIDE = 16384  # of a result; its pixels are limited too (upscale)
UNIT_FIELDS = ("extras_upscaler_2_visibility", "gfpgan_visibility", "codeformer_visibility", "codeformer_weight")


class PostprocessError(Exception):
    """A request that cannot be carried out; the message is for the user."""


@dataclass
class ExtrasRequest:
    resize_mode: int = 0  # 0: scale by, 1: scale to
    upscaling_resize: float = 2.0
    upscaling_resize_w: int = 512
    upscaling_resize_h: int = 512
    upscaling_crop: bool = True
    upscaler_1: str = "Lanczos"
    upscaler_2: str = "None"
    extras_upscaler_2_visibility: float = 0.0
    gfpgan_visibility: float = 0.0  # after upscaling, GFPGAN then CodeFormer, as A1111 orders them
    codeformer_visibility: float = 0.0
    codeformer_weight: float = 0.0
    save: bool = True

    def validate(self) -> None:
        """Refuse values that cannot be carried out (NaN, infinity, unknown modes), naming the field."""
        if self.resize_mode not in (0, 1):
            raise PostprocessError(f"resize_mode: {self.resize_mode} is not 0 (scale by) or 1 (scale to)")
        for name in ("upscaling_resize", *UNIT_FIELDS):
            if not math.isfinite(getattr(self, name)):
                raise PostprocessError(f"{name}: {getattr(self, name)} is not a finite number")
        for name in UNIT_FIELDS:
            if not 0 <= getattr(self, name) <= 1:
                raise PostprocessError(f"{name}: {getattr(self, name)} is out of range; give 0 to 1")
        if self.resize_mode == 0 and not 0 < self.upscaling_resize <= MAX_SCALE:
            raise PostprocessError(f"upscaling_resize: {self.upscaling_resize} is out of range; give a factor above "
                                   f"0 and up to {MAX_SCALE}")
        for name in ("upscaling_resize_w", "upscaling_resize_h"):
            if self.resize_mode == 1 and not 1 <= getattr(self, name) <= MAX_SIDE:
                raise PostprocessError(f"{name}: {getattr(self, name)} is out of range; give 1 to {MAX_SIDE}")


def target_size(req: ExtrasRequest, size: tuple[int, int]) -> tuple[int, int]:
    if req.resize_mode == 1:
        return int(req.upscaling_resize_w), int(req.upscaling_resize_h)
    if req.upscaling_resize <= 0:
        raise PostprocessError("the scale factor must be above 0")
    return round(size[0] * req.upscaling_resize), round(size[1] * req.upscaling_resize)


@dataclass
class Upscaling:
    """How Extras runs upscalers: which ones there are, the tile settings, and the job's progress and interrupt
    (`state`, a GenerationState: a model's tiles are the steps of the picture's pass)."""

    upscalers: Upscalers
    tile_size: int = TILE_SIZE
    tile_overlap: int = TILE_OVERLAP
    state: GenerationState | None = None

    def should_stop(self) -> bool:
        return self.state is not None and self.state.interrupted

    def resize(self, image: Image.Image, upscaler: str, size: tuple[int, int]) -> Image.Image:
        state = self.state
        try:
            if state is not None:
                steps = self.upscalers.progress_steps(upscaler, image.size, size, self.tile_size, self.tile_overlap)
                if steps:
                    state.begin_pass(steps)
            return self.upscalers.upscale(upscaler, image, size, tile_size=self.tile_size,
                                          tile_overlap=self.tile_overlap, should_stop=self.should_stop,
                                          progress=None if state is None else lambda done, total: state.step_done())
        except UpscalerError as e:
            raise PostprocessError(str(e)) from e


def upscale(image: Image.Image, req: ExtrasRequest, upscaling: Upscaling) -> tuple[Image.Image, dict]:
    """The upscaled picture and the parameters to add to its infotext (upscaler 1 "None": the picture as it is and
    none, as A1111). Raises UpscaleInterruptedError."""
    if req.upscaler_1 == "None":
        return image, {}
    w, h = target_size(req, image.size)
    if w < 1 or h < 1 or w * h > MAX_SIDE * MAX_SIDE:
        raise PostprocessError(f"target size {w}x{h} is out of range")
    source = image.convert("RGB")
    if req.resize_mode == 1 and req.upscaling_crop:
        # scale to cover the target, then crop the middle (keeps the aspect ratio)
        ratio = max(w / source.width, h / source.height)
        cover = (max(w, round(source.width * ratio)), max(h, round(source.height * ratio)))
        if max(cover) > MAX_SIDE * 4 or cover[0] * cover[1] > MAX_SIDE * MAX_SIDE:
            raise PostprocessError(f"a {source.width}x{source.height} picture cropped to fill {w}x{h} would first be "
                                   f"resized to {cover[0]}x{cover[1]}; that is too large")
        first = upscaling.resize(source, req.upscaler_1, cover)
        left, top = (cover[0] - w) // 2, (cover[1] - h) // 2
        result = first.crop((left, top, left + w, top + h))
        second_src = (source, cover, (left, top, left + w, top + h))
    else:
        result = upscaling.resize(source, req.upscaler_1, (w, h))
        second_src = (source, (w, h), None)
    params = {"Postprocess upscale by" if req.resize_mode == 0 else "Postprocess upscale to":
              req.upscaling_resize if req.resize_mode == 0 else f"{w}x{h}",
              "Postprocess upscaler": req.upscaler_1}
    if req.upscaler_2 != "None" and req.extras_upscaler_2_visibility > 0:
        src, size, crop = second_src
        second = upscaling.resize(src, req.upscaler_2, size)
        if crop:
            second = second.crop(crop)
        result = Image.blend(result, second, req.extras_upscaler_2_visibility)
        params["Postprocess upscaler 2"] = req.upscaler_2
    return result, params


def _merged_infotext(original: str | None, params: dict) -> str:
    extra = ", ".join(f"{k}: {v}" for k, v in params.items())
    if not original or not extra:
        return original or extra
    return f"{original}, {extra}" if "\n" in original else f"{original}\n{extra}"


def restore_faces(image: Image.Image, req: ExtrasRequest, restorers: FaceRestorers | None,
                  should_stop: Callable[[], bool] | None) -> tuple[Image.Image, dict]:
    """GFPGAN, then CodeFormer, each blended in by its visibility; the infotext parameters A1111 adds."""
    params = {}
    for name, visibility in (("GFPGAN", req.gfpgan_visibility), ("CodeFormer", req.codeformer_visibility)):
        if visibility <= 0:
            continue
        if restorers is None:
            raise PostprocessError("face restoration is not available")
        try:
            image = restorers.restore(name, image, codeformer_weight=req.codeformer_weight, visibility=visibility,
                                      should_stop=should_stop)
        except RestorerError as e:
            raise PostprocessError(f"{name.lower()}_visibility: {e}") from e
        params[f"{name} visibility"] = round(visibility, 3)
        if name == "CodeFormer":
            params["CodeFormer weight"] = round(req.codeformer_weight, 3)
    return image, params


# An Extras step after upscaling and face restoration: picture -> (picture, infotext keys it adds)
Postprocess = Callable[[Image.Image], tuple[Image.Image, dict]]


def run_extras(pictures: list[Image.Image], req: ExtrasRequest, outputs_dir: Path, options: Options | None = None,
               into: Path | None = None, upscalers: Upscalers | None = None, state=None,
               face_restorers: FaceRestorers | None = None, postprocess: Postprocess | None = None
               ) -> tuple[list[Image.Image], list[str], list[Path]]:
    """Upscale each picture, then restore its faces if asked; when `req.save`, saved as A1111's Extras saves:
    numbered files in outdir_samples or outdir_extras_samples (outputs/extras-images), or in `into` (the batch's
    output folder), no subfolder, in samples_format. `options`: the user's settings (None: the defaults);
    `upscalers`: None, the resamplers only. `state` (a GenerationState): model upscalers' tiles show as progress and
    its interrupt stops between tiles and faces, keeping the pictures done (saved, returned) before it.
    `postprocess`: what extensions' Extras scripts do to each picture after that (and the infotext keys they add)."""
    req.validate()
    opts = options or Options()
    upscaling = Upscaling(upscalers or Upscalers([]), opts.ESRGAN_tile, opts.ESRGAN_tile_overlap, state)
    folder = into if into is not None else saving.output_folder(opts, outputs_dir, "extras-images")
    results, texts, paths = [], [], []
    for number, picture in enumerate(pictures):
        if upscaling.should_stop():
            break
        if state is not None:
            state.begin_pass(1, job_no=number)
        try:
            image, params = upscale(picture, req, upscaling)
            image, restored = restore_faces(image, req, face_restorers, upscaling.should_stop)
        except (UpscaleInterruptedError, RestoreInterruptedError):
            break
        finally:
            if face_restorers is not None and opts.face_restoration_unload:
                face_restorers.offload()
        params.update(restored)
        if postprocess is not None:
            image, added = postprocess(image)
            params.update(added)
        text = _merged_infotext(saving.read_infotext(picture), params)
        results.append(image)
        texts.append(text)
        if req.save:
            paths.append(saving.save_image(image, folder, None, text, opts.samples_format, opts=opts,
                                           save_to_dirs=False, short_filename=True))
    return results, texts, paths


def pictures_in(folder: Path) -> tuple[list[Image.Image], list[str]]:
    """The readable pictures of a folder (sorted), and a message for each file that is not one."""
    if not folder.is_dir():
        raise PostprocessError(f"{folder} is not a folder")
    pictures, problems = [], []
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() not in (".png", ".jpg", ".jpeg", ".webp", ".bmp"):
            continue
        try:
            pictures.append(read_picture(path))
        except OSError as e:
            problems.append(f"{path.name}: not a readable image ({e})")
        except GenerationError as e:  # too large, refused from its header
            problems.append(str(e))
    return pictures, problems
