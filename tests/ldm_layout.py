"""Key layouts of original (LDM / SGM) Stable Diffusion checkpoints, written out from the
original model code's structure, independently of the loader under test.

`*_shapes(...)` return {key: shape}. `write_checkpoint` fills them with small random values
so tiny fixtures load, run and round-trip; on the meta device they describe full-size models.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

Shapes = dict[str, tuple[int, ...]]


@dataclass(frozen=True)
class UNetLayout:
    model_channels: int = 320
    channel_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    transformer_depth: tuple[int, ...] = (1, 1, 1, 0)  # per level; 0 = no attention
    middle_depth: int = 1
    context_dim: int = 768
    in_channels: int = 4
    out_channels: int = 4
    linear_proj: bool = False  # SD1 uses 1x1 convs for proj_in/proj_out
    adm_in_channels: int | None = None  # SDXL label_emb input


@dataclass(frozen=True)
class VAELayout:
    ch: int = 128
    ch_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    z_channels: int = 4


@dataclass(frozen=True)
class TextLayout:
    hidden: int = 768
    layers: int = 12
    vocab: int = 49408
    positions: int = 77
    intermediate: int | None = None  # default 4 * hidden
    projection: int | None = None  # OpenCLIP text_projection width

    @property
    def mlp(self) -> int:
        return self.intermediate or 4 * self.hidden


def _resblock(p: str, cin: int, cout: int, emb: int) -> Shapes:
    s = {
        f"{p}.in_layers.0.weight": (cin,), f"{p}.in_layers.0.bias": (cin,),
        f"{p}.in_layers.2.weight": (cout, cin, 3, 3), f"{p}.in_layers.2.bias": (cout,),
        f"{p}.emb_layers.1.weight": (cout, emb), f"{p}.emb_layers.1.bias": (cout,),
        f"{p}.out_layers.0.weight": (cout,), f"{p}.out_layers.0.bias": (cout,),
        f"{p}.out_layers.3.weight": (cout, cout, 3, 3), f"{p}.out_layers.3.bias": (cout,),
    }
    if cin != cout:
        s[f"{p}.skip_connection.weight"] = (cout, cin, 1, 1)
        s[f"{p}.skip_connection.bias"] = (cout,)
    return s


def _spatial_transformer(p: str, ch: int, depth: int, ctx: int, linear: bool) -> Shapes:
    proj = (ch, ch) if linear else (ch, ch, 1, 1)
    s = {
        f"{p}.norm.weight": (ch,), f"{p}.norm.bias": (ch,),
        f"{p}.proj_in.weight": proj, f"{p}.proj_in.bias": (ch,),
        f"{p}.proj_out.weight": proj, f"{p}.proj_out.bias": (ch,),
    }
    for d in range(depth):
        b = f"{p}.transformer_blocks.{d}"
        for attn, kv in (("attn1", ch), ("attn2", ctx)):
            s[f"{b}.{attn}.to_q.weight"] = (ch, ch)
            s[f"{b}.{attn}.to_k.weight"] = (ch, kv)
            s[f"{b}.{attn}.to_v.weight"] = (ch, kv)
            s[f"{b}.{attn}.to_out.0.weight"] = (ch, ch)
            s[f"{b}.{attn}.to_out.0.bias"] = (ch,)
        for n in ("norm1", "norm2", "norm3"):
            s[f"{b}.{n}.weight"] = (ch,)
            s[f"{b}.{n}.bias"] = (ch,)
        s[f"{b}.ff.net.0.proj.weight"] = (ch * 8, ch)
        s[f"{b}.ff.net.0.proj.bias"] = (ch * 8,)
        s[f"{b}.ff.net.2.weight"] = (ch, ch * 4)
        s[f"{b}.ff.net.2.bias"] = (ch,)
    return s


def unet_shapes(u: UNetLayout, prefix: str = "model.diffusion_model.") -> Shapes:
    m = u.model_channels
    emb = 4 * m
    s: Shapes = {
        "time_embed.0.weight": (emb, m), "time_embed.0.bias": (emb,),
        "time_embed.2.weight": (emb, emb), "time_embed.2.bias": (emb,),
    }
    if u.adm_in_channels:
        s.update({
            "label_emb.0.0.weight": (emb, u.adm_in_channels), "label_emb.0.0.bias": (emb,),
            "label_emb.0.2.weight": (emb, emb), "label_emb.0.2.bias": (emb,),
        })
    s["input_blocks.0.0.weight"] = (m, u.in_channels, 3, 3)
    s["input_blocks.0.0.bias"] = (m,)
    skips = [m]
    ch, idx = m, 1
    last = len(u.channel_mult) - 1
    for level, mult in enumerate(u.channel_mult):
        for _ in range(u.num_res_blocks):
            s.update(_resblock(f"input_blocks.{idx}.0", ch, mult * m, emb))
            ch = mult * m
            if u.transformer_depth[level]:
                s.update(_spatial_transformer(f"input_blocks.{idx}.1", ch, u.transformer_depth[level],
                                              u.context_dim, u.linear_proj))
            skips.append(ch)
            idx += 1
        if level != last:
            s[f"input_blocks.{idx}.0.op.weight"] = (ch, ch, 3, 3)
            s[f"input_blocks.{idx}.0.op.bias"] = (ch,)
            skips.append(ch)
            idx += 1
    s.update(_resblock("middle_block.0", ch, ch, emb))
    s.update(_spatial_transformer("middle_block.1", ch, u.middle_depth, u.context_dim, u.linear_proj))
    s.update(_resblock("middle_block.2", ch, ch, emb))
    idx = 0
    for level in reversed(range(len(u.channel_mult))):
        out = u.channel_mult[level] * m
        for i in range(u.num_res_blocks + 1):
            s.update(_resblock(f"output_blocks.{idx}.0", ch + skips.pop(), out, emb))
            ch = out
            sub = 1
            if u.transformer_depth[level]:
                s.update(_spatial_transformer(f"output_blocks.{idx}.1", ch, u.transformer_depth[level],
                                              u.context_dim, u.linear_proj))
                sub = 2
            if level and i == u.num_res_blocks:
                s[f"output_blocks.{idx}.{sub}.conv.weight"] = (ch, ch, 3, 3)
                s[f"output_blocks.{idx}.{sub}.conv.bias"] = (ch,)
            idx += 1
    s.update({"out.0.weight": (m,), "out.0.bias": (m,),
              "out.2.weight": (u.out_channels, m, 3, 3), "out.2.bias": (u.out_channels,)})
    return {prefix + k: v for k, v in s.items()}


def _vae_resnet(p: str, cin: int, cout: int) -> Shapes:
    s = {
        f"{p}.norm1.weight": (cin,), f"{p}.norm1.bias": (cin,),
        f"{p}.conv1.weight": (cout, cin, 3, 3), f"{p}.conv1.bias": (cout,),
        f"{p}.norm2.weight": (cout,), f"{p}.norm2.bias": (cout,),
        f"{p}.conv2.weight": (cout, cout, 3, 3), f"{p}.conv2.bias": (cout,),
    }
    if cin != cout:
        s[f"{p}.nin_shortcut.weight"] = (cout, cin, 1, 1)
        s[f"{p}.nin_shortcut.bias"] = (cout,)
    return s


def _vae_mid(p: str, c: int) -> Shapes:
    s = {**_vae_resnet(f"{p}.block_1", c, c), **_vae_resnet(f"{p}.block_2", c, c)}
    s[f"{p}.attn_1.norm.weight"] = (c,)
    s[f"{p}.attn_1.norm.bias"] = (c,)
    for n in ("q", "k", "v", "proj_out"):
        s[f"{p}.attn_1.{n}.weight"] = (c, c, 1, 1)
        s[f"{p}.attn_1.{n}.bias"] = (c,)
    return s


def vae_shapes(v: VAELayout, prefix: str = "first_stage_model.") -> Shapes:
    ch, z = v.ch, v.z_channels
    s: Shapes = {"encoder.conv_in.weight": (ch, 3, 3, 3), "encoder.conv_in.bias": (ch,)}
    block_in = ch
    for i, mult in enumerate(v.ch_mult):
        block_out = ch * mult
        for j in range(v.num_res_blocks):
            s.update(_vae_resnet(f"encoder.down.{i}.block.{j}", block_in, block_out))
            block_in = block_out
        if i != len(v.ch_mult) - 1:
            s[f"encoder.down.{i}.downsample.conv.weight"] = (block_in, block_in, 3, 3)
            s[f"encoder.down.{i}.downsample.conv.bias"] = (block_in,)
    s.update(_vae_mid("encoder.mid", block_in))
    s.update({"encoder.norm_out.weight": (block_in,), "encoder.norm_out.bias": (block_in,),
              "encoder.conv_out.weight": (2 * z, block_in, 3, 3), "encoder.conv_out.bias": (2 * z,),
              "quant_conv.weight": (2 * z, 2 * z, 1, 1), "quant_conv.bias": (2 * z,),
              "post_quant_conv.weight": (z, z, 1, 1), "post_quant_conv.bias": (z,)})
    block_in = ch * v.ch_mult[-1]
    s["decoder.conv_in.weight"] = (block_in, z, 3, 3)
    s["decoder.conv_in.bias"] = (block_in,)
    s.update(_vae_mid("decoder.mid", block_in))
    for i in reversed(range(len(v.ch_mult))):
        block_out = ch * v.ch_mult[i]
        for j in range(v.num_res_blocks + 1):
            s.update(_vae_resnet(f"decoder.up.{i}.block.{j}", block_in, block_out))
            block_in = block_out
        if i != 0:
            s[f"decoder.up.{i}.upsample.conv.weight"] = (block_in, block_in, 3, 3)
            s[f"decoder.up.{i}.upsample.conv.bias"] = (block_in,)
    s.update({"decoder.norm_out.weight": (ch,), "decoder.norm_out.bias": (ch,),
              "decoder.conv_out.weight": (3, ch, 3, 3), "decoder.conv_out.bias": (3,)})
    return {prefix + k: v for k, v in s.items()}


def clip_hf_shapes(t: TextLayout, prefix: str) -> Shapes:
    """OpenAI CLIP text model in the Hugging Face layout, as SD1 and SDXL's first encoder store it."""
    h = t.hidden
    p = prefix + "text_model."
    s: Shapes = {p + "embeddings.token_embedding.weight": (t.vocab, h),
                 p + "embeddings.position_embedding.weight": (t.positions, h),
                 p + "final_layer_norm.weight": (h,), p + "final_layer_norm.bias": (h,)}
    for i in range(t.layers):
        b = f"{p}encoder.layers.{i}."
        for n in ("q_proj", "k_proj", "v_proj", "out_proj"):
            s[f"{b}self_attn.{n}.weight"] = (h, h)
            s[f"{b}self_attn.{n}.bias"] = (h,)
        for n in ("layer_norm1", "layer_norm2"):
            s[f"{b}{n}.weight"] = (h,)
            s[f"{b}{n}.bias"] = (h,)
        s[f"{b}mlp.fc1.weight"] = (t.mlp, h)
        s[f"{b}mlp.fc1.bias"] = (t.mlp,)
        s[f"{b}mlp.fc2.weight"] = (h, t.mlp)
        s[f"{b}mlp.fc2.bias"] = (h,)
    return s


