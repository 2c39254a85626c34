"""ControlNet units as the A1111 ControlNet extension's API and infotext describe them (`alwayson_scripts:
{"controlnet": {"args": [unit, ...]}}`): reading and checking a unit, and the text it leaves in the infotext."""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, fields

from PIL import Image

from modules.generation.requests import GenerationError, check_picture
from modules.sampling.denoiser import CONTROL_MODES

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
