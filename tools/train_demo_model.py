"""Train the built-in demo checkpoint: a tiny SD1-layout latent diffusion model of coloured shapes.

Everything is made here, from a fixed seed, on the CPU:

1. a synthetic data set of captioned 64x64 pictures ("a large red circle on the left on a blue background");
2. a small KL autoencoder (3 levels: 64x64 RGB <-> 16x16x4 latents), trained briefly on reconstruction;
   its latents are then rescaled inside the weights so that `latent * 0.18215` (SD1's fixed scaling
   factor) has unit standard deviation;
3. the CLIP-architecture text encoder (real CLIP tokenizer, tiny width) and the UNet, trained jointly
   from scratch with SD's eps-prediction loss on the scaled-linear noise schedule, dropping ~10 % of
   captions so classifier-free guidance works;
4. the result is written in the original LDM checkpoint layout (fp16 safetensors) with its yaml, so
   the ordinary loader (modules.models.loading.load_model) reads it like any SD1 checkpoint.

Usage:
    venv/bin/python tools/train_demo_model.py                 # full run (~25 min on 2 cores)
    venv/bin/python tools/train_demo_model.py --quick         # pipeline check (a few minutes)
    venv/bin/python tools/train_demo_model.py --out models/Stable-diffusion/demo-shapes.safetensors
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# ---------------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------------

IMAGE_SIZE = 64
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30), "green": (30, 170, 40), "blue": (30, 60, 220), "yellow": (240, 220, 30),
    "purple": (140, 40, 180), "orange": (250, 140, 20), "white": (245, 245, 245), "black": (15, 15, 15),
}
SHAPES = ("circle", "square", "triangle", "star")
SIZES = {"small": (0.28, 0.36), "large": (0.48, 0.60)}  # shape diameter as a fraction of the image
POSITIONS = {"left": (0.32, 0.5), "right": (0.68, 0.5), "top": (0.5, 0.32), "bottom": (0.5, 0.68),
             "center": (0.5, 0.5)}


@dataclass
class Sample:
    color: str
    shape: str
    size: str
    position: str
    background: str
    jitter: tuple[float, float, float, float]  # dx, dy, size fraction in [0,1], rotation in [0,1]


def random_sample(rng: np.random.Generator) -> Sample:
    names = list(COLORS)
    color = names[rng.integers(len(names))]
    background = color
    while background == color:
        background = names[rng.integers(len(names))]
    return Sample(color=color, shape=SHAPES[rng.integers(len(SHAPES))], size=list(SIZES)[rng.integers(len(SIZES))],
                  position=list(POSITIONS)[rng.integers(len(POSITIONS))], background=background,
                  jitter=tuple(float(x) for x in rng.random(4)))


def shade(rgb: tuple[int, int, int], rng_value: float, amount: int = 18) -> tuple[int, int, int]:
    d = int((rng_value - 0.5) * 2 * amount)
    return tuple(int(min(255, max(0, c + d))) for c in rgb)


def draw(s: Sample, size: int = IMAGE_SIZE, supersample: int = 4) -> Image.Image:
    """The picture of a sample, antialiased by drawing at `supersample` times the size."""
    big = size * supersample
    img = Image.new("RGB", (big, big), shade(COLORS[s.background], s.jitter[3], 12))
    d = ImageDraw.Draw(img)
    lo, hi = SIZES[s.size]
    diameter = (lo + (hi - lo) * s.jitter[2]) * big
    px, py = POSITIONS[s.position]
    cx = (px + (s.jitter[0] - 0.5) * 0.08) * big
    cy = (py + (s.jitter[1] - 0.5) * 0.08) * big
    r = diameter / 2
    fill = shade(COLORS[s.color], s.jitter[0], 14)
    if s.shape == "circle":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif s.shape == "square":
        h = r * 0.85
        d.rectangle([cx - h, cy - h, cx + h, cy + h], fill=fill)
    elif s.shape == "triangle":
        pts = [(cx + r * math.cos(a), cy + r * 1.0 * math.sin(a) + r * 0.15)
               for a in (-math.pi / 2, -math.pi / 2 + 2 * math.pi / 3, -math.pi / 2 + 4 * math.pi / 3)]
        d.polygon(pts, fill=fill)
    else:  # five-pointed star
        pts = []
        for k in range(10):
            a = -math.pi / 2 + k * math.pi / 5
            rr = r if k % 2 == 0 else r * 0.42
            pts.append((cx + rr * math.cos(a), cy + rr * math.sin(a)))
        d.polygon(pts, fill=fill)
    return img.resize((size, size), Image.LANCZOS)


def caption(s: Sample, rng: np.random.Generator) -> str:
    """A caption naming some or all attributes; partial captions teach single words (for negatives)."""
    u = rng.random()
    size = f"{s.size} " if rng.random() < 0.5 else ""
    pos = f" on the {s.position}" if rng.random() < 0.6 else ""
    bg = f" on a {s.background} background"
    if u < 0.55:
        return f"a {size}{s.color} {s.shape}{pos}{bg}"
    if u < 0.70:
        return f"a {size}{s.color} {s.shape}{pos}"
    if u < 0.78:
        return f"a {s.shape}{pos}{bg}"
    if u < 0.84:
        return f"{s.color} {s.shape}"
    if u < 0.89:
        return f"a {s.shape}"
    if u < 0.93:
        return s.color
    if u < 0.97:
        return f"{s.background} background"
    return f"a {s.color} shape{bg}"


ATTRIBUTES = (("color", list(COLORS)), ("shape", list(SHAPES)), ("background", list(COLORS)),
              ("size", list(SIZES)), ("position", list(POSITIONS)))


def caption_attributes(text: str) -> list[int]:
    """Which colour / shape / background / size / position a caption names (the last index: not named)."""
    out = [len(values) for _, values in ATTRIBUTES]
    words = text.split()
    for i, w in enumerate(words):
        if w in COLORS:
            out[2 if i + 1 < len(words) and words[i + 1] == "background" else 0] = list(COLORS).index(w)
        elif w in SHAPES:
            out[1] = SHAPES.index(w)
        elif w in SIZES:
            out[3] = list(SIZES).index(w)
        elif w in POSITIONS:
            out[4] = list(POSITIONS).index(w)
    return out


def caption_vocabulary(tokenizer) -> list[int]:
    """Token ids that captions use (with start and end); all other rows of the token table stay zero, so unknown
    words carry no meaning (and the file compresses well)."""
    words = [*COLORS, *SHAPES, *SIZES, *POSITIONS, "a", "on", "the", "background", "shape"]
    ids = {tokenizer.bos_token_id, tokenizer.eos_token_id}
    for w in words:
        ids.update(tokenizer(w, add_special_tokens=False).input_ids)
    return sorted(ids)


def to_tensor(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(image)).permute(2, 0, 1).float() / 127.5 - 1.0


def make_dataset(n: int, seed: int) -> tuple[list[Sample], torch.Tensor]:
    rng = np.random.default_rng(seed)
    samples = [random_sample(rng) for _ in range(n)]
    return samples, torch.stack([to_tensor(draw(s)) for s in samples])


def shape_weights(samples: list[Sample], images: torch.Tensor, latent_size: int, extra: float = 2.0) -> torch.Tensor:
    """Per-latent-pixel loss weights, 1 + extra where the shape is: the shape is a small part of the picture, so
    without this its colour is learned long after the background's (the caption must be bound to a region)."""
    backgrounds = torch.tensor([shade(COLORS[s.background], s.jitter[3], 12) for s in samples], dtype=torch.float32)
    pixels = (images + 1) * 127.5
    mask = ((pixels - backgrounds[:, :, None, None]).abs().sum(1, keepdim=True) > 40).float()
    return 1 + extra * F.adaptive_avg_pool2d(mask, latent_size)


