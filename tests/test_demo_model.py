"""The built-in demo checkpoint (tools/train_demo_model.py) end to end: it loads through the ordinary
loader and follows prompts through the app's own txt2img / img2img code, with its LoRA and embedding.

These are the end-to-end checks of conditioning, CFG, negative prompts, emphasis, prompt editing,
LoRA and textual inversion. Pictures are measured, over many seeds, against the palette the model was
trained on: the background is the palette colour most of the border has, the shape colour is the most
common other palette colour, the shape is told by a nearest-centroid classifier whose centroids come
from pictures drawn by the training script itself. Rates must be well above chance (1 in 7 colours,
1 in 4 shapes). Set DEMO_MODEL=/path/to/file.safetensors to check another file.
"""
import importlib.util
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
DEMO = Path(os.environ.get("DEMO_MODEL", ROOT / "models" / "Stable-diffusion" / "demo-shapes.safetensors"))
LORA_DIR = DEMO.parent.parent / "Lora"
EMBEDDINGS_DIR = DEMO.parent.parent.parent / "embeddings"

pytestmark = pytest.mark.skipif(not DEMO.is_file(), reason=f"demo model not there ({DEMO})")

SEEDS = list(range(100, 116))


def _trainer():
    spec = importlib.util.spec_from_file_location("train_demo_model", ROOT / "tools" / "train_demo_model.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


T = _trainer()
PALETTE_NAMES = list(T.COLORS)
PALETTE = np.array([T.COLORS[n] for n in PALETTE_NAMES], dtype=np.float32)


@pytest.fixture(scope="module")
def ctx(make_services):
    from modules.options import Options

    services = make_services(Options(randn_source="CPU"), "--ckpt-dir", str(DEMO.parent), "--lora-dir", str(LORA_DIR),
                             "--embeddings-dir", str(EMBEDDINGS_DIR))
    services.models.load(DEMO.stem)
    return services.context


def generate(ctx, prompt: str, negative: str = "", cfg: float = 6.0, steps: int = 12, seeds=SEEDS, **kw):
    from modules.generation import Txt2ImgRequest, process_txt2img
    req = Txt2ImgRequest(prompt=prompt, negative_prompt=negative, width=64, height=64, steps=steps,
                         sampler_name="DPM++ 2M", cfg_scale=cfg, seed=seeds[0], batch_size=len(seeds),
                         save_images=False, do_not_save_grid=True, **kw)
    res = process_txt2img(req, ctx)
    assert not res.warnings, res.warnings
    return np.stack([np.asarray(im.convert("RGB"), dtype=np.float32) for im in res.images])


# ---- measuring pictures ------------------------------------------------------------------------

def palette_index(px: np.ndarray) -> np.ndarray:
    """Nearest palette colour of each pixel."""
    return np.argmin(((px[..., None, :] - PALETTE) ** 2).sum(-1), axis=-1)


def border(a: np.ndarray, width: int = 3) -> np.ndarray:
    return np.concatenate([a[:width].reshape(-1, *a.shape[2:]), a[-width:].reshape(-1, *a.shape[2:]),
                           a[:, :width].reshape(-1, *a.shape[2:]), a[:, -width:].reshape(-1, *a.shape[2:])])


def describe(image: np.ndarray) -> tuple[str, str | None, np.ndarray]:
    """(background colour, shape colour or None, shape mask) of one picture."""
    idx = palette_index(image)
    bg = np.bincount(border(idx).ravel(), minlength=len(PALETTE)).argmax()
    counts = np.bincount(idx.ravel(), minlength=len(PALETTE))
    counts[bg] = 0
    fg = counts.argmax()
    if counts[fg] < 0.02 * idx.size:
        return PALETTE_NAMES[bg], None, np.zeros(idx.shape, bool)
    return PALETTE_NAMES[bg], PALETTE_NAMES[fg], idx == fg


def shape_features(mask: np.ndarray) -> np.ndarray:
    """Fill of the bounding box, and how far the mask's pixels lie from its centre relative to its size."""
    ys, xs = np.nonzero(mask)
    if len(xs) < 10:
        return np.array([0.0, 0.0, 0.0])
    h, w = ys.max() - ys.min() + 1, xs.max() - xs.min() + 1
    fill = len(xs) / (h * w)
    r = np.hypot(ys - ys.mean(), xs - xs.mean())
    spread = r.std() / (r.mean() + 1e-6)
    top_heavy = (ys.mean() - ys.min()) / h  # triangles (point up) have their mass low
    return np.array([fill, spread, top_heavy])


@pytest.fixture(scope="module")
def shape_centroids():
    """Feature centroids of each shape, from pictures drawn by the training script."""
    rng = np.random.default_rng(0)
    feats: dict[str, list] = {s: [] for s in T.SHAPES}
    for _ in range(240):
        s = T.random_sample(rng)
        s = T.Sample(s.color, s.shape, "large", s.position, s.background, s.jitter)
        _, colour, mask = describe(np.asarray(T.draw(s), dtype=np.float32))
        feats[s.shape].append(shape_features(mask))
    return {k: np.mean(v, axis=0) for k, v in feats.items()}


def classify_shape(mask: np.ndarray, centroids) -> str:
    f = shape_features(mask)
    return min(centroids, key=lambda k: np.abs(f - centroids[k]).sum())


def colour_rate(pictures: np.ndarray, colour: str) -> float:
    return float(np.mean([describe(p)[1] == colour for p in pictures]))


def background_rate(pictures: np.ndarray, colour: str) -> float:
    return float(np.mean([describe(p)[0] == colour for p in pictures]))


# ---- the model ---------------------------------------------------------------------------------

def test_loads_as_an_ordinary_sd1_checkpoint_with_its_native_size(ctx):
    model = ctx.models.current
    assert model.spec.label == "SD1.x" and model.latent_scale == 4 and model.spec.native_size == 64
    assert DEMO.stat().st_size < 40e6



def test_the_requested_shape_colour_appears(ctx):
    rates = {c: colour_rate(generate(ctx, f"a large {c} circle on a white background", seeds=SEEDS[:8]), c)
             for c in ("red", "blue", "green", "yellow")}
    assert np.mean(list(rates.values())) >= 0.6, rates  # chance: 1 in 7


def test_the_background_follows_the_prompt(ctx):
    rates = {bg: background_rate(generate(ctx, f"a white square on a {bg} background", seeds=SEEDS[:8]), bg)
             for bg in ("green", "blue", "yellow", "black")}
    assert np.mean(list(rates.values())) >= 0.5, rates  # chance: 1 in 7 (black comes out navy: it is the weakest)


def test_the_requested_shape_is_drawn(ctx, shape_centroids):
    hits = []
    for shape in T.SHAPES:
        for p in generate(ctx, f"a large red {shape} on a white background", seeds=SEEDS[:8]):
            _, colour, mask = describe(p)
            hits.append(colour is not None and classify_shape(mask, shape_centroids) == shape)
    assert np.mean(hits) >= 0.45, np.mean(hits)  # chance: 1 in 4


def test_negative_prompt_removes_a_colour(ctx):
    with_red = colour_rate(generate(ctx, "a large red circle on a white background"), "red")
    without = colour_rate(generate(ctx, "a large red circle on a white background", negative="red"), "red")
    assert with_red >= 0.5 and without <= 0.5 * with_red, (with_red, without)


def test_higher_cfg_follows_more_tightly(ctx):
    prompt = "a large blue circle on a yellow background"
    low, high = (generate(ctx, prompt, cfg=cfg) for cfg in (1.0, 7.0))
    score = [colour_rate(p, "blue") + background_rate(p, "yellow") for p in (low, high)]
    assert score[1] > score[0] + 0.2, score


def redness(pictures: np.ndarray) -> float:
    """Mean (R - B) over the shape pixels of all pictures."""
    values = [(p[..., 0] - p[..., 2])[mask].mean() for p in pictures for _, _, mask in [describe(p)] if mask.any()]
    return float(np.mean(values))


def test_emphasis_pushes_harder(ctx):
    base = redness(generate(ctx, "a large purple circle on a white background"))
    red = redness(generate(ctx, "a large (red:1.5) purple circle on a white background"))
    blue = redness(generate(ctx, "a large (blue:1.5) purple circle on a white background"))
    assert red > base + 30 and blue < base - 30, (red, base, blue)


def test_prompt_editing_shows_in_the_result(ctx):
    red = generate(ctx, "a large red circle on a white background")
    edit = generate(ctx, "a large [red:blue:0.5] circle on a white background")
    late = generate(ctx, "a large [red:blue:0.9] circle on a white background")
    assert colour_rate(edit, "red") < colour_rate(red, "red")  # switching halfway changes what is drawn
    assert np.abs(edit - red).mean() > np.abs(late - red).mean()  # a later switch changes less


def test_lora_paints_the_night_sky_and_weight_zero_changes_nothing(ctx):
    plain = generate(ctx, "a large yellow star on a white background", seeds=SEEDS[:8])
    night = generate(ctx, "a large yellow star on a white background <lora:demo-night:1>", seeds=SEEDS[:8])
    off = generate(ctx, "a large yellow star on a white background <lora:demo-night:0>", seeds=SEEDS[:8])
    sky = np.array(T.NIGHT_SKY, dtype=np.float32)
    distance = [float(np.abs(border(p).reshape(-1, 3) - sky).mean()) for p in (plain, night)]
    assert distance[1] < 60 and distance[1] < 0.4 * distance[0], distance
    assert np.abs(off - plain).max() <= 1  # weight 0: the model as it was


def test_embedding_brings_its_background(ctx):
    # trained on orange shapes on purple: the purple background is learned; the shape comes out red-orange
    with_it = background_rate(generate(ctx, "a circle, demo-sunset", seeds=SEEDS[:8]), "purple")
    without = background_rate(generate(ctx, "a circle", seeds=SEEDS[:8]), "purple")
    assert with_it >= 0.75 and without <= 0.25, (with_it, without)


def test_img2img_keeps_the_layout_at_low_strength(ctx):
    from modules.generation import Img2ImgRequest, process_img2img
    init = generate(ctx, "a large red square on a white background", seeds=[7])[0].astype(np.uint8)
    res = process_img2img(Img2ImgRequest(prompt="a large blue square on a white background", init_images=[
        Image.fromarray(init)], width=64, height=64, steps=12, denoising_strength=0.3, seed=7,
        save_images=False, do_not_save_grid=True), ctx)
    out = np.asarray(res.images[0].convert("RGB"), dtype=np.float32)
    assert np.abs(out - init.astype(np.float32)).mean() < 30  # the picture is recognisably the same
    assert describe(out)[0] == describe(init.astype(np.float32))[0]


def test_inpainting_repaints_only_the_masked_part(ctx):
    from modules.generation import Img2ImgRequest, process_img2img
    init = np.zeros((64, 64, 3), np.uint8)
    init[:] = T.COLORS["white"]
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (12, 12, 52, 52))
    res = process_img2img(Img2ImgRequest(
        prompt="a large blue circle on a white background", init_images=[Image.fromarray(init)] * 1, mask=mask,
        mask_blur=0, inpainting_fill=1, width=64, height=64, steps=12, denoising_strength=1.0, seed=SEEDS[0],
        batch_size=8, save_images=False, do_not_save_grid=True), ctx)
    pictures = np.stack([np.asarray(im.convert("RGB"), dtype=np.float32) for im in res.images])
    outside = np.ones((64, 64), bool)
    outside[12:52, 12:52] = False
    assert (pictures[:, outside] == init[outside]).all()  # untouched outside the mask, exactly
    assert colour_rate(pictures, "blue") >= 0.5
