"""Model upscalers where users pick them: hires fix, Extras (with its settings, progress and interrupt), the API
lists and routes, and A1111's folder flags."""
import json

import numpy as np
import pytest
from PIL import Image

from modules.generation import Txt2ImgRequest, process_txt2img
from modules.generation.extras import ExtrasRequest, PostprocessError, run_extras
from modules.generation.progress import GenerationState
from modules.options import Options
from tests.helpers import job_context, serving_checkpoints
from tests.test_api import b64_png, call, picture
from tests.upscaler_fixtures import write_tiny_upscalers

FLAG_FOLDERS = ("--esrgan-models-path", "ESRGAN", "--realesrgan-models-path", "RealESRGAN",
                "--swinir-models-path", "SwinIR")


def folder_flags(models) -> list[str]:
    """A1111's flags pointing at the upscaler folders under `models` (not the data dir's own)."""
    pairs = zip(FLAG_FOLDERS[::2], FLAG_FOLDERS[1::2])
    return [part for flag, name in pairs for part in (flag, str(models / name))]


@pytest.fixture(scope="module")
def upscaler_models(tmp_path_factory):
    return write_tiny_upscalers(tmp_path_factory.mktemp("upscalers"))


@pytest.fixture(scope="module")
def services(make_services, tiny_dir, upscaler_models):
    return make_services(Options(randn_source="CPU"), "--ckpt-dir", str(tiny_dir), *folder_flags(upscaler_models))


class CountingState(GenerationState):
    """Records each pass begun (its steps and number) and can interrupt after some steps."""

    def __init__(self, interrupt_after: int | None = None):
        super().__init__(console=False)
        self.passes: list[tuple[int, int | None]] = []
        self.steps_seen = 0
        self.interrupt_after = interrupt_after

    def begin_pass(self, steps, job_no=None):
        super().begin_pass(steps, job_no)
        self.passes.append((steps, job_no))

    def step_done(self, preview=None):
        super().step_done(preview)
        self.steps_seen += 1
        if self.steps_seen == self.interrupt_after:
            self.interrupt()


def hires(upscaler: str, **kw) -> Txt2ImgRequest:
    return Txt2ImgRequest(prompt="a red circle", width=32, height=32, steps=2, seed=7, sampler_name="Euler",
                          enable_hr=True, hr_scale=2, hr_upscaler=upscaler, hr_second_pass_steps=2,
                          denoising_strength=0.5, save_images=False, **kw)


def test_flags_choose_the_folders_and_every_model_is_listed_after_the_resamplers(services):
    names = services.context.upscalers.names()
    assert names[:3] == ["None", "Lanczos", "Nearest"]
    assert {"4x-Tiny", "4x-TinySafe", "RealESRGAN_x4plus_tiny", "realesr-tiny-x2", "SwinIR_x2_tiny"} <= set(names)


def test_hires_fix_with_a_model_upscaler_shows_its_tiles_as_a_pass(services, tmp_path):
    ctx = job_context(services, tmp_path)
    ctx.state = CountingState()
    ctx.options.ESRGAN_tile, ctx.options.ESRGAN_tile_overlap = 16, 4  # 32 px first pass: 3x3 tiles
    res = process_txt2img(hires("realesr-tiny-x2"), ctx)
    assert res.images[0].size == (64, 64) and "Hires upscaler: realesr-tiny-x2" in res.infotexts[0]
    # first pass, the upscaler's tiles, the hires pass: three passes per batch, numbered in order
    assert [p for p in ctx.state.passes if p[1] is not None] == [(2, 0), (9, 1), (2, 2)]
    lanczos = process_txt2img(hires("Lanczos"), job_context(services, tmp_path))
    assert not np.array_equal(np.asarray(lanczos.images[0]), np.asarray(res.images[0]))