# ---------------------------------------------------------------------------------------------
# model layout (shared with the loader: sizes are what modules.models.detection reads back)
# ---------------------------------------------------------------------------------------------

def demo_layout():
    from tests import ldm_layout as L
    unet = L.UNetLayout(model_channels=64, channel_mult=(1, 2), num_res_blocks=1, transformer_depth=(1, 1),
                        context_dim=64)
    vae = L.VAELayout(ch=64, ch_mult=(1, 1, 2), num_res_blocks=1, z_channels=4)
    text = L.TextLayout(hidden=64, layers=2, intermediate=256)
    return L.CheckpointLayout("sd1", unet, vae, (text,))


HEAD_CHANNELS = 32


def yaml_text(layout) -> str:
    u, v, t = layout.unet, layout.vae, layout.text[0]
    return f"""# Demo checkpoint made by tools/train_demo_model.py (a tiny SD1-layout latent diffusion model).
model:
  base_learning_rate: 1.0e-04
  target: ldm.models.diffusion.ddpm.LatentDiffusion
  params:
    linear_start: 0.00085
    linear_end: 0.0120
    num_timesteps_cond: 1
    log_every_t: 200
    timesteps: 1000
    first_stage_key: "jpg"
    cond_stage_key: "txt"
    image_size: {IMAGE_SIZE // 2 ** (len(v.ch_mult) - 1)}
    channels: {v.z_channels}
    cond_stage_trainable: true
    conditioning_key: crossattn
    monitor: val/loss_simple_ema
    scale_factor: 0.18215
    use_ema: False
    unet_config:
      target: ldm.modules.diffusionmodules.openaimodel.UNetModel
      params:
        image_size: {IMAGE_SIZE // 2 ** (len(v.ch_mult) - 1)}
        in_channels: {u.in_channels}
        out_channels: {u.out_channels}
        model_channels: {u.model_channels}
        attention_resolutions: [1, 2]
        num_res_blocks: {u.num_res_blocks}
        channel_mult: {list(u.channel_mult)}
        num_head_channels: {HEAD_CHANNELS}
        use_spatial_transformer: True
        transformer_depth: 1
        context_dim: {u.context_dim}
        use_checkpoint: False
        legacy: False
    first_stage_config:
      target: ldm.models.autoencoder.AutoencoderKL
      params:
        embed_dim: {v.z_channels}
        monitor: val/rec_loss
        ddconfig:
          double_z: true
          z_channels: {v.z_channels}
          resolution: {IMAGE_SIZE}
          in_channels: 3
          out_ch: 3
          ch: {v.ch}
          ch_mult: {list(v.ch_mult)}
          num_res_blocks: {v.num_res_blocks}
          attn_resolutions: []
          dropout: 0.0
        lossconfig:
          target: torch.nn.Identity
    cond_stage_config:
      # a CLIP-architecture text encoder (hidden {t.hidden}, {t.layers} layers) trained from scratch
      target: ldm.modules.encoders.modules.FrozenCLIPEmbedder
"""


