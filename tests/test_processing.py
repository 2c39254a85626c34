"""txt2img / img2img / inpainting jobs on tiny checkpoints, end to end on the CPU."""
import threading
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from modules import infotext_utils
from modules.generation import (
    GenerationError,
    GenerationResult,
    Img2ImgRequest,
    Txt2ImgRequest,
    process_img2img,
    process_txt2img,
    saving,
)
from modules.generation.job import Job
from modules.generation.progress import GenerationState
from modules.generation.worker import GenerationWorker, Queued
from modules.options import Options
from modules.sampling.samplers import find_sampler
from tests.helpers import job_context


@pytest.fixture(scope="module")
def services(make_services, tiny_dir):
    return make_services(Options(sd_checkpoints_limit=4, randn_source="CPU"), "--ckpt-dir", str(tiny_dir))


@pytest.fixture
def ctx(services, tmp_path):
    """Each test gets its own copy of the options, as a job with override settings does."""
    return job_context(services, tmp_path)


def small(**kw) -> Txt2ImgRequest:
    base = dict(prompt="a red circle", negative_prompt="blue", width=32, height=32, steps=4, seed=1234,
                sampler_name="Euler a", cfg_scale=5.0)
    base.update(kw)
    return Txt2ImgRequest(**base)


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def test_txt2img_saves_png_with_infotext_and_the_infotext_reproduces_it(ctx):
    res = process_txt2img(small(), ctx)
    assert (ctx.outputs_dir.parent / "params.txt").read_text(encoding="utf-8") == res.infotexts[0]  # for ↙️
    assert len(res.images) == 1 and res.images[0].size == (32, 32)
    path = res.paths[0]
    assert path.parent.parent.name == "txt2img-images" and path.name == "00000-1234.png"
    saved = Image.open(path)
    text = saving.read_infotext(saved)
    assert text == res.infotexts[0]
    assert text.startswith("a red circle\nNegative prompt: blue\nSteps: 4, Sampler: Euler a, Schedule type: Automatic,"
                           " CFG scale: 5.0, Seed: 1234, Size: 32x32, Model hash: ")
    p = infotext_utils.parse_generation_parameters(text)
    again = process_txt2img(Txt2ImgRequest(
        prompt=p["Prompt"], negative_prompt=p["Negative prompt"], steps=int(p["Steps"]), sampler_name=p["Sampler"],
        scheduler=p["Schedule type"], cfg_scale=float(p["CFG scale"]), seed=int(p["Seed"]),
        width=int(p["Size-1"]), height=int(p["Size-2"])), ctx)
    assert np.array_equal(pixels(again.images[0]), pixels(saved))
    assert again.paths[0].name == "00001-1234.png"


def test_batch_items_equal_their_seed_alone(ctx):
    batch = process_txt2img(small(batch_size=2, save_images=False), ctx)
    assert batch.seeds == [1234, 1235]
    alone = process_txt2img(small(seed=1235, save_images=False), ctx)
    # same noise, so the same picture; batched arithmetic may round a pixel value differently
    diff = np.abs(pixels(batch.images[1]) - pixels(alone.images[0]))
    assert diff.max() <= 2 and diff.mean() < 0.05
    assert not np.array_equal(pixels(batch.images[0]), pixels(batch.images[1]))
    assert batch.grid is not None and batch.grid.size == (64, 32)


def test_variation_seed(ctx):
    base = process_txt2img(small(save_images=False), ctx)
    varied = process_txt2img(small(subseed=99, subseed_strength=0.5, save_images=False), ctx)
    assert not np.array_equal(pixels(base.images[0]), pixels(varied.images[0]))
    assert "Variation seed: 99, Variation seed strength: 0.5" in varied.infotexts[0]
    none = process_txt2img(small(subseed=99, subseed_strength=0.0, save_images=False), ctx)
    assert np.array_equal(pixels(base.images[0]), pixels(none.images[0]))