def open_clip_shapes(t: TextLayout, prefix: str) -> Shapes:
    """OpenCLIP text tower (SD2's and SDXL's ViT-H / ViT-bigG) in its own layout."""
    h = t.hidden
    s: Shapes = {prefix + "token_embedding.weight": (t.vocab, h),
                 prefix + "positional_embedding": (t.positions, h),
                 prefix + "ln_final.weight": (h,), prefix + "ln_final.bias": (h,),
                 prefix + "text_projection": (h, t.projection or h),
                 prefix + "logit_scale": ()}
    for i in range(t.layers):
        b = f"{prefix}transformer.resblocks.{i}."
        s[b + "attn.in_proj_weight"] = (3 * h, h)
        s[b + "attn.in_proj_bias"] = (3 * h,)
        s[b + "attn.out_proj.weight"] = (h, h)
        s[b + "attn.out_proj.bias"] = (h,)
        for n in ("ln_1", "ln_2"):
            s[f"{b}{n}.weight"] = (h,)
            s[f"{b}{n}.bias"] = (h,)
        s[b + "mlp.c_fc.weight"] = (t.mlp, h)
        s[b + "mlp.c_fc.bias"] = (t.mlp,)
        s[b + "mlp.c_proj.weight"] = (h, t.mlp)
        s[b + "mlp.c_proj.bias"] = (h,)
    return s


