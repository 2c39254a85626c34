"""Model upscalers (ESRGAN, Real-ESRGAN, SwinIR, ScuNET, DAT, HAT, ...) loaded by spandrel.

Files are found in A1111's folders (`models/ESRGAN`, `models/RealESRGAN`, ... given by the caller), read with the
app's safe readers (`checkpoint_io`: safetensors, or the weights-only unpickler) and recognised by spandrel. A file
spandrel does not recognise is listed nowhere and reported once, with its name and why. Each model is named by its
file stem, as A1111 shows it, and knows its scale.

`upscale_with_model` applies a model's scale as many times as needed to reach the target (while the picture is
smaller than the target), then resizes to the exact target with Lanczos. Inference runs tile by tile with
overlapping tiles blended by linear ramps (no seams), fp32 on the CPU, checking `should_stop` between tiles.
"""
from __future__ import annotations

import gc
import logging
import math
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from modules.models.checkpoint_io import CheckpointError, read_state_dict
from modules.paths import UPSCALER_FOLDERS

log = logging.getLogger(__name__)

# A1111's upscalers that need no model, in its order; "None" leaves the picture to the final Lanczos resize.
RESAMPLERS = {"None": None, "Lanczos": Image.LANCZOS, "Nearest": Image.NEAREST}
# A1111's names for Real-ESRGAN's released files in models/RealESRGAN (infotexts and API clients use them).
REALESRGAN_NAMES = {"realesr-general-x4v3": "R-ESRGAN General 4xV3",
                    "realesr-general-wdn-x4v3": "R-ESRGAN General WDN 4xV3",
                    "realesr-animevideov3": "R-ESRGAN AnimeVideo", "RealESRGAN_x4plus": "R-ESRGAN 4x+",
                    "RealESRGAN_x4plus_anime_6B": "R-ESRGAN 4x+ Anime6B", "RealESRGAN_x2plus": "R-ESRGAN 2x+"}
MAX_PASS_PIXELS = 8192 * 8192  # a model pass that would make more pixels is left to Lanczos (host memory)
MODEL_SUFFIXES = (".pth", ".pt", ".safetensors")
TILE_SIZE = 192  # A1111's "Tile size for ESRGAN upscalers" (0: the whole picture at once)
TILE_OVERLAP = 8  # A1111's "Tile overlap for ESRGAN upscalers", in pixels of the input
TILE_GRID = 8  # tiles start on multiples of this (see tile_spans)
MAX_PASSES = 8  # a safety net only: "upscale by 16" with a 2x model takes 4 passes
# Wrappers that training scripts put around the weights (BasicSR's params_ema first, as Real-ESRGAN uses it).
_WRAPPER_KEYS = ("params_ema", "params-ema", "params", "state_dict", "model_state_dict", "model", "net", "generator")

Progress = Callable[[int, int], None]  # (tiles done, tiles in all passes)


class UpscalerError(Exception):
    """A model file or a request that cannot be used; the message names the file and says why."""


class UpscaleInterruptedError(Exception):
    """`should_stop` answered True between two tiles."""


@dataclass(frozen=True)
class UpscalerModel:
    """One usable model file: `name` is what A1111 shows (the file stem; A1111's names for Real-ESRGAN's releases)."""

    name: str
    path: Path
    scale: int
    architecture: str
    tags: tuple[str, ...] = ()
    tiles_internally: bool = False  # spandrel says the architecture must see the whole picture


@dataclass
class Discovery:
    models: list[UpscalerModel] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # "file name: why", one per unusable file

    def by_name(self) -> dict[str, UpscalerModel]:
        return {m.name: m for m in self.models}


def model_folders(models_dir: Path) -> list[Path]:
    """A1111's upscaler folders under a models directory (the caller adds flag overrides)."""
    return [Path(models_dir) / name for name in UPSCALER_FOLDERS]


def model_files(folders: Iterable[Path]) -> list[Path]:
    """Every .pth / .pt / .safetensors file in the folders and their subfolders, sorted per folder."""
    found: list[Path] = []
    seen: set[Path] = set()
    for folder in folders:
        folder = Path(folder)
        if not folder.is_dir():
            continue
        for path in sorted(folder.rglob("*"), key=lambda p: str(p).lower()):
            if path.suffix.lower() in MODEL_SUFFIXES and path.is_file() and path.resolve() not in seen:
                seen.add(path.resolve())
                found.append(path)
    return found


