"""Infotext written as A1111 writes it, and pasted back as A1111 pastes it: the parse and map functions, then the
page's own paste mapping (the controls of a built txt2img/img2img tab, turned into a request as Gradio would)
reproducing a picture exactly. The same round trip in a real browser is in test_browser_paste.py."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
from PIL import Image

from modules import infotext_utils
from modules.conditioning.styles import PromptStyle
from modules.generation import Img2ImgRequest, Txt2ImgRequest
from modules.options import Options
from modules.ui.paste import PasteContext, option_overrides, paste_outputs, values_from_infotext

SKIP = gr.skip()  # an update that changes nothing: the control is left as it is


# ---- parsing and settings ----

def test_a_hires_infotext_parses_to_the_first_pass_size_and_the_hires_keys():
    text = ("a castle\nNegative prompt: fog\nSteps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, "
            "Seed: 5, Size: 512x768, Denoising strength: 0.45, Hires upscale: 1.5, Hires steps: 10, "
            "Hires upscaler: Latent (bicubic), Hires sampler: Euler, Hires schedule type: Exponential, "
            'Hires prompt: "a castle, detailed", Clip skip: 2, ENSD: 31337, Schedule rho: 5.0')
    p = infotext_utils.parse_generation_parameters(text)
    assert (p["Size-1"], p["Size-2"], p["Hires upscale"], p["Hires steps"]) == ("512", "768", "1.5", "10")
    assert (p["Hires upscaler"], p["Hires sampler"], p["Hires schedule type"]) == ("Latent (bicubic)", "Euler",
                                                                                 "Exponential")
    assert p["Hires prompt"] == "a castle, detailed" and p["Hires negative prompt"] == ""
    assert (p["Hires resize-1"], p["Hires resize-2"]) == (0, 0)


def test_the_2022_first_pass_size_becomes_size_and_hires_resize():
    p = infotext_utils.parse_generation_parameters("x\nSteps: 20, Seed: 1, Size: 1024x1024, First pass size: 0x0")
    assert (p["Size-1"], p["Size-2"], p["Hires resize-1"], p["Hires resize-2"]) == ("512", "512", "1024", "1024")
    p = infotext_utils.parse_generation_parameters("x\nSteps: 20, Seed: 1, Size: 768x512, First pass size: 384x256")
    assert (p["Size-1"], p["Size-2"], p["Hires resize-1"], p["Hires resize-2"]) == ("384", "256", "768", "512")


def test_settings_named_by_an_infotext_become_overrides_when_they_differ():
    opts = Options(CLIP_stop_at_last_layers=2)
    params = {"Clip skip": "2", "ENSD": "31337", "Schedule max sigma": "10", "Schedule rho": "5.5", "RNG": "CPU",
              "Discard penultimate sigma": "True", "Schedule min sigma": "nonsense", "Eta": "0.5"}
    found = infotext_utils.settings_from_params(params, opts)
    assert found == [("ENSD", "eta_noise_seed_delta", 31337), ("Schedule max sigma", "sigma_max", 10.0),
                     ("Schedule rho", "rho", 5.5), ("Eta", "eta_ancestral", 0.5),
                     ("Discard penultimate sigma", "always_discard_next_to_last_sigma", True),
                     ("RNG", "randn_source", "CPU")]  # clip skip is already 2; a bad number is left out
    texts = [infotext_utils.override_text(k, v) for k, _, v in found] + ["no colon", "Unknown: 3", "ENSD: -4"]
    assert infotext_utils.overrides_from_texts(texts) == {
        "eta_noise_seed_delta": 31337, "sigma_max": 10.0, "rho": 5.5, "eta_ancestral": 0.5,
        "always_discard_next_to_last_sigma": True, "randn_source": "CPU"}


def test_the_checkpoint_override_needs_the_setting_off():
    entries = ["Model hash: abc123", "VAE: my.vae.pt", "Clip skip: 3"]
    assert option_overrides(entries, Options()) == ({"CLIP_stop_at_last_layers": 3}, {"sd_vae": "my.vae.pt"})
    assert option_overrides(entries, Options(disable_weights_auto_swap=False)) == (
        {"CLIP_stop_at_last_layers": 3}, {"sd_model_checkpoint": "abc123", "sd_vae": "my.vae.pt"})
    assert option_overrides(None, Options()) == ({}, {})


# ---- the page's mapping, on tabs built over a stub worker ----

@pytest.fixture(scope="module")
def stub_tabs(tmp_path_factory):
    from modules.ui.generation import build_img2img, build_txt2img
    from modules.ui.networks import PreviewFiles
    from tests.test_ui_helpers import _stub_worker
    worker = _stub_worker(tmp_path_factory.mktemp("stub"))
    worker.ctx.options = Options()
    with gr.Blocks():
        return build_txt2img(worker, PreviewFiles()), build_img2img(worker, PreviewFiles())


def pasted(text: str, tab: dict, ctx: PasteContext | None = None) -> dict:
    """What pasting `text` puts into each control of `tab`, by elem_id."""
    return {c.elem_id: v for c, v in zip(paste_outputs(tab), values_from_infotext(text, tab, ctx or
                                                                                   PasteContext(Options())))}


def test_pasting_a_hires_infotext_turns_hires_fix_on_and_fills_it(stub_tabs):
    t2i, _ = stub_tabs
    text = ("a castle\nSteps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 5, Size: 512x768, "
            "Denoising strength: 0.45, Hires resize: 1024x0, Hires upscaler: Lanczos, Hires sampler: Euler, "
            "Hires schedule type: Exponential, Hires negative prompt: blur, Clip skip: 2, ENSD: 31337, "
            "Schedule rho: 5.0, Tiling: True, Seed resize from: 320x256, Variation seed: 9, "
            "Variation seed strength: 0.25, Model hash: abc123")
    v = pasted(text, t2i)
    assert (v["txt2img_enable_hr"], v["txt2img_denoising_strength"], v["txt2img_hr_upscaler"]) == (True, 0.45,
                                                                                                   "Lanczos")
    assert (v["txt2img_hr_resize_x"], v["txt2img_hr_resize_y"], v["txt2img_hires_steps"]) == (1024, 0, 0)
    assert v["txt2img_hr_scale"] == SKIP  # no "Hires upscale": left as it is
    assert (v["hr_sampler"], v["hr_scheduler"], v["hires_prompt"], v["hires_neg_prompt"]) == (
        "Euler", "Exponential", "", "blur")
    assert (v["txt2img_width"], v["txt2img_height"], v["txt2img_scheduler"], v["txt2img_tiling"]) == (512, 768,
                                                                                                     "Karras", True)
    assert (v["txt2img_seed_resize_from_w"], v["txt2img_seed_resize_from_h"], v["txt2img_subseed"],
            v["txt2img_subseed_strength"]) == (320, 256, 9, 0.25)
    assert v["txt2img_refiner_checkpoint"] == "None"  # no refiner in the text: the refiner is switched off
    override = v["txt2img_override_settings"]
    # settings become per-job overrides; the checkpoint only with disable_weights_auto_swap off (and a match)
    assert override["value"] == ["Clip skip: 2", "ENSD: 31337", "Schedule rho: 5.0"] and override["visible"]

    plain = pasted("a castle\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 5, Size: 512x512", t2i)
    assert plain["txt2img_enable_hr"] is False and plain["txt2img_hires_steps"] == SKIP
    assert plain["hr_sampler"] == "Use same sampler" and plain["hr_scheduler"] == "Use same scheduler"
    assert plain["txt2img_scheduler"] == "Automatic"  # A1111 writes none for a sampler without its own schedule
    assert plain["txt2img_override_settings"]["value"] == [] and not plain["txt2img_override_settings"]["visible"]


def test_pasting_an_inpaint_infotext_fills_the_inpaint_options(stub_tabs):
    _, i2i = stub_tabs
    text = ("a boat\nSteps: 12, Sampler: Euler, CFG scale: 5, Seed: 3, Size: 64x64, Denoising strength: 0.35, "
            "Mask blur: 9, Mask mode: Inpaint not masked, Masked content: latent noise, Inpaint area: Only masked, "
            "Masked area padding: 16")
    v = pasted(text, i2i)
    assert (v["img2img_denoising_strength"], v["img2img_mask_blur"], v["img2img_mask_mode"],
            v["img2img_inpainting_fill"], v["img2img_inpaint_full_res"], v["img2img_inpaint_full_res_padding"]) == (
        0.35, 9, "Inpaint not masked", "latent noise", "Only masked", 16)
    assert "txt2img_enable_hr" not in v and "hr_sampler" not in v  # txt2img's fields are not on this tab
    # the radio buttons hand Gradio's index to the request
    assert i2i["request_inputs"]["inpainting_fill"].preprocess("latent noise") == 2


def test_styles_found_in_the_prompt_are_selected_again(stub_tabs, tmp_path):
    from modules.conditioning.styles import StyleDatabase
    t2i, _ = stub_tabs
    db = StyleDatabase(tmp_path / "styles.csv")
    db.save_style(PromptStyle("ink", "{prompt}, ink drawing", "colour"))
    text = "a fox, ink drawing\nNegative prompt: blurry, colour\nSteps: 4, Sampler: Euler, CFG scale: 5, Seed: 1"
    v = pasted(text, t2i, PasteContext(Options(), db))
    assert (v["txt2img_prompt"], v["txt2img_neg_prompt"], v["txt2img_styles"]) == ("a fox", "blurry", ["ink"])
    v = pasted("a fox\nSteps: 4, Sampler: Euler, CFG scale: 5, Seed: 1", t2i, PasteContext(Options(), db))
    assert v["txt2img_styles"] == SKIP  # A1111's "Apply if any"


# ---- the whole round trip through the page's mapping, on the tiny models ----

@pytest.fixture(scope="module")
def services(make_services, tiny_dir):
    s = make_services(Options(sd_checkpoints_limit=4, randn_source="CPU"), "--ckpt-dir", str(tiny_dir))
    s.context.styles.save_style(PromptStyle("ink", "{prompt}, ink drawing", "colour"))
    return s


@pytest.fixture(scope="module")
def tabs(services):
    from modules.ui.generation import build_img2img, build_txt2img
    from modules.ui.networks import PreviewFiles
    with gr.Blocks():
        return build_txt2img(services.worker, PreviewFiles(), 64), build_img2img(services.worker, PreviewFiles(), 64)


def request_from_page(text: str, tab: dict, cls, **computed):
    """Paste `text` into a fresh tab and build the request (and overrides) its Generate button would send: each
    control's pasted value (or its default) through the control's own preprocess, as Gradio hands them over."""
    from modules.ui.generation import build_request, txt2img_request
    values = dict(zip(map(id, paste_outputs(tab)), values_from_infotext(text, tab)))

    def value_of(component):
        v = values.get(id(component), component.value)
        if v == SKIP:
            v = component.value
        if isinstance(v, dict):  # gr.update(...)
            v = v.get("value", component.value)
        return component.preprocess(v)

    fields = {name: value_of(c) for name, c in tab["request_inputs"].items()}
    overrides, models = option_overrides(value_of(tab["override_settings"]), tab["worker"].ctx.options)
    req = txt2img_request(fields) if cls is Txt2ImgRequest else build_request(cls, fields, **computed)
    return req, overrides, models


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def test_every_txt2img_parameter_round_trips_through_paste(services, tabs):
    t2i, _ = tabs
    services.models.load("tiny-sdxl")
    first = Txt2ImgRequest(
        prompt="a red [circle:square:0.5]", negative_prompt="blue", styles=["ink"], seed=4242, subseed=77,
        subseed_strength=0.3, seed_resize_from_w=56, seed_resize_from_h=40, sampler_name="Euler a",
        scheduler="Karras", steps=5, cfg_scale=6.5, width=64, height=72, tiling=True, enable_hr=True, hr_scale=1.5,
        hr_upscaler="Latent (bicubic)", hr_second_pass_steps=3, denoising_strength=0.6, hr_sampler_name="Euler",
        hr_scheduler="Exponential", hr_prompt="a hires circle", hr_negative_prompt="green",
        refiner_checkpoint="tiny-sdxl-refiner", refiner_switch_at=0.6, save_images=False)
    settings = {"CLIP_stop_at_last_layers": 2, "eta_noise_seed_delta": 31337, "sigma_max": 10.0, "rho": 5.0}
    made = services.worker.run(first, option_overrides=settings)
    text = made.infotexts[0]
    assert made.images[0].size == (96, 104)
    for part in ("Size: 64x72", "Hires upscale: 1.5", "Hires steps: 3", "Hires upscaler: Latent (bicubic)",
                 "Denoising strength: 0.6", "Hires sampler: Euler", "Hires schedule type: Exponential",
                 "Schedule type: Karras", "Clip skip: 2", "ENSD: 31337", "Schedule max sigma: 10.0",
                 "Schedule rho: 5.0", "Refiner: tiny-sdxl-refiner.safetensors [", "Refiner switch at: 0.6",
                 "Variation seed: 77", "Seed resize from: 56x40", "Tiling", "Hires prompt: a hires circle"):
        assert part in text

    req, overrides, models = request_from_page(text, t2i, Txt2ImgRequest)
    assert overrides == settings and models == {}
    assert req.styles == ["ink"] and req.prompt == first.prompt
    assert req.refiner_checkpoint == "tiny-sdxl-refiner.safetensors"  # the dropdown's entry for that file
    again = services.worker.run(replace(req, save_images=False), option_overrides=overrides)
    assert again.infotexts[0] == text
    assert np.array_equal(pixels(again.images[0]), pixels(made.images[0]))


def test_automatic_is_written_as_the_schedule_used(services):
    services.models.load("tiny-sd1")
    common = dict(prompt="x", steps=2, width=32, height=32, seed=1, save_images=False)
    text = services.worker.run(Txt2ImgRequest(sampler_name="DPM++ 2M", **common)).infotexts[0]
    assert "Sampler: DPM++ 2M, Schedule type: Karras," in text  # as A1111: the sampler's own schedule
    text = services.worker.run(Txt2ImgRequest(sampler_name="Euler a", **common)).infotexts[0]
    assert "Sampler: Euler a, Schedule type: Automatic," in text
    text = services.worker.run(Txt2ImgRequest(sampler_name="DPM++ 2M", enable_hr=True, hr_sampler_name="Euler a",
                                              **common)).infotexts[0]
    assert "Hires sampler: Euler a, Hires schedule type: Automatic" in text


def test_an_inpaint_round_trips_with_denoising_and_mask_blur(services, tabs):
    _, i2i = tabs
    services.models.load("tiny-sd1")
    source = Image.fromarray(np.random.default_rng(3).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (12, 12, 36, 30))
    first = Img2ImgRequest(prompt="a pond", init_images=[source], mask=mask, mask_blur=7, denoising_strength=0.55,
                           inpainting_fill=0, inpaint_full_res=True, inpaint_full_res_padding=8, width=64, height=64,
                           steps=4, seed=99, sampler_name="Euler", cfg_scale=4.5, save_images=False)
    made = services.worker.run(first)
    text = made.infotexts[0]
    for part in ("Denoising strength: 0.55", "Mask blur: 7", "Masked content: fill", "Inpaint area: Only masked",
                 "Masked area padding: 8"):
        assert part in text
    req, overrides, _ = request_from_page(text, i2i, Img2ImgRequest, init_images=[source], mask=mask)
    assert (req.mask_blur, req.denoising_strength, req.inpainting_fill, req.inpaint_full_res,
            req.inpaint_full_res_padding) == (7, 0.55, 0, True, 8)
    again = services.worker.run(req)
    assert again.infotexts[0] == text and np.array_equal(pixels(again.images[0]), pixels(made.images[0]))


def test_a_pasted_checkpoint_is_used_for_that_job_only_when_the_setting_allows(services, tabs):
    t2i, _ = tabs
    services.models.load("tiny-sdxl")
    common = dict(prompt="x", steps=2, width=64, height=64, seed=1, sampler_name="Euler", save_images=False)
    text = services.worker.run(Txt2ImgRequest(**common)).infotexts[0]
    services.models.load("tiny-sd1")
    _, overrides, models = request_from_page(text, t2i, Txt2ImgRequest)
    assert models == {}  # disable_weights_auto_swap is on by default, as in A1111
    services.options.disable_weights_auto_swap = False
    try:
        req, overrides, models = request_from_page(text, t2i, Txt2ImgRequest)
    finally:
        services.options.disable_weights_auto_swap = True
    assert list(models) == ["sd_model_checkpoint"]
    again = services.worker.run(req, option_overrides=overrides, models=models)
    assert "Model: tiny-sdxl," in again.infotexts[0]
    assert services.models.current.file.name == "tiny-sd1.safetensors"  # put back after the job


def test_the_gallery_infotext_follows_the_selected_picture():
    from modules.ui.generation import selected_info
    last = {"infotexts": ["grid text", "first <b>", "second"], "notes": "<p class='warning'>⚠️ w</p>"}
    assert selected_info(2, last) == "<p>second</p><p class='warning'>⚠️ w</p>"
    assert selected_info(1, last).startswith("<p>first &lt;b&gt;</p>")
    assert selected_info(9, last).startswith("<p>second</p>")
    assert selected_info(0, {}) == SKIP



def test_a_dropped_picture_hands_its_infotext_to_the_prompt_box(tmp_path):
    from modules.generation import saving
    from modules.ui.paste import read_dropped_picture
    text = "a fox\nSteps: 4, Sampler: Euler, CFG scale: 5, Seed: 1, Size: 8x8"
    with_text = saving.save_image(Image.new("RGB", (8, 8)), tmp_path, 1, text)
    assert read_dropped_picture(str(with_text)) == (text, None)
    bare = tmp_path / "bare.png"
    Image.new("RGB", (8, 8)).save(bare)
    with pytest.raises(gr.Error, match="No generation parameters"):
        read_dropped_picture(str(bare))
    (tmp_path / "junk.png").write_bytes(b"not a picture")
    with pytest.raises(gr.Error, match="not a readable picture"):
        read_dropped_picture(str(tmp_path / "junk.png"))


def test_sending_to_another_tab_follows_send_seed_and_send_size(stub_tabs):
    _, i2i = stub_tabs
    text = "a castle\nSteps: 20, Sampler: Euler, Seed: 5, Size: 512x768, Variation seed: 9"
    everything = {c.elem_id: v for c, v in zip(paste_outputs(i2i), values_from_infotext(
        text, i2i, PasteContext(Options()), sending=True))}
    assert (everything["img2img_seed"], everything["img2img_width"], everything["img2img_subseed"]) == (5, 512, 9)
    neither = {c.elem_id: v for c, v in zip(paste_outputs(i2i), values_from_infotext(
        text, i2i, PasteContext(Options(send_seed=False, send_size=False)), sending=True))}
    assert all(neither[k] == SKIP for k in ("img2img_seed", "img2img_subseed", "img2img_width", "img2img_height"))
    assert neither["img2img_steps"] == 20 and neither["img2img_prompt"] == "a castle"


def test_inpaint_not_masked_is_pasted_back(stub_tabs):
    _, i2i = stub_tabs
    v = pasted("x\nSteps: 4, Sampler: Euler, Seed: 1, Size: 64x64, Denoising strength: 0.5, Mask blur: 2, "
               "Mask mode: Inpaint not masked", i2i)
    assert v["img2img_mask_mode"] in (1, "Inpaint not masked")


def test_hires_checkpoint_is_pasted_back():
    from types import SimpleNamespace

    from modules.models.model_files import ModelFile
    from modules.ui.paste import _hires_checkpoint
    other = ModelFile(Path("/m/other.safetensors"), "other.safetensors", "ab" * 32)
    models = SimpleNamespace(find_checkpoint=lambda q: other if other.matches(q) else (_ for _ in ()).throw(
        KeyError(q)), checkpoint_titles=lambda: [other.title])
    ctx = PasteContext(Options(), models=models)
    control = SimpleNamespace(choices=[("Use same checkpoint", "Use same checkpoint"), (other.title, other.title)])
    assert _hires_checkpoint({}, ctx, control) == "Use same checkpoint"  # as A1111: the key missing
    assert _hires_checkpoint({"Hires checkpoint": "other [abababab]"}, ctx, control) is None  # another hash
    assert _hires_checkpoint({"Hires checkpoint": f"other [{other.shorthash}]"}, ctx, control) == other.title


def test_paste_with_an_empty_prompt_takes_the_last_generations_parameters(tmp_path):
    from modules.generation import saving
    from modules.ui.generation import build_txt2img
    from modules.ui.networks import PreviewFiles
    from modules.ui.paste import wire_paste_button
    from tests.test_ui_helpers import _stub_worker
    worker = _stub_worker(tmp_path)
    worker.ctx.outputs_dir = tmp_path / "outputs"
    with gr.Blocks() as demo:
        tab = build_txt2img(worker, PreviewFiles())
        wire_paste_button(tab)
    paste = next(f.fn for f in demo.fns.values() if getattr(f.fn, "__name__", "") == "paste")
    by_id = lambda values: {c.elem_id: v for c, v in zip(paste_outputs(tab), values)}  # noqa: E731
    assert all(v == SKIP for v in paste(""))  # nothing generated yet: nothing changes
    (tmp_path / saving.LAST_PARAMETERS_FILE).write_text("a lighthouse\nSteps: 9, Sampler: Euler, Seed: 77, "
                                                        "Size: 96x64", encoding="utf-8")
    filled = by_id(paste("  "))
    assert (filled["txt2img_prompt"], filled["txt2img_steps"], filled["txt2img_seed"]) == ("a lighthouse", 9, 77)
    assert by_id(paste("a fox\nSteps: 3, Sampler: Euler, Seed: 1"))["txt2img_prompt"] == "a fox"  # pasted text wins