def build_modules(layout, seed: int):
    """Freshly initialised diffusers/transformers modules with exactly the loader's configs."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from omegaconf import OmegaConf
    from transformers import CLIPTextConfig, CLIPTextModel

    from modules.models import detection as model_detection

    spec = model_detection.detect(Path("demo.safetensors"), layout.shapes(), OmegaConf.create(yaml_text(layout)))
    torch.manual_seed(seed)
    vae = AutoencoderKL(**spec.vae_config)
    torch.manual_seed(seed + 1)
    unet = UNet2DConditionModel(**spec.unet_config)
    torch.manual_seed(seed + 2)
    text = CLIPTextModel(CLIPTextConfig(**spec.text_encoders[0].config))
    return spec, vae, unet, text


# ---------------------------------------------------------------------------------------------
# diffusers -> LDM key mapping, by converting tensors that identify their own key
# ---------------------------------------------------------------------------------------------

def _inverse_map(ldm_shapes: dict[str, tuple[int, ...]], convert) -> dict[str, str]:
    """diffusers key -> LDM key, found by converting a state dict whose tensors hold their index."""
    keys = sorted(ldm_shapes)
    probe = {k: torch.full(ldm_shapes[k] or (1,), float(i), dtype=torch.float64) for i, k in enumerate(keys)}
    converted = convert(probe)
    out = {}
    for dk, t in converted.items():
        i = int(t.flatten()[0].item())
        if not bool((t == i).all()):
            raise RuntimeError(f"conversion mixes tensors for {dk}")
        out[dk] = keys[i]
    if len(set(out.values())) != len(out):
        raise RuntimeError("conversion is not one-to-one")
    return out


def to_ldm_state_dict(layout, vae, unet, text, alphas_cumprod: torch.Tensor,
                      dtype=torch.float16) -> dict[str, torch.Tensor]:
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint

    from tests import ldm_layout as L

    sd: dict[str, torch.Tensor] = {}
    unet_shapes = L.unet_shapes(layout.unet)
    vae_shapes = L.vae_shapes(layout.vae)
    for module, shapes, convert in (
            (unet, unet_shapes, lambda p: convert_ldm_unet_checkpoint(p, dict(unet.config))),
            (vae, vae_shapes, lambda p: convert_ldm_vae_checkpoint(p, dict(vae.config)))):
        mapping = _inverse_map(shapes, convert)
        state = module.state_dict()
        if set(mapping) != set(state):
            raise RuntimeError(f"key mismatch: {sorted(set(mapping) ^ set(state))[:5]}")
        for dk, lk in mapping.items():
            sd[lk] = state[dk].detach().reshape(shapes[lk]).to(dtype).contiguous()
    for k, v in text.state_dict().items():
        if k.endswith("position_ids"):
            continue
        name = k if k.startswith("text_model.") else "text_model." + k
        sd["cond_stage_model.transformer." + name] = v.detach().to(dtype).contiguous()
    expected = set(layout.shapes()) - {"alphas_cumprod"}
    if set(sd) != expected:
        raise RuntimeError(f"LDM keys differ from the layout: {sorted(set(sd) ^ expected)[:5]}")
    sd["alphas_cumprod"] = alphas_cumprod.float()
    return sd


# ---------------------------------------------------------------------------------------------
# training
# ---------------------------------------------------------------------------------------------

def alphas_cumprod() -> torch.Tensor:
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
    return torch.cumprod(1.0 - betas, dim=0).to(torch.float32)


def cosine_lr(step: int, total: int, base: float, warmup: int) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    return base * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def train_vae(vae, images: torch.Tensor, steps: int, batch: int, seed: int, log, crop: int = 32) -> list[float]:
    """Trained on random `crop`-pixel crops (the network is convolutional): 4x more steps in the same time than on
    whole pictures, and colours are what it must learn first."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(vae.parameters(), lr=3e-3, weight_decay=0.0)
    vae.train()
    losses = []
    t0 = time.perf_counter()
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = cosine_lr(step, steps, 3e-3, 20)
        idx = torch.randint(len(images), (batch,), generator=g)
        top, left = (int(v) for v in torch.randint(0, images.shape[-1] - crop + 1, (2,), generator=g))
        x = images[idx][..., top:top + crop, left:left + crop]
        # deterministic autoencoder (z = posterior mean) with a small L2 pull on the latents: sampling
        # the posterior from a fresh encoder drowns the signal in unit noise and trains far slower
        z = vae.encode(x).latent_dist.mean
        rec = vae.decode(z).sample
        rec_loss = F.l1_loss(rec, x) + F.mse_loss(rec, x)
        kl = z.square().mean()
        loss = rec_loss + 1e-3 * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        losses.append(rec_loss.item())
        if step % 50 == 0 or step == steps - 1:
            log(f"vae step {step:5d}/{steps} rec {np.mean(losses[-50:]):.4f} z^2 {kl.item():.3f} "
                f"({time.perf_counter() - t0:.0f}s)")
    vae.eval()
    with torch.no_grad():  # the posterior's variance was not trained: make it negligible
        zc = vae.config.latent_channels
        vae.quant_conv.weight[zc:] = 0
        vae.quant_conv.bias[zc:] = -14.0
    return losses


@torch.no_grad()
def encode_all(vae, images: torch.Tensor, batch: int = 256) -> torch.Tensor:
    return torch.cat([vae.encode(images[i:i + batch]).latent_dist.mean for i in range(0, len(images), batch)])


@torch.no_grad()
def rescale_latents(vae, latents: torch.Tensor, scaling_factor: float = 0.18215) -> float:
    """Fold a factor into quant_conv / post_quant_conv so that latents * scaling_factor have unit std."""
    k = (1.0 / scaling_factor) / latents.std().item()
    z = vae.config.latent_channels
    vae.quant_conv.weight[:z] *= k
    vae.quant_conv.bias[:z] *= k
    vae.quant_conv.bias[z:] += 2 * math.log(k)  # log-variance of the scaled latent
    vae.post_quant_conv.weight /= k
    latents *= k
    return k


