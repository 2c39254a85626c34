"""Peak VRAM of each memory mode on a full-size SD1.5-architecture checkpoint (random weights).

    venv/bin/python benchmarks/vram_modes.py [--size 512] [--modes none,medvram,lowvram,fp8]

Per mode, in a fresh process: load the checkpoint, then encode a prompt, run one UNet step with
CFG batch 2, and decode with the VAE, each through the model's Placement as generation will.
Prints where each component's weights rest after loading and the peak VRAM of each phase.
Needs a CUDA GPU; on the CPU it only checks that the script runs.
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

from benchmarks.load_checkpoint import CKPT, make_checkpoint  # noqa: E402

MODES = {
    "none": dict(),
    "medvram": dict(medvram=True),
    "lowvram": dict(lowvram=True),
    "fp8": dict(),
    "no-half": dict(no_half=True),
}


def child(mode: str, size: int) -> None:
    import torch

    from modules.models.devices import make_policy, pick_device
    from modules.models.loading import load_model
    from modules.models.model_files import ModelFile

    device = pick_device([], None)
    cuda = device.type == "cuda"
    policy = make_policy(device, **MODES[mode])
    model = load_model(ModelFile(CKPT, CKPT.name), policy, fp8_unet="Enable" if mode == "fp8" else "Disable")
    resting = model.placement.where()
    peaks = {}

    def phase(name, fn):
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        started = time.perf_counter()
        with torch.no_grad():
            out = fn()
        if cuda:
            torch.cuda.synchronize()
        peaks[name] = {"seconds": time.perf_counter() - started,
                       "peak_mb": torch.cuda.max_memory_allocated() / 2**20 if cuda else 0.0}
        return out

    dtype_te = model.policy.text_encoder.compute
    ids = model.tokenizers[0]("a photo of a cat", padding="max_length", max_length=77,
                              return_tensors="pt").input_ids.to(device)

    def encode():
        with model.placement.use("text_encoder_0") as te:
            return te(ids).last_hidden_state.to(dtype_te)

    ctx = phase("text encoder", encode)

    def step():
        lat = size // 8
        x = torch.randn(2, 4, lat, lat, device=device, dtype=model.policy.unet.compute)
        with model.placement.use("unet") as unet:
            return unet(x, torch.tensor([500, 500], device=device),
                        encoder_hidden_states=ctx.repeat(2, 1, 1).to(model.policy.unet.compute)).sample

    latent = phase("UNet step (batch 2)", step)

    def decode():
        with model.placement.use("vae") as vae:
            return vae.decode(latent[:1].to(model.policy.vae.compute) / vae.config.scaling_factor).sample

    phase("VAE decode", decode)
    print(json.dumps({"mode": mode, "device": str(device), "resting": resting, "phases": peaks,
                      "policy": model.policy.describe()}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--modes", default="none,medvram,lowvram,fp8")
    ap.add_argument("--child", default=None)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.size)
        return
    make_checkpoint()
    print(f"{'mode':<10}{'phase':<22}{'seconds':>9}{'peak VRAM MB':>14}  weights at rest")
    for mode in args.modes.split(","):
        out = subprocess.run([sys.executable, __file__, "--child", mode, "--size", str(args.size)],
                             capture_output=True, text=True)
        if out.returncode:
            print(f"{mode:<10}failed:\n{out.stderr[-2000:]}")
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        rest = ", ".join(f"{k}={v}" for k, v in r["resting"].items())
        for i, (name, p) in enumerate(r["phases"].items()):
            print(f"{mode if i == 0 else '':<10}{name:<22}{p['seconds']:>9.2f}{p['peak_mb']:>14.0f}  "
                  f"{rest if i == 0 else ''}")
        print(f"{'':<10}policy: {r['policy']}")


if __name__ == "__main__":
    main()