def test_interrupting_the_upscale_keeps_the_first_pass(services, tmp_path):
    ctx = job_context(services, tmp_path)
    ctx.state = CountingState(interrupt_after=3)  # the first pass's two steps, then one tile
    ctx.options.ESRGAN_tile, ctx.options.ESRGAN_tile_overlap = 16, 4
    res = process_txt2img(hires("4x-Tiny"), ctx)
    assert res.interrupted and res.images[0].size == (32, 32)  # as A1111: the first pass's picture
    assert ctx.state.steps_seen == 3


def test_hires_refuses_an_unknown_upscaler_naming_the_choices(services, tmp_path):
    from modules.generation import GenerationError
    with pytest.raises(GenerationError, match="hr_upscaler: unknown hires upscaler 'R-ESRGAN 4x\\+'.*4x-Tiny"):
        process_txt2img(hires("R-ESRGAN 4x+"), job_context(services, tmp_path))


def test_extras_upscaler_none_leaves_the_picture_as_a1111(tmp_path):
    src = smooth_picture(16, 16)
    out, texts, _ = run_extras([src], ExtrasRequest(upscaler_1="None", upscaling_resize=2, save=False), tmp_path)
    assert out[0].size == (16, 16) and texts == [""]


def test_hires_none_resizes_like_lanczos_as_a1111(services, tmp_path):
    none = process_txt2img(hires("None"), job_context(services, tmp_path))
    lanczos = process_txt2img(hires("Lanczos"), job_context(services, tmp_path))
    assert none.images[0].size == (64, 64)
    assert np.array_equal(np.asarray(none.images[0]), np.asarray(lanczos.images[0]))


def smooth_picture(w, h, seed=0):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h // 4 + 1, w // 4 + 1, 3), dtype=np.uint8)).resize(
        (w, h), Image.BICUBIC)


def test_extras_uses_the_model_with_the_tile_settings_and_stops_between_pictures(services, tmp_path):
    upscalers, opts = services.context.upscalers, Options(ESRGAN_tile=16, ESRGAN_tile_overlap=4)
    state = CountingState()
    req = ExtrasRequest(upscaling_resize=3, upscaler_1="realesr-tiny-x2", save=False)
    out, texts, _ = run_extras([smooth_picture(40, 24)], req, tmp_path, opts, upscalers=upscalers, state=state)
    # 2x twice (40x24: 4x2 tiles starting every 8 px, the grid, then 80x48: 9x5 tiles), then Lanczos down to 3x
    assert out[0].size == (120, 72) and "Postprocess upscaler: realesr-tiny-x2" in texts[0]
    assert state.passes == [(1, 0), (53, None)] and state.steps_seen == 53
    lanczos, _, _ = run_extras([smooth_picture(40, 24)], ExtrasRequest(upscaling_resize=3, save=False), tmp_path)
    assert not np.array_equal(np.asarray(out[0]), np.asarray(lanczos[0]))

    whole = CountingState()
    run_extras([smooth_picture(40, 24)], req, tmp_path, Options(ESRGAN_tile=0), upscalers=upscalers, state=whole)
    assert whole.steps_seen == 2  # 0: no tiling, one run per pass

    stopping = CountingState(interrupt_after=55)  # two tiles into the second picture
    out, _, paths = run_extras([smooth_picture(40, 24), smooth_picture(40, 24, seed=1)],
                               ExtrasRequest(upscaling_resize=3, upscaler_1="realesr-tiny-x2"), tmp_path, opts,
                               upscalers=upscalers, state=stopping)
    assert len(out) == len(paths) == 1 and paths[0].is_file()  # the picture done is kept and saved

    interrupted = CountingState()
    interrupted.interrupt()
    assert run_extras([smooth_picture(8, 8)] * 3, ExtrasRequest(), tmp_path, state=interrupted) == ([], [], [])

    with pytest.raises(PostprocessError, match="unknown upscaler 'SwinIR 4x'"):
        run_extras([smooth_picture(8, 8)], ExtrasRequest(upscaler_1="SwinIR 4x"), tmp_path, upscalers=upscalers)


