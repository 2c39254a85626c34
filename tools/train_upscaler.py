"""Train the built-in 2x upscaler: a small Real-ESRGAN "Compact" network (SRVGGNetCompact) that spandrel recognises.

Nothing is downloaded. The training pictures are
- procedural ones drawn here from a fixed seed: gradients, noise textures, stripes, shapes with sharp or soft
  edges, lines and text in PIL's built-in font, antialiased by drawing at twice the size;
- four photographs that ship inside the gradio wheel (requirements.txt pins it).
Low-resolution inputs are the high-resolution pictures made smaller by the scale (mostly bicubic, sometimes
Lanczos, area or bilinear, now and then with a mild blur or JPEG compression), and the loss is L1 on RGB.

Held-out evaluation, through the app's own code path (`load_descriptor` + `upscale_with_model` on the saved file):
procedural pictures from another seed and two other gradio photographs, made smaller by the scale with bicubic,
brought back with (a) Lanczos, (b) the model; PSNR and SSIM against the original are measured on luminance
(BT.601 Y, as super-resolution papers do), leaving out `scale` pixels at the border.

Usage:
    venv/bin/python tools/train_upscaler.py                # full run (11-17 minutes on a 2-core CPU)
    venv/bin/python tools/train_upscaler.py --quick        # pipeline check (under a minute)
    venv/bin/python tools/train_upscaler.py --evaluate-only  # measure the shipped file again
"""
from __future__ import annotations

import argparse
import importlib.util
import io
import json
import math
import string
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFilter, ImageFont

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SCALE = 2
NUM_FEAT = 32
NUM_CONV = 10
MODEL_PATH = ROOT / "models" / "ESRGAN" / f"{SCALE}x-builtin-compact.safetensors"
TRAIN_SEED = 2024
HELD_OUT_SEED = 777  # procedural pictures never used in training
TRAIN_PHOTOS = ("media_assets/images/cheetah.jpg", "media_assets/images/lion.jpg",
                "media_assets/images/tower.jpg", "media_assets/images/groot.jpeg")
HELD_OUT_PHOTOS = ("media_assets/images/cheetah1.jpg", "test_data/cheetah2.jpg")
SUPERSAMPLE = 2  # procedural pictures are drawn this much larger, then reduced: antialiased edges

# ---------------------------------------------------------------------------------------------
# pictures
# ---------------------------------------------------------------------------------------------


def gradio_photo(relative: str) -> Image.Image:
    """A photograph bundled in the installed gradio package (found without importing it, which is slow)."""
    package = Path(importlib.util.find_spec("gradio").submodule_search_locations[0])
    return Image.open(package / relative).convert("RGB")


def random_color(rng: np.random.Generator) -> tuple[int, int, int]:
    return tuple(int(c) for c in rng.integers(0, 256, 3))