def read_spandrel_model(path: Path, allow_unsafe_pickle: bool, wrappers: tuple[str, ...],
                        error: type[Exception]):
    """The safe reader, then spandrel's loader: the model descriptor, or `error` naming the file and why."""
    import spandrel

    try:
        sd = dict(read_state_dict(path, allow_unsafe_pickle, wrappers=wrappers))
    except CheckpointError as e:
        raise error(str(e)) from e
    try:
        return spandrel.ModelLoader().load_from_state_dict(sd)
    except spandrel.UnsupportedModelError as e:
        raise error(f"{path.name}: not a model architecture spandrel recognises "
                    f"({len(sd)} tensors; first key {next(iter(sd))!r})") from e
    except Exception as e:  # a recognised layout whose shapes do not fit: spandrel raises many kinds
        raise error(f"{path.name}: spandrel could not build the model: {type(e).__name__}: {e}") from e


def load_descriptor(path: Path, allow_unsafe_pickle: bool = False):
    """Read a file and let spandrel build its model (on the CPU, fp32, eval mode). Raises UpscalerError."""
    import spandrel

    path = Path(path)
    desc = read_spandrel_model(path, allow_unsafe_pickle, _WRAPPER_KEYS, UpscalerError)
    if not isinstance(desc, spandrel.ImageModelDescriptor):
        raise UpscalerError(f"{path.name}: a {desc.architecture.name} model ({desc.purpose}), not an upscaler")
    if desc.purpose not in ("SR", "Restoration"):
        raise UpscalerError(f"{path.name}: a {desc.architecture.name} {desc.purpose} model, not an upscaler")
    if desc.input_channels != 3 or desc.output_channels != 3:
        raise UpscalerError(f"{path.name}: works on {desc.input_channels}-channel pictures, not RGB")
    return desc.float().eval()


def _describe(path: Path, desc, realesrgan_folders: tuple[Path, ...]) -> UpscalerModel:
    name = path.stem
    if any(path.is_relative_to(folder) for folder in realesrgan_folders):
        name = REALESRGAN_NAMES.get(name, name)
    from spandrel import ModelTiling

    return UpscalerModel(name=name, path=path, scale=int(desc.scale), architecture=desc.architecture.name,
                         tags=tuple(desc.tags), tiles_internally=desc.tiling == ModelTiling.INTERNAL)


def _shadows_a_builtin(name: str) -> bool:
    """A file named like a resampler or a hires-fix latent mode ("Latent", "Latent (bicubic)"...) would hide it."""
    return name in RESAMPLERS or name == "Latent" or name.startswith("Latent (")


class UpscalerLibrary:
    """The model upscalers of some folders. `refresh` rescans; files are read again only when they changed,
    and each unusable file is logged once (until it changes)."""

    def __init__(self, folders: Iterable[Path], allow_unsafe_pickle: bool = False,
                 realesrgan_folders: Iterable[Path] = ()):
        self.folders = [Path(f) for f in folders]
        self.allow_unsafe_pickle = allow_unsafe_pickle
        self.realesrgan_folders = tuple(Path(f) for f in realesrgan_folders)  # releases there get A1111's names
        self._seen: dict[Path, tuple[tuple[int, int], UpscalerModel | str]] = {}
        self.discovery = Discovery()

    def refresh(self) -> Discovery:
        result = Discovery()
        names: dict[str, Path] = {}
        seen: dict[Path, tuple[tuple[int, int], UpscalerModel | str]] = {}
        for path in model_files(self.folders):
            try:
                stat = path.stat()
            except OSError:  # removed while scanning
                continue
            stamp = (stat.st_size, stat.st_mtime_ns)
            cached = self._seen.get(path)
            if cached and cached[0] == stamp:
                outcome = cached[1]
            else:
                try:
                    desc = load_descriptor(path, self.allow_unsafe_pickle)
                    outcome = _describe(path, desc, self.realesrgan_folders)
                    del desc
                except UpscalerError as e:
                    outcome = str(e)
                    log.warning("Upscaler model not listed: %s", outcome)
            seen[path] = (stamp, outcome)
            if isinstance(outcome, str):
                result.problems.append(outcome)
            elif _shadows_a_builtin(outcome.name):
                result.problems.append(f"{path.name}: named like a built-in upscaler ({outcome.name}); rename it")
            elif outcome.name in names:
                result.problems.append(f"{path.name}: same name as {names[outcome.name]}; only that one is listed")
            else:
                names[outcome.name] = path
                result.models.append(outcome)
        self._seen = seen
        self.discovery = result
        gc.collect()
        return result


