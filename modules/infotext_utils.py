"""The "parameters" text A1111 writes into images, and reading it back.

    a red circle
    Negative prompt: blurry
    Steps: 20, Sampler: Euler a, Schedule type: Automatic, CFG scale: 7, Seed: 1, Size: 512x512, ...

Values containing a comma, colon or newline are JSON-quoted. `parse_generation_parameters`
returns A1111's keys (with its defaults for keys that older images lack), so pasting an A1111
infotext here, or ours into A1111, fills the same fields.
"""
from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

from modules import prompt_parser
from modules.options import Options, SettingError

# "Key: value" pairs of the last line; a value is a JSON string or runs to the next comma.
_PARAM = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
_IMAGE_SIZE = re.compile(r"^(\d+)x(\d+)$")
NEGATIVE_PREFIX = "Negative prompt:"

# Schedule names that older A1111 versions appended to the sampler name ("DPM++ 2M Karras").
_LEGACY_SCHEDULE_SUFFIXES = {"Karras": "Karras", "Exponential": "Exponential", "Uniform": "Uniform",
                             "SGM Uniform": "SGM Uniform", "Polyexponential": "Polyexponential"}


def quote(value: Any) -> str:
    text = str(value)
    if "," not in text and "\n" not in text and ":" not in text:
        return text
    return json.dumps(text, ensure_ascii=False)


def unquote(text: str) -> str:
    if len(text) < 2 or text[0] != '"' or text[-1] != '"':
        return text
    try:
        return json.loads(text)
    except ValueError:
        return text


def create_infotext(prompt: str, negative_prompt: str, params: Mapping[str, Any]) -> str:
    """Compose the text; keys with value None are left out, a key equal to its value stands alone."""
    fields = ", ".join(k if k == v else f"{k}: {quote(v)}" for k, v in params.items() if v is not None)
    negative = f"\n{NEGATIVE_PREFIX} {negative_prompt}" if negative_prompt else ""
    return f"{prompt}{negative}\n{fields}".strip()


def _split_legacy_sampler(res: dict) -> None:
    """'Sampler: DPM++ 2M Karras' (before schedule types were separate) -> sampler + Schedule type."""
    sampler = res.get("Sampler", "")
    if "Schedule type" in res and res["Schedule type"] != "Automatic":
        return
    for suffix, schedule in _LEGACY_SCHEDULE_SUFFIXES.items():
        if sampler.endswith(" " + suffix):
            res["Sampler"] = sampler[: -len(suffix) - 1]
            res["Schedule type"] = schedule
            return


def _restore_old_hires_fix(res: dict) -> None:
    """Infotexts of 2022 wrote the final size as "Size" and the first pass as "First pass size" (0x0: worked
    out from the final size): turn them into today's first-pass Size plus Hires resize, as A1111 does."""
    first_w, first_h = res.get("First pass size-1"), res.get("First pass size-2")
    if first_w is None or first_h is None:
        return
    try:
        first_w, first_h = int(first_w), int(first_h)
        width, height = int(res.get("Size-1", 512)), int(res.get("Size-2", 512))
    except ValueError:
        return
    if first_w == 0 or first_h == 0:  # A1111's old rule: about 512x512 pixels, sides rounded up to 64
        scale = math.sqrt(512 * 512 / (width * height)) if width and height else 1.0
        first_w, first_h = math.ceil(scale * width / 64) * 64, math.ceil(scale * height / 64) * 64
    res["Size-1"], res["Size-2"] = str(first_w), str(first_h)
    res["Hires resize-1"], res["Hires resize-2"] = str(width), str(height)