def noise_texture(rng: np.random.Generator, size: int) -> Image.Image:
    """Coloured fractal noise: a few octaves of random grids enlarged with bicubic, finest at 2-16 pixels."""
    total = np.zeros((size, size, 3), np.float32)
    cell = int(rng.choice([2, 4, 8, 16]))
    weight, weights = 1.0, 0.0
    while cell <= size:
        n = max(2, size // cell)
        grid = Image.fromarray(rng.integers(0, 256, (n, n, 3), dtype=np.uint8)).resize((size, size), Image.BICUBIC)
        total += weight * np.asarray(grid, np.float32)
        weights += weight
        weight *= 1.6  # coarser octaves weigh more
        cell *= 2
    mean = total / weights
    contrast = rng.uniform(0.6, 2.5)
    tint = np.array(random_color(rng), np.float32)
    out = (mean - 128) * contrast + tint * 0.5 + 64
    return Image.fromarray(np.clip(out, 0, 255).astype(np.uint8))


def background(rng: np.random.Generator, size: int) -> Image.Image:
    kind = rng.integers(5)
    if kind == 0:
        return Image.new("RGB", (size, size), random_color(rng))
    if kind == 1:  # linear or radial gradient between two colours
        a, b = np.array(random_color(rng), np.float32), np.array(random_color(rng), np.float32)
        yy, xx = np.mgrid[0:size, 0:size] / size
        if rng.random() < 0.5:
            angle = rng.uniform(0, math.pi)
            t = (xx * math.cos(angle) + yy * math.sin(angle)) / (abs(math.cos(angle)) + abs(math.sin(angle)))
        else:
            cx, cy = rng.uniform(0, 1, 2)
            t = np.clip(np.hypot(xx - cx, yy - cy) / rng.uniform(0.4, 1.2), 0, 1)
        return Image.fromarray((a + (b - a) * t[..., None]).astype(np.uint8))
    if kind == 2:  # stripes or checks at some angle and period
        period = rng.uniform(6, 40) * SUPERSAMPLE
        angle = rng.uniform(0, math.pi)
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
        u = (xx * math.cos(angle) + yy * math.sin(angle)) / period
        v = (-xx * math.sin(angle) + yy * math.cos(angle)) / period
        mask = (np.floor(u) % 2 == 0) if rng.random() < 0.6 else ((np.floor(u) + np.floor(v)) % 2 == 0)
        out = np.where(mask[..., None], np.array(random_color(rng)), np.array(random_color(rng)))
        return Image.fromarray(out.astype(np.uint8))
    return noise_texture(rng, size)


def random_text(rng: np.random.Generator) -> str:
    alphabet = string.ascii_letters + string.digits + "     .,:-()"
    return "".join(rng.choice(list(alphabet), int(rng.integers(3, 18)))).strip() or "Aa"


def draw_item(rng: np.random.Generator, draw: ImageDraw.ImageDraw, size: int) -> None:
    """One shape, line or text in a random colour at a random place."""
    fill = random_color(rng)
    x0, y0 = rng.uniform(-0.1, 1.0, 2) * size
    w, h = rng.uniform(0.03, 0.5, 2) * size
    kind = rng.integers(6)
    if kind == 0:
        draw.ellipse([x0, y0, x0 + w, y0 + h], fill=fill)
    elif kind == 1:
        draw.rectangle([x0, y0, x0 + w, y0 + h], fill=fill)
    elif kind == 2:
        points = [tuple(rng.uniform(0, 1, 2) * size) for _ in range(int(rng.integers(3, 7)))]
        draw.polygon(points, fill=fill)
    elif kind == 3:
        points = [tuple(rng.uniform(0, 1, 2) * size) for _ in range(int(rng.integers(2, 5)))]
        draw.line(points, fill=fill, width=int(rng.integers(1, 4 * SUPERSAMPLE)))
    elif kind == 4:
        draw.arc([x0, y0, x0 + w, y0 + h], *sorted(rng.uniform(0, 360, 2)), fill=fill,
                 width=int(rng.integers(1, 4 * SUPERSAMPLE)))
    else:
        font = ImageFont.load_default(size=float(rng.uniform(7, 36) * SUPERSAMPLE))
        draw.text((x0, y0), random_text(rng), fill=fill, font=font)


def procedural_picture(rng: np.random.Generator, size: int) -> Image.Image:
    """A size x size picture: a background and 3-14 items, some layers blurred (soft edges), antialiased
    by drawing at SUPERSAMPLE times the size, except a few drawn at size with hard, jagged edges."""
    hard_edges = rng.random() < 0.15
    canvas = size if hard_edges else size * SUPERSAMPLE
    picture = background(rng, canvas)
    for _ in range(int(rng.integers(1, 4))):
        layer = Image.new("RGBA", (canvas, canvas), (0, 0, 0, 0))
        draw = ImageDraw.Draw(layer)
        for _ in range(int(rng.integers(1, 6))):
            draw_item(rng, draw, canvas)
        if rng.random() < 0.3:
            layer = layer.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 4) * canvas / size))
        picture.paste(layer, (0, 0), layer)
    return picture if hard_edges else picture.resize((size, size), Image.BOX)


def procedural_pictures(count: int, size: int, seed: int) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [procedural_picture(rng, size) for _ in range(count)]


def crop_to_multiple(picture: Image.Image, scale: int) -> Image.Image:
    w, h = picture.size
    return picture.crop((0, 0, w - w % scale, h - h % scale))


