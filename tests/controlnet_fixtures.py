"""Tiny ControlNets in the key layouts people have, written out from the original ControlNet code's structure (a
copy of the UNet's encoder and middle block, `input_hint_block`, `zero_convs`, `middle_block_out`), independently of
the loader under test.

Their sizes follow the tiny checkpoints of `tests/ldm_layout.py` (the UNet's channels, blocks, transformer depths,
context width, SDXL's size embedding), so they can guide those checkpoints. The control image embedding is the
released one (16, 32, 96, 256 channels: the control image has 8 times the latent's size). The diffusers names are
derived here by this file's own renaming, and `reference_controlnet` builds diffusers' model from them directly.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from tests import ldm_layout as ldm

FAMILY_LAYOUTS = {"sd1": ldm.TINY_SD1, "sd2": ldm.TINY_SD2, "sdxl": ldm.TINY_SDXL}
HINT_WIDTHS = (16, 32, 96, 256)
TINY_SDXL_TIME_EMBED_DIM = 32  # TINY_SDXL's adm_in_channels: 128 (pooled text) + 6 * 32
LAYOUTS = ("ldm", "ldm-prefixed", "diffusers")
Shapes = dict[str, tuple[int, ...]]


def _block_width(unet: Shapes, index: int) -> int:
    """Output channels of the UNet's input block `index` (what its zero convolution sees)."""
    for key in (f"input_blocks.{index}.0.op.weight", f"input_blocks.{index}.0.out_layers.3.weight",
                f"input_blocks.{index}.0.weight"):
        if key in unet:
            return unet[key][0]
    raise KeyError(index)


def ldm_controlnet_shapes(u: ldm.UNetLayout, hint_channels: int = 3, hint_widths=HINT_WIDTHS) -> Shapes:
    """The original layout without the control_model. prefix (ControlNet 1.1's .pth files)."""
    unet = ldm.unet_shapes(u, prefix="")
    s = {k: v for k, v in unet.items() if k.startswith(("time_embed.", "label_emb.", "input_blocks.", "middle_block."))}
    convs = [(hint_widths[0], hint_channels)]
    for narrow, wide in zip(hint_widths, hint_widths[1:]):
        convs += [(narrow, narrow), (wide, narrow)]  # a convolution, then one with stride 2
    convs.append((u.model_channels, hint_widths[-1]))  # the zero convolution into the UNet's width
    for i, (cout, cin) in enumerate(convs):  # SiLU between them takes the odd indices
        s[f"input_hint_block.{2 * i}.weight"] = (cout, cin, 3, 3)
        s[f"input_hint_block.{2 * i}.bias"] = (cout,)
    blocks = len({k.split(".")[1] for k in s if k.startswith("input_blocks.")})
    for i in range(blocks):
        width = _block_width(unet, i)
        s[f"zero_convs.{i}.0.weight"] = (width, width, 1, 1)
        s[f"zero_convs.{i}.0.bias"] = (width,)
    mid = unet["middle_block.2.out_layers.3.weight"][0]
    s["middle_block_out.0.weight"] = (mid, mid, 1, 1)
    s["middle_block_out.0.bias"] = (mid,)
    return s


_RESNET_NAMES = (("in_layers.0.", "norm1."), ("in_layers.2.", "conv1."), ("emb_layers.1.", "time_emb_proj."),
                 ("out_layers.0.", "norm2."), ("out_layers.3.", "conv2."), ("skip_connection.", "conv_shortcut."))


def _resnet(rest: str) -> str:
    for old, new in _RESNET_NAMES:
        if rest.startswith(old):
            return new + rest[len(old):]
    raise KeyError(rest)


def diffusers_name(key: str, layers_per_block: int, last_hint: int) -> str:
    """diffusers' name for an original-layout key."""
    simple = {"time_embed.0.": "time_embedding.linear_1.", "time_embed.2.": "time_embedding.linear_2.",
              "label_emb.0.0.": "add_embedding.linear_1.", "label_emb.0.2.": "add_embedding.linear_2.",
              "input_blocks.0.0.": "conv_in.", "middle_block_out.0.": "controlnet_mid_block.",
              "middle_block.1.": "mid_block.attentions.0."}
    for old, new in simple.items():
        if key.startswith(old):
            return new + key[len(old):]
    if m := re.match(r"middle_block\.([02])\.(.*)", key):
        return f"mid_block.resnets.{int(m.group(1)) // 2}.{_resnet(m.group(2))}"
    if m := re.match(r"zero_convs\.(\d+)\.0\.(.*)", key):
        return f"controlnet_down_blocks.{m.group(1)}.{m.group(2)}"
    if m := re.match(r"input_hint_block\.(\d+)\.(.*)", key):
        index = int(m.group(1))
        target = "conv_in" if index == 0 else "conv_out" if index == last_hint else f"blocks.{index // 2 - 1}"
        return f"controlnet_cond_embedding.{target}.{m.group(2)}"
    m = re.match(r"input_blocks\.(\d+)\.([01])\.(.*)", key)
    level, position = divmod(int(m.group(1)) - 1, layers_per_block + 1)
    if position == layers_per_block:
        return f"down_blocks.{level}.downsamplers.0.conv.{m.group(3).removeprefix('op.')}"
    if m.group(2) == "1":
        return f"down_blocks.{level}.attentions.{position}.{m.group(3)}"
    return f"down_blocks.{level}.resnets.{position}.{_resnet(m.group(3))}"


