"""Input that used to end in a traceback or a wrong picture (issue 13): long AND-ed subprompts and prompt editing
to longer texts generate, padded by A1111's rule; out-of-range seeds, sizes and steps get a message naming the field;
an interrupted job shows no tile of noise. (A missing LoRA's infotext: test_processing.py.)"""
import base64

import numpy as np
import pytest
import torch
from PIL import Image

from modules.conditioning.text import (
    MultiCondConditioning,
    PromptEncoder,
    ScheduledConditioning,
    pad_to_longest,
)
from modules.generation import Txt2ImgRequest, process_img2img, process_img2img_folder, process_txt2img, saving
from modules.generation.progress import GenerationState
from modules.generation.requests import Img2ImgRequest
from modules.options import Options
from modules.sampling.denoiser import CFGDenoiser, UNetDenoiser
from tests.helpers import job_context
from tests.test_hostile_requests import claimed_size_png

LONG = ", ".join(f"word{i}" for i in range(100))  # at least 3 chunks of 75 tokens


@pytest.fixture(scope="module")
def services(make_services, tiny_dir):
    return make_services(Options(randn_source="CPU"), "--ckpt-dir", str(tiny_dir))


@pytest.fixture
def ctx(services, tmp_path):
    return job_context(services, tmp_path)


def small(**kw) -> Txt2ImgRequest:
    return Txt2ImgRequest(**{**dict(prompt="a red circle", negative_prompt="blue", width=32, height=32, steps=4,
                                    seed=1234, sampler_name="Euler a", cfg_scale=5.0, save_images=False), **kw})


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


# ---- prompts of different lengths ------------------------------------------------------------------------------

@pytest.mark.parametrize("prompt,negative", [
    (f"a red circle AND {LONG}", "blue"),  # subprompts of 1 and 3 chunks
    (f"{LONG} AND a red circle:0.5", f"blue, {LONG}"),  # and a negative as long as neither
    (f"[a red circle:{LONG}:0.5] AND green", "blue"),  # one subprompt grows halfway
    ("a red circle", f"[blue:{LONG}:0.5]"),  # the negative grows halfway
])
def test_prompts_of_different_lengths_generate(ctx, prompt, negative):
    res = process_txt2img(small(prompt=prompt, negative_prompt=negative, batch_size=2), ctx)
    assert len(res.images) == 2 and res.images[0].size == (32, 32)
    assert res.infotexts[0].startswith(prompt + "\nNegative prompt: " + negative + "\n")