def downscale(picture: Image.Image, scale: int) -> Image.Image:
    """The evaluation's low-resolution input: bicubic (antialiased by PIL) to 1/scale."""
    return picture.resize((picture.width // scale, picture.height // scale), Image.BICUBIC)


def degrade(picture: Image.Image, scale: int, rng: np.random.Generator) -> Image.Image:
    """A training input: mostly bicubic like the evaluation, but also other filters, mild blur and JPEG,
    so the model does not only fit one way of making pictures smaller."""
    if rng.random() < 0.15:
        picture = picture.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 0.8)))
    filters = (Image.BICUBIC, Image.LANCZOS, Image.BOX, Image.BILINEAR)
    resample = filters[rng.choice(len(filters), p=[0.55, 0.2, 0.15, 0.1])]
    small = picture.resize((picture.width // scale, picture.height // scale), resample)
    if rng.random() < 0.15:
        buffer = io.BytesIO()
        small.save(buffer, "JPEG", quality=int(rng.integers(80, 96)))
        small = Image.open(buffer).convert("RGB")
    return small


def to_uint8_tensor(picture: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.array(picture, np.uint8)).permute(2, 0, 1).contiguous()


# ---------------------------------------------------------------------------------------------
# training
# ---------------------------------------------------------------------------------------------


class PatchSampler:
    """Random aligned (low-res, high-res) patch pairs from pairs of whole pictures, flipped and transposed."""

    def __init__(self, pairs: list[tuple[torch.Tensor, torch.Tensor]], patch: int, scale: int,
                 rng: np.random.Generator):
        self.pairs = [p for p in pairs if min(p[0].shape[1:]) >= patch]
        self.patch, self.scale, self.rng = patch, scale, rng

    def batch(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        lows, highs = [], []
        p, s = self.patch, self.scale
        for _ in range(n):
            low, high = self.pairs[self.rng.integers(len(self.pairs))]
            y = int(self.rng.integers(low.shape[1] - p + 1))
            x = int(self.rng.integers(low.shape[2] - p + 1))
            low = low[:, y:y + p, x:x + p]
            high = high[:, y * s:(y + p) * s, x * s:(x + p) * s]
            if self.rng.random() < 0.5:
                low, high = low.flip(2), high.flip(2)
            if self.rng.random() < 0.5:
                low, high = low.flip(1), high.flip(1)
            if self.rng.random() < 0.5:
                low, high = low.transpose(1, 2), high.transpose(1, 2)
            lows.append(low)
            highs.append(high)
        return torch.stack(lows).float() / 255, torch.stack(highs).float() / 255


def training_pairs(procedural_count: int, seed: int, scale: int) -> tuple[list, list]:
    """(procedural pairs, photo pairs); photos at full size and reduced (cleaner, denser detail), each twice
    with different degradations."""
    rng = np.random.default_rng(seed + 1)
    procedural = []
    for picture in procedural_pictures(procedural_count, 192, seed):
        procedural.append((to_uint8_tensor(degrade(picture, scale, rng)), to_uint8_tensor(picture)))
    photos = []
    for name in TRAIN_PHOTOS:
        photo = gradio_photo(name)
        for factor in (1.0, 0.75, 0.5):
            resized = photo.resize((round(photo.width * factor), round(photo.height * factor)), Image.LANCZOS)
            resized = crop_to_multiple(resized, scale)
            for _ in range(2):
                photos.append((to_uint8_tensor(degrade(resized, scale, rng)), to_uint8_tensor(resized)))
    return procedural, photos


# Bicubic interpolation (Keys, a=-0.5) cut to 3 taps, for the two output pixels of a 2x upscale, which lie a quarter
# pixel before and after each input pixel: weights of the input pixels at -1, 0, +1. The outer tap is Keys'; the
# other two are set so that the weights sum to 1 and linear ramps come out exact.
_BICUBIC_TAPS_2X = ((0.1797, 0.8906, -0.0703), (-0.0703, 0.8906, 0.1797))


def build_model(seed: int):
    """A Compact network that starts out as (nearly) bicubic interpolation, so training spends its few steps on
    detail rather than on learning to interpolate through a dozen plain convolutions.

    Six channels of every layer carry the picture unchanged: +x and -x, since PReLU(x) - PReLU(-x) = (1 + a) x
    with the slope a that PReLU starts with; the last convolution turns them into bicubic minus the
    nearest-neighbour picture that Compact adds to its output. The other channels start random (Kaiming, for
    PReLU's slope, as PyTorch's default init shrinks activations layer after layer) and do not feed the
    carrying ones, and start with no say in the output (their weights in the last convolution are zero, as in
    zero-initialised residual branches: they get gradients from the first step on)."""
    from spandrel.architectures.Compact import Compact

    torch.manual_seed(seed)
    model = Compact(num_feat=NUM_FEAT, num_conv=NUM_CONV, upscale=SCALE)
    convs = [m for m in model.body if isinstance(m, torch.nn.Conv2d)]
    slope = 0.25  # PReLU's initial slope
    carried = range(6)  # channel 2c holds +x_c, 2c+1 holds -x_c
    with torch.no_grad():
        for conv in convs:
            torch.nn.init.kaiming_normal_(conv.weight, a=slope, nonlinearity="leaky_relu")
            conv.bias.zero_()
        for index, conv in enumerate(convs[:-1]):
            conv.weight[carried] = 0
            for c in range(3):
                for sign, channel in ((1, 2 * c), (-1, 2 * c + 1)):
                    if index == 0:
                        conv.weight[channel, c, 1, 1] = sign
                    else:  # x_c = (PReLU(+x_c) - PReLU(-x_c)) / (1 + slope)
                        conv.weight[channel, 2 * c, 1, 1] = sign / (1 + slope)
                        conv.weight[channel, 2 * c + 1, 1, 1] = -sign / (1 + slope)
        last = convs[-1].weight
        last.zero_()
        for c in range(3):
            for dy, rows in enumerate(_BICUBIC_TAPS_2X):
                for dx, cols in enumerate(_BICUBIC_TAPS_2X):
                    kernel = torch.outer(torch.tensor(rows), torch.tensor(cols))
                    kernel[1, 1] -= 1  # Compact adds the nearest-neighbour picture itself
                    out = c * SCALE * SCALE + dy * SCALE + dx  # PixelShuffle's channel order
                    last[out, 2 * c] = kernel / (1 + slope)
                    last[out, 2 * c + 1] = -kernel / (1 + slope)
    return model


def train(model, samplers: list[PatchSampler], steps: int, batch: int, lr: float, log) -> list[float]:
    """Adam on L1 with a short warm-up, then cosine decay; each batch is split evenly between the samplers."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, betas=(0.9, 0.99))
    warmup = max(1, steps // 20)
    losses = []
    model.train()
    for step in range(steps):
        if step < warmup:
            factor = (step + 1) / warmup
        else:
            factor = 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))
        for group in optimizer.param_groups:
            group["lr"] = lr * max(factor, 0.01)
        parts = [s.batch(batch // len(samplers)) for s in samplers]
        low = torch.cat([p[0] for p in parts])
        high = torch.cat([p[1] for p in parts])
        loss = F.l1_loss(model(low), high)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if step % 100 == 0 or step == steps - 1:
            log(f"step {step:5d}/{steps} L1 {np.mean(losses[-100:]):.4f}")
    model.eval()
    return losses


# ---------------------------------------------------------------------------------------------
# evaluation
# ---------------------------------------------------------------------------------------------


def luminance(picture: Image.Image) -> np.ndarray:
    """BT.601 luma in [16, 235] (as MATLAB's rgb2ycbcr, the super-resolution literature's convention)."""
    rgb = np.asarray(picture.convert("RGB"), np.float64) / 255
    return 16 + rgb @ np.array([65.481, 128.553, 24.966])


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a - b) ** 2))
    return 10 * math.log10(255 ** 2 / max(mse, 1e-10))


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean SSIM (Wang et al. 2004): 11x11 gaussian window, sigma 1.5, values in 0..255, valid region only."""
    coords = torch.arange(11, dtype=torch.float64) - 5
    g = torch.exp(-coords ** 2 / (2 * 1.5 ** 2))
    window = (g[:, None] * g[None, :] / g.sum() ** 2)[None, None]
    x = torch.from_numpy(a)[None, None]
    y = torch.from_numpy(b)[None, None]

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, window)

    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx ** 2, blur(y * y) - my ** 2, blur(x * y) - mx * my
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    ssim_map = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2))
    return float(ssim_map.mean())


