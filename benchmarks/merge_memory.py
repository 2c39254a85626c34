"""Peak RAM of the Checkpoint Merger on two full-size checkpoints (random weights, fp16 files).

    venv/bin/python benchmarks/merge_memory.py [--family sdxl|sd15] [--format safetensors|ckpt]
                                               [--method "Weighted sum"|"Add difference"|"No interpolation"]

Writes the test files once under benchmarks/.data/ (SDXL: 2 x 6.9 GB, plus a third for Add difference) and
the result into a temporary folder there, deleted afterwards. The merge runs in a fresh process so its peak
is its own. "peak RSS" counts the pages of the memory-mapped input files (page cache the kernel can drop);
"peak anon" is memory really held. A safetensors result is streamed (anon peak: a few tensors); a .ckpt result
holds the whole result once (about one model at the output precision) for torch.save.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "benchmarks" / ".data"

sys.path.insert(0, str(REPO))
from benchmarks.load_checkpoint import AnonPeak, _peak_rss_mb  # noqa: E402


def source_files(family: str, count: int) -> list[Path]:
    files = [DATA / f"merge-{family}-random-fp16-{i}.safetensors" for i in range(count)]
    for i, path in enumerate(files):
        if not path.is_file():  # in a child process: materializing holds one model
            print(f"writing {path} (random weights, fp16)...", flush=True)
            subprocess.run([sys.executable, __file__, "--make", str(path), "--family", family, "--seed", str(i)],
                           check=True)
    return files


def make(path: Path, family: str, seed: int) -> None:
    import torch

    from tests import ldm_layout as L
    layout = {"sdxl": L.SDXL, "sd15": L.SD15}[family]
    DATA.mkdir(parents=True, exist_ok=True)
    L.write_checkpoint(path, layout, seed=seed, dtype=torch.float16)


def child(folder: Path, method: str, fmt: str) -> None:
    os.environ["HF_HUB_OFFLINE"] = "1"
    import torch

    from modules.cmd_args import parse_args
    from modules.models.devices import make_policy
    from modules.models.hashes import HashCache
    from modules.models.manager import ModelManager
    from modules.models.merge import MergeRequest, merge_checkpoints
    from modules.options import Options
    from modules.paths import Paths

    paths = Paths.from_args(parse_args(["--data-dir", str(folder)]))
    manager = ModelManager(paths, make_policy(torch.device("cpu")), Options(), HashCache(paths.cache_file))
    names = sorted(c.name for c in manager.checkpoints if c.name.startswith("merge-"))
    rss_before = _peak_rss_mb()
    anon = AnonPeak()
    started = time.perf_counter()
    result = merge_checkpoints(manager, MergeRequest(*names, interp_method=method, multiplier=0.4,
                                                     checkpoint_format=fmt, custom_name="merged",
                                                     add_merge_recipe=False))
    seconds = time.perf_counter() - started
    print(json.dumps({"seconds": seconds, "peak_rss_mb": _peak_rss_mb(), "peak_anon_mb": anon.stop(),
                      "rss_before_mb": rss_before, "result_gb": result.path.stat().st_size / 2**30}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--family", default="sdxl", choices=["sdxl", "sd15"])
    ap.add_argument("--format", default="safetensors", choices=["safetensors", "ckpt"])
    ap.add_argument("--method", default="Weighted sum")
    ap.add_argument("--make", default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--child", default=None)
    args = ap.parse_args()
    if args.make:
        make(Path(args.make), args.family, args.seed)
        return
    if args.child:
        child(Path(args.child), args.method, args.format)
        return
    count = {"No interpolation": 1, "Weighted sum": 2, "Add difference": 3}[args.method]
    files = source_files(args.family, count)
    work = Path(tempfile.mkdtemp(prefix="merge-", dir=DATA))
    try:
        ckpts = work / "models" / "Stable-diffusion"
        ckpts.mkdir(parents=True)
        for f in files:  # hard links: the same files, no copy
            os.link(f, ckpts / f.name)
        out = subprocess.run([sys.executable, __file__, "--child", str(work), "--method", args.method,
                              "--format", args.format], capture_output=True, text=True)
        if out.returncode:
            print(out.stdout, out.stderr, sep="\n")
            raise SystemExit(out.returncode)
        r = json.loads(out.stdout.strip().splitlines()[-1])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    size = sum(f.stat().st_size for f in files) / 2**30
    print(f"{args.method} of {count} x {args.family} fp16 ({size:.1f} GiB in), {args.format} out "
          f"({r['result_gb']:.2f} GiB), {os.cpu_count()} cores")
    print(f"merge {r['seconds']:.1f} s; peak RSS {r['peak_rss_mb']:.0f} MB (after imports "
          f"{r['rss_before_mb']:.0f} MB); peak anon {r['peak_anon_mb']:.0f} MB")


if __name__ == "__main__":
    main()
