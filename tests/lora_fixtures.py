"""Tiny LoRA / LyCORIS files in the key layout kohya's sd-scripts and LyCORIS write, for the tiny
models of tests/ldm_layout.py.

Target names and shapes come from the layouts (LDM naming for the UNet, Hugging Face CLIP naming
for text encoders) or, for diffusers-style UNet names, from a loaded model's own modules; nothing
here uses modules/lora.py. A target is `kohya module name -> shape of the weight it changes`.
"""
from __future__ import annotations

import re
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from tests import ldm_layout as ldm

Targets = dict[str, tuple[int, ...]]

# What kohya's LoRA trains inside each Transformer2DModel, and in CLIPAttention / CLIPMLP.
ATTENTION = re.compile(r"\.(proj_in|proj_out|attn[12]\.to_(q|k|v|out\.0)|ff\.net\.(0\.proj|2))$")
TEXT = re.compile(r"\.(self_attn\.(q|k|v|out)_proj|mlp\.fc[12])$")
# What LoCon (conv_dim) adds: the resnets' layers and the resampling convs, in both namings.
CONV_DIFFUSERS = re.compile(r"(resnets\.\d+\.(conv1|conv2|time_emb_proj|conv_shortcut)|samplers\.0\.conv)$")
CONV_LDM = re.compile(r"(in_layers\.2|out_layers\.3|emb_layers\.1|skip_connection|\.op|\.\d\.conv)$")


def flat(name: str) -> str:
    return name.replace(".", "_")


def _weights(shapes: ldm.Shapes, pattern: re.Pattern, prefix: str) -> Targets:
    return {prefix + flat(k.removesuffix(".weight")): s for k, s in shapes.items()
            if k.endswith(".weight") and len(s) > 1 and pattern.search(k.removesuffix(".weight"))}


def ldm_unet_targets(layout: ldm.UNetLayout, pattern: re.Pattern = ATTENTION) -> Targets:
    """UNet targets under their original LDM names, as kohya names them for SDXL."""
    return _weights(ldm.unet_shapes(layout, prefix=""), pattern, "lora_unet_")


def text_targets(text: ldm.TextLayout, prefix: str) -> Targets:
    """Text encoder targets under Hugging Face CLIP names (with 'text_model.'), as kohya names them."""
    return _weights(ldm.clip_hf_shapes(text, ""), TEXT, prefix)


def diffusers_unet_targets(unet: nn.Module, pattern: re.Pattern = ATTENTION) -> Targets:
    """UNet targets under diffusers names, as kohya names them for SD1/SD2."""
    return {"lora_unet_" + flat(name): tuple(m.weight.shape) for name, m in unet.named_modules()
            if isinstance(m, (nn.Linear, nn.Conv2d)) and pattern.search("." + name)}


def _randn(g: torch.Generator, *shape: int, std: float = 0.2) -> torch.Tensor:
    return torch.randn(shape, generator=g) * std


