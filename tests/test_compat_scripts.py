"""A1111's Script API on our job loop, with the test extensions of tests/data/extensions loaded as the program loads
them: always-on scripts joining a job, a selectable script generating several times, broken ones left out."""
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from modules import extensions, processing, scripts, shared
from modules.cmd_args import parse_args
from modules.generation import GenerationError, Img2ImgRequest, Txt2ImgRequest
from modules.generation.services import build_services
from modules.paths import REPO_ROOT, Paths
from modules.scripts import ScriptArgsError

TEST_EXTENSIONS = Path(__file__).parent / "data" / "extensions"


@pytest.fixture(scope="module")
def program(tmp_path_factory, cpu_policy):
    """The program as webui.py starts it, over a data dir holding the test extensions, on the demo model."""
    data = tmp_path_factory.mktemp("scripts-data")
    shutil.copytree(TEST_EXTENSIONS, data / "extensions")
    args = parse_args(["--data-dir", str(data), "--prompt-suffix-default", "drawn by the test"])
    paths = Paths.from_args(args)
    paths.ensure()
    services = build_services(paths, cpu_policy, console_progress=False)
    services.load_initial_checkpoint(None)
    shared.bind(services, args)
    found = extensions.discover(REPO_ROOT / "extensions-builtin", paths.data_dir / "extensions", services.options)
    host = scripts.initialize(extensions.active_extensions(found, services.options, args))
    from modules import script_callbacks
    script_callbacks.ui_settings_callback()
    yield services, host, data
    script_callbacks.clear_callbacks()


def small(**fields) -> Txt2ImgRequest:
    return Txt2ImgRequest(**{"prompt": "a red square", "steps": 3, "width": 64, "height": 64, "seed": 11,
                             "save_images": False, **fields})


def pixels(picture: Image.Image) -> np.ndarray:
    return np.asarray(picture.convert("RGB"), dtype=np.int16)


def test_each_script_file_is_loaded_and_a_broken_one_is_left_out_with_its_error(program):
    _, host, _ = program
    titles = {s.title_safe for s in scripts.scripts_txt2img.scripts}
    assert {"Prompt suffix", "Broken hooks"} <= titles
    assert "Tile redraw" in scripts.scripts_img2img.titles and "Tile redraw" not in scripts.scripts_txt2img.titles
    assert "No module named 'this_module_does_not_exist'" in scripts.load_errors["broken-import"]
    assert host.script_names()["img2img"][-1] == "tile redraw"


def test_an_always_on_script_rewrites_the_prompts_with_its_setting_and_the_flag_from_preload(program):
    services, host, _ = program
    plain = services.worker.run(small())
    assert shared.opts.prompt_suffix_text == "drawn by the test"  # default from the flag preload.py added
    runner = host.api_runner("txt2img", None, [], {"Prompt suffix": {"args": [True]}})
    result = services.worker.run(small(), runner=runner)
    text = result.infotexts[0]
    assert text.startswith("a red square, drawn by the test\n") and "Prompt suffix: drawn by the test" in text
    assert result.all_prompts == ["a red square, drawn by the test"]
    assert not np.array_equal(pixels(plain.images[0]), pixels(result.images[0]))  # the prompt really changed
    # switched off (its default), the scripts leave the job alone: the same picture as without any script
    off = services.worker.run(small(), runner=host.api_runner("txt2img", None, [], {}))
    assert np.array_equal(pixels(plain.images[0]), pixels(off.images[0]))
    assert off.infotexts == plain.infotexts


def test_an_extension_setting_is_saved_with_ours_and_read_back(program):
    services, _, _ = program
    shared.opts.prompt_suffix_text = "in ink"
    shared.opts.save()
    saved = services.paths.config_file.read_text(encoding="utf-8")
    assert '"prompt_suffix_text": "in ink"' in saved and '"sd_model_checkpoint"' in saved
    shared.opts.prompt_suffix_text = "drawn by the test"


def test_scripts_that_raise_in_hooks_do_not_stop_the_job(program, caplog):
    services, host, _ = program
    plain = services.worker.run(small(seed=12))
    result = services.worker.run(small(seed=12), runner=host.api_runner("txt2img", None, [], {}))
    assert np.array_equal(pixels(plain.images[0]), pixels(result.images[0]))
    assert "postprocess_image() of script Broken hooks" in caplog.text
    assert "process() of script Broken hooks" in caplog.text


def test_a_selectable_img2img_script_redraws_tiles_with_process_images_and_saves_with_images_save_image(program):
    services, host, data = program
    source = Image.new("RGB", (64, 64), (180, 40, 40))
    req = Img2ImgRequest(prompt="a red square", steps=3, width=64, height=64, seed=5, denoising_strength=0.4,
                         init_images=[source])
    runner = host.api_runner("img2img", "Tile redraw", ["Lanczos", 2, 64], {})
    result = services.worker.run(req, runner=runner)
    [picture] = result.images
    assert picture.size == (128, 128)
    saved = sorted((data / "outputs" / "img2img-images").rglob("*.png"))
    assert saved, "images.save_image wrote nothing"
    with Image.open(saved[-1]) as written:
        assert written.size == (128, 128)
        assert written.info["parameters"].startswith("a red square\n")
        assert np.array_equal(pixels(written), pixels(picture))


