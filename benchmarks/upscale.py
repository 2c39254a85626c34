"""Seconds and peak memory of a model upscale: a full-size 4x RRDB (ESRGAN: 23 blocks, 64 filters, 16.7 M
parameters, random weights) taking a 512x512 picture to 2048x2048 through the app's `Upscalers`, tiled (A1111's
192 px tiles, 8 px overlap) and untiled.

    venv/bin/python benchmarks/upscale.py [--device cpu|cuda] [--size 512] [--tiles 192,0] [--overlap 8]

The model file is written once to benchmarks/.data/. Each run is a fresh process, so its peak is its own: on the
CPU "peak anon" is the RAM really held (RssAnon, sampled); on CUDA the peak allocated GPU memory is added.
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
MODEL = DATA / "ESRGAN" / "4x-RRDB-random.pth"

sys.path.insert(0, str(REPO))
from benchmarks.load_checkpoint import AnonPeak  # noqa: E402


def write_model() -> None:
    import torch
    from spandrel.architectures.ESRGAN import ESRGAN

    MODEL.parent.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    torch.save(ESRGAN(num_filters=64, num_blocks=23, scale=4).state_dict(), MODEL)  # the old ESRGAN key layout


def child(device: str, size: int, tile: int, overlap: int) -> dict:
    os.environ["HF_HUB_OFFLINE"] = "1"
    import numpy as np
    import torch
    from PIL import Image

    from modules.postprocessing.upscalers import Upscalers

    anon = AnonPeak()
    upscalers = Upscalers([MODEL.parent], device=device)
    rng = np.random.default_rng(0)
    picture = Image.fromarray(rng.integers(0, 256, (size // 8, size // 8, 3), dtype=np.uint8)).resize(
        (size, size), Image.BICUBIC)
    name = MODEL.stem
    upscalers.cache.get(upscalers.entry(name).model)  # loading is not what is measured
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    result = upscalers.upscale(name, picture, (size * 4, size * 4), tile_size=tile, tile_overlap=overlap)
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    out = {"device": device, "size": f"{size}->{result.width}", "tile": tile, "overlap": overlap,
           "seconds": round(seconds, 1), "peak_anon_mb": round(anon.stop())}
    if device == "cuda":
        out["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated() / 2**20)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--tiles", default="192,0", help="tile sizes to run, 0: the whole picture at once")
    parser.add_argument("--overlap", type=int, default=8)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--tile", type=int, default=192, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.device, args.size, args.tile, args.overlap)))
        return
    if not MODEL.is_file():
        print(f"writing {MODEL} (random weights)...", flush=True)
        write_model()
    for tile in (int(t) for t in args.tiles.split(",")):
        run = subprocess.run([sys.executable, __file__, "--child", "--device", args.device, "--size", str(args.size),
                              "--tile", str(tile), "--overlap", str(args.overlap)],
                             capture_output=True, text=True, check=True)
        print(run.stdout.strip().splitlines()[-1], flush=True)


if __name__ == "__main__":
    main()