def lora(targets: Targets, rank: int = 4, alpha: float = 2.0, seed: int = 0, mid: bool = False
         ) -> dict[str, torch.Tensor]:
    """Plain LoRA / LoCon: conv targets get conv-shaped factors (3x3 kernels in `lora_down`, or in
    `lora_mid` with `mid`, LoCon's Tucker form)."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for name, (out, inp, *kernel) in targets.items():
        if kernel and mid and kernel != [1, 1]:
            sd[f"{name}.lora_down.weight"] = _randn(g, rank, inp, 1, 1)
            sd[f"{name}.lora_mid.weight"] = _randn(g, rank, rank, *kernel)
        else:
            sd[f"{name}.lora_down.weight"] = _randn(g, rank, inp, *kernel)
        sd[f"{name}.lora_up.weight"] = _randn(g, out, rank, *([1, 1] if kernel else []))
        sd[f"{name}.alpha"] = torch.tensor(alpha)
    return sd


def loha(targets: Targets, rank: int = 4, alpha: float = 2.0, seed: int = 0, tucker: bool = False
         ) -> dict[str, torch.Tensor]:
    """LoHa; with `tucker`, conv targets with a kernel get `hada_t1/t2` cores."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for name, (out, inp, *kernel) in targets.items():
        if tucker and kernel and kernel != [1, 1]:
            for i in "12":
                sd[f"{name}.hada_t{i}"] = _randn(g, rank, rank, *kernel, std=0.5)
                sd[f"{name}.hada_w{i}_a"] = _randn(g, rank, out, std=0.5)
                sd[f"{name}.hada_w{i}_b"] = _randn(g, rank, inp, std=0.5)
        else:
            flat_in = inp * (kernel[0] * kernel[1] if kernel else 1)
            for i in "12":
                sd[f"{name}.hada_w{i}_a"] = _randn(g, out, rank, std=0.5)
                sd[f"{name}.hada_w{i}_b"] = _randn(g, rank, flat_in, std=0.5)
        sd[f"{name}.alpha"] = torch.tensor(alpha)
    return sd


def lokr(targets: Targets, rank: int = 2, alpha: float = 1.0, seed: int = 0, factor: int = 4,
         tucker: bool = False) -> dict[str, torch.Tensor]:
    """LoKr: a full `lokr_w1` (factor x factor) and a low-rank `lokr_w2_a/b` (with `tucker`, conv
    targets get `lokr_t2`). out = factor * c, in = factor * d."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for name, (out, inp, *kernel) in targets.items():
        c, d = out // factor, inp // factor
        sd[f"{name}.lokr_w1"] = _randn(g, factor, factor, std=1.0)
        if tucker and kernel and kernel != [1, 1]:
            sd[f"{name}.lokr_t2"] = _randn(g, rank, rank, *kernel, std=0.5)
            sd[f"{name}.lokr_w2_a"] = _randn(g, rank, c, std=0.5)
            sd[f"{name}.lokr_w2_b"] = _randn(g, rank, d, std=0.5)
        else:
            sd[f"{name}.lokr_w2_a"] = _randn(g, c, rank, std=0.5)
            sd[f"{name}.lokr_w2_b"] = _randn(g, rank, d * (kernel[0] * kernel[1] if kernel else 1), std=0.5)
        sd[f"{name}.alpha"] = torch.tensor(alpha)
    return sd


def full_diff(targets: Targets, biases: dict[str, int], seed: int = 0) -> dict[str, torch.Tensor]:
    """LyCORIS 'full': the weight difference itself, and a bias difference where given."""
    g = torch.Generator().manual_seed(seed)
    sd = {f"{name}.diff": _randn(g, *shape, std=0.05) for name, shape in targets.items()}
    sd.update({f"{name}.diff_b": _randn(g, n, std=0.05) for name, n in biases.items()})
    return sd


def write(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None,
          dtype: torch.dtype = torch.float16) -> Path:
    """Saved in fp16 like most published files; `.pt` paths get a plain torch.save."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.to(dtype) for k, v in tensors.items()}
    if path.suffix == ".safetensors":
        save_file(tensors, str(path), metadata=metadata)
    else:
        torch.save(tensors, path)
    return path


def sd1_targets(unet: nn.Module) -> Targets:
    """A standard kohya SD1 LoRA: attention/ff/proj of the UNet (diffusers names) and the text encoder."""
    return {**diffusers_unet_targets(unet), **text_targets(ldm.TINY_SD1.text[0], "lora_te_")}


def sdxl_targets() -> Targets:
    """A standard kohya SDXL LoRA: UNet under LDM names, both text encoders."""
    return {**ldm_unet_targets(ldm.TINY_SDXL.unet), **text_targets(ldm.TINY_SDXL.text[0], "lora_te1_"),
            **text_targets(ldm.TINY_SDXL.text[1], "lora_te2_")}