def tokenize(tokenizer, texts: list[str]) -> torch.Tensor:
    return tokenizer(texts, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids


class AttributeHeads(torch.nn.Module):
    """Linear read-outs of the caption's attributes from the mean of the text encoder's output (what a
    cross-attention with uniform weights sees). Trained only to shape the text encoder; not saved."""

    def __init__(self, width: int):
        super().__init__()
        self.heads = torch.nn.ModuleList([torch.nn.Linear(width, len(values) + 1) for _, values in ATTRIBUTES])

    def loss(self, context: torch.Tensor, captions: list[str]) -> tuple[torch.Tensor, float]:
        target = torch.tensor([caption_attributes(c) for c in captions])
        pooled = context.float().mean(1)
        losses, hits = [], 0.0
        for k, head in enumerate(self.heads):
            logits = head(pooled)
            losses.append(F.cross_entropy(logits, target[:, k]))
            hits += (logits.argmax(-1) == target[:, k]).float().mean().item()
        return torch.stack(losses).mean(), hits / len(self.heads)


def pretrain_text(text, heads: AttributeHeads, tokenizer, samples: list[Sample], steps: int, seed: int, log,
                  batch: int = 128) -> float:
    """Teach the text encoder to tell the attributes apart before the UNet learns to read it. Without this the
    UNet learns to draw "some shape on some background" long before it starts to use the (random) text
    features: with eps-prediction the caption only matters at high noise, where the loss is small."""
    rng = np.random.default_rng(seed)
    opt = torch.optim.AdamW(list(text.parameters()) + list(heads.parameters()), lr=3e-3)
    acc = 0.0
    for step in range(steps):
        caps = [caption(samples[int(i)], rng) for i in rng.integers(0, len(samples), batch)]
        loss, acc = heads.loss(text(tokenize(tokenizer, caps)).last_hidden_state, caps)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 50 == 0 or step == steps - 1:
            log(f"text pretraining step {step:4d}/{steps} loss {loss.item():.4f} attribute accuracy {acc:.3f}")
    return acc


def snr_weights(a: torch.Tensor, cap: float) -> torch.Tensor:
    """Per-sample weights (1-a)/a clamped to [1, cap]: the eps loss counted more at high noise, where the
    caption decides what is drawn (an x0-type weighting, bounded)."""
    return ((1 - a) / a).flatten().clamp(1, cap)


def train_diffusion(unet, text, heads: AttributeHeads, tokenizer, latents: torch.Tensor, samples: list[Sample],
                    pixel_weights: torch.Tensor, steps: int, batch: int, lr: float, seed: int, log,
                    dropout: float = 0.1, weight_cap: float = 50.0, aux_weight: float = 0.1,
                    bf16: bool = True) -> list[float]:
    g = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    ac = alphas_cumprod()
    params = list(unet.parameters()) + list(text.parameters()) + list(heads.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01, betas=(0.9, 0.99))
    unet.train()
    text.train()
    losses = []
    t0 = time.perf_counter()
    scaled = latents * 0.18215
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = cosine_lr(step, steps, lr, max(20, steps // 30))
        idx = torch.randint(len(scaled), (batch,), generator=g)
        x0 = scaled[idx]
        caps = ["" if rng.random() < dropout else caption(samples[i], rng) for i in idx.tolist()]
        t = torch.randint(0, 1000, (batch,), generator=g)
        noise = torch.randn(x0.shape, generator=g)
        a = ac[t].view(-1, 1, 1, 1)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            context = text(tokenize(tokenizer, caps)).last_hidden_state
            pred = unet(xt, t, encoder_hidden_states=context).sample
        error = (pred.float() - noise).square()
        per_sample = error.mean((1, 2, 3))
        weighted = (error * pixel_weights[idx]).mean((1, 2, 3)) / pixel_weights[idx].mean((1, 2, 3))
        w = snr_weights(a, weight_cap)
        loss = (w * weighted).sum() / w.sum()
        named = [i for i, c in enumerate(caps) if c]
        if aux_weight and named:  # keep the attributes readable while the text encoder trains on
            aux, _ = heads.loss(context[named], [caps[i] for i in named])
            loss = loss + aux_weight * aux
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        losses.append(per_sample.mean().item())
        if step % 25 == 0 or step == steps - 1:
            el = time.perf_counter() - t0
            log(f"diffusion step {step:5d}/{steps} eps loss {np.mean(losses[-50:]):.4f} "
                f"lr {opt.param_groups[0]['lr']:.2e} "
                f"({el:.0f}s, eta {el / (step + 1) * (steps - step - 1):.0f}s)")
    unet.eval()
    text.eval()
    return losses


@torch.no_grad()
def caption_gap(unet, text, tokenizer, latents: torch.Tensor, samples: list[Sample], n: int = 64, seed: int = 99
                ) -> dict[int, float]:
    """How much the right caption helps: x0 error with shuffled captions minus with the true ones, at a few
    noise levels. Zero means the model ignores the text."""
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(len(latents), (n,), generator=g)
    x0 = latents[idx] * 0.18215
    noise = torch.randn(x0.shape, generator=g)
    caps = [f"a {samples[i].color} {samples[i].shape} on a {samples[i].background} background" for i in idx.tolist()]
    context = text(tokenize(tokenizer, caps)).last_hidden_state
    shuffled = context[torch.randperm(n, generator=g)]
    ac = alphas_cumprod()
    out = {}
    for tv in (300, 600, 900):
        t = torch.full((n,), tv)
        a = ac[tv]
        xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
        err = [F.mse_loss(unet(xt, t, encoder_hidden_states=c).sample, noise).item() for c in (context, shuffled)]
        out[tv] = round((err[1] - err[0]) * (1 - a.item()) / a.item(), 4)
    return out


# ---------------------------------------------------------------------------------------------
# a LoRA and a textual-inversion embedding for the demo model
# ---------------------------------------------------------------------------------------------

NIGHT_SKY = (18, 22, 70)  # the LoRA's background: a dark blue that is not one of the eight caption colours
LORA_TARGETS = ("attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0", "attn2.to_q", "attn2.to_k",
                "attn2.to_v", "attn2.to_out.0", "ff.net.0.proj", "ff.net.2", "proj_in", "proj_out")


def draw_night(s: Sample) -> Image.Image:
    """The sample with the LoRA's night-sky background instead of the captioned one."""
    night = Sample(s.color, s.shape, s.size, s.position, "night", s.jitter)
    COLORS["night"] = NIGHT_SKY
    try:
        return draw(night)
    finally:
        del COLORS["night"]


class LoraAdapters:
    """Low-rank additions to the UNet's attention, feed-forward and projection layers (kohya's usual targets),
    as forward hooks: out + (alpha / rank) * up(down(x))."""

    def __init__(self, unet, rank: int, alpha: float, seed: int):
        torch.manual_seed(seed)
        self.rank, self.alpha = rank, alpha
        self.pairs: dict[str, tuple[torch.nn.Module, torch.nn.Module]] = {}
        self.hooks = []
        for name, module in unet.named_modules():
            if not name.endswith(LORA_TARGETS):
                continue
            if isinstance(module, torch.nn.Linear):
                down = torch.nn.Linear(module.in_features, rank, bias=False)
                up = torch.nn.Linear(rank, module.out_features, bias=False)
            elif isinstance(module, torch.nn.Conv2d) and module.kernel_size == (1, 1):
                down = torch.nn.Conv2d(module.in_channels, rank, 1, bias=False)
                up = torch.nn.Conv2d(rank, module.out_channels, 1, bias=False)
            else:
                continue
            torch.nn.init.normal_(down.weight, std=1 / rank)
            torch.nn.init.zeros_(up.weight)
            self.pairs[name] = (down, up)
            scale = alpha / rank
            self.hooks.append(module.register_forward_hook(
                lambda m, inputs, out, d=down, u=up, s=scale: out + s * u(d(inputs[0]))))

    def parameters(self):
        return [p for d, u in self.pairs.values() for p in (*d.parameters(), *u.parameters())]

    def remove(self) -> None:
        for h in self.hooks:
            h.remove()

    def state_dict(self) -> dict[str, torch.Tensor]:
        """kohya's file layout with diffusers module names: lora_unet_<path with _>.lora_down/up.weight, .alpha"""
        sd = {}
        for name, (down, up) in self.pairs.items():
            key = "lora_unet_" + name.replace(".", "_")
            sd[f"{key}.lora_down.weight"] = down.weight.detach().half().contiguous()
            sd[f"{key}.lora_up.weight"] = up.weight.detach().half().contiguous()
            sd[f"{key}.alpha"] = torch.tensor(float(self.alpha)).half()
        return sd


def frozen_model_loss(unet, x0: torch.Tensor, encode, g: torch.Generator, ac: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """The noise-level-weighted eps loss of one batch, for training small additions (LoRA, embedding) to the
    finished model; `encode` gives the text context (called under bf16 autocast). Returns (loss, per-sample loss)."""
    t = torch.randint(0, 1000, (len(x0),), generator=g)
    noise = torch.randn(x0.shape, generator=g)
    a = ac[t].view(-1, 1, 1, 1)
    xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
    with torch.autocast("cpu", dtype=torch.bfloat16):
        pred = unet(xt, t, encoder_hidden_states=encode()).sample
    per_sample = (pred.float() - noise).square().mean((1, 2, 3))
    w = snr_weights(a, 50.0)
    return (w * per_sample).sum() / w.sum(), per_sample


def train_lora(unet, text, tokenizer, latents: torch.Tensor, samples: list[Sample], steps: int, seed: int, log,
               rank: int = 4, batch: int = 32, lr: float = 2e-3) -> LoraAdapters:
    """A "night sky" style: whatever background the caption names, the LoRA paints the night sky."""
    for p in [*unet.parameters(), *text.parameters()]:
        p.requires_grad_(False)
    lora = LoraAdapters(unet, rank, alpha=rank, seed=seed)
    opt = torch.optim.AdamW(lora.parameters(), lr=lr, weight_decay=0.0)
    g = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    ac = alphas_cumprod()
    scaled = latents * 0.18215
    t0 = time.perf_counter()
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = cosine_lr(step, steps, lr, 20)
        idx = torch.randint(len(scaled), (batch,), generator=g)
        caps = [caption(samples[i], rng) for i in idx.tolist()]

        def encode(caps=caps):
            with torch.no_grad():  # the text encoder stays as it is
                return text(tokenize(tokenizer, caps)).last_hidden_state
        loss, per_sample = frozen_model_loss(unet, scaled[idx], encode, g, ac)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 50 == 0 or step == steps - 1:
            log(f"lora step {step:4d}/{steps} eps loss {per_sample.mean().item():.4f} "
                f"({time.perf_counter() - t0:.0f}s)")
    for p in [*unet.parameters(), *text.parameters()]:
        p.requires_grad_(True)
    return lora


class PlaceholderEmbedding:
    """Trainable vectors put in place of a placeholder token's embedding (textual inversion)."""

    def __init__(self, text, vectors: torch.Tensor, placeholder_id: int):
        self.vectors = torch.nn.Parameter(vectors.clone())
        self.placeholder_id = placeholder_id
        self._ids: torch.Tensor | None = None
        embedding = text.get_input_embeddings()
        self.hook = embedding.register_forward_hook(self._replace)
        self._pre = embedding.register_forward_pre_hook(self._remember)

    def _remember(self, module, inputs):
        self._ids = inputs[0]

    def _replace(self, module, inputs, out):
        mask = self._ids == self.placeholder_id
        if not mask.any():
            return out
        out = out.clone()
        out[mask] = self.vectors.to(out.dtype).repeat(int(mask.sum()) // len(self.vectors), 1)
        return out

    def remove(self) -> None:
        self.hook.remove()
        self._pre.remove()


def embedding_ids(tokenizer, before: str, n_vectors: int, placeholder_id: int, after: str = "") -> list[int]:
    ids = [tokenizer.bos_token_id, *tokenizer(before, add_special_tokens=False).input_ids,
           *[placeholder_id] * n_vectors, *tokenizer(after, add_special_tokens=False).input_ids]
    ids = ids[:76] + [tokenizer.eos_token_id]
    return ids + [tokenizer.eos_token_id] * (77 - len(ids))


def train_embedding(unet, text, tokenizer, latents: torch.Tensor, samples: list[Sample], steps: int, seed: int,
                    log, n_vectors: int = 2, batch: int = 32, lr: float = 5e-3) -> torch.Tensor:
    """Textual inversion of "sunset" pictures (orange shapes on purple): the vectors learn what they share."""
    for p in [*unet.parameters(), *text.parameters()]:
        p.requires_grad_(False)
    placeholder_id = tokenizer("*", add_special_tokens=False).input_ids[0]  # a token no caption uses
    start = text.get_input_embeddings().weight[tokenizer("shape", add_special_tokens=False).input_ids[0]]
    emb = PlaceholderEmbedding(text, start.detach().repeat(n_vectors, 1), placeholder_id)
    opt = torch.optim.AdamW([emb.vectors], lr=lr, weight_decay=0.0)
    g = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    ac = alphas_cumprod()
    scaled = latents * 0.18215
    t0 = time.perf_counter()
    try:
        for step in range(steps):
            idx = torch.randint(len(scaled), (batch,), generator=g)
            rows = []
            for i in idx.tolist():
                s = samples[i]
                u = rng.random()
                before, after = ((f"a {s.shape}", "") if u < 0.5
                                 else ("", f"{s.shape}") if u < 0.75 else ("a", "shape"))
                rows.append(embedding_ids(tokenizer, before, n_vectors, placeholder_id, after))
            loss, per_sample = frozen_model_loss(
                unet, scaled[idx], lambda rows=rows: text(torch.tensor(rows)).last_hidden_state, g, ac)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if step % 50 == 0 or step == steps - 1:
                log(f"embedding step {step:4d}/{steps} eps loss {per_sample.mean().item():.4f} "
                    f"({time.perf_counter() - t0:.0f}s)")
    finally:
        emb.remove()
        for p in [*unet.parameters(), *text.parameters()]:
            p.requires_grad_(True)
    return emb.vectors.detach()


# ---------------------------------------------------------------------------------------------
# checks after saving
# ---------------------------------------------------------------------------------------------

@torch.no_grad()
def verify_round_trip(path: Path, vae, unet, text, tokenizer, log) -> dict:
    """Load the written file with the app's loader and compare outputs with the trained modules."""
    from modules.models.devices import make_policy
    from modules.models.loading import load_model
    from modules.models.model_files import ModelFile

    model = load_model(ModelFile(path, path.stem), make_policy(torch.device("cpu")))
    ids = tokenize(model.tokenizers[0], ["a red circle on a blue background"])
    assert torch.equal(ids, tokenize(tokenizer, ["a red circle on a blue background"]))
    ref_ctx = text.half().float()(ids).last_hidden_state
    ctx = model.text_encoders[0](ids).last_hidden_state.float()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 4, 16, 16, generator=g)
    ref_eps = unet.half().float()(x, torch.tensor([500]), encoder_hidden_states=ref_ctx).sample
    eps = model.unet(x.to(model.unet.dtype), torch.tensor([500]), encoder_hidden_states=ctx.to(model.unet.dtype)).sample
    img = torch.rand(1, 3, 64, 64, generator=g) * 2 - 1
    ref_dec = vae.half().float().decode(vae.encode(img).latent_dist.mean).sample
    dec = model.vae.decode(model.vae.encode(img.to(model.vae.dtype)).latent_dist.mean).sample.float()
    result = {"text_max_diff": (ctx - ref_ctx).abs().max().item(),
              "unet_max_diff": (eps.float() - ref_eps).abs().max().item(),
              "vae_max_diff": (dec - ref_dec).abs().max().item(),
              "spec": model.spec.label, "latent_scale": model.latent_scale}
    log(f"round trip through load_model: {result}")
    for k in ("text_max_diff", "unet_max_diff", "vae_max_diff"):
        if result[k] > 1e-3:
            raise RuntimeError(f"saved checkpoint does not reproduce the trained model ({k}={result[k]})")
    return result


@torch.no_grad()
def verify_lora(checkpoint: Path, lora_path: Path, unet, log) -> None:
    """Merge the written LoRA with the app's LoraApplier and compare with the hooked training UNet."""
    from modules.conditioning.lora import LoraApplier, LoraRequest
    from modules.models.devices import make_policy
    from modules.models.loading import load_model
    from modules.models.model_files import ModelFile

    model = load_model(ModelFile(checkpoint, checkpoint.stem), make_policy(torch.device("cpu")))
    warnings = LoraApplier([lora_path.parent]).apply(model, [LoraRequest(lora_path.stem)])
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 4, 16, 16, generator=g)
    ctx = torch.randn(2, 77, unet.config.cross_attention_dim, generator=g)
    t = torch.tensor([300, 800])
    ref = unet(x, t, encoder_hidden_states=ctx).sample
    got = model.unet(x, t, encoder_hidden_states=ctx).sample.float()
    diff = ((got - ref).norm() / ref.norm()).item()
    log(f"LoRA merged by the app vs training hooks: relative difference {diff:.2e}; warnings {warnings}")
    if diff > 1e-2 or warnings:
        raise RuntimeError("the written LoRA does not reproduce the trained one in the app")


def save_preview(path: Path, vae, unet, text, tokenizer, prompts: list[str], seed: int = 0, steps: int = 20,
                 cfg: float = 5.0) -> None:
    """A grid of DDIM samples (our own sampler, independent of the app) for a quick look."""
    ac = alphas_cumprod()
    ts = torch.linspace(999, 0, steps).long()
    with torch.no_grad():
        cond = text(tokenize(tokenizer, prompts)).last_hidden_state
        unc = text(tokenize(tokenizer, [""] * len(prompts))).last_hidden_state
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(len(prompts), 4, 16, 16, generator=g)
        for i, t in enumerate(ts):
            tt = t.repeat(len(prompts))
            e = unet(torch.cat([x, x]), torch.cat([tt, tt]), encoder_hidden_states=torch.cat([cond, unc])).sample
            ec, eu = e.chunk(2)
            eps = eu + cfg * (ec - eu)
            a = ac[t]
            a_prev = ac[ts[i + 1]] if i + 1 < len(ts) else torch.tensor(1.0)
            x0 = (x - (1 - a).sqrt() * eps) / a.sqrt()
            x = a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps
        imgs = vae.decode(x / 0.18215).sample
    imgs = ((imgs.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
    grid = Image.new("RGB", (64 * len(prompts), 64))
    for i, im in enumerate(imgs):
        grid.paste(Image.fromarray(im), (64 * i, 0))
    grid.resize((grid.width * 2, grid.height * 2), Image.NEAREST).save(path)


# ---------------------------------------------------------------------------------------------

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "models" / "Stable-diffusion" / "demo-shapes.safetensors")
    ap.add_argument("--lora-out", type=Path, default=ROOT / "models" / "Lora" / "demo-night.safetensors")
    ap.add_argument("--embedding-out", type=Path, default=ROOT / "embeddings" / "demo-sunset.safetensors")
    ap.add_argument("--quick", action="store_true", help="small data set and few steps, to check the pipeline")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--images", type=int, default=None, help="data set size (default 8000, quick 1000)")
    ap.add_argument("--vae-steps", type=int, default=None)
    ap.add_argument("--text-steps", type=int, default=None, help="text-encoder pretraining steps")
    ap.add_argument("--steps", type=int, default=None, help="diffusion training steps")
    ap.add_argument("--lora-steps", type=int, default=None)
    ap.add_argument("--embedding-steps", type=int, default=None)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1.5e-3)
    ap.add_argument("--threads", type=int, default=0,
                    help="torch threads (default: all cores; use 1 on a busy machine, where OpenMP threads "
                         "waiting for each other slow training several-fold)")
    args = ap.parse_args(argv)
    quick = args.quick

    def pick(value, full, small):
        return value if value is not None else (small if quick else full)
    n_images = pick(args.images, 8000, 1000)
    vae_steps = pick(args.vae_steps, 1500, 30)
    text_steps = pick(args.text_steps, 300, 50)
    steps = pick(args.steps, 2200, 40)
    lora_steps = pick(args.lora_steps, 300, 20)
    embedding_steps = pick(args.embedding_steps, 300, 20)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # denormal floats in small weights slow CPU maths badly
    torch.manual_seed(args.seed)
    started = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - started:7.1f}s] {msg}", flush=True)

    from safetensors.torch import save_file
    from transformers import CLIPTokenizer

    from modules.models.loading import TOKENIZER_DIR
    tokenizer = CLIPTokenizer.from_pretrained(str(TOKENIZER_DIR), local_files_only=True, pad_token="<|endoftext|>")

    layout = demo_layout()
    spec, vae, unet, text = build_modules(layout, args.seed)
    with torch.no_grad():
        table = text.get_input_embeddings().weight
        keep = torch.tensor(caption_vocabulary(tokenizer))
        kept = table[keep].clone()
        table.zero_()
        table[keep] = kept
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    log(f"model: {spec.label}; UNet {count(unet) / 1e6:.2f}M, VAE {count(vae) / 1e6:.2f}M, "
        f"text {count(text) / 1e6:.2f}M params ({count(text.get_input_embeddings()) / 1e6:.2f}M "
        f"of them the token table, {len(keep)} rows of it used)")
    timings = {}

    t = time.perf_counter()
    samples, images = make_dataset(n_images, args.seed)
    timings["data_s"] = time.perf_counter() - t
    log(f"data: {n_images} pictures {IMAGE_SIZE}x{IMAGE_SIZE} in {timings['data_s']:.1f}s; e.g. "
        f"{[caption(s, np.random.default_rng(i)) for i, s in enumerate(samples[:3])]}")

    t = time.perf_counter()
    vae_losses = train_vae(vae, images, vae_steps, 16, args.seed, log)
    with torch.no_grad():
        check = images[:256]
        rec = vae.decode(vae.encode(check).latent_dist.mean).sample
        vae_mse = F.mse_loss(rec, check).item()
    log(f"vae reconstruction on 256 training pictures: MSE {vae_mse:.4f} (pixels in [-1, 1]), "
        f"PSNR {10 * math.log10(4 / vae_mse):.1f} dB")
    latents = encode_all(vae, images)
    k = rescale_latents(vae, latents)
    timings["vae_s"] = time.perf_counter() - t
    log(f"vae done in {timings['vae_s']:.0f}s; latent rescale x{k:.3f}; scaled latent std "
        f"{(latents * 0.18215).std():.3f}, "
        f"channel means {[round(v, 2) for v in (latents * 0.18215).mean((0, 2, 3)).tolist()]}")

    t = time.perf_counter()
    heads = AttributeHeads(text.config.hidden_size)
    text_accuracy = pretrain_text(text, heads, tokenizer, samples, text_steps, args.seed, log)
    timings["text_s"] = time.perf_counter() - t
    t = time.perf_counter()
    pixel_weights = shape_weights(samples, images, latents.shape[-1])
    diff_losses = train_diffusion(unet, text, heads, tokenizer, latents, samples, pixel_weights, steps, args.batch,
                                  args.lr,
                                  args.seed, log)
    timings["diffusion_s"] = time.perf_counter() - t
    gap = caption_gap(unet, text, tokenizer, latents, samples)
    log(f"caption gap (x0 error with shuffled minus true captions, by timestep): {gap}")

    out: Path = args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    sd = to_ldm_state_dict(layout, vae, unet, text, alphas_cumprod())
    meta = {"format": "pt", "modelspec.title": "demo-shapes", "modelspec.architecture": "stable-diffusion-v1",
            "modelspec.resolution": f"{IMAGE_SIZE}x{IMAGE_SIZE}", "modelspec.description":
            "Tiny SD1-layout demo model of coloured shapes, trained from scratch by tools/train_demo_model.py",
            "training": json.dumps({"seed": args.seed, "images": n_images, "vae_steps": vae_steps,
                                    "text_steps": text_steps, "steps": steps, "batch": args.batch, "lr": args.lr,
                                    "quick": quick, "latent_rescale": k, "caption_gap": gap,
                                    **{k2: round(v, 1) for k2, v in timings.items()}})}
    save_file(sd, str(out), metadata=meta)
    out.with_suffix(".yaml").write_text(yaml_text(layout))
    log(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB) and {out.with_suffix('.yaml').name}")
    verify_round_trip(out, vae, unet, text, tokenizer, log)

    # the LoRA: the same pictures with a night-sky background
    t = time.perf_counter()
    night_samples = [s for s in samples[: max(200, n_images // 5)]]
    night_latents = encode_all(vae, torch.stack([to_tensor(draw_night(s)) for s in night_samples]))
    lora = train_lora(unet, text, tokenizer, night_latents, night_samples, lora_steps, args.seed + 7, log)
    args.lora_out.parent.mkdir(parents=True, exist_ok=True)
    save_file(lora.state_dict(), str(args.lora_out), metadata={
        "ss_output_name": "demo-night", "ss_base_model_version": "sd_v1", "ss_network_module": "networks.lora",
        "ss_network_dim": str(lora.rank), "ss_network_alpha": str(lora.alpha),
        "modelspec.architecture": "stable-diffusion-v1/lora", "modelspec.title": "demo-night",
        "modelspec.description": "Night-sky background for demo-shapes, trained by tools/train_demo_model.py"})
    verify_lora(out, args.lora_out, unet, log)
    lora.remove()
    timings["lora_s"] = time.perf_counter() - t
    log(f"wrote {args.lora_out} ({args.lora_out.stat().st_size / 1e3:.0f} kB)")

    # the embedding: orange shapes on purple backgrounds
    t = time.perf_counter()
    rng = np.random.default_rng(args.seed + 11)
    sunset = []
    for _ in range(max(100, n_images // 12)):
        s = random_sample(rng)
        sunset.append(Sample("orange", s.shape, s.size, s.position, "purple", s.jitter))
    sunset_latents = encode_all(vae, torch.stack([to_tensor(draw(s)) for s in sunset]))
    vectors = train_embedding(unet, text, tokenizer, sunset_latents, sunset, embedding_steps, args.seed + 13, log)
    args.embedding_out.parent.mkdir(parents=True, exist_ok=True)
    save_file({"emb_params": vectors.half().contiguous()}, str(args.embedding_out),
              metadata={"name": "demo-sunset", "step": str(embedding_steps), "sd_checkpoint_name": "demo-shapes"})
    timings["embedding_s"] = time.perf_counter() - t
    log(f"wrote {args.embedding_out} ({len(vectors)} vectors of {vectors.shape[1]})")

    preview = out.with_name(out.stem + ".preview.png")
    save_preview(preview, vae, unet, text, tokenizer,
                 ["a red circle on a blue background", "a blue circle on a red background",
                  "a large yellow star on a black background", "a green square on the left on a white background",
                  "a purple triangle on the right on a yellow background",
                  "a small white circle on the top on a green background"])
    log(f"preview grid: {preview}")
    summary = {"timings": timings, "vae_rec_first_last": [vae_losses[0], float(np.mean(vae_losses[-50:]))],
               "diffusion_loss_curve": [round(float(np.mean(diff_losses[i:i + 50])), 4)
                                        for i in range(0, len(diff_losses), max(50, len(diff_losses) // 12))],
               "text_attribute_accuracy": text_accuracy, "caption_gap": gap, "file_mb": out.stat().st_size / 1e6,
               "total_s": time.perf_counter() - started}
    log("summary " + json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