def held_out_sets(scale: int = SCALE) -> dict[str, list[Image.Image]]:
    """High-resolution pictures never seen in training, cropped to a multiple of the scale."""
    return {
        "procedural (held-out seed)": [crop_to_multiple(p, scale) for p in procedural_pictures(8, 256, HELD_OUT_SEED)],
        "photos (gradio cheetah1, cheetah2)": [crop_to_multiple(gradio_photo(n), scale) for n in HELD_OUT_PHOTOS],
    }


def compare_with_lanczos(model_path: Path, pictures: list[Image.Image]) -> dict[str, float]:
    """Mean Y-PSNR / Y-SSIM of Lanczos and of the model file (through the app's upscaler code) at its scale."""
    from modules.postprocessing.upscalers import load_descriptor, upscale_with_model

    desc = load_descriptor(model_path)
    scale = int(desc.scale)
    scores = {"lanczos_psnr": [], "lanczos_ssim": [], "model_psnr": [], "model_ssim": []}
    for high in pictures:
        low = downscale(high, scale)
        reference = luminance(high)[scale:-scale, scale:-scale]
        with torch.inference_mode():
            by_model = upscale_with_model(desc, low, scale)
        for name, result in (("lanczos", low.resize(high.size, Image.LANCZOS)), ("model", by_model)):
            y = luminance(result)[scale:-scale, scale:-scale]
            scores[f"{name}_psnr"].append(psnr(y, reference))
            scores[f"{name}_ssim"].append(ssim(y, reference))
    return {k: float(np.mean(v)) for k, v in scores.items()}