def test_process_images_outside_a_job_waits_its_turn_and_keeps_the_request_fields(program):
    services, _, _ = program
    p = processing.StableDiffusionProcessingTxt2Img(prompt="a blue circle", steps=3, width=64, height=64, seed=21,
                                                     sampler_name="Euler a", cfg_scale=5, do_not_save_samples=True)
    processed = processing.process_images(p)
    assert processed.seed == 21 and p.all_seeds == [21]
    assert "Sampler: Euler a" in processed.infotexts[0] and "CFG scale: 5" in processed.infotexts[0]
    alone = services.worker.run(small(prompt="a blue circle", seed=21, sampler_name="Euler a", cfg_scale=5.0))
    assert np.array_equal(pixels(processed.images[0]), pixels(alone.images[0]))


@pytest.mark.usefixtures("program")
def test_prompts_and_seeds_may_be_lists_one_per_picture():
    p = processing.StableDiffusionProcessingTxt2Img(prompt=["a red square", "a blue circle"], seed=[3, 4], steps=3,
                                                     width=64, height=64, batch_size=2, do_not_save_samples=True)
    processed = processing.process_images(p)
    assert processed.all_prompts == ["a red square", "a blue circle"] and processed.all_seeds == [3, 4]
    pictures = processed.infotexts[processed.index_of_first_image:]  # after the grid, as A1111's
    assert [t.split("\n")[0] for t in pictures] == ["a red square", "a blue circle"]


@pytest.mark.usefixtures("program")
def test_a_script_changing_p_in_process_changes_the_job():
    class Steps(scripts.Script):
        def title(self):
            return "Steps"

        def process(self, p):
            p.steps = 2
            p.extra_generation_params["Changed by"] = "a script"

    runner = scripts.ScriptRunner()
    script = Steps()
    script.args_from = script.args_to = 1
    runner.alwayson_scripts = [script]
    p = processing.StableDiffusionProcessingTxt2Img(prompt="a red square", steps=5, width=64, height=64, seed=2,
                                                     do_not_save_samples=True)
    p.scripts, p.script_args = runner, (0,)
    processed = processing.process_images(p)
    assert "Steps: 2," in processed.infotexts[0] and "Changed by: a script" in processed.infotexts[0]


def test_script_requests_are_checked_as_a1111_checks_them(program):
    _, host, _ = program
    with pytest.raises(ScriptArgsError, match="Script 'nothing' not found"):
        host.api_runner("txt2img", "nothing", [], {})
    with pytest.raises(ScriptArgsError, match="always on script nothing not found"):
        host.api_runner("txt2img", None, [], {"nothing": {"args": []}})
    with pytest.raises(ScriptArgsError, match="selectable script"):
        host.api_runner("img2img", None, [], {"Tile redraw": {"args": []}})
    assert host.api_runner("txt2img", None, [], {}) is not None  # always-on scripts join every job


def test_script_info_describes_each_argument(program):
    _, host, _ = program
    info = {(s["name"], s["is_img2img"]): s for s in host.script_info()}
    tile = info[("tile redraw", True)]
    assert tile["is_alwayson"] is False
    assert [a["label"] for a in tile["args"]] == ["Upscaler", "Scale", "Tile size"]
    assert tile["args"][1]["minimum"] == 1 and tile["args"][1]["maximum"] == 4
    assert info[("prompt suffix", False)]["args"][0]["value"] is False


@pytest.mark.usefixtures("program")
def test_a_bad_value_from_a_script_is_a_clear_error():
    p = processing.StableDiffusionProcessingTxt2Img(prompt="x", steps="many", width=64, height=64)
    with pytest.raises(GenerationError, match="steps"):
        processing.process_images(p)


@pytest.mark.usefixtures("program")
def test_sd_upscalers_and_the_model_view():
    names = [u.name for u in shared.sd_upscalers]
    assert names[:2] == ["None", "Lanczos"] and "2x-builtin-compact" in names
    up = next(u for u in shared.sd_upscalers if u.name == "Lanczos")
    assert up.scaler.upscale(Image.new("RGB", (32, 24)), 2, up.data_path).size == (64, 48)
    model = shared.sd_model
    assert model.is_sdxl is False and model.sd_checkpoint_info.model_name == "demo-shapes"
    assert isinstance(shared.device, torch.device)


def test_an_extras_script_changes_each_picture_after_upscaling(program):
    services, host, _ = program
    from modules.generation.extras import ExtrasRequest
    source = Image.new("RGB", (32, 32), (200, 100, 0))
    req = ExtrasRequest(upscaler_1="Lanczos", upscaling_resize=2, save=False)
    [plain], _, _ = services.worker.run_extras([source], req, postprocess=host.extras_postprocess())
    assert plain.getpixel((5, 5)) == (200, 100, 0)  # its checkbox is off by default
    [inverted], [text], _ = services.worker.run_extras([source], req, postprocess=host.extras_postprocess([True]))
    assert inverted.size == (64, 64) and inverted.getpixel((5, 5)) == (55, 155, 255)
    assert "Inverted: True" in text