def test_unknown_sampler_lists_valid_names(ctx):
    with pytest.raises(GenerationError, match="Euler a"):
        process_txt2img(small(sampler_name="Euler b"), ctx)
    with pytest.raises(GenerationError, match="multiples of 8"):
        process_txt2img(small(width=70), ctx)
    with pytest.raises(GenerationError, match="Karras"):
        process_txt2img(small(scheduler="Karass"), ctx)


def test_interrupt_stops_within_a_step(ctx):
    class InterruptAtTwo(GenerationState):
        steps_seen = 0

        def step_done(self, preview=None):
            super().step_done(preview)
            InterruptAtTwo.steps_seen += 1
            if InterruptAtTwo.steps_seen == 2:
                self.interrupt()

    ctx.state = InterruptAtTwo(console=False)
    res = process_txt2img(small(steps=20, n_iter=3, save_images=False), ctx)
    assert res.interrupted
    assert InterruptAtTwo.steps_seen == 2
    assert len(res.images) == 1  # what was done is kept


def test_img2img_strength_zero_returns_the_input(ctx):
    src = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    res = process_img2img(Img2ImgRequest(prompt="x", init_images=[src], denoising_strength=0.0, width=64, height=64,
                                         save_images=False), ctx)
    assert np.array_equal(pixels(res.images[0]), pixels(src))
    moved = process_img2img(Img2ImgRequest(prompt="x", init_images=[src], denoising_strength=0.6, width=64,
                                           height=64, steps=5, seed=1, save_images=False), ctx)
    assert not np.array_equal(pixels(moved.images[0]), pixels(src))
    assert "Denoising strength: 0.6" in moved.infotexts[0]


