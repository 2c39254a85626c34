"""Outpainting mk2 (A1111's built-in img2img script): the picture grows one direction at a time (left, right, up,
down; its total size rounded up to a multiple of 64, as A1111's). Each new strip is first filled with noise shaped
like the picture's own spectrum and matched to its colours (the "matched noise" of g-diffuser that A1111 uses), then
inpainted with "original" content under a mask of the strip, at most the width or height set at a time.

Differences from A1111, said plainly: A1111 also draws a second, less blurred "latent mask", and blurs only across
the strip; our inpainting has one mask, blurred by four times "Mask blur" (the same across a strip). The size of a
pass is rounded up to a multiple of 8, which our jobs need. Batch count n uses the seeds after those of the batches
before it (A1111 starts every batch from the same seed).
"""
import math

import gradio as gr
import numpy as np
from PIL import Image, ImageDraw

from modules import images, processing, scripts
from modules.shared import opts, state

DIRECTIONS = images.OUTPAINTING_DIRECTIONS


# ---- matched noise: noise with the kept part's spectrum and colour histogram, for the part to be painted

def _spectrum(values: np.ndarray) -> np.ndarray:
    """The 2-D Fourier transform of each channel, zero frequency in the middle."""
    return np.fft.fftshift(np.fft.fft2(values, axes=(0, 1), norm="ortho"), axes=(0, 1))


def _from_spectrum(spectrum: np.ndarray) -> np.ndarray:
    return np.fft.ifft2(np.fft.ifftshift(spectrum, axes=(0, 1)), axes=(0, 1), norm="ortho")


def _falloff(height: int, width: int) -> np.ndarray:
    """1 / ((1 + x²)(1 + y²)) over the centred spectrum, x and y running from -1 to 1 times the side's length over
    the shorter side's: keeps the noise's low frequencies."""
    short = min(height, width)
    ys = (np.arange(height) / height * 2 - 1) * height / short
    xs = (np.arange(width) / width * 2 - 1) * width / short
    return 1 / ((ys[:, None] ** 2 + 1) * (xs[None, :] ** 2 + 1))


