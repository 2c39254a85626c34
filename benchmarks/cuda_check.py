"""Everything a CUDA machine should confirm, in one run: fp16/bf16 generation on full-size SD1.5 and
SDXL architectures (random weights), the VRAM of each memory mode, and time per step.

    python benchmarks/cuda_check.py [--out DIR] [--steps 20] [--models sd15,sdxl]

Each case runs in a fresh process through the app's own ModelManager and txt2img job, so its peak
VRAM is its own. A case prints one JSON line; the parent prints a table and writes results.json.
Random weights cost the same compute as real ones, but the pictures are noise: the check is that they
are finite and not flat (a NaN in the VAE gives a black picture).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

DATA = REPO / "benchmarks" / ".data"
CHECKPOINTS = {"sd15": (DATA / "sd15-random-fp16.safetensors", 512),
               "sdxl": (DATA / "sdxl-random-fp16.safetensors", 1024)}
# (precision flag, memory mode): memory modes are measured in fp16, A1111's default on CUDA.
CASES = [("half", "none"), ("bf16", "none"), ("half", "medvram"), ("half", "lowvram"), ("half", "fp8"),
         ("full", "none")]


def checkpoint(name: str, tiny: bool) -> tuple[Path, int]:
    path, size = CHECKPOINTS[name]
    return (path.with_name("tiny-" + path.name), 64) if tiny else (path, size)


def make_checkpoints(models: list[str], tiny: bool) -> None:
    """`tiny` writes small-width checkpoints of the same layouts, to try this script on a CPU."""
    import torch

    from tests import ldm_layout as L
    layouts = {"sd15": L.TINY_SD1 if tiny else L.SD15, "sdxl": L.TINY_SDXL if tiny else L.SDXL}
    for name in models:
        path = checkpoint(name, tiny)[0]
        if not path.is_file():
            started = time.perf_counter()
            L.write_checkpoint(path, layouts[name], seed=0, dtype=torch.float16)
            print(f"wrote {path.name} ({path.stat().st_size / 2**30:.2f} GiB) in "
                  f"{time.perf_counter() - started:.0f} s", flush=True)


def child(model_name: str, precision: str, mode: str, steps: int, device_name: str, tiny: bool) -> None:
    import numpy as np
    import torch

    from modules.cmd_args import parse_args
    from modules.generation import Txt2ImgRequest, process_txt2img
    from modules.generation.services import build_services
    from modules.models.devices import make_policy
    from modules.options import Options
    from modules.paths import Paths

    ckpt, size = checkpoint(model_name, tiny)
    device = torch.device(device_name)
    cuda = device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    policy = make_policy(device, precision="autocast" if precision == "half" else precision,
                         medvram=mode == "medvram", lowvram=mode == "lowvram")
    options = Options(fp8_storage="Enable" if mode == "fp8" else "Disable", live_previews_enable=False)
    paths = Paths.from_args(parse_args(["--data-dir", str(DATA / "home"), "--ckpt", str(ckpt)]))
    services = build_services(paths, policy, options, console_progress=False)
    manager = services.models
    started = time.perf_counter()
    manager.load(ckpt.name)
    sync()
    load_s = time.perf_counter() - started
    model = manager.current
    resting_mb = torch.cuda.memory_allocated() / 2**20 if cuda else 0.0
    ctx = services.context

    def generate(n_steps: int, seed: int):
        req = Txt2ImgRequest(prompt="a photo of a cat", negative_prompt="blurry", steps=n_steps,
                             sampler_name="DPM++ 2M", scheduler="Karras", cfg_scale=7, width=size, height=size,
                             seed=seed, save_images=False, do_not_save_grid=True)
        return process_txt2img(req, ctx)

    generate(2, 0)  # warm-up: kernels, allocator
    sync()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    result = generate(steps, 1)
    sync()
    seconds = time.perf_counter() - started
    pixels = np.asarray(result.images[0].convert("RGB"), dtype=np.float32)
    print(json.dumps({
        "model": model_name, "precision": precision, "mode": mode, "size": size, "steps": steps,
        "policy": model.policy.describe(), "resting": model.placement.where(), "load_s": load_s,
        "vram_after_load_mb": resting_mb, "peak_vram_mb": torch.cuda.max_memory_allocated() / 2**20 if cuda else 0.0,
        "peak_reserved_mb": torch.cuda.max_memory_reserved() / 2**20 if cuda else 0.0, "seconds": seconds,
        "s_per_step": seconds / steps, "pixel_mean": float(pixels.mean()), "pixel_std": float(pixels.std()),
        "warnings": result.warnings}), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--models", default="sd15,sdxl")
    ap.add_argument("--out", default=str(DATA))
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tiny", action="store_true", help="small-width checkpoints: try the script on a CPU")
    ap.add_argument("--child", nargs=3, default=None, metavar=("MODEL", "PRECISION", "MODE"))
    args = ap.parse_args()
    if args.child:
        child(*args.child, steps=args.steps, device_name=args.device, tiny=args.tiny)
        return
    import torch
    if args.device == "cuda":
        print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.get_device_name(0)}, "
              f"bf16 {torch.cuda.is_bf16_supported()}", flush=True)
    models = args.models.split(",")
    make_checkpoints(models, args.tiny)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    print(f"\n{'model':<6}{'precision':<10}{'mode':<9}{'load s':>8}{'s/step':>8}{'gen s':>7}{'VRAM rest MB':>13}"
          f"{'peak MB':>9}{'pixel std':>10}  policy", flush=True)
    for model_name in models:
        for precision, mode in CASES:
            proc = subprocess.run([sys.executable, __file__, "--child", model_name, precision, mode,
                                   "--steps", str(args.steps), "--device", args.device]
                                  + (["--tiny"] if args.tiny else []), capture_output=True, text=True)
            if proc.returncode:
                print(f"{model_name:<6}{precision:<10}{mode:<9} FAILED:\n{proc.stderr[-3000:]}", flush=True)
                results.append({"model": model_name, "precision": precision, "mode": mode,
                                "error": proc.stderr[-3000:]})
                continue
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            results.append(r)
            print(f"{model_name:<6}{precision:<10}{mode:<9}{r['load_s']:>8.1f}{r['s_per_step']:>8.3f}"
                  f"{r['seconds']:>7.2f}{r['vram_after_load_mb']:>13.0f}{r['peak_vram_mb']:>9.0f}"
                  f"{r['pixel_std']:>10.1f}  {r['policy']}", flush=True)
            (out / "cuda_check.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