@pytest.mark.parametrize("checkpoint", ["tiny-sd1", "tiny-sd1-inpainting"])
@pytest.mark.parametrize("fill", [0, 1, 2, 3])
def test_inpainting_keeps_unmasked_pixels(ctx, checkpoint, fill):
    ctx.models.load(checkpoint)
    src = Image.fromarray(np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    res = process_img2img(Img2ImgRequest(prompt="a star", init_images=[src], mask=mask, mask_blur=0,
                                         inpainting_fill=fill, denoising_strength=0.9, width=64, height=64,
                                         steps=4, seed=5, save_images=False), ctx)
    out, orig = pixels(res.images[0]), pixels(src)
    keep = np.asarray(mask) == 0
    assert np.array_equal(out[keep], orig[keep])
    assert not np.array_equal(out[~keep], orig[~keep])


def test_inpaint_only_masked_area(ctx):
    src = Image.fromarray(np.random.default_rng(2).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (40, 40, 56, 56))
    res = process_img2img(Img2ImgRequest(prompt="a star", init_images=[src], mask=mask, mask_blur=0,
                                         inpaint_full_res=True, inpaint_full_res_padding=4, denoising_strength=0.9,
                                         width=64, height=64, steps=3, seed=5, save_images=False), ctx)
    out, orig = pixels(res.images[0]), pixels(src)
    assert np.array_equal(out[:36], orig[:36])  # far from the mask: untouched
    assert "Inpaint area: Only masked" in res.infotexts[0] and "Mask mode" not in res.infotexts[0]


def test_inpaint_not_masked_keeps_the_masked_pixels_and_says_so(ctx):
    src = Image.fromarray(np.random.default_rng(3).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    res = process_img2img(Img2ImgRequest(prompt="a star", init_images=[src], mask=mask, mask_blur=0,
                                         inpainting_mask_invert=1, denoising_strength=0.9, width=64, height=64,
                                         steps=3, seed=5, save_images=False), ctx)
    keep = np.asarray(mask) > 0
    assert np.array_equal(pixels(res.images[0])[keep], pixels(src)[keep])
    assert "Mask mode: Inpaint not masked" in res.infotexts[0]


@pytest.mark.parametrize("upscaler", ["Latent", "Lanczos"])
def test_hires_fix_doubles_the_size(ctx, upscaler):
    res = process_txt2img(small(enable_hr=True, hr_scale=2, hr_upscaler=upscaler, hr_second_pass_steps=2,
                                denoising_strength=0.5, save_images=False), ctx)
    assert res.images[0].size == (64, 64)
    text = res.infotexts[0]
    # A1111's keys: the first pass's size, and the hires pass as a factor of it
    assert "Size: 32x32" in text and "Hires upscale: 2" in text and f"Hires upscaler: {upscaler}" in text
    assert "Denoising strength: 0.5" in text


def test_sdxl_and_v_prediction_models_generate(ctx):
    for name in ("tiny-sdxl", "tiny-sd2-v"):
        ctx.models.load(name)
        res = process_txt2img(small(save_images=False), ctx)
        arr = pixels(res.images[0])
        assert arr.shape == (32, 32, 3) and arr.std() > 0


SAMPLERS = ["DPM++ 2M", "DPM++ SDE", "DPM++ 2M SDE", "DPM++ 2M SDE Heun", "DPM++ 2S a", "DPM++ 3M SDE", "Euler a",
            "Euler", "LMS", "Heun", "DPM2", "DPM2 a", "DPM fast", "DPM adaptive", "Restart", "DDIM", "PLMS", "UniPC",
            "LCM"]


@pytest.mark.parametrize("sampler", SAMPLERS)
@pytest.mark.parametrize("checkpoint", ["tiny-sd1", "tiny-sd2-v"])
def test_every_sampler_runs_on_eps_and_v_models(ctx, sampler, checkpoint):
    ctx.models.load(checkpoint)
    # DPM fast/adaptive choose their own steps between the schedule's end points: one schedule is enough
    for scheduler in ("Automatic",) if sampler in ("DPM fast", "DPM adaptive") else ("Automatic", "Karras",
                                                                                       "Exponential"):
        res = process_txt2img(small(sampler_name=sampler, scheduler=scheduler, steps=3, save_images=False), ctx)
        arr = pixels(res.images[0])
        assert arr.shape == (32, 32, 3) and arr.std() > 0
        used = Job.schedule_label(scheduler, find_sampler(sampler))  # "Automatic" as the sampler's own schedule
        assert f"Sampler: {sampler}, Schedule type: {used}" in res.infotexts[0]


def test_live_preview_and_progress(ctx):
    ctx.options.show_progress_every_n_steps = 2
    previews = []

    class Watch(GenerationState):
        def step_done(self, preview=None):
            super().step_done(preview)
            if preview is not None:
                previews.append(preview)

    ctx.state = Watch(console=False)
    process_txt2img(small(steps=4, save_images=False), ctx)
    assert len(previews) == 2 and previews[0].size == (32, 32)
    snap = ctx.state.snapshot()
    assert not snap.active


def test_lora_tag_in_prompt_changes_the_image_and_is_reverted(ctx, tmp_path):
    from modules.conditioning.lora import LoraApplier
    from tests import ldm_layout as ldm
    from tests import lora_fixtures as lf
    targets = {**lf.ldm_unet_targets(ldm.TINY_SD1.unet),
               **lf.text_targets(ldm.TINY_SD1.text[0], "lora_te_")}
    lf.write(tmp_path / "Lora" / "bold.safetensors", lf.lora(targets, rank=4, alpha=4.0, seed=1))
    ctx.loras = LoraApplier([tmp_path / "Lora"])
    plain = process_txt2img(small(save_images=False), ctx)
    styled = process_txt2img(small(prompt="a red circle <lora:bold:1>", save_images=False), ctx)
    assert not np.array_equal(pixels(plain.images[0]), pixels(styled.images[0]))
    assert "Lora hashes: \"bold: " in styled.infotexts[0]
    assert styled.infotexts[0].startswith("a red circle <lora:bold:1>\n")  # the tag stays in the infotext
    again = process_txt2img(small(save_images=False), ctx)
    assert np.array_equal(pixels(plain.images[0]), pixels(again.images[0]))  # weights restored exactly
    missing = process_txt2img(small(prompt="a red circle <lora:nope:1>", save_images=False), ctx)
    assert any("nope" in w for w in missing.warnings)
    assert np.array_equal(pixels(plain.images[0]), pixels(missing.images[0]))
    assert "Lora hashes" not in missing.infotexts[0]  # the warning says it; no "nope: None" in the parameters
    both = process_txt2img(small(prompt="a red circle <lora:bold:1> <lora:nope:1>", save_images=False), ctx)
    hashes = infotext_utils.parse_generation_parameters(both.infotexts[0])["Lora hashes"]
    assert hashes.startswith("bold: ") and "nope" not in hashes and "None" not in hashes


def test_styles_apply_to_prompts(ctx, tmp_path):
    from modules.conditioning.styles import PromptStyle, StyleDatabase
    db = StyleDatabase(tmp_path / "styles.csv")
    db.save_style(PromptStyle("night", "{prompt}, at night", "daylight"))
    ctx.styles = db
    res = process_txt2img(small(styles=["night"], save_images=False), ctx)
    assert res.infotexts[0].startswith("a red circle, at night\nNegative prompt: blue, daylight\n")


def test_sdxl_refiner_takes_over_at_the_switch_point(ctx):
    ctx.models.load("tiny-sdxl")
    base = process_txt2img(small(steps=6, save_images=False), ctx)
    refined = process_txt2img(small(steps=6, refiner_checkpoint="tiny-sdxl-refiner", refiner_switch_at=0.5,
                                    save_images=False), ctx)
    assert not np.array_equal(pixels(base.images[0]), pixels(refined.images[0]))
    text = refined.infotexts[0]
    assert "Model: tiny-sdxl," in text and "Refiner: tiny-sdxl-refiner.safetensors [" in text
    assert "Refiner switch at: 0.5" in text
    assert ctx.models.current.file.name == "tiny-sdxl-refiner.safetensors"
    again = process_txt2img(small(steps=6, save_images=False), ctx)  # the chosen model is back
    assert np.array_equal(pixels(base.images[0]), pixels(again.images[0]))


def test_tiling_holds_for_every_batch_when_the_refiner_pushes_the_chosen_model_out(ctx):
    """With one checkpoint kept loaded, the refiner replaces the chosen model and the next batch reloads it: that
    batch is tiled too, so each picture equals the same seed generated alone."""
    manager_options = ctx.models.options
    manager_options.sd_checkpoints_limit = 1
    try:
        ctx.models.load("tiny-sdxl")
        job = dict(steps=4, refiner_checkpoint="tiny-sdxl-refiner", refiner_switch_at=0.5, tiling=True,
                   save_images=False)
        both = process_txt2img(small(n_iter=2, **job), ctx)
        ctx.models.load("tiny-sdxl")
        second = process_txt2img(small(seed=1235, **job), ctx)
    finally:
        manager_options.sd_checkpoints_limit = 4
    assert np.array_equal(pixels(both.images[1]), pixels(second.images[0]))


def test_hires_pass_on_another_checkpoint_of_the_same_family(ctx):
    hires = dict(enable_hr=True, hr_scale=2, hr_upscaler="Latent", hr_second_pass_steps=2, denoising_strength=0.6,
                 save_images=False)
    same = process_txt2img(small(**hires), ctx)
    other = process_txt2img(small(hr_checkpoint_name="tiny-sd1-inpainting", **hires), ctx)
    assert not np.array_equal(pixels(same.images[0]), pixels(other.images[0]))
    params = infotext_utils.parse_generation_parameters(other.infotexts[0])
    assert params["Hires checkpoint"].startswith("tiny-sd1-inpainting [") and params["Model"] == "tiny-sd1"
    assert ctx.models.options.sd_model_checkpoint.startswith("tiny-sd1.safetensors")  # the user's choice stays
    again = process_txt2img(small(hr_checkpoint_name=params["Hires checkpoint"], **hires), ctx)  # as pasted
    assert np.array_equal(pixels(other.images[0]), pixels(again.images[0]))
    with pytest.raises(GenerationError, match="hr_checkpoint_name: tiny-sdxl.safetensors .* is SDXL"):
        process_txt2img(small(hr_checkpoint_name="tiny-sdxl", **hires), ctx)


def test_img2img_color_correction_keeps_the_input_colours(ctx):
    from PIL import ImageCms

    from modules.generation.img2img import _TO_LAB
    src = Image.fromarray((np.random.default_rng(4).random((64, 64, 3)) * [90, 30, 30] + [150, 20, 20]
                           ).astype(np.uint8))  # reds
    job = dict(prompt="a blue square", init_images=[src], denoising_strength=0.95, width=64, height=64, steps=4,
               seed=8, save_images=False)

    def colour(picture):  # mean of CIELAB's a and b: where the colours sit
        return np.asarray(ImageCms.applyTransform(picture, _TO_LAB), dtype=np.float32)[..., 1:].mean((0, 1))

    plain = process_img2img(Img2ImgRequest(**job), ctx).images[0]
    ctx.options.img2img_color_correction = True
    corrected = process_img2img(Img2ImgRequest(**job), ctx).images[0]
    assert np.abs(colour(corrected) - colour(src)).sum() < 0.5 * np.abs(colour(plain) - colour(src)).sum()


def test_sampler_parameters_are_written_where_they_differ_and_reproduce(ctx):
    from modules.ui.paste import option_overrides
    assert "Eta" not in process_txt2img(small(save_images=False), ctx).infotexts[0]  # the default: not written
    for changed, key in ((dict(sampler_name="Euler a", eta=0.5), "Eta: 0.5"),
                         (dict(sampler_name="Euler", s_churn=0.4, s_noise=0.9), "Sigma churn: 0.4"),
                         (dict(sampler_name="DDIM", eta=0.3), "Eta DDIM: 0.3")):
        first = process_txt2img(small(save_images=False, **changed), ctx)
        assert key in first.infotexts[0], first.infotexts[0]
        params = infotext_utils.parse_generation_parameters(first.infotexts[0])
        entries = [f"{k}: {params[k]}" for k in ("Eta", "Eta DDIM", "Sigma churn", "Sigma noise") if k in params]
        overrides, _ = option_overrides(entries, ctx.options)  # what pasting it does
        again = process_txt2img(small(save_images=False, sampler_name=changed["sampler_name"]),
                                replace(ctx, options=replace(ctx.options, **overrides)))
        assert np.array_equal(pixels(first.images[0]), pixels(again.images[0])), changed


def test_img2img_batch_from_a_folder(ctx, tmp_path):
    from modules.generation import process_img2img_folder
    src, out, masks = tmp_path / "in", tmp_path / "out", tmp_path / "masks"
    src.mkdir(), masks.mkdir()
    rng_ = np.random.default_rng(3)
    for name in ("a", "b"):
        Image.fromarray(rng_.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(src / f"{name}.png")
    (src / "broken.png").write_bytes(b"not an image")
    mask = Image.new("L", (32, 32), 0)
    mask.paste(255, (8, 8, 24, 24))
    mask.save(masks / "b.png")
    res = process_img2img_folder(Img2ImgRequest(prompt="x", denoising_strength=0.8, width=32, height=32, steps=3,
                                                seed=1, mask_blur=0), ctx, src, out, masks)
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "b.png"]
    assert any("broken.png" in w for w in res.warnings)
    b_in, b_out = pixels(Image.open(src / "b.png")), pixels(Image.open(out / "b.png"))
    keep = np.asarray(mask) == 0
    assert np.array_equal(b_in[keep], b_out[keep]) and not np.array_equal(b_in[~keep], b_out[~keep])
    assert saving.read_infotext(Image.open(out / "a.png")).startswith("x\nSteps: 3")


def test_tiling_makes_the_image_wrap_around(ctx):
    plain = pixels(process_txt2img(small(save_images=False), ctx).images[0])
    tiled = pixels(process_txt2img(small(tiling=True, save_images=False), ctx).images[0])
    assert not np.array_equal(plain, tiled)
    # with circular padding the left and right edges continue each other
    def seam(a):
        return np.abs(a[:, 0] - a[:, -1]).mean()
    assert seam(tiled) < seam(plain)
    assert "Tiling: True" in process_txt2img(small(tiling=True, save_images=False), ctx).infotexts[0]


def test_resize_modes():
    from modules.generation import resize_image
    wide = Image.new("RGB", (200, 100), (255, 0, 0))
    wide.paste((0, 0, 255), (0, 0, 20, 100))  # a blue stripe on the left edge
    assert resize_image(0, wide, 64, 64).size == (64, 64)
    cropped = pixels(resize_image(1, wide, 64, 64))
    assert cropped[:, 0, 2].max() < 50  # crop and resize: the blue left edge is cut away
    filled = pixels(resize_image(2, wide, 64, 64))
    assert filled.shape == (64, 64, 3) and filled[0, 32, 0] > 200 and filled[63, 32, 0] > 200


def test_jpeg_and_webp_carry_the_infotext(ctx, tmp_path):
    ctx.options.samples_format = "jpg"
    res = process_txt2img(small(), ctx)
    assert res.paths[0].suffix == ".jpg"
    assert saving.read_infotext(Image.open(res.paths[0])) == res.infotexts[0]
    path = saving.save_image(res.images[0], tmp_path, 7, "a prompt, with: commas\nSteps: 4", "webp")
    assert saving.read_infotext(Image.open(path)) == "a prompt, with: commas\nSteps: 4"


def test_skip_abandons_the_current_batch_only(ctx):
    class SkipFirstBatch(GenerationState):
        skipped_once = False

        def step_done(self, preview=None):
            super().step_done(preview)
            if not SkipFirstBatch.skipped_once:
                SkipFirstBatch.skipped_once = True
                self.skip()

    ctx.state = SkipFirstBatch(console=False)
    res = process_txt2img(small(n_iter=2, save_images=False), ctx)
    assert not res.interrupted and res.seeds == [1235]


def test_worker_serves_jobs_in_order_and_tells_waiting_ones_their_place(ctx):
    worker = GenerationWorker(ctx)
    started, release = threading.Event(), threading.Event()

    def hold():  # another job (say, an API request) holding the model
        started.set()
        release.wait(30)
    holder = threading.Thread(target=worker.with_lock, args=(hold,))
    holder.start()
    assert started.wait(10)
    stream = worker.run_streaming(small(), poll_seconds=0.05)
    assert next(stream) == Queued(ahead=1)
    assert worker.waiting == 1
    release.set()
    items = list(stream)
    holder.join()
    assert isinstance(items[-1], GenerationResult) and len(items[-1].images) == 1
    assert worker.waiting == 0


def test_hires_fix_keeps_the_refiner_in_the_infotext(ctx):
    ctx.models.load("tiny-sdxl")
    res = process_txt2img(small(steps=4, refiner_checkpoint="tiny-sdxl-refiner", refiner_switch_at=0.5,
                                enable_hr=True, hr_scale=2, hr_second_pass_steps=2, denoising_strength=0.5,
                                save_images=False), ctx)
    text = res.infotexts[0]
    assert "Refiner: tiny-sdxl-refiner.safetensors [" in text and "Refiner switch at: 0.5" in text
    assert "Hires upscaler: Latent" in text and "Denoising strength: 0.5" in text


def _unet_calls(ctx, req) -> tuple[int, str]:
    calls = []
    handle = ctx.models.current.unet.register_forward_hook(lambda *_: calls.append(1))
    try:
        res = process_txt2img(req, ctx)
    finally:
        handle.remove()
    return len(calls), res.infotexts[0]


def test_discard_penultimate_sigma_keeps_the_step_count_and_says_so(ctx):
    plain_calls, plain_text = _unet_calls(ctx, small(steps=5, sampler_name="Euler", save_images=False))
    ctx.options.always_discard_next_to_last_sigma = True
    discard_calls, discard_text = _unet_calls(ctx, small(steps=5, sampler_name="Euler", save_images=False))
    assert discard_calls == plain_calls == 5  # one sigma dropped from a schedule one step longer (A1111)
    assert "Discard penultimate sigma" not in plain_text
    assert "Discard penultimate sigma: True" in discard_text
    # a sampler that always discards (DPM2) gets no infotext key: the option changed nothing
    _, dpm2_text = _unet_calls(ctx, small(steps=5, sampler_name="DPM2", save_images=False))
    assert "Discard penultimate sigma" not in dpm2_text


def test_a_job_sees_settings_changed_before_its_turn_and_its_own_overrides_only(ctx):
    worker = GenerationWorker(ctx)
    holding, release = threading.Event(), threading.Event()

    def change_settings():  # like Apply in Settings or POST /options, while another job runs
        holding.set()
        release.wait(60)
        ctx.options.eta_noise_seed_delta = 31337

    changer = threading.Thread(target=lambda: worker.with_lock(change_settings))
    changer.start()
    holding.wait(60)
    box = {}
    job = threading.Thread(target=lambda: box.setdefault("res", worker.run(
        small(sampler_name="Euler a", save_images=False), option_overrides={"CLIP_stop_at_last_layers": 2})))
    job.start()  # queued behind the settings change
    release.set()
    changer.join(60)
    job.join(120)
    text = box["res"].infotexts[0]
    assert "ENSD: 31337" in text and "Clip skip: 2" in text
    assert ctx.options.CLIP_stop_at_last_layers == 1  # the override stayed with that job


def test_a_grid_is_made_to_be_shown_or_saved_and_never_when_the_request_says_no(ctx):
    grids = ctx.outputs_dir / "txt2img-grids"
    ctx.options.return_grid, ctx.options.grid_save = False, True
    res = process_txt2img(small(batch_size=2), ctx)
    assert res.grid is None and len(list(grids.rglob("grid-*.png"))) == 1  # saved, not shown (A1111)
    ctx.options.return_grid = True
    res = process_txt2img(small(batch_size=2, do_not_save_grid=True), ctx)
    assert res.grid is None and len(list(grids.rglob("grid-*.png"))) == 1  # the API's default: no grid at all
    res = process_txt2img(small(batch_size=2, save_images=False), ctx)
    assert res.grid is not None and len(list(grids.rglob("grid-*.png"))) == 1  # shown, not saved


def test_a_bad_request_is_refused_without_waiting_for_the_jobs_ahead(ctx):
    worker = GenerationWorker(ctx)
    holding, release = threading.Event(), threading.Event()
    busy = threading.Thread(target=lambda: worker.with_lock(lambda: (holding.set(), release.wait(120))))
    busy.start()
    holding.wait(60)
    outcome = {}

    def bad_request():
        try:
            worker.run(small(steps=10**9))
        except GenerationError as e:
            outcome["error"] = str(e)

    asking = threading.Thread(target=bad_request)
    asking.start()
    asking.join(30)  # queued behind the busy turn it would wait the full 120 s
    refused_at_once = not asking.is_alive()
    release.set()
    busy.join(60)
    asking.join(60)
    assert refused_at_once and "steps" in outcome["error"]