def parse_generation_parameters(text: str, skip_fields: list[str] | None = None) -> dict[str, Any]:
    """Parse an infotext into A1111's dictionary: "Prompt", "Negative prompt", "Steps", "Size-1"...

    Values stay strings as in A1111 (except defaults it adds for missing keys)."""
    res: dict[str, Any] = {}
    prompt_lines: list[str] = []
    negative_lines: list[str] = []
    *lines, last = text.strip().split("\n")
    if len(_PARAM.findall(last)) < 3:  # no parameter line: everything is prompt
        lines.append(last)
        last = ""
    in_negative = False
    for line in lines:
        line = line.strip()
        if line.startswith(NEGATIVE_PREFIX):
            in_negative = True
            line = line[len(NEGATIVE_PREFIX):].strip()
        (negative_lines if in_negative else prompt_lines).append(line)

    for key, value in _PARAM.findall(last):
        value = unquote(value) if value[:1] == '"' and value[-1:] == '"' else value
        size = _IMAGE_SIZE.match(value)
        if size:
            res[f"{key}-1"], res[f"{key}-2"] = size.group(1), size.group(2)
        else:
            res[key] = value

    prompt = "\n".join(prompt_lines)
    negative = "\n".join(negative_lines)
    res["Prompt"] = prompt
    res["Negative prompt"] = negative
    _split_legacy_sampler(res)
    _restore_old_hires_fix(res)

    defaults = {
        "Clip skip": "1",
        "Hires resize-1": 0, "Hires resize-2": 0,
        "Hires sampler": "Use same sampler", "Hires schedule type": "Use same scheduler",
        "Hires checkpoint": "Use same checkpoint", "Hires prompt": "", "Hires negative prompt": "",
        "Mask mode": "Inpaint masked", "Masked content": "original", "Inpaint area": "Whole picture",
        "Masked area padding": 32, "RNG": "GPU", "Schedule type": "Automatic",
        "Schedule max sigma": 0, "Schedule min sigma": 0, "Schedule rho": 0,
        "VAE Encoder": "Full", "VAE Decoder": "Full", "FP8 weight": "Disable",
        "Refiner switch by sampling steps": False,
    }
    for key, value in defaults.items():
        res.setdefault(key, value)
    if "Emphasis" not in res:
        pieces = prompt_parser.parse_prompt_attention(prompt) + prompt_parser.parse_prompt_attention(negative)
        if any(w != 1.0 and t != "BREAK" for t, w in pieces):
            res["Emphasis"] = "Original"
    for key in skip_fields or []:
        res.pop(key, None)
    return res


# ---- settings named by infotext keys (A1111's OptionInfo(..., infotext=...)) ----

# infotext key -> setting. Pasting an infotext turns these into per-job overrides ("Override settings"), as A1111
# does; the generation fields themselves (prompt, seed, hires...) are filled directly.
INFOTEXT_SETTINGS: dict[str, str] = {
    "Model hash": "sd_model_checkpoint",
    "VAE": "sd_vae",
    "Clip skip": "CLIP_stop_at_last_layers",
    "ENSD": "eta_noise_seed_delta",
    "Schedule max sigma": "sigma_max",
    "Schedule min sigma": "sigma_min",
    "Schedule rho": "rho",
    "Eta": "eta_ancestral",
    "Eta DDIM": "eta_ddim",
    "Sigma churn": "s_churn",
    "Sigma tmin": "s_tmin",
    "Sigma tmax": "s_tmax",
    "Sigma noise": "s_noise",
    "Discard penultimate sigma": "always_discard_next_to_last_sigma",
    "RNG": "randn_source",
    "Emphasis": "emphasis",
    "Conditional mask weight": "inpainting_mask_weight",
    "Old prompt editing timelines": "use_old_scheduling",
}
MODEL_SETTINGS = ("sd_model_checkpoint", "sd_vae")  # switch models rather than being set on a copy of the options
_DEFAULT_OPTIONS = Options()


def cast_setting(name: str, value: Any) -> Any:
    """An infotext value (text) as setting `name` holds it; SettingError (a ValueError) if it does not fit."""
    default = getattr(_DEFAULT_OPTIONS, name, None)
    try:
        if isinstance(default, bool):
            value = value if isinstance(value, bool) else str(value).strip().lower() in ("true", "1", "yes")
        elif isinstance(default, int):
            value = int(float(value))
        elif isinstance(default, float):
            value = float(value)
        else:
            value = str(value)
    except (TypeError, ValueError, OverflowError) as e:
        raise SettingError(name, f"{value!r} is not a valid value") from e
    return Options.check(name, value)


def settings_from_params(params: Mapping[str, Any], current: Any, skip: set[str] | frozenset[str] = frozenset(),
                         ) -> list[tuple[str, str, Any]]:
    """(infotext key, setting, value) for each setting the parameters name with a value other than the one of
    `current` (the options). Keys in `skip` and values that do not fit their setting are left out."""
    found = []
    for key, name in INFOTEXT_SETTINGS.items():
        if key in skip or key not in params or params[key] in (None, ""):
            continue
        try:
            value = cast_setting(name, params[key])
        except SettingError:
            continue
        if value != getattr(current, name, None):
            found.append((key, name, value))
    return found


def override_text(key: str, value: Any) -> str:
    """One entry of the "Override settings" box: 'Clip skip: 2'."""
    return f"{key}: {value}"


def overrides_from_texts(texts: list[str] | None) -> dict[str, Any]:
    """{setting: value} from entries of the "Override settings" box; entries that name no setting or do not fit
    it are left out (A1111's create_override_settings_dict)."""
    overrides = {}
    for text in texts or []:
        key, sep, value = str(text).partition(":")
        name = INFOTEXT_SETTINGS.get(key.strip())
        if not sep or name is None:
            continue
        try:
            overrides[name] = cast_setting(name, value.strip())
        except SettingError:
            continue
    return overrides
