"""The adapters between Gradio values and requests: masks painted in the editor, pasted infotexts, requests
built by field name, and the extra-network cards' preview pictures."""
import dataclasses
import os

import gradio as gr
import pytest
from PIL import Image

from modules.ui.generation import _mask_from_editor
from modules.ui.paste import values_from_infotext


def test_painted_strokes_become_the_mask():
    background = Image.new("RGB", (32, 32), (10, 20, 30))
    strokes = Image.new("RGBA", (32, 32), (0, 0, 0, 0))
    strokes.paste((255, 255, 255, 255), (4, 4, 12, 12))
    image, mask = _mask_from_editor({"background": background, "layers": [strokes], "composite": None})
    assert image.getpixel((0, 0)) == (10, 20, 30)
    assert mask.getpixel((5, 5)) == 255 and mask.getpixel((20, 20)) == 0
    assert _mask_from_editor({"background": background, "layers": [], "composite": None})[1] is None
    assert _mask_from_editor(None) == (None, None)


def test_pasting_an_a1111_infotext_fills_the_fields(tmp_path):
    from modules.options import Options
    from modules.ui.generation import build_txt2img
    from modules.ui.networks import PreviewFiles
    from modules.ui.paste import PasteContext, paste_outputs

    with gr.Blocks():
        tab = build_txt2img(_stub_worker(tmp_path), PreviewFiles())
    ids = [c.elem_id for c in paste_outputs(tab)]

    def paste(text):
        return dict(zip(ids, values_from_infotext(text, tab, PasteContext(Options()))))

    text = ("a cat, (masterpiece:1.2)\nNegative prompt: dog\nSteps: 28, Sampler: DPM++ 2M Karras, CFG scale: 6.5, "
            "Seed: 12345, Size: 512x768, Model hash: 6ce0161689, Variation seed: 7, Variation seed strength: 0.3")
    v = paste(text)
    assert [v[f"txt2img_{k}"] for k in ("prompt", "neg_prompt", "steps", "sampling", "scheduler")] == [
        "a cat, (masterpiece:1.2)", "dog", 28, "DPM++ 2M", "Karras"]
    assert [v[f"txt2img_{k}"] for k in ("cfg_scale", "seed", "width", "height", "subseed", "subseed_strength")] == [
        6.5, 12345, 512, 768, 7, 0.3]
    only_prompt = paste("just words")
    assert only_prompt["txt2img_prompt"] == "just words" and only_prompt["txt2img_steps"] == gr.skip()


def test_a_failing_generation_becomes_a_message():
    from modules.generation import GenerationError
    from modules.ui.generation import stream

    class Failing:
        def __init__(self, error):
            self.error = error

        def run_streaming(self, _req):
            raise self.error
            yield  # pragma: no cover

    *_, (progress, gallery, info, seed) = stream(Failing(RuntimeError("CUDA out of memory. Tried to allocate")), None)
    assert "Generation failed" in info and "--medvram" in info
    *_, (progress, gallery, info, seed) = stream(Failing(GenerationError("width and height must be ...")), None)
    assert "width and height" in info and "Generation failed" not in info


# ---- requests built by field name ----

TXT2IMG_CONTROLS = {  # request field -> elem_id of the control that fills it (A1111's ids)
    "prompt": "txt2img_prompt", "negative_prompt": "txt2img_neg_prompt", "styles": "txt2img_styles",
    "sampler_name": "txt2img_sampling", "scheduler": "txt2img_scheduler", "steps": "txt2img_steps",
    "width": "txt2img_width", "height": "txt2img_height", "n_iter": "txt2img_batch_count",
    "batch_size": "txt2img_batch_size", "cfg_scale": "txt2img_cfg_scale", "seed": "txt2img_seed",
    "subseed": "txt2img_subseed", "subseed_strength": "txt2img_subseed_strength",
    "seed_resize_from_w": "txt2img_seed_resize_from_w", "seed_resize_from_h": "txt2img_seed_resize_from_h",
    "tiling": "txt2img_tiling", "enable_hr": "txt2img_enable_hr", "hr_upscaler": "txt2img_hr_upscaler",
    "hr_second_pass_steps": "txt2img_hires_steps", "denoising_strength": "txt2img_denoising_strength",
    "hr_scale": "txt2img_hr_scale", "hr_resize_x": "txt2img_hr_resize_x", "hr_resize_y": "txt2img_hr_resize_y",
    "hr_checkpoint_name": "hr_checkpoint", "hr_sampler_name": "hr_sampler", "hr_scheduler": "hr_scheduler",
    "hr_prompt": "hires_prompt",
    "hr_negative_prompt": "hires_neg_prompt",
    "refiner_checkpoint": "txt2img_refiner_checkpoint", "refiner_switch_at": "txt2img_refiner_switch_at",
}
IMG2IMG_CONTROLS = {
    **{name: elem_id.replace("txt2img_", "img2img_") for name, elem_id in TXT2IMG_CONTROLS.items()
       if name in ("prompt", "negative_prompt", "styles", "sampler_name", "scheduler", "steps", "width", "height",
                   "n_iter", "batch_size", "cfg_scale", "seed", "subseed", "subseed_strength", "seed_resize_from_w",
                   "seed_resize_from_h", "tiling")},
    "resize_mode": "resize_mode", "mask_blur": "img2img_mask_blur", "inpainting_mask_invert": "img2img_mask_mode",
    "inpainting_fill": "img2img_inpainting_fill", "inpaint_full_res": "img2img_inpaint_full_res",
    "inpaint_full_res_padding": "img2img_inpaint_full_res_padding",
    "denoising_strength": "img2img_denoising_strength",
}