@dataclass(frozen=True)
class CheckpointLayout:
    family: str  # sd1 | sd2 | sdxl | sdxl_refiner
    unet: UNetLayout
    vae: VAELayout
    text: tuple[TextLayout, ...]
    extra: dict = field(default_factory=dict)

    def shapes(self) -> Shapes:
        s = {**unet_shapes(self.unet), **vae_shapes(self.vae)}
        if self.family == "sd1":
            s.update(clip_hf_shapes(self.text[0], "cond_stage_model.transformer."))
        elif self.family == "sd2":
            s.update(open_clip_shapes(self.text[0], "cond_stage_model.model."))
        elif self.family == "sdxl":
            s.update(clip_hf_shapes(self.text[0], "conditioner.embedders.0.transformer."))
            s.update(open_clip_shapes(self.text[1], "conditioner.embedders.1.model."))
        elif self.family == "sdxl_refiner":
            s.update(open_clip_shapes(self.text[0], "conditioner.embedders.0.model."))
        else:
            raise ValueError(self.family)
        s["alphas_cumprod"] = (1000,)
        return s


# Full-size layouts of the released models.
SD15 = CheckpointLayout("sd1", UNetLayout(), VAELayout(), (TextLayout(),))
SD21 = CheckpointLayout("sd2", UNetLayout(context_dim=1024, linear_proj=True), VAELayout(),
                        (TextLayout(hidden=1024, layers=24, projection=1024),))