def to_diffusers(weights: dict, u: ldm.UNetLayout) -> dict:
    last_hint = max(int(k.split(".")[1]) for k in weights if k.startswith("input_hint_block."))
    return {diffusers_name(k, u.num_res_blocks, last_hint): v for k, v in weights.items()}


def random_weights(shapes: Shapes, seed: int, dtype=torch.float32) -> dict[str, torch.Tensor]:
    """Every tensor random (biases and norm scales too, and the zero convolutions, so that a weight put in the wrong
    place shows in the output)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for key, shape in sorted(shapes.items()):
        noise = torch.randn(shape, generator=g)
        if len(shape) == 1:
            value = 1 + 0.1 * noise if key.endswith("weight") else 0.1 * noise  # norm scales, biases
        else:
            fan_in = 1
            for d in shape[1:]:
                fan_in *= d
            value = noise / fan_in ** 0.5
        out[key] = value.to(dtype)
    return out


def reference_config(family: str) -> dict:
    """ControlNetModel's config for the tiny family, written from the tiny layouts."""
    u = FAMILY_LAYOUTS[family].unet
    channels = [u.model_channels * m for m in u.channel_mult]
    depths = list(u.transformer_depth)
    layers = [max(d, 1) for d in depths]
    if not depths[-1]:
        layers[-1] = u.middle_depth
    config = {
        "in_channels": u.in_channels, "conditioning_channels": 3, "block_out_channels": channels,
        "layers_per_block": u.num_res_blocks,
        "down_block_types": ["CrossAttnDownBlock2D" if d else "DownBlock2D" for d in depths],
        "transformer_layers_per_block": layers, "cross_attention_dim": u.context_dim,
        "attention_head_dim": 8 if family == "sd1" else [max(1, c // 64) for c in channels],
        "use_linear_projection": u.linear_proj, "conditioning_embedding_out_channels": list(HINT_WIDTHS),
    }
    if u.adm_in_channels:
        config.update(addition_embed_type="text_time", addition_time_embed_dim=TINY_SDXL_TIME_EMBED_DIM,
                      projection_class_embeddings_input_dim=u.adm_in_channels)
    return config


def tiny_weights(family: str, seed: int, dtype=torch.float32) -> dict[str, torch.Tensor]:
    """The original-layout weights that `write_tiny_controlnet` writes for these arguments."""
    return random_weights(ldm_controlnet_shapes(FAMILY_LAYOUTS[family].unet), seed, dtype)


def reference_controlnet(family: str, seed: int, dtype=torch.float32):
    """diffusers' ControlNetModel (float32, eval) with the weights `write_tiny_controlnet` writes for these
    arguments."""
    from diffusers import ControlNetModel

    model = ControlNetModel(**reference_config(family))
    weights = to_diffusers(tiny_weights(family, seed, dtype), FAMILY_LAYOUTS[family].unet)
    model.load_state_dict({k: v.float() for k, v in weights.items()}, strict=True)
    return model.eval().requires_grad_(False)


def write_tiny_controlnet(path: Path, layout: str = "ldm", family: str = "sd1", dtype=torch.float32,
                          seed: int = 0) -> Path:
    """A tiny ControlNet file: .safetensors, or a plain pickled state dict for .pth/.ckpt/.pt. In the diffusers layout
    a file named diffusion_pytorch_model.* gets its config.json beside it, as in a Hugging Face folder."""
    from safetensors.torch import save_file

    weights = tiny_weights(family, seed, dtype)
    if layout == "diffusers":
        weights = to_diffusers(weights, FAMILY_LAYOUTS[family].unet)
    elif layout == "ldm-prefixed":
        weights = {"control_model." + k: v for k, v in weights.items()}
    elif layout != "ldm":
        raise ValueError(layout)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".safetensors":
        save_file(weights, str(path))
    else:
        torch.save(weights, path)
    if layout == "diffusers" and path.name.startswith("diffusion_pytorch_model"):
        config = {"_class_name": "ControlNetModel", "_diffusers_version": "0.27.0", **reference_config(family)}
        path.with_name("config.json").write_text(json.dumps(config, indent=2))
    return path


def controlnet_inputs(family: str, latent_size: int = 8, seed: int = 0) -> dict:
    """Keyword arguments of one ControlNet call for the tiny family: latent, timestep, text context, control image
    (8 times the latent's size), and SDXL's pooled text and size values."""
    u = FAMILY_LAYOUTS[family].unet
    g = torch.Generator().manual_seed(seed)
    size = latent_size
    inputs = {"sample": torch.randn(1, u.in_channels, size, size, generator=g), "timestep": torch.tensor([500]),
              "encoder_hidden_states": torch.randn(1, 7, u.context_dim, generator=g),
              "controlnet_cond": torch.rand(1, 3, 8 * size, 8 * size, generator=g)}
    if u.adm_in_channels:
        pooled = u.adm_in_channels - 6 * TINY_SDXL_TIME_EMBED_DIM
        inputs["added_cond_kwargs"] = {"text_embeds": torch.randn(1, pooled, generator=g),
                                       "time_ids": torch.tensor([[64.0, 64.0, 0.0, 0.0, 64.0, 64.0]])}
    return inputs
