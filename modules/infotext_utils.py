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
import re
from collections.abc import Mapping
from typing import Any

from modules import prompt_parser

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