def _stub_worker(tmp_path):
    """Just what building a generation tab asks of the worker: no models, LoRAs, embeddings or styles, only the
    resampling upscalers."""
    from types import SimpleNamespace

    from modules.postprocessing.upscalers import Upscalers
    models = SimpleNamespace(checkpoints=[], checkpoint_titles=list, current=None, refresh=lambda: None,
                             paths=SimpleNamespace(checkpoint_dirs=[tmp_path]))
    from modules.options import Options
    ctx = SimpleNamespace(models=models, loras=None, embeddings=None, styles=None, outputs_dir=tmp_path,
                          options=Options(), upscalers=Upscalers([]))
    return SimpleNamespace(ctx=ctx, interrupt=lambda: None, skip=lambda: None)


def _distinct_value(default, i: int):
    """A value for a field that no other field gets and that differs from the field's default."""
    if isinstance(default, bool):
        return not default
    if isinstance(default, int):
        return 1000 + i
    if isinstance(default, float):
        return 0.5 + i
    if isinstance(default, list):
        return [f"value {i}"]
    return f"value {i}"


@pytest.mark.parametrize("mode", ["txt2img", "img2img"])
def test_each_request_field_is_filled_from_its_own_control(tmp_path, mode):
    from modules.generation import Img2ImgRequest, Txt2ImgRequest
    from modules.ui.generation import build_img2img, build_request, build_txt2img, txt2img_request
    from modules.ui.networks import PreviewFiles

    request_class, build, expected = {
        "txt2img": (Txt2ImgRequest, build_txt2img, TXT2IMG_CONTROLS),
        "img2img": (Img2ImgRequest, build_img2img, IMG2IMG_CONTROLS)}[mode]
    with gr.Blocks():
        tab = build(_stub_worker(tmp_path), PreviewFiles())
    inputs = tab["request_inputs"]
    assert {name: control.elem_id for name, control in inputs.items()} == expected

    defaults = {f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()
                for f in dataclasses.fields(request_class)}
    assert inputs.keys() <= defaults.keys()
    values = {name: _distinct_value(defaults[name], i) for i, name in enumerate(inputs)}
    request = txt2img_request(values) if mode == "txt2img" else build_request(Img2ImgRequest, values)
    assert {name: getattr(request, name) for name in values} == values


def test_control_values_take_their_fields_types():
    from modules.generation import Txt2ImgRequest
    from modules.ui.generation import build_request, txt2img_request

    request = build_request(Txt2ImgRequest, {"steps": 20.0, "seed": None, "prompt": None, "tiling": 1, "cfg_scale": 7,
                                             "styles": ("a", "b")})
    assert (request.steps, request.seed, request.prompt, request.tiling, request.styles) == (20, -1, "", True,
                                                                                               ["a", "b"])
    assert type(request.steps) is int and type(request.cfg_scale) is float
    assert txt2img_request({"refiner_checkpoint": "None"}).refiner_checkpoint is None
    with pytest.raises(TypeError, match="no fields"):
        build_request(Txt2ImgRequest, {"stpes": 20})


# ---- extra-network preview pictures ----

def _card(name: str, preview):
    from modules.ui.networks import Card
    return Card(name, "", "insert", f"<lora:{name}:1>", preview)


