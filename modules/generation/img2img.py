"""img2img and inpainting: the input picture, noised to the denoising strength, sampled back; with a mask,
only the masked part changes (whole picture or "only masked" at full resolution)."""
from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageCms, ImageFilter, ImageOps

from modules.generation import saving
from modules.generation.job import Batch, BatchOutput, Job, ProcessingContext, model_calls
from modules.generation.requests import (
    MASKED_CONTENT,
    GenerationError,
    GenerationResult,
    Img2ImgRequest,
    read_picture,
)
from modules.postprocessing.upscalers import UpscalerError
from modules.sampling import rng
from modules.sampling.denoiser import LatentMask

Resizer = Callable[[Image.Image, tuple[int, int]], Image.Image]


def _lanczos(im: Image.Image, size: tuple[int, int]) -> Image.Image:
    return im.resize(size, Image.LANCZOS)


def resize_image(mode: int, im: Image.Image, width: int, height: int, resize: Resizer = _lanczos) -> Image.Image:
    """A1111's resize modes: 0 just resize, 1 crop and resize, 2 resize and fill (3: as 0, latent side).
    `resize` does the main resize of each mode (the "Upscaler for img2img" setting; Lanczos by default)."""
    if mode in (0, 3):
        return resize(im, (width, height))
    ratio, src_ratio = width / height, im.width / im.height
    if mode == 1:
        src_w = width if ratio > src_ratio else im.width * height // im.height
        src_h = height if ratio <= src_ratio else im.height * width // im.width
        resized = resize(im, (src_w, src_h))
        out = Image.new("RGB", (width, height))
        out.paste(resized, box=(width // 2 - src_w // 2, height // 2 - src_h // 2))
        return out
    src_w = width if ratio < src_ratio else im.width * height // im.height
    src_h = height if ratio >= src_ratio else im.height * width // im.width
    resized = resize(im, (src_w, src_h))
    out = Image.new("RGB", (width, height))
    out.paste(resized, box=(width // 2 - src_w // 2, height // 2 - src_h // 2))
    if ratio < src_ratio:
        fill = height // 2 - src_h // 2
        if fill > 0:
            out.paste(resized.resize((width, fill), box=(0, 0, width, 0)), box=(0, 0))
            out.paste(resized.resize((width, fill), box=(0, resized.height, width, resized.height)),
                      box=(0, fill + src_h))
    elif ratio > src_ratio:
        fill = width // 2 - src_w // 2
        if fill > 0:
            out.paste(resized.resize((fill, height), box=(0, 0, 0, height)), box=(0, 0))
            out.paste(resized.resize((fill, height), box=(resized.width, 0, resized.width, height)),
                      box=(fill + src_w, 0))
    return out


def _masked_region(mask: Image.Image, padding: int) -> tuple[int, int, int, int] | None:
    box = mask.getbbox()
    if box is None:
        return None
    x1, y1, x2, y2 = box
    return (max(x1 - padding, 0), max(y1 - padding, 0), min(x2 + padding, mask.width), min(y2 + padding, mask.height))


def _prepare_mask(req: Img2ImgRequest, init: Image.Image) -> Image.Image | None:
    mask = req.mask
    if mask is None and init.mode == "RGBA" and init.getextrema()[3][0] < 255:
        mask = Image.eval(init.getchannel("A"), lambda a: 255 - a)  # transparent pixels get painted
    if mask is None:
        return None
    mask = mask.convert("L")
    if mask.size != init.size:
        mask = mask.resize(init.size, Image.LANCZOS)
    if req.inpainting_mask_invert:
        mask = ImageOps.invert(mask)
    return mask


class Img2Img:
    name = "img2img"
    passes_per_batch = 1

    def __init__(self, req: Img2ImgRequest):
        self.req = req
        self.init = req.init_images[0]
        self.sized_init: Image.Image | None = None
        self.mask = _prepare_mask(req, self.init)

    def sample_batch(self, job: Job, batch: Batch) -> BatchOutput:
        req = self.req
        job.ctx.state.begin_pass(req.steps, job_no=batch.number)
        if self.sized_init is None:  # once per job: a model upscaler is slow
            mode = req.resize_mode if req.resize_mode != 3 else 0
            self.sized_init = resize_image(mode, self.init.convert("RGB"), req.width, req.height, input_resizer(job))
        pictures = _sample_pictures(job, batch, self.sized_init, self.mask)
        params = {"Denoising strength": req.denoising_strength}
        if self.mask is not None:
            params.update({"Mask blur": req.mask_blur,
                           "Mask mode": "Inpaint not masked" if req.inpainting_mask_invert else None,
                           "Masked content": None if req.inpainting_fill == 1 else MASKED_CONTENT[req.inpainting_fill],
                           "Inpaint area": "Only masked" if req.inpaint_full_res else None,
                           "Masked area padding": req.inpaint_full_res_padding if req.inpaint_full_res else None})
        return BatchOutput(pictures, params)


def process_img2img(req: Img2ImgRequest, ctx: ProcessingContext) -> GenerationResult:
    if not req.init_images:
        raise GenerationError("img2img needs an input image")
    job = Job(req, ctx)
    mode = Img2Img(req)
    _save_init_images(job)
    if mode.mask is not None and (job.opts.save_mask or job.opts.save_mask_composite):
        job.mask_for_overlay = _overlay_mask(req, mode.mask)  # Job.save writes it beside each picture
    if req.denoising_strength <= 0:  # nothing to do: the input is the result (A1111 would still take one step)
        image = resize_image(req.resize_mode, req.init_images[0].convert("RGB"), req.width, req.height,
                             input_resizer(job))
        text = job.infotext(0, {"Denoising strength": 0})
        return GenerationResult([image], [text], job.all_seeds[:1], job.all_subseeds[:1],
                                [p for p in [job.save(image, 0, text)] if p], warnings=job.warnings)
    return job.run(mode)


def _save_init_images(job: Job) -> None:
    """save_init_img: each input picture into outdir_init_images, named by the MD5 of its pixels (A1111), which
    the infotext records as "Init image hash"."""
    if not job.opts.save_init_img:
        return
    folder = saving.output_folder(job.opts, job.ctx.outputs_dir, "init-images")
    for picture in job.req.init_images:
        digest = hashlib.md5(picture.tobytes()).hexdigest()  # noqa: S324 (a name, as A1111's, not security)
        saving.save_image(picture, folder, None, saving.read_infotext(picture), "png", opts=job.opts,
                          save_to_dirs=False, forced_filename=digest)
        job.generation_params["Init image hash"] = digest


def _overlay_mask(req: Img2ImgRequest, mask: Image.Image) -> Image.Image:
    """The mask as it was laid over the results: at the output size, blurred by mask_blur (A1111's
    mask_for_overlay, what save_mask writes)."""
    mode = req.resize_mode if req.resize_mode != 3 else 0
    mask = resize_image(mode, mask.convert("RGB"), req.width, req.height).convert("L")
    return mask.filter(ImageFilter.GaussianBlur(req.mask_blur)) if req.mask_blur > 0 else mask


_SRGB, _LAB = ImageCms.createProfile("sRGB"), ImageCms.createProfile("LAB")
_TO_LAB = ImageCms.buildTransformFromOpenProfiles(_SRGB, _LAB, "RGB", "LAB")
_TO_RGB = ImageCms.buildTransformFromOpenProfiles(_LAB, _SRGB, "LAB", "RGB")


def _matched(values: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """`values` mapped so that their histogram is the reference's (each value to the reference value at the same
    quantile)."""
    kinds, where, counts = np.unique(values.ravel(), return_inverse=True, return_counts=True)
    ref_kinds, ref_counts = np.unique(reference.ravel(), return_counts=True)
    quantiles = np.cumsum(counts) / values.size
    ref_quantiles = np.cumsum(ref_counts) / reference.size
    return np.interp(quantiles, ref_quantiles, ref_kinds)[where].reshape(values.shape)


def color_corrected(picture: Image.Image, reference: Image.Image) -> Image.Image:
    """The img2img_color_correction setting: the picture's colours (the a and b channels of CIELAB) matched to
    the input picture's histogram, its own lightness kept, so that repeated img2img passes do not drift in colour
    (A1111 matches in LAB and keeps the result's luminosity too)."""
    lab = np.asarray(ImageCms.applyTransform(picture.convert("RGB"), _TO_LAB)).copy()
    ref = np.asarray(ImageCms.applyTransform(reference.convert("RGB").resize(picture.size), _TO_LAB))
    for channel in (1, 2):
        lab[..., channel] = np.round(_matched(lab[..., channel], ref[..., channel])).astype(np.uint8)
    return ImageCms.applyTransform(Image.fromarray(lab, "LAB"), _TO_RGB)


def input_resizer(job: Job) -> Resizer:
    """How the input picture is enlarged to the request's size: with the "Upscaler for img2img" setting's upscaler
    (only when enlarging, as A1111), else Lanczos. An unknown name is reported and Lanczos used."""
    opts, upscalers = job.opts, job.ctx.upscalers
    name = opts.upscaler_for_img2img
    if name in ("", "None"):
        return _lanczos
    if name not in upscalers.names():
        job.warnings.append(f"upscaler_for_img2img: unknown upscaler {name!r}; Lanczos used instead")
        return _lanczos

    def resize(im: Image.Image, size: tuple[int, int]) -> Image.Image:
        if size[0] <= im.width and size[1] <= im.height:
            return _lanczos(im, size)
        try:
            return upscalers.upscale(name, im, size, tile_size=opts.ESRGAN_tile, tile_overlap=opts.ESRGAN_tile_overlap)
        except UpscalerError as e:
            raise GenerationError(f"upscaler_for_img2img: {e}") from e
    return resize


def _sample_pictures(job: Job, batch: Batch, init: Image.Image, mask_full: Image.Image | None
                     ) -> list[Image.Image]:
    """One batch: the input (already at the request's size) and mask encoded, noised to the strength, sampled,
    decoded; with a mask, only masked pixels change."""
    req, model = job.req, job.model
    seeds = batch.seeds
    w, h = req.width, req.height
    mask = None
    crop_box = None
    if mask_full is not None:
        mask = resize_image(req.resize_mode if req.resize_mode != 3 else 0, mask_full.convert("RGB"), w, h).convert("L")
        original, original_mask = init, mask
        if req.mask_blur > 0:
            mask = mask.filter(ImageFilter.GaussianBlur(req.mask_blur))
        if req.inpaint_full_res:
            crop_box = _masked_region(original_mask, req.inpaint_full_res_padding)
            if crop_box is not None:
                init = init.crop(crop_box).resize((w, h), Image.LANCZOS)
                mask = mask.crop(crop_box).resize((w, h), Image.LANCZOS)
        if req.inpainting_fill == 0:  # fill: smear surrounding colours into the hole
            init = _fill_masked(init, mask)
    count = len(seeds)
    init_latent = model.encode_images([init]).repeat(count, 1, 1, 1)
    latent_mask = None
    image_cond = None
    noise_multiplier = req.initial_noise_multiplier
    if mask is not None:
        f = model.latent_scale
        m = torch.from_numpy(np.asarray(mask.resize((w // f, h // f), Image.LANCZOS), dtype=np.float32) / 255)
        m = m.round()[None, None].repeat(count, 1, 1, 1)  # 1 = paint here
        if req.inpainting_fill == 2:  # latent noise
            noise = rng.ImageRNG(tuple(init_latent.shape[1:]), seeds).next()
            init_latent = init_latent * (1 - m) + noise * m
        elif req.inpainting_fill == 3:  # latent nothing
            init_latent = init_latent * (1 - m)
        latent_mask = LatentMask(init_latent, 1 - m)
        if model.spec.is_inpainting:
            weight = job.opts.inpainting_mask_weight
            keep = 1 - np.asarray(mask, dtype=np.float32)[..., None] / 255 * weight
            masked = Image.fromarray((np.asarray(init, dtype=np.float32) * keep).round().astype(np.uint8))
            masked_latent = model.encode_images([masked]).repeat(count, 1, 1, 1)
            image_cond = torch.cat([m, masked_latent], dim=1)
    elif model.spec.is_inpainting:
        masked_latent = init_latent
        f = model.latent_scale
        image_cond = torch.cat([torch.zeros(count, 1, h // f, w // f), masked_latent], dim=1)
    c, uc = job.conds(batch.prompts, batch.negatives, model_calls(job.sampler, req.steps))
    latent = job.sample_from_latent(init_latent, c, uc, batch, req.steps, req.denoising_strength, job.sampler,
                                    req.scheduler, w, h, image_cond=image_cond, mask=latent_mask,
                                    noise_multiplier=noise_multiplier)
    if latent is None:  # interrupted before the first step: no pictures
        return []
    out = job.decode(latent)
    if job.opts.img2img_color_correction:
        out = [color_corrected(picture, init) for picture in out]
    if mask is None:
        return out
    # paste back: unmasked pixels stay exactly what they were
    results = []
    for image in out:
        if crop_box is not None:
            x1, y1, x2, y2 = crop_box
            patch = image.resize((x2 - x1, y2 - y1), Image.LANCZOS)
            full = original.copy()
            full.paste(patch, (x1, y1))
            image = full
        blurred = original_mask.filter(ImageFilter.GaussianBlur(req.mask_blur)) if req.mask_blur > 0 else original_mask
        results.append(Image.composite(image, original, blurred))
    return results


def _fill_masked(image: Image.Image, mask: Image.Image) -> Image.Image:
    """Masked content 'fill': replace the masked area with blurred surrounding colours."""
    keep = ImageOps.invert(mask.point(lambda v: 255 if v > 127 else 0))
    out = image.copy()
    for radius in (256, 64, 16, 4, 1):
        blurred = Image.composite(image, image, keep).filter(ImageFilter.GaussianBlur(radius))
        out = Image.composite(out, blurred, keep)
        keep = keep.filter(ImageFilter.MaxFilter(3))
    return out


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def process_img2img_folder(req: Img2ImgRequest, ctx: ProcessingContext, input_dir: Path, output_dir: Path | None,
                           mask_dir: Path | None = None) -> GenerationResult:
    """img2img "Batch" tab: every picture of a folder, with a same-named mask from `mask_dir` if there
    is one, saved under its own name into `output_dir` (or the usual outputs when empty).
    Unreadable files are reported and skipped."""
    files = sorted(p for p in Path(input_dir).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) \
        if Path(input_dir).is_dir() else []
    if not files:
        raise GenerationError(f"no images found in {input_dir}")
    total = GenerationResult([], [], [], [])
    for path in files:
        if ctx.state.interrupted:
            break
        try:
            image = read_picture(path)
            mask = None
            if mask_dir is not None:
                candidates = [m for m in Path(mask_dir).glob(path.stem + ".*") if m.suffix.lower() in IMAGE_SUFFIXES]
                if candidates:
                    mask = read_picture(candidates[0])
        except OSError as e:
            total.warnings.append(f"{path.name}: not a readable image ({e}); skipped")
            continue
        except GenerationError as e:  # too large: refused from its header, before decoding
            total.warnings.append(f"{e}; skipped")
            continue
        res = process_img2img(replace(req, init_images=[image], mask=mask, save_images=output_dir is None
                                      and req.save_images), ctx)
        for k, out in enumerate(res.images):
            if output_dir is not None:
                name = path.stem + (f"-{k}" if len(res.images) > 1 else "") + ".png"
                total.paths.append(saving.write_image(out, Path(output_dir) / name, res.infotexts[k]))
        total.images += res.images
        total.infotexts += res.infotexts
        total.seeds += res.seeds
        total.subseeds += res.subseeds
        total.paths += res.paths
        total.warnings += res.warnings
    total.interrupted = ctx.state.interrupted
    return total