def test_cfg_callbacks_see_every_model_call_and_may_change_the_result(program):
    from modules import script_callbacks
    services, host, _ = program
    seen = []

    def record(params):
        seen.append((params.sampling_step, params.total_sampling_steps, tuple(params.x.shape)))

    def darken(params):
        params.x = params.x - 0.5  # in latent space: a visibly different picture

    script_callbacks.on_cfg_denoiser(record)
    try:
        plain = services.worker.run(small(sampler_name="Euler"), runner=host.api_runner("txt2img", None, [], {}))
        assert [s[:2] for s in seen] == [(0, 3), (1, 3), (2, 3)] and seen[0][2][0] == 1
        script_callbacks.on_cfg_after_cfg(darken)
        changed = services.worker.run(small(sampler_name="Euler"), runner=host.api_runner("txt2img", None, [], {}))
    finally:
        script_callbacks.remove_callbacks_for_function(record)
        script_callbacks.remove_callbacks_for_function(darken)
    assert not np.array_equal(pixels(plain.images[0]), pixels(changed.images[0]))


def test_image_saved_callbacks_see_each_picture_written_and_may_change_its_text(program):
    from modules import script_callbacks
    services, host, data = program
    written = []

    def stamp(params):
        params.pnginfo["parameters"] += ", Stamped: yes"

    def record(params):
        written.append(params.filename)

    script_callbacks.on_before_image_saved(stamp)
    script_callbacks.on_image_saved(record)
    try:
        result = services.worker.run(small(save_images=True, seed=31), runner=host.api_runner("txt2img", None, [], {}))
    finally:
        script_callbacks.remove_callbacks_for_function(stamp)
        script_callbacks.remove_callbacks_for_function(record)
    assert [str(p) for p in result.paths] == written
    with Image.open(written[0]) as saved:
        assert saved.info["parameters"].endswith(", Stamped: yes")


@pytest.mark.usefixtures("program")
def test_a_script_darkening_the_batch_in_place_darkens_the_pictures():
    class Darken(scripts.Script):
        def title(self):
            return "Darken"

        def postprocess_batch(self, p, *args, **kwargs):
            kwargs["images"].mul_(0)  # A1111 scripts change the decoded batch in place

    runner = scripts.ScriptRunner()
    script = Darken()
    script.args_from = script.args_to = 1
    runner.alwayson_scripts = [script]
    p = processing.StableDiffusionProcessingTxt2Img(prompt="a red square", steps=3, width=64, height=64, seed=2,
                                                     do_not_save_samples=True)
    p.scripts, p.script_args = runner, (0,)
    processed = processing.process_images(p)
    assert not pixels(processed.images[0]).any()


@pytest.mark.usefixtures("program")
def test_components_accept_a1111s_tooltip_keyword():
    import gradio as gr

    from modules import gradio_compat
    gradio_compat.install()  # webui.py installs it before loading extensions
    with gr.Blocks():
        box = gr.Checkbox(label="x", tooltip="what x does")
    assert box.webui_tooltip == "what x does"


def test_a1111s_ui_helpers_and_extension_list_for_extensions():
    import gradio as gr

    from modules import extensions as extension_list
    from modules import shared_services, ui_common
    calls = []
    with gr.Blocks() as demo:
        names = gr.Dropdown(["a"], value="a", label="Names")
        button = ui_common.create_refresh_button(names, lambda: calls.append("refreshed"),
                                                 lambda: {"choices": ["a", "b"]}, "names_refresh")
    [dependency] = [d for d in demo.fns.values() if button._id in [t[0] for t in d.targets]]
    update = dependency.fn()
    assert calls == ["refreshed"] and update["choices"] == ["a", "b"] and names.choices == ["a", "b"]

    found = extension_list.list_extensions(TEST_EXTENSIONS)
    saved = (shared_services.extensions(), [e.name for e in extension_list.active()])
    shared_services.set_extensions(found, ["hello-tab"])
    try:
        assert [e.name for e in extension_list.active()] == ["hello-tab"]
        assert {e.name for e in extension_list.extensions} == {e.name for e in found}
        assert extension_list.active()[0].remote == "" and extension_list.active()[0].canonical_name == "hello-tab"
    finally:
        shared_services.set_extensions(*saved)


def test_script_arguments_outside_their_controls_range_are_refused(program):
    _, host, _ = program
    with pytest.raises(ScriptArgsError, match="Tile redraw: Scale: 1000 is out of range; give 1 to 4"):
        host.api_runner("img2img", "Tile redraw", ["Lanczos", 1000, 64], {})
    with pytest.raises(ScriptArgsError, match="Tile redraw: Tile size: expected a number"):
        host.api_runner("img2img", "Tile redraw", ["Lanczos", 2, "huge"], {})
    assert host.api_runner("txt2img", None, [], {"Prompt suffix": {"args": None}}) is not None  # null args: defaults