def test_a_shorter_subprompt_is_padded_with_its_last_vector_as_a1111_does(ctx):
    """The guidance of `short AND long` equals running the UNet on the short prompt's context extended by copies of
    its own last token vector (A1111's stack_conds), next to the long one and the negative."""
    model = ctx.models.ensure_selected()
    encoder = PromptEncoder(model)
    short, long, negative = (encoder.encode([t]) for t in ("a red circle", LONG, "blue"))
    length = long.context.shape[1]
    assert short.context.shape[1] == 77 and length >= 3 * 77

    padded = torch.cat([short.context, short.context[:, -1:].repeat(1, length - 77, 1)], dim=1)
    assert torch.equal(pad_to_longest([short, long])[0].context, padded)

    denoiser = UNetDenoiser(model)
    cond = MultiCondConditioning([[([ScheduledConditioning(10, short)], 1.0),
                                   ([ScheduledConditioning(10, long)], 0.5)]])
    cfg = CFGDenoiser(denoiser, cond, [[ScheduledConditioning(10, negative)]], 7.0)
    x, sigma = torch.randn(1, 4, 4, 4, generator=torch.Generator().manual_seed(1)) * 3, torch.tensor([3.0])
    d_short, d_long, d_neg = (denoiser(x, sigma, c) for c in (padded, long.context, negative.context))
    expected = d_neg + (d_short - d_neg) * 7.0 + (d_long - d_neg) * 0.5 * 7.0
    torch.testing.assert_close(cfg(x, sigma), expected, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(denoiser(x, sigma, short.context), d_short, atol=1e-4)  # the padding is seen


# ---- out-of-range values: a message naming the field ---------------------------------------------------------------

@pytest.mark.parametrize("values,message", [
    ({"seed": 99999999999999999999},
     "seed: 99999999999999999999 is out of range; a seed is 0 to 4294967295, or -1 for a random one"),
    ({"subseed": 99999999999999999999, "subseed_strength": 0.5},
     "subseed: 99999999999999999999 is out of range; a seed is 0 to 4294967295, or -1 for a random one"),
    ({"seed": -2}, "seed: -2 is out of range; a seed is 0 to 4294967295, or -1 for a random one"),
    ({"width": 2049}, "width/height: width and height must be positive multiples of 8 (got 2049x64)"),
    ({"steps": 0}, "steps: 0 is out of range; give 1 to 1000"),
])
def test_the_page_says_which_value_is_out_of_range(services, values, message):
    """As the txt2img tab's run(): the message is shown in the info box, and no job starts."""
    from modules.ui.generation import stream, txt2img_request
    req = txt2img_request({"prompt": "a", "steps": 1, "width": 64, "height": 64, **values})
    shown = list(stream(services.worker, req))
    assert len(shown) == 1 and shown[0][2] == f"<p class='error'>❌ {message}</p>"


def test_the_largest_seed_generates(ctx):
    res = process_txt2img(small(seed=4294967295, subseed=4294967295, subseed_strength=0.5), ctx)
    assert res.seeds == [4294967295] and "Seed: 4294967295," in res.infotexts[0]


# ---- interrupt: what was sampled, never noise ----------------------------------------------------------------------

class InterruptWhenBatchStarts(GenerationState):
    """Interrupts as the given batch begins sampling (after its prompts are encoded, before its first step)."""

    def __init__(self, batch: int):
        super().__init__(console=False)
        self.batch = batch

    def begin_pass(self, steps, job_no=None):
        super().begin_pass(steps, job_no)
        if job_no == self.batch:
            self.interrupt()


def test_a_batch_interrupted_before_its_first_step_leaves_no_pictures(ctx):
    ctx.options.return_grid = True
    whole = process_txt2img(small(batch_size=2, n_iter=2), ctx)
    ctx.state = InterruptWhenBatchStarts(1)
    res = process_txt2img(small(batch_size=2, n_iter=2), ctx)
    assert res.interrupted and res.seeds == [1234, 1235] and len(res.images) == len(res.infotexts) == 2
    for done, finished in zip(res.images, whole.images[:2]):
        assert np.array_equal(pixels(done), pixels(finished))
    assert res.grid is not None and res.grid.size == saving.image_grid(whole.images[:2]).size


def test_interrupted_as_the_hires_pass_begins_the_first_pass_picture_is_kept(ctx):
    first_pass = process_txt2img(small(), ctx).images[0]
    ctx.state = InterruptWhenBatchStarts(1)  # pass 1 of batch 0 is its hires pass
    res = process_txt2img(small(enable_hr=True, hr_scale=2.0), ctx)
    assert res.interrupted and len(res.images) == 1 and res.images[0].size == (32, 32)
    assert np.array_equal(pixels(res.images[0]), pixels(first_pass))
    assert "Size: 32x32," in res.infotexts[0]


def test_an_img2img_batch_interrupted_before_its_first_step_leaves_no_pictures(ctx):
    ctx.state = InterruptWhenBatchStarts(0)
    res = process_img2img(Img2ImgRequest(init_images=[Image.new("RGB", (32, 32), (200, 30, 30))], prompt="x",
                                         width=32, height=32, steps=4, seed=1, save_images=False), ctx)
    assert res.interrupted and res.images == [] and res.grid is None


def test_a_picture_interrupted_midway_is_its_prediction_not_the_noisy_latent(ctx):
    """A1111 decodes the last step's prediction of the clean picture: halfway through, that is all but the finished
    picture (the still noisy latent, decoded, is eight times as far from it on the tiny model)."""
    class InterruptHalfway(GenerationState):
        def step_done(self, preview=None):
            super().step_done(preview)
            if self.snapshot().step == 10:
                self.interrupt()

    finished = process_txt2img(small(steps=20, sampler_name="Euler"), ctx).images[0]
    ctx.state = InterruptHalfway(console=False)
    res = process_txt2img(small(steps=20, sampler_name="Euler"), ctx)
    assert res.interrupted and len(res.images) == 1
    assert np.abs(pixels(res.images[0]) - pixels(finished)).mean() < 1.0  # of 255 levels


# ---- files that are no pictures -----------------------------------------------------------------------------------

def test_img2img_folder_batch_skips_a_huge_claimed_picture_with_a_message(ctx, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    Image.new("RGB", (32, 32), (200, 30, 30)).save(src / "a.png")
    (src / "bomb.png").write_bytes(base64.b64decode(claimed_size_png(20000, 20000)))
    (src / "big.png").write_bytes(base64.b64decode(claimed_size_png(11000, 11000)))
    (src / "fake.png").write_text("this is a text file")
    res = process_img2img_folder(Img2ImgRequest(prompt="x", width=32, height=32, steps=2, seed=1, save_images=False),
                                 ctx, src, None)
    assert len(res.images) == 1
    assert any(w.startswith("bomb.png: ") and "skipped" in w for w in res.warnings)
    assert "big.png: the picture is 11000x11000; at most 100 megapixels are supported; skipped" in res.warnings
    assert any(w.startswith("fake.png: not a readable image") for w in res.warnings)


def test_extras_folder_batch_skips_huge_and_broken_pictures_with_a_message(tmp_path):
    from modules.generation.extras import pictures_in
    Image.new("RGB", (32, 32), (200, 30, 30)).save(tmp_path / "a.png")
    (tmp_path / "bomb.png").write_bytes(base64.b64decode(claimed_size_png(20000, 20000)))
    (tmp_path / "big.png").write_bytes(base64.b64decode(claimed_size_png(11000, 11000)))
    (tmp_path / "fake.png").write_text("this is a text file")
    pictures, problems = pictures_in(tmp_path)
    assert [p.size for p in pictures] == [(32, 32)]
    assert sorted(problems) == sorted([
        "big.png: the picture is 11000x11000; at most 100 megapixels are supported",
        "bomb.png: the picture is too large; at most 100 megapixels are supported",
        next(p for p in problems if p.startswith("fake.png: not a readable image"))])
