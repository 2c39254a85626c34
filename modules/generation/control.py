"""ControlNet units as the A1111 ControlNet extension's API and infotext describe them (`alwayson_scripts:
{"controlnet": {"args": [unit, ...]}}`): reading and checking a unit, the text it leaves in the infotext, and
making the enabled ones ready for a job (preprocessed picture, loaded model)."""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace

from PIL import Image

from modules.generation.requests import GenerationError, check_picture
from modules.models.checkpoint_io import CheckpointError
from modules.models.controlnet import (
    ControlNetCache,
    ControlNetFile,
    LoadedControlNet,
    check_family,
    find_controlnet,
)
from modules.postprocessing.control_preprocessors import (
    find_preprocessor,
    hint_tensor,
    pixel_perfect_resolution,
    run_preprocessor,
)
from modules.sampling.denoiser import CONTROL_MODES, ControlUnit

RESIZE_MODES = ("Just Resize", "Crop and Resize", "Resize and Fill")
RESIZE_MODE_ALIASES = {"Inner Fit (Scale to Fit)": "Crop and Resize", "Outer Fit (Shrink to Fit)": "Resize and Fill",
                       "Scale to Fit (Inner Fit)": "Crop and Resize", "Envelope (Outer Fit)": "Resize and Fill"}
FIELD_ALIASES = {"input_image": "image", "guidance": "guidance_end", "lowvram": "low_vram", "mask_image": "mask"}
# The fields a unit writes into the infotext, in the extension's order ("ControlNet 0: "Module: canny, ...")
INFOTEXT_FIELDS = ("module", "model", "weight", "resize_mode", "processor_res", "threshold_a", "threshold_b",
                   "guidance_start", "guidance_end", "pixel_perfect", "control_mode")


@dataclass
class ControlNetUnitRequest:
    """One unit, with the extension's field names and defaults."""
    enabled: bool = False
    module: str = "none"
    model: str = "None"
    weight: float = 1.0
    image: Image.Image | None = None
    mask: Image.Image | None = None
    resize_mode: str = "Crop and Resize"
    low_vram: bool = False
    processor_res: int = -1  # -1: the preprocessor's default
    threshold_a: float = -1
    threshold_b: float = -1
    guidance_start: float = 0.0
    guidance_end: float = 1.0
    pixel_perfect: bool = False
    control_mode: str = "Balanced"

    def infotext(self) -> str:
        """The unit as the extension writes it: "Module: canny, Model: name [hash], Weight: 1.0, ..."."""
        words = {name: " ".join(w.capitalize() for w in name.split("_")) for name in INFOTEXT_FIELDS}
        return ", ".join(f"{words[name]}: {getattr(self, name)}" for name in INFOTEXT_FIELDS)


def _choice(value, choices: tuple[str, ...], aliases: dict[str, str], name: str) -> str:
    """A choice by its text or its index (the extension's enums take both)."""
    if isinstance(value, bool):
        raise GenerationError(f"{name}: {value!r} is not one of {', '.join(choices)}")
    if isinstance(value, int) and 0 <= value < len(choices):
        return choices[value]
    text = aliases.get(str(value), str(value))
    for choice in choices:
        if text.lower() == choice.lower():
            return choice
    raise GenerationError(f"{name}: {value!r} is not one of {', '.join(choices)}")


