"""Load time and peak RAM for a full-size SD1.5-architecture checkpoint (random weights, fp16 file).

    venv/bin/python benchmarks/load_checkpoint.py [--device cpu|cuda] [--repeat 2]

Writes the 2 GB test file once under benchmarks/.data/. Each measurement runs in a fresh
process so peak RSS is its own; library imports are timed apart from loading. "peak RSS" counts
the mapped file's pages (page cache the kernel can drop); "peak anon" is memory really held. The reference is
diffusers' StableDiffusionPipeline.from_single_file on the same file, with the same local configs (no network).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "benchmarks" / ".data"
CKPT = DATA / "sd15-random-fp16.safetensors"
SHARED_SD15 = REPO.parent / "shared" / "hf-configs" / "runwayml" / "stable-diffusion-v1-5"


def make_checkpoint() -> None:
    if CKPT.is_file():
        return
    sys.path.insert(0, str(REPO))
    import torch

    from tests import ldm_layout as L
    print(f"writing {CKPT} (random weights, fp16)...", flush=True)
    L.write_checkpoint(CKPT, L.SD15, seed=0, dtype=torch.float16)


def _peak_rss_mb() -> float:
    """This process's peak RSS (VmHWM resets at exec, unlike ru_maxrss, which the parent's peak leaks into)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class AnonPeak:
    """Samples RssAnon (memory the process really holds, without page cache of mapped files)."""

    def __init__(self):
        import threading
        self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self):
        while not self._stop.is_set():
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("RssAnon:"):
                    self.peak = max(self.peak, int(line.split()[1]) / 1024)
            self._stop.wait(0.01)

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return self.peak


def child(which: str, device: str) -> None:
    os.environ["HF_HUB_OFFLINE"] = "1"
    sys.path.insert(0, str(REPO))
    import torch
    started = time.perf_counter()
    if which == "ours":
        from diffusers.loaders import single_file_utils  # noqa: F401  (imported lazily by the loader)
        from transformers import CLIPTextModel  # noqa: F401

        from modules.models.devices import make_policy
        from modules.models.loading import load_model
        from modules.models.model_files import ModelFile
    else:
        from diffusers import StableDiffusionPipeline
    import_seconds = time.perf_counter() - started
    rss_after_imports = _peak_rss_mb()
    anon = AnonPeak()
    started = time.perf_counter()
    if which == "ours":
        model = load_model(ModelFile(CKPT, CKPT.name), make_policy(torch.device(device)))
        dtype = str(model.unet.dtype)
    else:
        dt = torch.float32 if device == "cpu" else torch.float16
        pipe = StableDiffusionPipeline.from_single_file(
            str(CKPT), config=str(SHARED_SD15), local_files_only=True, torch_dtype=dt, safety_checker=None,
            feature_extractor=None, requires_safety_checker=False).to(device)
        dtype = str(pipe.unet.dtype)
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    vram = torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else 0
    print(json.dumps({"which": which, "seconds": seconds, "import_seconds": import_seconds,
                      "peak_rss_mb": _peak_rss_mb(), "peak_anon_mb": anon.stop(),
                      "rss_after_imports_mb": rss_after_imports, "dtype": dtype, "peak_vram_mb": vram}))


def run(which: str, device: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", which, "--device", device],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--child", default=None)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.device)
        return
    make_checkpoint()
    print(f"file: {CKPT.name}, {CKPT.stat().st_size / 2**30:.2f} GiB; device {args.device}; "
          f"{os.cpu_count()} cores\n")
    print(f"{'loader':<28}{'run':>4}{'imports s':>10}{'load s':>8}{'peak RSS MB':>13}{'peak anon MB':>14}"
          f"{'RSS after imports':>19}{'weights':>15}{'peak VRAM MB':>14}")
    results = {}
    for which in ("ours", "diffusers"):
        for i in range(args.repeat):
            r = run(which, args.device)
            results.setdefault(which, []).append(r)
            name = "ours (load_model)" if which == "ours" else "diffusers from_single_file"
            print(f"{name:<28}{i + 1:>4}{r['import_seconds']:>10.2f}{r['seconds']:>8.2f}{r['peak_rss_mb']:>13.0f}"
                  f"{r['peak_anon_mb']:>14.0f}{r['rss_after_imports_mb']:>19.0f}{r['dtype']:>15}"
                  f"{r['peak_vram_mb']:>14.0f}", flush=True)
    best = {k: min(r["seconds"] for r in v) for k, v in results.items()}
    print(f"\nbest-of-{args.repeat} time ratio ours/diffusers: {best['ours'] / best['diffusers']:.2f}")


if __name__ == "__main__":
    main()
