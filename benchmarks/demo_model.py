"""How long the built-in demo model takes for one picture at its native size (64x64, 20 steps).

    venv/bin/python benchmarks/demo_model.py [--repeat 5] [--steps 20]

Whole generations through the app's own txt2img job (prompt encoding, sampling, VAE decode), after
a warm-up; prints each run and the median. Run it on an idle machine: spinning intra-op threads of
a busy one can triple the time (issue 14's note on OMP_WAIT_POLICY).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--steps", type=int, default=20)
    args = ap.parse_args()
    import torch

    from modules.cmd_args import parse_args
    from modules.generation import Txt2ImgRequest, process_txt2img
    from modules.generation.services import build_services
    from modules.models.devices import make_policy
    from modules.options import Options
    from modules.paths import Paths

    with tempfile.TemporaryDirectory() as data:
        paths = Paths.from_args(parse_args(["--data-dir", data]))
        services = build_services(paths, make_policy(torch.device("cpu")), Options(live_previews_enable=False),
                                  console_progress=False)
        services.models.load("demo-shapes")

        def generate(steps: int, seed: int) -> float:
            req = Txt2ImgRequest(prompt="a red circle on a white background", width=64, height=64, steps=steps,
                                 sampler_name="DPM++ 2M", seed=seed, save_images=False)
            started = time.perf_counter()
            process_txt2img(req, services.context)
            return time.perf_counter() - started

        generate(2, 0)  # warm-up
        print(f"demo model, 64x64, {args.steps} steps DPM++ 2M, CPU, torch threads {torch.get_num_threads()}")
        times = []
        for run in range(args.repeat):
            times.append(generate(args.steps, run + 1))
            print(f"run {run + 1}: {times[-1]:.2f} s", flush=True)
        print(f"median: {statistics.median(times):.2f} s")


if __name__ == "__main__":
    main()