def test_cards_link_their_pictures_instead_of_embedding_them(tmp_path):
    from modules.ui.networks import PREVIEW_ROUTE, PreviewFiles, cards_html

    small, large = tmp_path / "small.png", tmp_path / "large.png"
    Image.new("RGB", (8, 8), (1, 2, 3)).save(small)
    Image.frombytes("RGB", (600, 600), os.urandom(600 * 600 * 3)).save(large)
    previews = PreviewFiles()
    pages = []
    for picture in (small, large):
        cards = [_card("pencil", picture)]
        pages.append(cards_html(cards, "txt2img", ("none", None), previews.publish("lora", cards)))
    assert "data:" not in pages[1] and f"<img src='{PREVIEW_ROUTE}/" in pages[1] and "loading='lazy'" in pages[1]
    assert len(pages[0]) == len(pages[1])  # a million bytes of picture add nothing to the page
    assert "extra-network-noimage" in cards_html([_card("bare", None)], "txt2img", ("none", None), {})


def test_only_pictures_of_the_current_listing_are_served(tmp_path):
    from fastapi import HTTPException

    from modules.ui.networks import PreviewFiles

    old, new = tmp_path / "old.png", tmp_path / "new.png"
    for path in (old, new):
        Image.new("RGB", (4, 4)).save(path)
    previews = PreviewFiles()
    old_id = previews.publish("lora", [_card("old", old)])[old]
    assert previews.response(old_id).path == old
    new_id = previews.publish("lora", [_card("new", new)])[new]  # a rescan: "old" is no longer listed
    assert previews.response(new_id).path == new
    for unknown in (old_id, "0" * 24, str(new), "../../etc/passwd", "/etc/passwd", ""):
        with pytest.raises(HTTPException) as e:
            previews.response(unknown)
        assert e.value.status_code == 404


def test_preview_route_needs_the_page_login(tmp_path):
    """With --gradio-auth, the pictures are served to a browser logged in to the page, and to nobody else."""
    from fastapi.testclient import TestClient

    import webui
    from modules.cmd_args import parse_args
    from modules.ui.networks import PREVIEW_ROUTE, PreviewFiles

    picture = tmp_path / "pencil.png"
    Image.new("RGB", (4, 4), (250, 120, 0)).save(picture)
    with gr.Blocks() as demo:
        gr.Markdown("the page")
    demo.extra_network_previews = PreviewFiles()
    demo.download_folders = [tmp_path]
    url = f"/{PREVIEW_ROUTE}/" + demo.extra_network_previews.publish("lora", [_card("pencil", picture)])[picture]
    args = parse_args([])
    client = TestClient(webui.create_server_app(args, webui.WebUI(demo, None, None), [("ann", "secret")]),
                        base_url="http://127.0.0.1")  # a server for this computer only answers to its own names
    assert client.get(url).status_code == 401
    assert client.post("/login", data={"username": "ann", "password": "wrong"}).status_code == 400
    assert client.get(url).status_code == 401
    assert client.post("/login", data={"username": "ann", "password": "secret"}).status_code == 200
    answer = client.get(url)
    assert answer.status_code == 200 and answer.content == picture.read_bytes()
    assert answer.headers["content-type"] == "image/png"


@pytest.mark.parametrize("theme", ["Default", "Soft", "Monochrome"])
def test_the_gradio_theme_setting_is_the_pages_theme(theme):
    from starlette.testclient import TestClient

    import webui
    from modules.cmd_args import parse_args
    from modules.ui.networks import PreviewFiles
    with gr.Blocks() as demo:
        gr.Markdown("the page")
    demo.extra_network_previews, demo.download_folders, demo.gradio_theme = PreviewFiles(), [], theme
    client = TestClient(webui.create_server_app(parse_args([]), webui.WebUI(demo, None, None), None),
                        base_url="http://127.0.0.1")
    assert client.get("/config").json()["theme"] == theme.lower()


def test_the_save_folder_is_offered_for_download_only_when_it_does_not_hold_the_data_folder(tmp_path):
    from modules.options import Options
    from modules.ui.generation import download_folders
    outputs = tmp_path / "data" / "outputs"
    assert download_folders(Options(), outputs) == [outputs / "saved", (tmp_path / "data" / "log" / "images")]
    for everything in (str(tmp_path / "data"), str(tmp_path), "."):
        assert download_folders(Options(outdir_save=everything), outputs) == [outputs / "saved"], everything
