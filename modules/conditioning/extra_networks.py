"""`<kind:args>` tags in prompts (`<lora:name:0.8>`, `<lora:name:1:0.5>`, `<hypernet:...>`), A1111 syntax.

Tags are taken out of the prompt before it is parsed; each becomes a `NetworkParams` with its
positional and `key=value` arguments.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

_TAG = re.compile(r"<(\w+):([^>]+)>")


@dataclass(frozen=True)
class NetworkParams:
    items: tuple[str, ...]
    positional: tuple[str, ...] = ()
    named: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_items(cls, items: list[str]) -> NetworkParams:
        positional = tuple(i for i in items if "=" not in i)
        named = dict(i.split("=", 1) for i in items if "=" in i)
        return cls(tuple(items), positional, named)


def parse_prompt(prompt: str) -> tuple[str, dict[str, list[NetworkParams]]]:
    """Remove `<kind:...>` tags; return the cleaned prompt and the tags by kind."""
    found: dict[str, list[NetworkParams]] = {}

    def take(m: re.Match) -> str:
        found.setdefault(m.group(1), []).append(NetworkParams.from_items(m.group(2).split(":")))
        return ""

    return _TAG.sub(take, prompt), found


def parse_prompts(prompts: list[str]) -> tuple[list[str], dict[str, list[NetworkParams]]]:
    """As A1111: tags of every prompt in a batch are collected; the first prompt's set is used."""
    cleaned, networks = [], None
    for prompt in prompts:
        text, found = parse_prompt(prompt)
        cleaned.append(text)
        if networks is None:
            networks = found
    return cleaned, networks or {}


@dataclass(frozen=True)
class LoraRequest:
    """One `<lora:name:te:unet>` of a prompt: which network, how strongly on the text encoders and the UNet."""
    name: str
    te_multiplier: float = 1.0
    unet_multiplier: float = 1.0


def lora_tags(params: list[NetworkParams], default_multiplier: float = 1.0) -> tuple[list[LoraRequest], list[str]]:
    """`<lora:name>`, `<lora:name:w>`, `<lora:name:te:unet>`, `<lora:name:te=w:unet=w>`; bad numbers warn."""
    tags, warnings = [], []
    for p in params:
        if not p.positional or not p.positional[0].strip():
            warnings.append(f"LoRA tag without a name: <lora:{':'.join(p.items)}>")
            continue
        try:
            te = float(p.positional[1]) if len(p.positional) > 1 else default_multiplier
            te = float(p.named.get("te", te))
            unet = float(p.positional[2]) if len(p.positional) > 2 else te
            unet = float(p.named.get("unet", unet))
        except ValueError:
            warnings.append(f"LoRA tag with a weight that is not a number: <lora:{':'.join(p.items)}>")
            continue
        tags.append(LoraRequest(p.positional[0].strip(), te, unet))
    return tags, warnings
