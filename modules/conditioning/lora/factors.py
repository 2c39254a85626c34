"""Reading a network file's modules and multiplying their factors out into weight changes
(LoRA/LoCon, LoHa, LoKr, full differences)."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from modules.conditioning.lora.files import KNOWN_PREFIXES, guess_family
from modules.models.families import ModelFamily

# Module types other trainers write that cannot be merged as a plain weight change.
_UNSUPPORTED_MARKERS = {"dora_scale": "DoRA", "oft_blocks": "OFT", "oft_diag": "OFT", "a1.weight": "GLoRA",
                        "on_input": "IA3", "w_norm": "norm"}


@dataclass
class NetworkModule:
    """One target module's factors in a network file."""
    kind: str  # "lora" (incl. LoCon), "loha", "lokr" or "full"
    weights: dict[str, torch.Tensor]  # by key suffix: "lora_down.weight", "hada_w1_a", "diff", ...
    alpha: float | None = None

    @property
    def numel(self) -> int:
        """Size of the weight change the factors make, to check against a target cheaply."""
        w = {k: tuple(v.shape) for k, v in self.weights.items()}
        if self.kind == "lora":
            down, kernel = w["lora_down.weight"], w.get("lora_mid.weight", (0, 0))[2:]
            return w["lora_up.weight"][0] * math.prod(down[1:]) * math.prod(kernel)
        if self.kind == "loha":
            if "hada_t1" in w:
                return w["hada_w1_a"][1] * w["hada_w1_b"][1] * math.prod(w["hada_t1"][2:])
            return w["hada_w1_a"][0] * w["hada_w1_b"][1]
        if self.kind == "lokr":
            return _lokr_part_numel(w, "1") * _lokr_part_numel(w, "2")
        return math.prod(w["diff"])


def _lokr_part_numel(w: Mapping[str, tuple[int, ...]], i: str) -> int:
    if f"lokr_w{i}" in w:
        return math.prod(w[f"lokr_w{i}"])
    a, b = w[f"lokr_w{i}_a"], w[f"lokr_w{i}_b"]
    if f"lokr_t{i}" in w:
        return a[1] * b[1] * math.prod(w[f"lokr_t{i}"][2:])
    return a[0] * b[1]


@dataclass
class ParsedLora:
    modules: dict[str, NetworkModule]  # by kohya module name: "lora_unet_down_blocks_0_..._to_q"
    unsupported: dict[str, str]  # kohya module name -> its type, for modules that cannot be merged
    unknown_keys: list[str]  # keys outside the kohya / LyCORIS naming
    family: ModelFamily | None


def _kind(parts: Mapping[str, torch.Tensor]) -> str | None:
    if any(marker in parts for marker in _UNSUPPORTED_MARKERS):
        return None
    if "lora_down.weight" in parts and "lora_up.weight" in parts:
        return "lora"
    if {"hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b"} <= parts.keys() and ("hada_t1" in parts) == (
            "hada_t2" in parts):
        return "loha"
    if all(f"lokr_w{i}" in parts or {f"lokr_w{i}_a", f"lokr_w{i}_b"} <= parts.keys() for i in "12"):
        return "lokr"
    if "diff" in parts:
        return "full"
    return None


def parse_lora(state_dict: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None) -> ParsedLora:
    """Group a network file's tensors by target module. Only keys in the kohya naming are read, so
    a checkpoint dropped into the LoRA folder by mistake costs no more than its key list."""
    groups: dict[str, dict[str, torch.Tensor]] = defaultdict(dict)
    unknown = []
    for key in state_dict:
        module, sep, part = key.partition(".")
        if sep and module.startswith(KNOWN_PREFIXES):
            groups[module][part] = state_dict[key]
        else:
            unknown.append(key)
    modules, unsupported = {}, {}
    for name, parts in groups.items():
        alpha = parts.pop("alpha", None)
        kind = _kind(parts)
        if kind is None:
            unsupported[name] = next((v for k, v in _UNSUPPORTED_MARKERS.items() if k in parts), "unknown")
        else:
            modules[name] = NetworkModule(kind, parts, float(alpha) if alpha is not None else None)
    shapes = {f"{name}.{part}": tuple(t.shape) for name, parts in groups.items() for part, t in parts.items()}
    return ParsedLora(modules, unsupported, unknown, guess_family(metadata or {}, shapes))


def _tucker(core: torch.Tensor, out_factor: torch.Tensor, in_factor: torch.Tensor) -> torch.Tensor:
    """Rebuild (out, in, *kernel) from a Tucker core (r1, r2, *kernel), out_factor (r1, out) and
    in_factor (r2, in): the form LoCon's `lora_mid`, LoHa's `hada_t*` and LoKr's `lokr_t2` take."""
    return torch.einsum("ab...,ao,bi->oi...", core, out_factor, in_factor)


def compute_delta(module: NetworkModule, device: torch.device) -> dict[str, torch.Tensor]:
    """The change a module's factors make at multiplier 1, by parameter name ("weight", and "bias"
    for full diffs), in float32 on `device`. Shapes are the factors' natural ones; the caller
    reshapes to the target (1x1 conv <-> linear, flattened conv kernels)."""
    w = {k: v.to(device=device, dtype=torch.float32) for k, v in module.weights.items()}
    rank: int | None = None
    bias = None
    if module.kind == "lora":
        up, down = w["lora_up.weight"].flatten(1), w["lora_down.weight"]
        rank = down.shape[0]
        if "lora_mid.weight" in w:
            delta = _tucker(w["lora_mid.weight"], up.T, down.flatten(1))
        else:
            delta = up @ down.flatten(1)
    elif module.kind == "loha":
        rank = w["hada_w1_b"].shape[0]
        if "hada_t1" in w:
            delta = (_tucker(w["hada_t1"], w["hada_w1_a"], w["hada_w1_b"])
                     * _tucker(w["hada_t2"], w["hada_w2_a"], w["hada_w2_b"]))
        else:
            delta = (w["hada_w1_a"] @ w["hada_w1_b"]) * (w["hada_w2_a"] @ w["hada_w2_b"])
    elif module.kind == "lokr":
        w1 = w["lokr_w1"] if "lokr_w1" in w else w["lokr_w1_a"] @ w["lokr_w1_b"]
        if "lokr_w2" in w:
            w2 = w["lokr_w2"]
        elif "lokr_t2" in w:
            w2 = _tucker(w["lokr_t2"], w["lokr_w2_a"], w["lokr_w2_b"])
        else:
            w2 = w["lokr_w2_a"] @ w["lokr_w2_b"]
        rank = next((w[k].shape[0] for k in ("lokr_w1_b", "lokr_w2_b") if k in w), None)
        delta = torch.kron(w1.reshape(*w1.shape, *[1] * (w2.dim() - w1.dim())), w2.contiguous())
    else:
        delta, bias = w["diff"], w.get("diff_b")
    # trainers treat a missing or zero alpha as alpha = rank; full matrices are never scaled
    if rank and module.alpha:
        delta = delta * (module.alpha / rank)
    return {"weight": delta} if bias is None else {"weight": delta, "bias": bias}
