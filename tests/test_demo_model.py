"""Prompt following of the built-in demo checkpoint (tools/train_demo_model.py), through the app's
ordinary loader and txt2img / img2img code. Skipped when the trained file is not there.

Colour is measured as "redness" (R - B) and "blueness" (B - R) of the pixels that differ from the
requested white background, averaged over several seeds at few steps.
"""
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
DEMO = Path(os.environ.get("DEMO_MODEL", ROOT / "models" / "Stable-diffusion" / "demo-shapes.safetensors"))

pytestmark = pytest.mark.skipif(not DEMO.is_file(), reason=f"demo model not trained ({DEMO})")

SEEDS = list(range(100, 112))

# The first trained file (docs/demo-model.md) does not follow prompts yet; these tests describe the
# goal. Drop the marker once a model passes them.
not_yet = pytest.mark.xfail(reason="demo model does not follow prompts yet (docs/demo-model.md)", strict=True)


@pytest.fixture(scope="module")
def ctx(cpu_policy, tmp_path_factory):
    from modules.cmd_args import parse_args
    from modules.hashes import HashCache
    from modules.model_manager import ModelManager
    from modules.options import Options
    from modules.paths import Paths
    from modules.processing import ProcessingContext
    from modules.progress import GenerationState

    data = tmp_path_factory.mktemp("data")
    args = parse_args(["--data-dir", str(data), "--ckpt-dir", str(DEMO.parent)])
    paths = Paths.from_args(args)
    manager = ModelManager(paths, cpu_policy, Options(), HashCache(paths.cache_file))
    manager.load(DEMO.stem)
    return ProcessingContext(models=manager, options=Options(randn_source="CPU"), outputs_dir=data / "outputs",
                             state=GenerationState(console=False))


def generate(ctx, prompt: str, negative: str = "", cfg: float = 6.0, steps: int = 12, seeds=SEEDS, **kw):
    from modules.processing import Txt2ImgRequest, process_txt2img
    req = Txt2ImgRequest(prompt=prompt, negative_prompt=negative, width=64, height=64, steps=steps,
                         sampler_name="DPM++ 2M", cfg_scale=cfg, seed=seeds[0], batch_size=len(seeds),
                         save_images=False, do_not_save_grid=True, **kw)
    res = process_txt2img(req, ctx)
    return np.stack([np.asarray(im.convert("RGB"), dtype=np.float32) for im in res.images])


def foreground(px: np.ndarray, background=(245, 245, 245)) -> np.ndarray:
    """Pixels clearly not background colour (N, H, W) bool."""
    return np.abs(px - np.array(background, dtype=np.float32)).sum(-1) > 120


def redness(px: np.ndarray) -> float:
    """Mean (R - B) over foreground pixels, all images together."""
    fg = foreground(px)
    if fg.sum() == 0:
        return 0.0
    return float((px[..., 0] - px[..., 2])[fg].mean())


def red_fraction(px: np.ndarray) -> float:
    """Share of all pixels that look red."""
    r, g, b = px[..., 0], px[..., 1], px[..., 2]
    return float(((r > 150) & (g < 90) & (b < 90)).mean())


def test_loads_as_an_ordinary_sd1_checkpoint(ctx):
    model = ctx.models.current
    assert model.spec.label == "SD1.x" and model.latent_scale == 4
    assert DEMO.stat().st_size < 40e6


def test_generation_is_fast_at_native_size(ctx):
    import time
    generate(ctx, "a red circle", seeds=[1], steps=2)  # warm up
    t = time.perf_counter()
    generate(ctx, "a red circle on a white background", seeds=[1], steps=20)
    assert time.perf_counter() - t < 3.0


@not_yet
def test_requested_colour_appears(ctx):
    red = generate(ctx, "a large red circle on a white background")
    blue = generate(ctx, "a large blue circle on a white background")
    assert foreground(red).mean() > 0.05 and foreground(blue).mean() > 0.05  # a shape is drawn
    assert redness(red) > 60
    assert redness(blue) < -60


@not_yet
def test_background_colour_follows_prompt(ctx):
    px = generate(ctx, "a small white circle on a green background")
    border = np.concatenate([px[:, :4].reshape(-1, 3), px[:, -4:].reshape(-1, 3)])
    r, g, b = border.mean(0)
    assert g > r + 40 and g > b + 40


@not_yet
def test_negative_prompt_removes_a_colour(ctx):
    plain = generate(ctx, "a large circle on a white background")
    without_red = generate(ctx, "a large circle on a white background", negative="red")
    assert red_fraction(without_red) <= red_fraction(plain)
    with_red = generate(ctx, "a large red circle on a white background")
    neg_red = generate(ctx, "a large red circle on a white background", negative="red", cfg=6.0)
    assert red_fraction(with_red) > 0.05  # the colour must be there before a negative prompt can remove it
    assert red_fraction(neg_red) < 0.5 * red_fraction(with_red)


@not_yet
def test_higher_cfg_follows_more_tightly(ctx):
    low = generate(ctx, "a large red circle on a white background", cfg=1.5)
    high = generate(ctx, "a large red circle on a white background", cfg=7.0)
    assert redness(high) > redness(low)


@not_yet
def test_emphasis_pushes_harder(ctx):
    # an ambiguous prompt: both colours named, one emphasised
    base = generate(ctx, "a large red blue circle on a white background")
    red = generate(ctx, "a large (red:1.6) blue circle on a white background")
    blue = generate(ctx, "a large red (blue:1.6) circle on a white background")
    assert redness(red) > redness(base) > redness(blue) or redness(red) > redness(blue) + 20


@not_yet
def test_prompt_editing_changes_the_picture(ctx):
    red = generate(ctx, "a large red circle on a white background")
    edit = generate(ctx, "a large [red:blue:0.5] circle on a white background")
    blue = generate(ctx, "a large blue circle on a white background")
    assert redness(blue) < redness(edit) < redness(red) or np.abs(edit - red).mean() > 5


def test_img2img_keeps_the_layout_at_low_strength(ctx):
    from modules.processing import Img2ImgRequest, process_img2img
    init = generate(ctx, "a large red square on a white background", seeds=[7])[0].astype(np.uint8)
    res = process_img2img(Img2ImgRequest(prompt="a large blue square on a white background", init_images=[
        Image.fromarray(init)], width=64, height=64, steps=12, denoising_strength=0.3, seed=7,
        save_images=False, do_not_save_grid=True), ctx)
    out = np.asarray(res.images[0].convert("RGB"), dtype=np.float32)
    assert np.abs(out - init.astype(np.float32)).mean() < 60  # the picture is recognisably the same