def discover(folders: Iterable[Path], allow_unsafe_pickle: bool = False) -> Discovery:
    """One scan of the folders: the usable models (by stem, with their scale) and a problem per unusable file."""
    return UpscalerLibrary(folders, allow_unsafe_pickle).refresh()


class ModelCache:
    """Keeps one loaded model; choosing another releases the first."""

    def __init__(self, device: torch.device | str = "cpu", allow_unsafe_pickle: bool = False, half: bool = True):
        self.device = torch.device(device)
        self.allow_unsafe_pickle = allow_unsafe_pickle
        self.half = half  # on a GPU, for architectures that allow it (--no-half: never)
        self._key: tuple | None = None
        self._desc = None

    @property
    def loaded(self) -> Path | None:
        return self._key[0] if self._key else None

    def get(self, model: UpscalerModel):
        stat = model.path.stat()
        key = (model.path, stat.st_size, stat.st_mtime_ns)
        if key != self._key:
            self.release()
            desc = load_descriptor(model.path, self.allow_unsafe_pickle)
            half = self.half and self.device.type == "cuda" and desc.supports_half
            self._desc = (desc.half() if half else desc).to(self.device)
            self._key = key
        return self._desc

    def release(self) -> None:
        if self._desc is None:
            return
        self._desc = self._key = None
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def upscale(self, model: UpscalerModel, picture: Image.Image, target_scale: float, **kwargs) -> Image.Image:
        return upscale_with_model(self.get(model), picture, target_scale, **kwargs)


def target_size(size: tuple[int, int], target_scale: float) -> tuple[int, int]:
    if not (math.isfinite(target_scale) and target_scale > 0):
        raise UpscalerError(f"the scale factor must be a number above 0, not {target_scale}")
    return max(1, round(size[0] * target_scale)), max(1, round(size[1] * target_scale))


def plan_passes(size: tuple[int, int], target: tuple[int, int], scale: int) -> list[tuple[int, int]]:
    """The input size of each model pass: passes run while the picture is smaller than the target (once at least
    when the target is not smaller than the picture, so 1x models and "upscale by 1" still apply the model)."""
    sizes: list[tuple[int, int]] = []
    w, h = size
    while len(sizes) < MAX_PASSES:
        below = w < target[0] or h < target[1]
        first = not sizes and target[0] >= size[0] and target[1] >= size[1]
        if not (below or first) or (sizes and scale <= 1) or w * h * scale * scale > MAX_PASS_PIXELS:
            break
        sizes.append((w, h))
        w, h = w * scale, h * scale
    return sizes


def tile_spans(length: int, tile: int, overlap: int) -> list[tuple[int, int]]:
    """(start, end) of the tiles along one side, overlapping by `overlap` at least, the last one ending at the end
    (it may be shorter). Tiles start on a TILE_GRID grid when the tile leaves room for it: window-attention and
    downsampling models (SwinIR, Swin2SR, SCUNet...) give a tile the whole picture's result only there."""
    if tile <= 0 or length <= tile:
        return [(0, length)]
    grid = TILE_GRID if tile - overlap >= TILE_GRID else 1
    step = (tile - overlap) // grid * grid
    spans = [(0, tile)]
    while spans[-1][1] < length:
        start = spans[-1][0] + step
        spans.append((start, min(start + tile, length)))
    return spans