def _histogram_matched(values: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """`values` mapped so that their histogram is the reference's: each value to the reference's value at the
    same quantile."""
    kinds, where, counts = np.unique(values, return_inverse=True, return_counts=True)
    ref_kinds, ref_counts = np.unique(reference, return_counts=True)
    quantiles = np.cumsum(counts) / values.size
    ref_quantiles = np.cumsum(ref_counts) / reference.size
    return np.interp(quantiles, ref_quantiles, ref_kinds)[where]


def matched_noise(image: np.ndarray, mask: np.ndarray, noise_q: float, color_variation: float) -> np.ndarray:
    """`image` (HxWx3 floats in 0..1) with the part under `mask` (same shape, 1 = new) replaced by noise whose
    spectrum follows the kept part's (more of its fine detail with a lower `noise_q`) and whose colours follow the
    kept part's histogram; `color_variation` is how colourful the starting noise is. Deterministic, as A1111's."""
    grey_mask = mask.mean(axis=2)
    new_part, kept_part = grey_mask > 1e-6, grey_mask < 1e-3
    kept = image * (1 - mask)
    brightest = kept.max()
    windowed = (kept / brightest if brightest > 0 else kept) + image.mean() * mask  # the hole at the mean colour
    source = _spectrum(windowed)
    magnitude = np.abs(source)
    phase = np.divide(source, magnitude, out=np.zeros_like(source), where=magnitude > 0)

    noise = np.random.default_rng(0).random(image.shape)
    noise = noise * color_variation + (1 - color_variation) * noise.mean(axis=2, keepdims=True)
    noise = np.real(_from_spectrum(_spectrum(noise) * _falloff(*image.shape[:2])[..., None]))
    shaped = np.real(_from_spectrum(np.abs(_spectrum(noise)) ** 2 * magnitude ** noise_q * phase))
    shaped -= shaped.min()
    shaped /= max(shaped.max(), 1e-12)
    if new_part.any() and kept_part.any():
        for channel in range(image.shape[2]):
            shaped[new_part, channel] = _histogram_matched(shaped[new_part, channel], image[kept_part, channel])
    return np.clip(image * (1 - mask) + shaped * mask, 0, 1)


def _up_to_multiple(value: int, step: int) -> int:
    return math.ceil(value / step) * step


class Script(scripts.Script):
    def title(self):
        return "Outpainting mk2"

    def show(self, is_img2img):
        return is_img2img

    def ui(self, is_img2img):
        info = gr.HTML("<p style=\"margin-bottom:0.75em\">Recommended settings: Sampling Steps: 80-100, Sampler: Euler "
                       "a, Denoising strength: 0.8</p>")
        pixels = gr.Slider(label="Pixels to expand", minimum=8, maximum=256, step=8, value=128,
                           elem_id=self.elem_id("pixels"))
        mask_blur = gr.Slider(label="Mask blur", minimum=0, maximum=64, step=1, value=8,
                              elem_id=self.elem_id("mask_blur"))
        direction = gr.CheckboxGroup(label="Outpainting direction", choices=list(DIRECTIONS), value=list(DIRECTIONS),
                                     elem_id=self.elem_id("direction"))
        noise_q = gr.Slider(label="Fall-off exponent (lower=higher detail)", minimum=0.0, maximum=4.0, step=0.01,
                            value=1.0, elem_id=self.elem_id("noise_q"))
        color_variation = gr.Slider(label="Color variation", minimum=0.0, maximum=1.0, step=0.01, value=0.05,
                                    elem_id=self.elem_id("color_variation"))
        return [info, pixels, mask_blur, direction, noise_q, color_variation]

    def run(self, p, _, pixels, mask_blur, direction, noise_q, color_variation):
        pixels, mask_blur = int(pixels), int(mask_blur)
        noise_q, color_variation = float(noise_q), float(color_variation)
        processing.fix_seed(p)
        save_samples = opts.samples_save and not p.do_not_save_samples
        save_grid = opts.grid_save and not (p.do_not_save_samples or p.do_not_save_grid)
        pass_width, pass_height = p.width, p.height
        p.inpaint_full_res = False
        p.inpainting_fill = 1
        p.mask_blur = mask_blur * 4
        p.do_not_save_samples = p.do_not_save_grid = True
        init = p.init_images[0].convert("RGB")
        sides = dict(zip(DIRECTIONS, images.outpainting_expansion(init.width, init.height, pixels, direction or ())))
        batch_count, batch_size, base_seed = p.n_iter, p.batch_size, p.seed
        p.n_iter = p.batch_size = 1
        state.job_count = batch_count * batch_size * sum(1 for amount in sides.values() if amount)
        found = {"seed": None, "info": None, "warnings": []}

        def grow(picture: Image.Image, side: str, amount: int, seed: int) -> Image.Image | None:
            """`picture` grown by `amount` pixels on `side`: the new strip (and `mask_blur` pixels of the picture
            beside it) painted in one pass at most the width or height set. None when stopped."""
            across = side in ("left", "right")
            res_w, res_h = picture.width + (amount if across else 0), picture.height + (0 if across else amount)
            canvas_w, canvas_h = _up_to_multiple(res_w, 64), _up_to_multiple(res_h, 64)
            canvas = Image.new("RGB", (canvas_w, canvas_h))
            canvas.paste(picture, (amount if side == "left" else 0, amount if side == "up" else 0))
            mask = Image.new("RGB", canvas.size, "white")
            ImageDraw.Draw(mask).rectangle((
                amount + mask_blur if side == "left" else 0, amount + mask_blur if side == "up" else 0,
                canvas_w - amount - mask_blur if side == "right" else res_w,
                canvas_h - amount - mask_blur if side == "down" else res_h), fill="black")
            filled = matched_noise(np.asarray(canvas) / 255.0, np.asarray(mask) / 255.0, noise_q, color_variation)
            filled = Image.fromarray((filled * 255).astype(np.uint8), "RGB")

            pass_w = min(pass_width, _up_to_multiple(res_w, 8)) if across else canvas_w
            pass_h = canvas_h if across else min(pass_height, _up_to_multiple(res_h, 8))
            box = (0 if side == "left" else canvas_w - pass_w, 0 if side == "up" else canvas_h - pass_h,
                   pass_w if side == "left" else canvas_w, pass_h if side == "up" else canvas_h)
            p.width, p.height, p.seed = pass_w, pass_h, seed
            p.init_images, p.image_mask = [filled.crop(box)], mask.crop(box)
            processed = processing.process_images(p)
            found["warnings"] += processed.warnings
            if not processed.images:
                return None
            if found["seed"] is None:
                found["seed"], found["info"] = processed.seed, processed.info
            filled.paste(processed.images[0], box[:2])
            return filled.crop((0, 0, res_w, res_h))

        results = []
        for number in range(batch_count * batch_size):
            picture = init
            for side, amount in sides.items():
                if amount and picture is not None and not state.interrupted:
                    picture = grow(picture, side, amount, base_seed + number)
            if picture is None or state.interrupted:
                break
            results.append(picture)

        shown, first = results, 0
        grid = images.image_grid(results) if results else None
        wanted_grid = grid is not None and not (len(results) < 2 and opts.grid_only_if_multiple)
        if wanted_grid and opts.return_grid:
            shown, first = [grid, *results], 1
        if save_samples:
            for picture in results:
                images.save_image(picture, p.outpath_samples, "", found["seed"], p.prompt, opts.samples_format,
                                  info=found["info"], p=p)
        if wanted_grid and save_grid:
            images.save_image(grid, p.outpath_grids, "grid", found["seed"], p.prompt, opts.grid_format,
                              info=found["info"], short_filename=not opts.grid_extended_filename, grid=True, p=p)
        processed = processing.Processed(p, shown, found["seed"], found["info"], index_of_first_image=first)
        processed.warnings = found["warnings"]
        processed.interrupted = state.interrupted
        return processed