SDXL = CheckpointLayout(
    "sdxl",
    UNetLayout(channel_mult=(1, 2, 4), transformer_depth=(0, 2, 10), middle_depth=10, context_dim=2048,
               linear_proj=True, adm_in_channels=2816),
    VAELayout(), (TextLayout(), TextLayout(hidden=1280, layers=32, projection=1280)))
SDXL_REFINER = CheckpointLayout(
    "sdxl_refiner",
    UNetLayout(model_channels=384, transformer_depth=(0, 4, 4, 0), middle_depth=4, context_dim=1280,
               linear_proj=True, adm_in_channels=2560),
    VAELayout(), (TextLayout(hidden=1280, layers=32, projection=1280),))


def inpainting(layout: CheckpointLayout) -> CheckpointLayout:
    from dataclasses import replace
    return replace(layout, unet=replace(layout.unet, in_channels=9))


# Tiny layouts: same structure, small widths (GroupNorm needs multiples of 32).
TINY_TEXT = TextLayout(hidden=64, layers=3, intermediate=128)
TINY_VAE = VAELayout(ch=32, ch_mult=(1, 2), num_res_blocks=1)
TINY_SD1 = CheckpointLayout(
    "sd1", UNetLayout(model_channels=32, channel_mult=(1, 2), num_res_blocks=1, transformer_depth=(1, 1),
                      context_dim=64), TINY_VAE, (TINY_TEXT,))
TINY_SD2 = CheckpointLayout(
    "sd2", UNetLayout(model_channels=64, channel_mult=(1, 2), num_res_blocks=1, transformer_depth=(1, 1),
                      context_dim=64, linear_proj=True), TINY_VAE,
    (TextLayout(hidden=64, layers=3, intermediate=128, projection=64),))
TINY_SDXL = CheckpointLayout(
    "sdxl", UNetLayout(model_channels=64, channel_mult=(1, 2), num_res_blocks=1, transformer_depth=(0, 2),
                       middle_depth=2, context_dim=64 + 128, linear_proj=True,
                       adm_in_channels=128 + 6 * 32),
    TINY_VAE, (TINY_TEXT, TextLayout(hidden=128, layers=3, intermediate=256, projection=128)))


def materialize(shapes: Shapes, seed: int = 0, dtype=torch.float32, device="cpu") -> dict[str, torch.Tensor]:
    """Random weights that keep activations finite: norms start at 1/0, the rest small."""
    if device == "meta":
        return {k: torch.empty(v, dtype=dtype, device="meta") for k, v in shapes.items()}
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, shape in sorted(shapes.items()):
        if k == "alphas_cumprod":
            betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
            out[k] = torch.cumprod(1 - betas, 0).to(torch.float32)
            continue
        if k.endswith("logit_scale"):
            out[k] = torch.tensor(4.6052, dtype=dtype)
            continue
        if len(shape) == 1 and k.endswith("weight"):  # every 1-D weight here is a norm's scale
            out[k] = torch.ones(shape, dtype=dtype)
        elif len(shape) == 1:
            out[k] = torch.zeros(shape, dtype=dtype)
        else:
            fan_in = 1
            for d in shape[1:]:
                fan_in *= d
            out[k] = (torch.randn(shape, generator=g) / max(fan_in, 1) ** 0.5).to(dtype)
    return out


def write_checkpoint(path: Path, layout: CheckpointLayout, seed: int = 0, dtype=torch.float32,
                     yaml_text: str | None = None, metadata: dict[str, str] | None = None) -> Path:
    from safetensors.torch import save_file
    path.parent.mkdir(parents=True, exist_ok=True)
    sd = materialize(layout.shapes(), seed=seed, dtype=dtype)
    if path.suffix == ".safetensors":
        save_file(sd, str(path), metadata=metadata)
    else:
        torch.save({"state_dict": sd, "global_step": 1}, path)
    if yaml_text is not None:
        path.with_suffix(".yaml").write_text(yaml_text)
    return path
TINY_SDXL_REFINER = CheckpointLayout(
    "sdxl_refiner", UNetLayout(model_channels=64, channel_mult=(1, 2), num_res_blocks=1, transformer_depth=(0, 1),
                               middle_depth=1, context_dim=128, linear_proj=True, adm_in_channels=128 + 5 * 32),
    TINY_VAE, (TextLayout(hidden=128, layers=3, intermediate=256, projection=128),))