def evaluate(model_path: Path, log) -> None:
    for name, pictures in held_out_sets().items():
        r = compare_with_lanczos(model_path, pictures)
        log(f"{name}, {len(pictures)} pictures, {SCALE}x, Y channel: "
            f"PSNR Lanczos {r['lanczos_psnr']:.2f} dB -> model {r['model_psnr']:.2f} dB "
            f"({r['model_psnr'] - r['lanczos_psnr']:+.2f}); "
            f"SSIM Lanczos {r['lanczos_ssim']:.4f} -> model {r['model_ssim']:.4f} "
            f"({r['model_ssim'] - r['lanczos_ssim']:+.4f})")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=MODEL_PATH)
    ap.add_argument("--quick", action="store_true", help="few pictures and steps, to check the pipeline")
    ap.add_argument("--evaluate-only", action="store_true", help="measure --out against Lanczos, train nothing")
    ap.add_argument("--seed", type=int, default=TRAIN_SEED)
    ap.add_argument("--steps", type=int, default=None, help="training steps (default 6000, quick 60)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--patch", type=int, default=40, help="low-resolution patch side")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads, 0: all cores (default 1: on a CPU shared with other work, OpenMP threads "
                         "waiting for each other made 2 threads several times slower than 1; on an idle 2-core "
                         "machine 0 is about a third faster)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # denormal floats in small weights slow CPU maths badly
    started = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - started:7.1f}s] {msg}", flush=True)

    if args.evaluate_only:
        evaluate(args.out, log)
        return 0

    from safetensors.torch import save_file

    steps = args.steps if args.steps is not None else (60 if args.quick else 6000)
    procedural, photos = training_pairs(60 if args.quick else 600, args.seed, SCALE)
    log(f"data: {len(procedural)} procedural pictures, {len(photos)} photo pairs from {len(TRAIN_PHOTOS)} photos")
    rng = np.random.default_rng(args.seed + 2)
    samplers = [PatchSampler(procedural, args.patch, SCALE, rng), PatchSampler(photos, args.patch, SCALE, rng)]
    model = build_model(args.seed)
    params = sum(p.numel() for p in model.parameters())
    log(f"model: Compact {SCALE}x, num_feat {NUM_FEAT}, num_conv {NUM_CONV}, {params / 1e3:.1f}k parameters")
    train_started = time.perf_counter()
    losses = train(model, samplers, steps, args.batch, args.lr, log)
    train_s = time.perf_counter() - train_started

    args.out.parent.mkdir(parents=True, exist_ok=True)
    weights = {k: v.detach().half().contiguous() for k, v in model.state_dict().items()}
    save_file(weights, str(args.out), metadata={
        "modelspec.title": args.out.stem, "modelspec.architecture": "RealESRGAN Compact (SRVGGNetCompact)",
        "modelspec.description": f"Built-in {SCALE}x upscaler trained by tools/train_upscaler.py",
        "training": json.dumps({"seed": args.seed, "steps": steps, "batch": args.batch, "patch": args.patch,
                                "lr": args.lr, "quick": args.quick, "train_s": round(train_s, 1),
                                "final_l1": round(float(np.mean(losses[-100:])), 5)})})
    log(f"trained in {train_s:.0f}s; wrote {args.out} ({args.out.stat().st_size / 1e3:.0f} kB)")
    evaluate(args.out, log)
    log(f"total {time.perf_counter() - started:.0f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
