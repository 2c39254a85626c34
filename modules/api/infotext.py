"""The `infotext` request field (A1111 1.9+): parameters read from an infotext fill the fields of a txt2img/img2img
request that the client did not send itself, and the settings the infotext names become override_settings.

As A1111 (api.py's apply_infotext): a field the request sets wins over the infotext; a setting the request's
override_settings names wins too, and one equal to the current setting is left out (infotext_utils reads the
settings, as for the page's paste). Like A1111's default ("disable_weights_auto_swap"), "Model hash" does not
switch the checkpoint; "VAE" does not switch the VAE either.
"""
from __future__ import annotations

import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from modules import infotext_utils
from modules.generation import MASKED_CONTENT
from modules.options import Options


class InfotextError(ValueError):
    """A value of the infotext that does not fit its field or setting; the message names both."""


@dataclass(frozen=True)
class PasteField:
    """A request field and how to read it from a parsed infotext (None: the infotext does not say)."""
    api: str
    read: Callable[[dict[str, Any]], Any]
    modes: tuple[str, ...] = ("txt2img", "img2img")


def _key(name: str) -> Callable[[dict[str, Any]], Any]:
    return lambda params: params.get(name)


def _hires_enabled(params: dict[str, Any]) -> bool | None:
    """txt2img infotexts carry "Denoising strength" only with the hires fix, with its size or upscaler."""
    if "Denoising strength" not in params:
        return None
    resized = str(params.get("Hires resize-1", 0)) not in ("0", "")
    return any(k in params for k in ("Hires upscale", "Hires upscaler", "Hires steps")) or resized


def _masked_content(params: dict[str, Any]) -> int | None:
    value = params.get("Masked content")
    return MASKED_CONTENT.index(value) if value in MASKED_CONTENT else None


def _choice(name: str, mapping: dict[str, Any]) -> Callable[[dict[str, Any]], Any]:
    return lambda params: mapping.get(params.get(name))


def _flag(name: str) -> Callable[[dict[str, Any]], Any]:
    return lambda params: True if name in params else None


T2I, I2I = ("txt2img",), ("img2img",)
PASTE_FIELDS: tuple[PasteField, ...] = (
    PasteField("prompt", _key("Prompt")),
    PasteField("negative_prompt", _key("Negative prompt")),
    PasteField("steps", _key("Steps")),
    PasteField("sampler_name", _key("Sampler")),
    PasteField("scheduler", _key("Schedule type")),
    PasteField("cfg_scale", _key("CFG scale")),
    PasteField("seed", _key("Seed")),
    PasteField("width", _key("Size-1")),
    PasteField("height", _key("Size-2")),
    PasteField("batch_size", _key("Batch size")),
    PasteField("subseed", _key("Variation seed")),
    PasteField("subseed_strength", _key("Variation seed strength")),
    PasteField("seed_resize_from_w", _key("Seed resize from-1")),
    PasteField("seed_resize_from_h", _key("Seed resize from-2")),
    PasteField("denoising_strength", _key("Denoising strength")),
    PasteField("tiling", _flag("Tiling")),
    PasteField("restore_faces", _flag("Face restoration")),
    PasteField("enable_hr", _hires_enabled, T2I),
    PasteField("hr_scale", _key("Hires upscale"), T2I),
    PasteField("hr_upscaler", _key("Hires upscaler"), T2I),
    PasteField("hr_second_pass_steps", _key("Hires steps"), T2I),
    PasteField("hr_resize_x", _key("Hires resize-1"), T2I),
    PasteField("hr_resize_y", _key("Hires resize-2"), T2I),
    PasteField("hr_sampler_name", lambda p: None if p.get("Hires sampler") == "Use same sampler"
               else p.get("Hires sampler"), T2I),
    PasteField("hr_scheduler", lambda p: None if p.get("Hires schedule type") == "Use same scheduler"
               else p.get("Hires schedule type"), T2I),
    PasteField("hr_prompt", _key("Hires prompt"), T2I),
    PasteField("hr_negative_prompt", _key("Hires negative prompt"), T2I),
    PasteField("refiner_checkpoint", _key("Refiner"), T2I),
    PasteField("refiner_switch_at", _key("Refiner switch at"), T2I),
    PasteField("mask_blur", _key("Mask blur"), I2I),
    PasteField("inpaint_full_res", _choice("Inpaint area", {"Only masked": True, "Whole picture": False}), I2I),
    PasteField("inpaint_full_res_padding", _key("Masked area padding"), I2I),
    PasteField("inpainting_mask_invert", _choice("Mask mode", {"Inpaint masked": 0, "Inpaint not masked": 1}), I2I),
    PasteField("inpainting_fill", _masked_content, I2I),
    PasteField("initial_noise_multiplier", _key("Noise multiplier"), I2I),
)

# Keys of infotext_utils.INFOTEXT_SETTINGS left alone: as A1111 with its default disable_weights_auto_swap, an
# infotext does not switch the checkpoint (nor, here, the VAE).
MODEL_KEYS = frozenset({"Model hash", "VAE"})


def _target_type(annotation: Any) -> type | None:
    """int, float, bool or str: what a field of this annotation holds (None for anything else)."""
    for candidate in (typing.get_args(annotation) or (annotation,)):
        if candidate in (bool, int, float, str):
            return candidate
    return None


def cast(value: Any, target: type | None, what: str) -> Any:
    """A parsed infotext value (mostly text) as `target`."""
    if target is None or isinstance(value, target) and not (target is int and isinstance(value, bool)):
        return value
    try:
        if target is bool:
            text = str(value).strip().lower()
            if text not in ("true", "false", "1", "0"):
                raise ValueError(value)
            return text in ("true", "1")
        if target is int:
            number = float(value)
            if number != int(number):
                raise ValueError(value)
            return int(number)
        return target(value)
    except (TypeError, ValueError, OverflowError):
        raise InfotextError(f"infotext: {what}: {value!r} is not a valid {target.__name__}") from None


def apply_infotext(payload: BaseModel, mode: str, options: Options) -> dict[str, Any]:
    """Fill `payload` (a Txt2ImgPayload/Img2ImgPayload) from its `infotext`; returns the parsed parameters."""
    text = getattr(payload, "infotext", None)
    if not text:
        return {}
    params = infotext_utils.parse_generation_parameters(text)
    given = set(payload.model_fields_set)
    if "sampler_index" in given:  # the old name of sampler_name: the client chose the sampler
        given.add("sampler_name")
    for field in PASTE_FIELDS:
        if mode not in field.modes or field.api in given or field.api not in type(payload).model_fields:
            continue
        value = field.read(params)
        if value is None:
            continue
        target = _target_type(type(payload).model_fields[field.api].annotation)
        setattr(payload, field.api, cast(value, target, field.api))

    overrides = dict(payload.override_settings or {})
    for _key, setting, value in infotext_utils.settings_from_params(params, options, skip=MODEL_KEYS):
        overrides.setdefault(setting, value)  # the request's own override_settings win
    payload.override_settings = overrides
    return params
