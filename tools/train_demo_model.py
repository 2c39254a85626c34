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
   the ordinary loader (modules.sd_models.load_model) reads it like any SD1 checkpoint.

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
SIZES = {"small": (0.22, 0.30), "large": (0.42, 0.55)}  # shape diameter as a fraction of the image
POSITIONS = {"left": (0.27, 0.5), "right": (0.73, 0.5), "top": (0.5, 0.27), "bottom": (0.5, 0.73),
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


def make_dataset(n: int, seed: int) -> tuple[list[Sample], torch.Tensor]:
    rng = np.random.default_rng(seed)
    samples = [random_sample(rng) for _ in range(n)]
    pixels = np.stack([np.asarray(draw(s)) for s in samples])
    x = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    return samples, x


# ---------------------------------------------------------------------------------------------
# model layout (shared with the loader: sizes are what modules.model_detection reads back)
# ---------------------------------------------------------------------------------------------

def layouts(quick: bool):
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
    from transformers import CLIPTextConfig, CLIPTextModel

    from modules import model_detection
    from omegaconf import OmegaConf

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


def train_vae(vae, images: torch.Tensor, steps: int, batch: int, seed: int, log) -> list[float]:
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(vae.parameters(), lr=3e-3, weight_decay=0.0)
    vae.train()
    losses = []
    t0 = time.perf_counter()
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = cosine_lr(step, steps, 3e-3, 20)
        idx = torch.randint(len(images), (batch,), generator=g)
        x = images[idx]
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


def train_diffusion(unet, text, tokenizer, latents: torch.Tensor, samples: list[Sample], steps: int, batch: int,
                    lr: float, seed: int, log, dropout: float = 0.1) -> list[float]:
    g = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    ac = alphas_cumprod()
    params = list(unet.parameters()) + list(text.parameters())
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
        ids = tokenize(tokenizer, caps)
        context = text(ids).last_hidden_state
        t = torch.randint(0, 1000, (batch,), generator=g)
        noise = torch.randn(x0.shape, generator=g)
        a = ac[t].view(-1, 1, 1, 1)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
        pred = unet(xt, t, encoder_hidden_states=context).sample
        loss = F.mse_loss(pred, noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        losses.append(loss.item())
        if step % 25 == 0 or step == steps - 1:
            el = time.perf_counter() - t0
            log(f"diffusion step {step:5d}/{steps} loss {np.mean(losses[-50:]):.4f} lr {opt.param_groups[0]['lr']:.2e} "
                f"({el:.0f}s, eta {el / (step + 1) * (steps - step - 1):.0f}s)")
    unet.eval()
    text.eval()
    return losses


# ---------------------------------------------------------------------------------------------
# checks after saving
# ---------------------------------------------------------------------------------------------

@torch.no_grad()
def verify_round_trip(path: Path, vae, unet, text, tokenizer, log) -> dict:
    """Load the written file with the app's loader and compare outputs with the trained modules."""
    from modules.devices import make_policy
    from modules.model_files import ModelFile
    from modules.sd_models import load_model

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


def save_preview(path: Path, vae, unet, text, tokenizer, prompts: list[str], seed: int = 0, steps: int = 20,
                 cfg: float = 5.0) -> None:
    """A grid of DDIM samples (our own sampler, independent of the app) for a quick look."""
    ac = alphas_cumprod()
    ts = torch.linspace(999, 0, steps).long()
    rows = []
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
    ap.add_argument("--quick", action="store_true", help="small data set and few steps, to check the pipeline")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--images", type=int, default=None, help="data set size (default 8000, quick 2000)")
    ap.add_argument("--vae-steps", type=int, default=None)
    ap.add_argument("--steps", type=int, default=None, help="diffusion training steps")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (default: all cores; use 1 on a busy machine, where OpenMP threads "
                         "waiting for each other slow training several-fold)")
    args = ap.parse_args(argv)
    quick = args.quick
    n_images = args.images or (2000 if quick else 8000)
    vae_steps = args.vae_steps if args.vae_steps is not None else (60 if quick else 250)
    steps = args.steps if args.steps is not None else (100 if quick else 500)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # denormal floats in small weights slow CPU maths badly
    torch.manual_seed(args.seed)
    started = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - started:7.1f}s] {msg}", flush=True)

    from modules.sd_models import TOKENIZER_DIR
    from transformers import CLIPTokenizer
    tokenizer = CLIPTokenizer.from_pretrained(str(TOKENIZER_DIR), local_files_only=True, pad_token="<|endoftext|>")

    layout = layouts(quick)
    spec, vae, unet, text = build_modules(layout, args.seed)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    log(f"model: {spec.label}; UNet {count(unet) / 1e6:.2f}M, VAE {count(vae) / 1e6:.2f}M, "
        f"text {count(text) / 1e6:.2f}M params ({count(text.get_input_embeddings()) / 1e6:.2f}M "
        f"of them the token table)")
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
        f"{(latents * 0.18215).std():.3f}, channel means {[round(v, 2) for v in (latents * 0.18215).mean((0, 2, 3)).tolist()]}")

    t = time.perf_counter()
    diff_losses = train_diffusion(unet, text, tokenizer, latents, samples, steps, args.batch, args.lr, args.seed, log)
    timings["diffusion_s"] = time.perf_counter() - t

    out: Path = args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    from safetensors.torch import save_file
    sd = to_ldm_state_dict(layout, vae, unet, text, alphas_cumprod())
    meta = {"format": "pt", "modelspec.title": "demo-shapes", "modelspec.description":
            "Tiny SD1-layout demo model of coloured shapes, trained from scratch by tools/train_demo_model.py",
            "training": json.dumps({"seed": args.seed, "images": n_images, "vae_steps": vae_steps,
                                    "steps": steps, "batch": args.batch, "lr": args.lr, "quick": quick,
                                    "latent_rescale": k, **{k2: round(v, 1) for k2, v in timings.items()}})}
    save_file(sd, str(out), metadata=meta)
    out.with_suffix(".yaml").write_text(yaml_text(layout))
    log(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB) and {out.with_suffix('.yaml').name}")

    verify_round_trip(out, vae, unet, text, tokenizer, log)
    preview = out.with_name(out.stem + ".preview.png")
    save_preview(preview, vae, unet, text, tokenizer,
                 ["a red circle on a blue background", "a blue circle on a red background",
                  "a large yellow star on a black background", "a green square on the left on a white background",
                  "a purple triangle on the right on a yellow background", "a small white circle on the top on a green background"])
    log(f"preview grid: {preview}")
    summary = {"timings": timings, "vae_rec_first_last": [vae_losses[0], float(np.mean(vae_losses[-50:]))],
               "diffusion_loss_curve": [round(float(np.mean(diff_losses[i:i + 50])), 4)
                                        for i in range(0, len(diff_losses), max(50, len(diff_losses) // 12))],
               "file_mb": out.stat().st_size / 1e6}
    log("summary " + json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