def _ramp(n: int, ramp: int, left: bool, right: bool) -> torch.Tensor:
    """Blend weights along one side of a tile's output, on the sides that overlap another tile: 0 over the outer
    quarter of the overlap (pixels that saw the tile's edge padding), rising linearly over its middle half, 1 beyond;
    two tiles overlapping by exactly `ramp` pixels add up to 1 everywhere."""
    w = torch.ones(n)
    if ramp > 0:
        r = min(ramp, n)
        skip = ramp / 4
        rise = ((torch.arange(r, dtype=torch.float32) + 0.5 - skip) / (ramp - 2 * skip)).clamp(0, 1)
        if left:
            w[:r] = torch.minimum(w[:r], rise)
        if right:
            w[n - r:] = torch.minimum(w[n - r:], rise.flip(0))
    return w


def _to_tensor(picture: Image.Image) -> torch.Tensor:
    array = np.asarray(picture.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1).unsqueeze(0).contiguous()


def _to_picture(tensor: torch.Tensor) -> Image.Image:
    array = tensor.squeeze(0).permute(1, 2, 0).clamp(0, 1).mul(255).round().to(torch.uint8).cpu().numpy()
    return Image.fromarray(array, "RGB")


def run_tiled(desc, image: torch.Tensor, tile_size: int = TILE_SIZE, tile_overlap: int = TILE_OVERLAP,
              should_stop: Callable[[], bool] | None = None, on_tile: Callable[[], None] | None = None) -> torch.Tensor:
    """One model pass over a (1, 3, H, W) tensor in [0, 1], tile by tile; overlaps are blended."""
    from spandrel import ModelTiling

    _, _, h, w = image.shape
    scale = int(desc.scale)
    if tile_size <= 0 or desc.tiling == ModelTiling.INTERNAL:
        tile_size = max(h, w)
    overlap = max(0, min(tile_overlap, tile_size // 2))
    param = next(desc.model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None else torch.float32
    out = torch.zeros(1, 3, h * scale, w * scale)
    weight = torch.zeros(1, 1, h * scale, w * scale)
    for y, y_end in tile_spans(h, tile_size, overlap):
        wy = _ramp((y_end - y) * scale, overlap * scale, y > 0, y_end < h)
        for x, x_end in tile_spans(w, tile_size, overlap):
            if should_stop is not None and should_stop():
                raise UpscaleInterruptedError("interrupted")
            tile = image[:, :, y:y_end, x:x_end].to(device=device, dtype=dtype)
            result = desc(tile).float().cpu()
            wx = _ramp((x_end - x) * scale, overlap * scale, x > 0, x_end < w)
            mask = wy[:, None] * wx[None, :]
            ys_, xs_ = slice(y * scale, y_end * scale), slice(x * scale, x_end * scale)
            out[:, :, ys_, xs_] += result * mask
            weight[:, :, ys_, xs_] += mask
            if on_tile is not None:
                on_tile()
    return out / weight.clamp_min(1e-6)


def count_tiles(size: tuple[int, int], tile_size: int, tile_overlap: int) -> int:
    w, h = size
    if tile_size <= 0:
        return 1
    overlap = max(0, min(tile_overlap, tile_size // 2))
    return len(tile_spans(h, tile_size, overlap)) * len(tile_spans(w, tile_size, overlap))


def upscale_with_model(desc, picture: Image.Image, target_scale: float, *, size: tuple[int, int] | None = None,
                       tile_size: int = TILE_SIZE, tile_overlap: int = TILE_OVERLAP,
                       should_stop: Callable[[], bool] | None = None, progress: Progress | None = None) -> Image.Image:
    """`picture` upscaled by `target_scale` (or to `size`): the model applied while the picture is smaller than the
    target, then resized to the exact target with Lanczos. An alpha channel is resized with Lanczos and kept.
    Raises UpscaleInterruptedError when `should_stop()` turns True between tiles."""
    target = size or target_size(picture.size, target_scale)
    alpha = picture.getchannel("A") if picture.mode in ("RGBA", "LA") else None
    passes = plan_passes(picture.size, target, int(desc.scale))
    from spandrel import ModelTiling

    whole = tile_size <= 0 or desc.tiling == ModelTiling.INTERNAL
    total = sum(1 if whole else count_tiles(s, tile_size, tile_overlap) for s in passes)
    done = 0

    def on_tile() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total)

    result = picture.convert("RGB")
    if passes:
        tensor = _to_tensor(result)
        for _ in passes:
            tensor = run_tiled(desc, tensor, tile_size, tile_overlap, should_stop, on_tile)
        result = _to_picture(tensor)
    if result.size != target:
        result = result.resize(target, Image.LANCZOS)
    if alpha is not None:
        result.putalpha(alpha.resize(target, Image.LANCZOS))
    return result


@dataclass(frozen=True)
class UpscalerEntry:
    """One upscaler as the lists and the API show it: a resampler (no file) or a model file."""

    name: str
    scale: int  # A1111 answers 4 for the resamplers
    model: UpscalerModel | None = None


class Upscalers:
    """Every upscaler the program has: the resamplers, then the model files of its folders (rescanned on
    `refresh`). One model stays loaded; running an upscaler is serialised, as the loaded model is shared."""

    def __init__(self, folders: Iterable[Path], device: torch.device | str = "cpu", half: bool = True,
                 allow_unsafe_pickle: bool = False, realesrgan_folders: Iterable[Path] = ()):
        self.library = UpscalerLibrary(folders, allow_unsafe_pickle, realesrgan_folders)
        self.cache = ModelCache(device, allow_unsafe_pickle, half=half)
        self._scan_lock = threading.Lock()  # a rescan (an API list call) need not wait for an upscale
        self._run_lock = threading.Lock()
        self._refreshed = False

    def refresh(self) -> Discovery:
        with self._scan_lock:
            self._refreshed = True
            return self.library.refresh()

    def entries(self) -> list[UpscalerEntry]:
        if not self._refreshed:
            self.refresh()
        return [*(UpscalerEntry(name, 4) for name in RESAMPLERS),
                *(UpscalerEntry(m.name, m.scale, m) for m in self.library.discovery.models)]

    def names(self) -> list[str]:
        return [e.name for e in self.entries()]

    def realesrgan_models(self) -> list[UpscalerModel]:
        """The listed models in the Real-ESRGAN folders (/sdapi/v1/realesrgan-models)."""
        folders = self.library.realesrgan_folders
        return [e.model for e in self.entries()
                if e.model is not None and any(e.model.path.is_relative_to(f) for f in folders)]

    def entry(self, name: str) -> UpscalerEntry:
        found = {e.name: e for e in self.entries()}
        if name not in found:
            raise UpscalerError(f"unknown upscaler {name!r}; choose one of {', '.join(found)}")
        return found[name]

    def progress_steps(self, name: str, picture_size: tuple[int, int], size: tuple[int, int], tile_size: int,
                       tile_overlap: int) -> int:
        """How many times `upscale` will report progress for this picture (0: a resampler does it at once)."""
        model = self.entry(name).model
        if model is None:
            return 0
        passes = plan_passes(picture_size, size, model.scale)
        whole = tile_size <= 0 or model.tiles_internally
        return sum(1 if whole else count_tiles(s, tile_size, tile_overlap) for s in passes)

    def upscale(self, name: str, picture: Image.Image, size: tuple[int, int], *, tile_size: int = TILE_SIZE,
                tile_overlap: int = TILE_OVERLAP, should_stop: Callable[[], bool] | None = None,
                progress: Progress | None = None) -> Image.Image:
        """`picture` at exactly `size` through the named upscaler: a model applied while the picture is smaller
        than the target, then Lanczos; a resampler directly ("None": Lanczos, as A1111 resizes then)."""
        entry = self.entry(name)
        if entry.model is None or not plan_passes(picture.size, size, entry.model.scale):
            resample = RESAMPLERS.get(entry.name)
            if picture.size == size:
                return picture
            return picture.resize(size, Image.LANCZOS if resample is None else resample)
        with self._run_lock:
            try:
                return self.cache.upscale(entry.model, picture, 0, size=size, tile_size=tile_size,
                                          tile_overlap=tile_overlap, should_stop=should_stop, progress=progress)
            except (OSError, UpscalerError) as e:  # the file changed or went away since the scan
                self.cache.release()
                raise UpscalerError(f"upscaler {name}: {e}") from e
