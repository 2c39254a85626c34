"""ControlNet preprocessors that need no model file, and the hint a ControlNet gets from a detected map.

Names, labels, sliders and behaviour follow the A1111 ControlNet extension (Mikubill/sd-webui-controlnet), so
that its API clients and infotexts work unchanged. A preprocessor turns a unit's picture into the "detected map"
the user previews. Most work at the processor resolution: the picture's short side is scaled to it, the longer
side follows, and the map stays that size. None, invert, recolor, tile and inpaint work at the picture's own size
(tile_resample divides it by its rate).
`hint_tensor` then fits a map to the generation size with the extension's three resize modes.

Inpaint maps are RGBA: the alpha channel is the mask (255 = masked, to be generated). In the hint, masked pixels
are -1 in all three channels (the extension's "ControlNet inpaint protocol"; lllyasviel's inpaint ControlNet was
trained on that); every other hint value is in 0..1.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import cv2
import numpy as np
import torch
from PIL import Image

# A very long, thin picture at a short-side resolution would give a map of hundreds of thousands of pixels per row
# (7x4000 at 512: 512x292571); the scale stops where the map reaches either limit. OpenCV's remap needs sides
# under 32767.
MAX_MAP_SIDE = 16384
MAX_MAP_PIXELS = 4096 * 4096
DEFAULT_RESOLUTION = 512
SHUFFLE_NOISE_CELL = 256  # the extension's content shuffle: one random offset per 256-pixel cell, smoothly blended

RESIZE_MODES = ("Just Resize", "Crop and Resize", "Resize and Fill")
# Older names the extension still accepts, and A1111's img2img "latent" mode, which means Just Resize here.
_RESIZE_MODE_ALIASES = {"inner fit (scale to fit)": 1, "scale to fit (inner fit)": 1,
                        "outer fit (shrink to fit)": 2, "envelope (outer fit)": 2,
                        "just resize (latent upscale)": 0}


class Slider(NamedTuple):
    label: str
    minimum: float
    maximum: float
    default: float
    step: float


RESOLUTION = Slider("Preprocessor Resolution", 64, 2048, DEFAULT_RESOLUTION, 1)


@dataclass(frozen=True)
class Params:
    """What a preprocessor function gets besides the picture, with the defaults already filled in."""
    resolution: int
    threshold_a: float
    threshold_b: float
    mask: np.ndarray | None  # H x W bool, True where masked; only for preprocessors that take a mask
    seed: int


@dataclass(frozen=True)
class Preprocessor:
    """`name` is the extension's module name; `label` is what its dropdown shows (and its module_list with
    alias_names); both are accepted. `sliders` are for (processor_res, threshold_a, threshold_b); None: not used."""
    name: str
    label: str
    function: Callable[[np.ndarray, Params], np.ndarray]
    sliders: tuple[Slider | None, Slider | None, Slider | None] = (None, None, None)
    needs_mask: bool = False

    def api_sliders(self) -> list[dict | None]:
        """The extension's `module_detail` slider list: a dict per slider (name, value, min, max, step), None for
        an unused one before a used one."""
        listed = [None if s is None else {"name": s.label, "value": s.default, "min": s.minimum, "max": s.maximum,
                                          "step": s.step} for s in self.sliders]
        while listed and listed[-1] is None:
            listed.pop()
        return listed

    def params(self, resolution: int | None, threshold_a: float | None, threshold_b: float | None,
               mask: np.ndarray | None = None, seed: int = 0) -> Params:
        """Missing or negative values (the extension's API sends -1) take the slider's default; so does a
        resolution of 0."""
        def value(given: float | None, slider: Slider | None) -> float:
            if given is not None and given >= 0:
                return given
            return slider.default if slider is not None else 0.0
        res_slider, a_slider, b_slider = self.sliders
        resolution = int(value(resolution, res_slider)) or DEFAULT_RESOLUTION
        return Params(resolution, float(value(threshold_a, a_slider)), float(value(threshold_b, b_slider)), mask, seed)


# ---------------------------------------------------------------------------------------------- picture helpers

def _rgb(picture: Image.Image) -> np.ndarray:
    """HWC uint8 RGB; a transparent picture is laid over white, as the extension does with RGBA input."""
    if picture.mode in ("RGBA", "LA", "PA") or "transparency" in picture.info:
        picture = Image.alpha_composite(Image.new("RGBA", picture.size, "white"), picture.convert("RGBA"))
    return np.asarray(picture.convert("RGB")).copy()


def _scaled(image: np.ndarray, resolution: int) -> np.ndarray:
    """The picture with its short side at `resolution` (within MAX_MAP_SIDE / MAX_MAP_PIXELS)."""
    h, w = image.shape[:2]
    k = min(resolution / min(h, w), MAX_MAP_SIDE / max(h, w), math.sqrt(MAX_MAP_PIXELS / (h * w)))
    size = (max(1, round(w * k)), max(1, round(h * k)))
    if size == (w, h):
        return image
    return cv2.resize(image, size, interpolation=cv2.INTER_CUBIC if k > 1 else cv2.INTER_AREA)


def _on_padded(image: np.ndarray, resolution: int, detect: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Scale, pad right and bottom to multiples of 64 by repeating the edge, detect, cut the padding off (the
    extension's resize_image_with_pad: detectors see the same borders as there)."""
    image = _scaled(image, resolution)
    h, w = image.shape[:2]
    padded = np.pad(image, [(0, -h % 64), (0, -w % 64), (0, 0)], mode="edge")
    return np.ascontiguousarray(detect(padded)[:h, :w])


def _gray_to_rgb(single: np.ndarray) -> np.ndarray:
    return np.repeat(single[:, :, None], 3, axis=2)


# ---------------------------------------------------------------------------------------------- preprocessors

def _identity(image: np.ndarray, _params: Params) -> np.ndarray:
    return image


def _invert(image: np.ndarray, _params: Params) -> np.ndarray:
    return 255 - image


def _canny(image: np.ndarray, params: Params) -> np.ndarray:
    low, high = params.threshold_a, params.threshold_b
    return _on_padded(image, params.resolution, lambda x: _gray_to_rgb(cv2.Canny(x, low, high)))


def _threshold(image: np.ndarray, params: Params) -> np.ndarray:
    def binarize(x: np.ndarray) -> np.ndarray:
        return _gray_to_rgb(np.where(x.min(axis=2) > params.threshold_a, 255, 0).astype(np.uint8))
    return _on_padded(image, params.resolution, binarize)


def _scribble_xdog(image: np.ndarray, params: Params) -> np.ndarray:
    """Difference of Gaussians: lines are where the fine blur is darker than the coarse one. (The extension
    computes 2 * darkness in uint8, which wraps for strong lines and leaves holes in them; this does not.)"""
    def lines(x: np.ndarray) -> np.ndarray:
        x = x.astype(np.float32)
        darkness = (cv2.GaussianBlur(x, (0, 0), 5.0) - cv2.GaussianBlur(x, (0, 0), 0.5)).min(axis=2)
        darkness = np.ceil(darkness.clip(0, 255))
        return _gray_to_rgb(np.where(2 * darkness > params.threshold_a, 255, 0).astype(np.uint8))
    return _on_padded(image, params.resolution, lines)


def _lineart_standard(image: np.ndarray, params: Params) -> np.ndarray:
    """Dark lines on a light background, brightness normalised by the median line strength."""
    def lines(x: np.ndarray) -> np.ndarray:
        x = x.astype(np.float32)
        strength = (cv2.GaussianBlur(x, (0, 0), 6.0) - x).min(axis=2).clip(0, 255)
        drawn = strength[strength > 8]
        strength *= 127 / max(16.0, float(np.median(drawn)) if drawn.size else 0.0)
        return _gray_to_rgb(strength.clip(0, 255).astype(np.uint8))
    return _on_padded(image, params.resolution, lines)


def _blur_gaussian(image: np.ndarray, params: Params) -> np.ndarray:
    sigma = max(params.threshold_a, 0.01)
    return cv2.GaussianBlur(_scaled(image, params.resolution), (0, 0), sigma)


def _tile_resample(image: np.ndarray, params: Params) -> np.ndarray:
    """Scaled down by the rate (nothing below 1.1), at the picture's size otherwise."""
    rate = params.threshold_a
    if rate < 1.1:
        return image
    h, w = image.shape[:2]
    return cv2.resize(image, (max(1, int(w / rate)), max(1, int(h / rate))), interpolation=cv2.INTER_AREA)


def _color_grid(image: np.ndarray, params: Params) -> np.ndarray:
    """T2I-Adapter colour: the picture averaged into cells of about 64 pixels."""
    image = _scaled(image, params.resolution)
    h, w = image.shape[:2]
    cells = cv2.resize(image, (max(1, w // 64), max(1, h // 64)), interpolation=cv2.INTER_CUBIC)
    return cv2.resize(cells, (w, h), interpolation=cv2.INTER_NEAREST)


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cell: int) -> np.ndarray:
    """Uniform noise on a coarse grid, cubic-interpolated to h x w and stretched to 0..1."""
    coarse = rng.uniform(0.0, 1.0, size=(h // cell + 2, w // cell + 2)).astype(np.float32)
    noise = cv2.resize(coarse, (w + 2 * cell, h + 2 * cell), interpolation=cv2.INTER_CUBIC)[cell:cell + h,
                                                                                          cell:cell + w]
    noise = noise - noise.min()
    top = noise.max()
    return noise / top if top > 0 else noise


def _shuffle(image: np.ndarray, params: Params) -> np.ndarray:
    """Content shuffle: each pixel is read from a place given by two smooth random fields, so colours and
    textures stay but the layout is lost. The seed makes it repeatable."""
    image = _scaled(image, params.resolution)
    h, w = image.shape[:2]
    rng = np.random.default_rng(params.seed % 2**32)
    source_x = _smooth_noise(rng, h, w, SHUFFLE_NOISE_CELL) * float(w - 1)
    source_y = _smooth_noise(rng, h, w, SHUFFLE_NOISE_CELL) * float(h - 1)
    return cv2.remap(image, source_x, source_y, cv2.INTER_LINEAR)


def _recolor_luminance(image: np.ndarray, params: Params) -> np.ndarray:
    # The extension hands the RGB picture to OpenCV's BGR conversion; kept, as recolor models are used with it.
    lightness = cv2.cvtColor(image, cv2.COLOR_BGR2LAB)[:, :, 0]
    return _gray_to_rgb(_gamma(lightness, params.threshold_a))


def _recolor_intensity(image: np.ndarray, params: Params) -> np.ndarray:
    return _gray_to_rgb(_gamma(image.max(axis=2), params.threshold_a))


def _gamma(channel: np.ndarray, gamma: float) -> np.ndarray:
    return ((channel.astype(np.float32) / 255.0) ** gamma * 255.0).clip(0, 255).astype(np.uint8)


def _inpaint(image: np.ndarray, params: Params) -> np.ndarray:
    """The picture with the mask as alpha (255 = to be generated); without a mask, nothing is marked."""
    if params.mask is None:
        return image
    return np.dstack([image, np.where(params.mask, 255, 0).astype(np.uint8)])


def _table(*preprocessors: Preprocessor) -> dict[str, Preprocessor]:
    return {p.name: p for p in preprocessors}


_TILE_VARIATION = Slider("Variation", 3.0, 32.0, 8.0, 1.0)

# In the extension's dropdown order: none, invert, then by label.
PREPROCESSORS: dict[str, Preprocessor] = _table(
    Preprocessor("none", "none", _identity),
    Preprocessor("invert", "invert (from white bg & black line)", _invert),
    Preprocessor("blur_gaussian", "blur_gaussian", _blur_gaussian,
                 (RESOLUTION, Slider("Sigma", 0.01, 64.0, 9.0, 0.01), None)),
    Preprocessor("canny", "canny", _canny,
                 (RESOLUTION, Slider("Canny Low Threshold", 1, 255, 100, 1),
                  Slider("Canny High Threshold", 1, 255, 200, 1))),
    Preprocessor("inpaint", "inpaint_global_harmonious", _inpaint, needs_mask=True),
    Preprocessor("inpaint_only", "inpaint_only", _inpaint, needs_mask=True),
    Preprocessor("lineart_standard", "lineart_standard (from white bg & black line)", _lineart_standard,
                 (RESOLUTION, None, None)),
    Preprocessor("recolor_intensity", "recolor_intensity", _recolor_intensity,
                 (None, Slider("Gamma Correction", 0.1, 2.0, 1.0, 0.001), None)),
    Preprocessor("recolor_luminance", "recolor_luminance", _recolor_luminance,
                 (None, Slider("Gamma Correction", 0.1, 2.0, 1.0, 0.001), None)),
    Preprocessor("scribble_xdog", "scribble_xdog", _scribble_xdog,
                 (RESOLUTION, Slider("XDoG Threshold", 1, 64, 32, 1), None)),
    Preprocessor("shuffle", "shuffle", _shuffle, (RESOLUTION, None, None)),
    Preprocessor("color", "t2ia_color_grid", _color_grid, (RESOLUTION, None, None)),
    Preprocessor("threshold", "threshold", _threshold,
                 (RESOLUTION, Slider("Binarization Threshold", 0, 255, 127, 1), None)),
    # The colour fix itself happens while sampling; the map is the picture.
    Preprocessor("tile_colorfix", "tile_colorfix", _identity, (None, _TILE_VARIATION, None)),
    Preprocessor("tile_colorfix+sharp", "tile_colorfix+sharp", _identity,
                 (None, _TILE_VARIATION, Slider("Sharpness", 0.0, 2.0, 1.0, 0.01))),
    Preprocessor("tile_resample", "tile_resample", _tile_resample,
                 (None, Slider("Down Sampling Rate", 1.0, 8.0, 1.0, 0.01), None)),
)


def find_preprocessor(name: str | None) -> Preprocessor:
    """By module name or label, any case; None means "none"."""
    wanted = (name or "none").strip().lower()
    for preprocessor in PREPROCESSORS.values():
        if wanted in (preprocessor.name.lower(), preprocessor.label.lower()):
            return preprocessor
    valid = ", ".join(p.label for p in PREPROCESSORS.values())
    raise ValueError(f"Unknown ControlNet preprocessor {name!r}; valid ones: {valid}")


def _mask_array(mask: Image.Image, size: tuple[int, int]) -> np.ndarray:
    """White (over half) = masked, at the picture's size."""
    gray = mask.convert("L")
    if gray.size != size:
        gray = gray.resize(size, Image.BILINEAR)
    return np.asarray(gray) > 127


def run_preprocessor(name: str, picture: Image.Image, resolution: int | None = None,
                     threshold_a: float | None = None, threshold_b: float | None = None,
                     mask: Image.Image | None = None, seed: int = 0) -> Image.Image:
    """The detected map of `picture` (RGB; RGBA with the mask as alpha for the inpaint ones). Missing or negative
    values take the slider defaults; `mask` counts only for preprocessors with `needs_mask`."""
    preprocessor = find_preprocessor(name)
    image = _rgb(picture)
    mask_array = _mask_array(mask, picture.size) if mask is not None and preprocessor.needs_mask else None
    params = preprocessor.params(resolution, threshold_a, threshold_b, mask_array, seed)
    return Image.fromarray(np.ascontiguousarray(preprocessor.function(image, params)))


def visible_map(detected_map: Image.Image) -> Image.Image:
    """What the unit's preview shows: an inpaint map with its masked part half transparent, as the extension."""
    if detected_map.mode != "RGBA":
        return detected_map
    rgba = np.asarray(detected_map).copy()
    rgba[:, :, 3] = 255 - rgba[:, :, 3] // 2
    return Image.fromarray(rgba)


# ---------------------------------------------------------------------------------------------- fitting and hint

def resize_mode_index(resize_mode: int | str) -> int:
    """0 Just Resize, 1 Crop and Resize, 2 Resize and Fill, from the extension's names (any case, old names too)
    or A1111's numbers (3, the latent "Just resize", and anything above count as Just Resize, as there)."""
    if isinstance(resize_mode, str):
        wanted = resize_mode.strip().lower()
        for index, label in enumerate(RESIZE_MODES):
            if wanted == label.lower():
                return index
        if wanted in _RESIZE_MODE_ALIASES:
            return _RESIZE_MODE_ALIASES[wanted]
    elif int(resize_mode) >= 0:
        return int(resize_mode) if int(resize_mode) < len(RESIZE_MODES) else 0
    raise ValueError(f"Unknown resize mode {resize_mode!r}; valid ones: {', '.join(RESIZE_MODES)} (or 0, 1, 2)")


def pixel_perfect_resolution(picture_size: tuple[int, int], target_size: tuple[int, int],
                             resize_mode: int | str) -> int:
    """The processor resolution at which the map needs no further scaling: sizes are (width, height). Resize and
    Fill fits the whole picture inside the target, the other modes cover the target."""
    (width, height), (target_w, target_h) = picture_size, target_size
    scales = (target_h / height, target_w / width)
    k = min(scales) if resize_mode_index(resize_mode) == 2 else max(scales)
    return int(round(k * min(width, height)))


def _distinct_colours(rgb: np.ndarray) -> int:
    seen = np.zeros(1 << 24, dtype=bool)  # one flag per 24-bit colour: faster than sorting a big map
    seen[(rgb[:, :, 0].astype(np.uint32) << 16 | rgb[:, :, 1].astype(np.uint32) << 8 | rgb[:, :, 2]).ravel()] = True
    return int(np.count_nonzero(seen))


_LINE_KERNELS = [np.array(k, dtype=np.uint8) for k in ([[0, 0, 0], [1, 1, 1], [0, 0, 0]],
                                                       [[0, 1, 0], [0, 1, 0], [0, 1, 0]],
                                                       [[1, 0, 0], [0, 1, 0], [0, 0, 1]],
                                                       [[0, 0, 1], [0, 1, 0], [1, 0, 0]])]


def _ridges(gray: np.ndarray) -> np.ndarray:
    """Keep only pixels that are a maximum across the line in some direction (a scaled-up edge back to a ridge)."""
    kept = np.zeros_like(gray)
    for kernel in _LINE_KERNELS:
        top = cv2.dilate(gray, kernel) == gray
        kept[top] = gray[top]
    return kept


def _rotations(*kernels: list[list[int]]) -> list[np.ndarray]:
    return [np.rot90(np.array(k, dtype=np.int32), turn) for turn in range(4) for k in kernels]


# Hit-or-miss patterns (1 set, -1 clear, 0 either): thinning peels border pixels of thick lines; the spur
# patterns remove one-pixel stubs that scaling up leaves at line ends.
_THINNING = _rotations([[-1, -1, -1], [0, 1, 0], [1, 1, 1]], [[0, -1, -1], [1, 1, -1], [0, 1, 0]])
_SPURS = _rotations([[-1, -1, -1], [-1, 1, -1], [0, 0, -1]], [[-1, -1, -1], [-1, 1, -1], [-1, 0, 0]])


def _remove_matches(binary: np.ndarray, kernels: list[np.ndarray]) -> bool:
    changed = False
    for kernel in kernels:
        hits = cv2.morphologyEx(binary, cv2.MORPH_HITMISS, kernel) > 127
        if hits.any():
            binary[hits] = 0
            changed = True
    return changed


def _thin(binary: np.ndarray, remove_spurs: bool) -> np.ndarray:
    binary = binary.copy()
    for _ in range(32):
        if not _remove_matches(binary, _THINNING):
            break
    if remove_spurs:
        _remove_matches(binary, _SPURS)
    return binary


def _fine_resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """The extension's control-map scaling: black-and-white maps stay black and white (one-pixel edges stay one
    pixel wide), maps of few colours (segmentation) keep their exact colours, others are scaled smoothly. An
    inpaint map's alpha is scaled alongside and kept binary."""
    alpha = image[:, :, 3] if image.shape[2] == 4 else None
    rgb = np.ascontiguousarray(image[:, :, :3])
    if rgb.shape[:2] != (height, width):
        smaller = width * height < rgb.shape[0] * rgb.shape[1]
        bigger = width * height > rgb.shape[0] * rgb.shape[1]
        colours = _distinct_colours(rgb)
        binary = colours == 2 and rgb.min() < 16 and rgb.max() > 240
        one_pixel_edges = False
        if binary:
            square = np.ones((3, 3), np.uint8)
            opened = cv2.dilate(cv2.erode(rgb, square), square)
            one_pixel_edges = 2 * np.count_nonzero(opened < rgb) > np.count_nonzero(rgb > 127)
        if 2 < colours < 200:
            interpolation = cv2.INTER_NEAREST
        elif smaller:
            interpolation = cv2.INTER_AREA
        else:
            interpolation = cv2.INTER_CUBIC
        rgb = cv2.resize(rgb, (width, height), interpolation=interpolation)
        if alpha is not None:
            alpha = cv2.resize(alpha, (width, height), interpolation=interpolation)
        if binary:
            gray = rgb.astype(np.float32).mean(axis=2).clip(0, 255).astype(np.uint8)
            if one_pixel_edges:
                gray = _ridges(gray)
            _, gray = cv2.threshold(gray, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
            if one_pixel_edges:
                gray = _thin(gray, remove_spurs=bigger)
            rgb = _gray_to_rgb(gray)
    if alpha is None:
        return rgb
    return np.dstack([rgb, np.where(alpha > 127, 255, 0).astype(np.uint8)])


def resized_map(detected_map: Image.Image, width: int, height: int, resize_mode: int | str) -> Image.Image:
    """The map at the generation size: stretched (Just Resize), scaled to cover and cut to the middle (Crop and
    Resize), or scaled to fit and centred on the median colour of its border (Resize and Fill; for an inpaint map
    the filled margin counts as masked, so it is generated)."""
    image = np.asarray(detected_map.convert("RGBA" if detected_map.mode == "RGBA" else "RGB"))
    mode = resize_mode_index(resize_mode)
    if mode == 0:
        return Image.fromarray(_fine_resize(image, width, height))
    h, w = image.shape[:2]
    k = (max if mode == 1 else min)(height / h, width / w)
    fitted = _fine_resize(image, max(1, round(w * k)), max(1, round(h * k)))
    new_h, new_w = fitted.shape[:2]
    if mode == 1:
        top, left = max(0, (new_h - height) // 2), max(0, (new_w - width) // 2)
        return Image.fromarray(np.ascontiguousarray(fitted[top:top + height, left:left + width]))
    border = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])
    fill = np.median(border, axis=0).astype(np.uint8)
    if fill.size == 4:
        fill[3] = 255
    out = np.tile(fill, (height, width, 1))
    top, left = max(0, (height - new_h) // 2), max(0, (width - new_w) // 2)
    out[top:top + new_h, left:left + new_w] = fitted
    return Image.fromarray(out)


def hint_tensor(detected_map: Image.Image, width: int, height: int, resize_mode: int | str) -> torch.Tensor:
    """The ControlNet's input: float32 [1, 3, height, width], RGB in 0..1, masked pixels of an inpaint map -1."""
    fitted = np.asarray(resized_map(detected_map, width, height, resize_mode), dtype=np.float32) / 255.0
    rgb = fitted[:, :, :3].copy()
    if fitted.shape[2] == 4:
        rgb[fitted[:, :, 3] > 0.5] = -1.0
    return torch.from_numpy(rgb).permute(2, 0, 1).unsqueeze(0).contiguous()