def _number(value, name: str, low: float | None = None, high: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise GenerationError(f"{name}: expected a number, got {value!r}")
    if (low is not None and value < low) or (high is not None and value > high):
        raise GenerationError(f"{name}: {value} is out of range; give {low:g} to {high:g}")
    return value


def unit_from_dict(values: dict, decode_picture: Callable[[str, str], Image.Image], index: int = 0
                   ) -> ControlNetUnitRequest:
    """A unit from the extension's API form. Pictures come as base64 (`decode_picture(data, what)`); a file path
    is never opened. Unknown fields are ignored, as the extension does."""
    if not isinstance(values, dict):
        raise GenerationError(f"controlnet unit {index}: expected an object with the unit's fields, got "
                              f"{type(values).__name__}")
    values = dict(values)
    for alias, name in FIELD_ALIASES.items():
        if alias in values:
            if name in values and values[name] is not None and alias != "guidance":
                raise GenerationError(f"controlnet unit {index}: give '{alias}' or '{name}', not both")
            values.setdefault(name, values.pop(alias))
    known = {f.name for f in fields(ControlNetUnitRequest)}
    unit = ControlNetUnitRequest(**{k: v for k, v in values.items() if k in known and k not in ("image", "mask")})
    where = f"controlnet unit {index}"
    unit.image = _picture(values.get("image"), decode_picture, f"{where} image")
    unit.mask = _picture(values.get("mask"), decode_picture, f"{where} mask")
    if isinstance(values.get("image"), dict) and unit.mask is None:  # {"image": ..., "mask": ...}
        unit.mask = _picture(values["image"].get("mask"), decode_picture, f"{where} mask")
    unit.enabled = bool(unit.enabled)
    unit.module, unit.model = str(unit.module or "none"), str(unit.model or "None")
    unit.weight = _number(unit.weight, f"{where} weight", 0, 2)
    unit.resize_mode = _choice(unit.resize_mode, RESIZE_MODES, RESIZE_MODE_ALIASES, f"{where} resize_mode")
    unit.control_mode = _choice(unit.control_mode, CONTROL_MODES, {}, f"{where} control_mode")
    unit.processor_res = int(_number(unit.processor_res, f"{where} processor_res", -1, 8192))
    unit.threshold_a = _number(unit.threshold_a, f"{where} threshold_a")
    unit.threshold_b = _number(unit.threshold_b, f"{where} threshold_b")
    unit.guidance_start = _number(unit.guidance_start, f"{where} guidance_start", 0, 1)
    unit.guidance_end = _number(unit.guidance_end, f"{where} guidance_end", 0, 1)
    if unit.guidance_start > unit.guidance_end:
        raise GenerationError(f"{where}: guidance_start ({unit.guidance_start}) is after guidance_end "
                              f"({unit.guidance_end})")
    unit.pixel_perfect, unit.low_vram = bool(unit.pixel_perfect), bool(unit.low_vram)
    return unit


def _picture(value, decode_picture: Callable[[str, str], Image.Image], what: str) -> Image.Image | None:
    if value is None or value == "":
        return None
    if isinstance(value, dict):
        value = value.get("image")
    elif isinstance(value, list | tuple) and len(value) == 2 and not isinstance(value[0], dict):
        value = value[0]  # [image, mask]
    if isinstance(value, Image.Image):
        picture = value
    elif isinstance(value, str):
        picture = decode_picture(value, what)
    else:
        raise GenerationError(f"{what}: expected a base64 picture, got {type(value).__name__}")
    check_picture(what, picture)
    return picture


@dataclass
class PreparedUnits:
    """What a job needs of its ControlNet units: the sampler's units, the infotext keys ("ControlNet 0"...), the
    detected maps (shown beside the pictures), and the models to keep on the device while sampling."""
    units: list[ControlUnit] = field(default_factory=list)
    params: dict[str, str] = field(default_factory=dict)
    detected_maps: list[Image.Image] = field(default_factory=list)
    models: list[LoadedControlNet] = field(default_factory=list)


def prepare_units(units: list[ControlNetUnitRequest], width: int, height: int, model, cache: ControlNetCache,
                  files: list[ControlNetFile], init_picture: Image.Image | None = None,
                  init_mask: Image.Image | None = None, seed: int = 0) -> PreparedUnits:
    """The enabled units ready for sampling at `width` x `height` with the loaded checkpoint `model`: each picture
    (or img2img's input when it has none) through its preprocessor, fitted to the size, its ControlNet loaded
    (checked against the checkpoint's family). Anything unusable is a GenerationError naming the unit."""
    prepared = PreparedUnits()
    for index, unit in enumerate(units):
        if not unit.enabled:
            continue
        where = f"controlnet unit {index}"
        picture = unit.image if unit.image is not None else init_picture
        if picture is None:
            raise GenerationError(f"{where}: give it a picture (txt2img has no input picture to use)")
        try:
            preprocessor = find_preprocessor(unit.module)
        except ValueError as e:
            raise GenerationError(f"{where}: {e}") from e
        file = find_controlnet(files, unit.model)
        if file is None:
            names = ", ".join(f.title for f in files) or "none: put ControlNet files into models/ControlNet"
            raise GenerationError(f"{where}: unknown model {unit.model!r}; choose one of {names}")
        resolution = unit.processor_res
        if unit.pixel_perfect:
            resolution = pixel_perfect_resolution(picture.size, (width, height), unit.resize_mode)
        mask = unit.mask if unit.mask is not None else init_mask
        detected = run_preprocessor(preprocessor.name, picture, resolution, unit.threshold_a, unit.threshold_b,
                                    mask=mask, seed=seed)
        try:
            loaded = cache.get(file, model.policy, base_unet_config=model.spec.unet_config, family=model.spec.family)
            check_family(loaded, model.spec.family)  # a cached one loaded for another checkpoint
        except CheckpointError as e:
            raise GenerationError(f"{where}: {e}") from e
        prepared.units.append(ControlUnit(loaded.model, hint_tensor(detected, width, height, unit.resize_mode),
                                          unit.weight, unit.guidance_start, unit.guidance_end, unit.control_mode))
        prepared.models.append(loaded)
        prepared.detected_maps.append(detected.convert("RGB"))
        named = replace(unit, module=preprocessor.name, model=file.title)
        if resolution is not None and resolution > 0:
            named.processor_res = resolution
        prepared.params[f"ControlNet {index}"] = named.infotext()
    return prepared