@pytest.fixture(scope="module")
def api_url(tmp_path_factory, tiny_dir, upscaler_models):
    data = tmp_path_factory.mktemp("api-upscalers")
    (data / "config.json").write_text(json.dumps({"ESRGAN_tile": 32}))
    with serving_checkpoints(data, tiny_dir, "--api", *folder_flags(upscaler_models)) as server:
        yield server.url


def test_api_lists_models_with_path_and_scale(api_url, upscaler_models):
    status, answer, _ = call(api_url + "/sdapi/v1/upscalers")
    assert status == 200
    by_name = {u["name"]: u for u in answer}
    assert [u["name"] for u in answer[:3]] == ["None", "Lanczos", "Nearest"]
    tiny = by_name["4x-Tiny"]
    assert tiny["model_path"] == str(upscaler_models / "ESRGAN" / "4x-Tiny.pth") and tiny["scale"] == 4
    assert tiny["model_name"] == "ESRGAN" and by_name["Lanczos"]["model_path"] is None
    realesrgan = call(api_url + "/sdapi/v1/realesrgan-models")[1]
    assert sorted((m["name"], m["scale"]) for m in realesrgan) == [("RealESRGAN_x4plus_tiny", 4),
                                                                    ("realesr-tiny-x2", 2)]
    assert [m["name"] for m in call(api_url + "/sdapi/v1/latent-upscale-modes")[1]][0] == "Latent"
    assert "Lanczos" not in [m["name"] for m in call(api_url + "/sdapi/v1/latent-upscale-modes")[1]]
    assert call(api_url + "/sdapi/v1/options")[1]["ESRGAN_tile"] == 32


def test_api_extras_and_hires_run_the_model(api_url):
    src = smooth_picture(20, 12)
    status, answer, _ = call(api_url + "/sdapi/v1/extra-single-image",
                             {"image": b64_png(src), "upscaling_resize": 2, "upscaler_1": "SwinIR_x2_tiny"})
    assert status == 200, answer
    assert picture(answer["image"]).size == (40, 24) and "Postprocess upscaler: SwinIR_x2_tiny" in answer["html_info"]
    status, answer, _ = call(api_url + "/sdapi/v1/txt2img", {
        "prompt": "a red circle", "width": 32, "height": 32, "steps": 2, "seed": 3, "enable_hr": True,
        "hr_scale": 2, "hr_upscaler": "4x-TinySafe", "hr_second_pass_steps": 2, "denoising_strength": 0.5})
    assert status == 200, answer
    assert picture(answer["images"][0]).size == (64, 64)
    assert json.loads(answer["info"])["extra_generation_params"]["Hires upscaler"] == "4x-TinySafe"
    status, answer, _ = call(api_url + "/sdapi/v1/txt2img", {"prompt": "x", "enable_hr": True,
                                                             "hr_upscaler": "4x-Missing"})
    assert status == 422 and "4x-Missing" in answer["detail"]


def test_upscaler_for_img2img_enlarges_the_input(services, tmp_path):
    from modules.generation import Img2ImgRequest, process_img2img

    src = smooth_picture(16, 16)
    ctx = job_context(services, tmp_path)
    ctx.options.upscaler_for_img2img = "realesr-tiny-x2"
    req = Img2ImgRequest(prompt="x", init_images=[src], width=32, height=32, denoising_strength=0, save_images=False)
    res = process_img2img(req, ctx)
    expected = services.context.upscalers.upscale("realesr-tiny-x2", src, (32, 32))
    assert np.array_equal(np.asarray(res.images[0]), np.asarray(expected))
    assert not np.array_equal(np.asarray(expected), np.asarray(src.resize((32, 32), Image.LANCZOS)))
    ctx.options.upscaler_for_img2img = "R-ESRGAN 4x+"
    res = process_img2img(req, ctx)
    assert res.warnings == ["upscaler_for_img2img: unknown upscaler 'R-ESRGAN 4x+'; Lanczos used instead"]
    assert np.array_equal(np.asarray(res.images[0]), np.asarray(src.resize((32, 32), Image.LANCZOS)))
