"""Make docs/demo-grid.png: pictures of the built-in demo model for a handful of prompts (README).

    venv/bin/python tools/demo_grid.py [--out docs/demo-grid.png]

Runs the app's own txt2img (DPM++ 2M, 20 steps, CFG 6) on the demo checkpoint, its LoRA and embedding;
each row is one prompt, each column one seed.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PROMPTS = [
    "a large red circle on a blue background",
    "a yellow star on a black background",
    "a green square on a white background",
    "a large purple triangle on a yellow background",
    "a large (blue:1.3) circle on an orange background",
    "a large [red:blue:0.5] square on a white background",
    "a white star on a green background <lora:demo-night:1>",
    "a circle, demo-sunset",
]
SEEDS = [1, 2, 3, 4, 5, 6]
CELL = 128  # each 64x64 picture shown at 2x


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "demo-grid.png")
    args = ap.parse_args(argv)

    import torch
    from PIL import Image, ImageDraw, ImageFont

    from modules.cmd_args import parse_args
    from modules.generation import Txt2ImgRequest, process_txt2img
    from modules.generation.services import build_services
    from modules.models.devices import make_policy
    from modules.options import Options
    from modules.paths import Paths

    paths = Paths.from_args(parse_args([]))
    services = build_services(paths, make_policy(torch.device("cpu")), Options(), console_progress=False)
    services.models.load("demo-shapes", remember=False)
    ctx = services.context
    label_w = 430
    grid = Image.new("RGB", (label_w + CELL * len(SEEDS), CELL * len(PROMPTS)), "white")
    draw = ImageDraw.Draw(grid)
    font = ImageFont.load_default(size=15)
    for row, prompt in enumerate(PROMPTS):
        res = process_txt2img(Txt2ImgRequest(prompt=prompt, width=64, height=64, steps=20, cfg_scale=6.0,
                                             sampler_name="DPM++ 2M", seed=SEEDS[0], batch_size=len(SEEDS),
                                             save_images=False, do_not_save_grid=True), ctx)
        draw.text((8, row * CELL + CELL // 2), prompt, fill="black", font=font, anchor="lm")
        for col, image in enumerate(res.images):
            grid.paste(image.resize((CELL, CELL), Image.NEAREST), (label_w + col * CELL, row * CELL))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    grid.save(args.out, optimize=True)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
