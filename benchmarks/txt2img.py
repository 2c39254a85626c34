"""Seconds per sampling step, ours vs diffusers' StableDiffusionPipeline, on the same weights.

    venv/bin/python benchmarks/txt2img.py [--size 256] [--steps 4] [--repeat 2] [--device cpu|cuda]
        [--precision autocast|half] [--reference-config DIR]

Full-size SD1.5 architecture with random weights (compute is the same as a real model's), Euler a,
batch 1, CFG 7. Each side first runs once to warm up; then whole generations are timed, and the
UNet time is measured separately with hooks so "where the time goes" is visible.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.load_checkpoint import CKPT, SHARED_SD15, make_checkpoint  # noqa: E402


class UNetTimer:
    def __init__(self, unet, cuda: bool):
        import torch
        self.total = 0.0
        self.calls = 0
        self.cuda = cuda
        self._sync = torch.cuda.synchronize if cuda else (lambda: None)
        unet.register_forward_pre_hook(self._pre)
        unet.register_forward_hook(self._post)

    def _pre(self, *a):
        self._sync()
        self._t = time.perf_counter()

    def _post(self, *a):
        self._sync()
        self.total += time.perf_counter() - self._t
        self.calls += 1

    def reset(self):
        self.total, self.calls = 0.0, 0


def ours(args):
    import torch

    from modules.cmd_args import parse_args
    from modules.generation import Txt2ImgRequest, process_txt2img
    from modules.generation.services import build_services
    from modules.models.devices import make_policy
    from modules.options import Options
    from modules.paths import Paths

    data = REPO / "benchmarks" / ".data"
    paths = Paths.from_args(parse_args(["--data-dir", str(data / "home"), "--ckpt", str(CKPT)]))
    device = torch.device(args.device)
    services = build_services(paths, make_policy(device, precision=args.precision),
                              Options(live_previews_enable=False), console_progress=False)
    services.models.load(CKPT.name)
    ctx = services.context
    timer = UNetTimer(services.models.current.unet, args.device == "cuda")

    def run(seed):
        req = Txt2ImgRequest(prompt="a photo of a cat", negative_prompt="", steps=args.steps, sampler_name="Euler a",
                             cfg_scale=7, width=args.size, height=args.size, seed=seed, save_images=False)
        process_txt2img(req, ctx)
    return run, timer


def reference(args):
    import torch
    from diffusers import EulerAncestralDiscreteScheduler, StableDiffusionPipeline

    dtype = torch.float16 if args.device == "cuda" else torch.float32
    pipe = StableDiffusionPipeline.from_single_file(
        str(CKPT), config=str(args.reference_config), local_files_only=True, torch_dtype=dtype, safety_checker=None,
        feature_extractor=None, requires_safety_checker=False).to(args.device)
    pipe.scheduler = EulerAncestralDiscreteScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    timer = UNetTimer(pipe.unet, args.device == "cuda")

    def run(seed):
        pipe("a photo of a cat", num_inference_steps=args.steps, guidance_scale=7, height=args.size,
             width=args.size, generator=torch.Generator("cpu").manual_seed(seed))
    return run, timer


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", default="autocast", choices=("autocast", "half", "full", "bf16"),
                    help="ours: as the --precision flag of webui (fp16 weights with or without autocast)")
    ap.add_argument("--reference-config", default=str(SHARED_SD15),
                    help="diffusers config folder of SD1.5 for the reference pipeline")
    args = ap.parse_args()
    make_checkpoint()
    import torch
    print(f"SD1.5 architecture, random weights, {args.size}x{args.size}, {args.steps} steps Euler a, CFG 7, "
          f"batch 1, {args.device}, torch threads {torch.get_num_threads()}\n")
    print(f"{'pipeline':<12}{'s/step':>9}{'UNet s/step':>13}{'rest s/step':>13}{'UNet calls/step':>17}")
    sides = {name: build(args) for name, build in (("ours", ours), ("diffusers", reference))}
    for run, _ in sides.values():
        run(0)  # warm-up
    best: dict[str, tuple[float, float, int]] = {}
    for r in range(args.repeat):  # interleaved, so drifts in machine speed hit both sides alike
        for name, (run, timer) in sides.items():
            timer.reset()
            started = time.perf_counter()
            run(r + 1)
            if args.device == "cuda":
                torch.cuda.synchronize()
            total = time.perf_counter() - started
            if name not in best or total < best[name][0]:
                best[name] = (total, timer.total, timer.calls)
    results = {}
    for name, (total, unet, calls) in best.items():
        results[name] = total / args.steps
        print(f"{name:<12}{total / args.steps:>9.3f}{unet / args.steps:>13.3f}{(total - unet) / args.steps:>13.3f}"
              f"{calls / args.steps:>17.1f}", flush=True)
    print(f"\nratio ours/diffusers (s/step, whole generation incl. text encoding and VAE decode): "
          f"{results['ours'] / results['diffusers']:.2f}")


if __name__ == "__main__":
    main()
