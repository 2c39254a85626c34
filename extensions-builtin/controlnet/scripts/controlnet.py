"""ControlNet, built in: an always-on script with the A1111 ControlNet extension's name ("controlnet"), units and
API, on our ControlNet modules (modules/models/controlnet.py, modules/postprocessing/control_preprocessors.py,
modules/generation/control.py) and the sampler's ControlSet.

API clients send `alwayson_scripts: {"controlnet": {"args": [unit, ...]}}` with the extension's unit fields;
the routes `/controlnet/version`, `/controlnet/model_list`, `/controlnet/module_list` and `/controlnet/settings`
answer as the extension's do.
"""
from __future__ import annotations

import base64
import io
from pathlib import Path

import gradio as gr
from PIL import Image

from modules import paths, script_callbacks, scripts, shared
from modules.generation import GenerationError
from modules.generation.control import (
    RESIZE_MODES,
    ControlNetUnitRequest,
    prepare_units,
    unit_from_dict,
)
from modules.generation.requests import check_picture
from modules.models.controlnet import ControlNetCache, list_controlnets
from modules.postprocessing.control_preprocessors import PREPROCESSORS, find_preprocessor
from modules.sampling.denoiser import CONTROL_MODES
from modules.ui import create_refresh_button

UNIT_COUNT = 3  # the extension's default "Multi-ControlNet: ControlNet unit number"
API_VERSION = 2  # what /controlnet/version answers
UNIT_CONTROLS = ("enabled", "image", "module", "model", "weight", "guidance_start", "guidance_end", "control_mode",
                 "resize_mode", "pixel_perfect", "processor_res", "threshold_a", "threshold_b")

cache = ControlNetCache(size=2)


def model_folders() -> list[Path]:
    """Where ControlNet files are looked for: models/ControlNet (ours and the A1111 extension's folder)."""
    data = Path(paths.data_path)
    return [data / "models" / "ControlNet", data / "extensions" / "sd-webui-controlnet" / "models",
            paths.REPO_ROOT / "models" / "ControlNet"]


def model_files():
    return list_controlnets(model_folders())


def model_titles() -> list[str]:
    return ["None", *(f.title for f in model_files())]


def decode_picture(data: str, what: str) -> Image.Image:
    """A base64 picture (a data: URL prefix allowed), its size checked from the header before decoding."""
    if data.startswith("data:"):
        data = data.split(",", 1)[-1]
    try:
        picture = Image.open(io.BytesIO(base64.b64decode(data, validate=False)))
        check_picture(what, picture)
        picture.load()
    except GenerationError:
        raise
    except Exception as e:  # noqa: BLE001 - whatever PIL says of bytes that are not a picture
        raise GenerationError(f"{what}: not a readable base64 picture ({e})") from e
    return picture


def unit_requests(values) -> list[ControlNetUnitRequest]:
    """The units as the page (a dict per unit) or the API (the extension's objects) gave them."""
    units = []
    for index, value in enumerate(values):
        if value is None:
            continue
        units.append(value if isinstance(value, ControlNetUnitRequest) else unit_from_dict(value, decode_picture,
                                                                                         index))
    return units


def preprocessor_sliders(name: str) -> list[dict]:
    """The three sliders as the chosen preprocessor names them, at its defaults; hidden where it has none. Their
    minimum stays -1 (the preprocessor's default, as in the API): the page may still send -1 while it updates."""
    try:
        sliders = find_preprocessor(name).sliders
    except ValueError:
        sliders = (None, None, None)
    return [gr.update(visible=False, value=-1) if s is None else
            gr.update(visible=True, label=s.label, maximum=s.maximum, step=s.step, value=s.default) for s in sliders]


class ControlNetScript(scripts.Script):
    sorting_priority = 10

    def title(self):
        return "ControlNet"

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def ui(self, is_img2img):
        tab = "img2img" if is_img2img else "txt2img"
        states = []
        with gr.Accordion("ControlNet", open=False, elem_id=f"{tab}_controlnet"):
            with gr.Tabs():
                for index in range(UNIT_COUNT):
                    with gr.Tab(f"ControlNet Unit {index}", elem_id=f"{tab}_controlnet_unit_{index}"):
                        states.append(self._unit_controls(tab, index))
        return states

    def _unit_controls(self, tab: str, index: int) -> gr.State:
        prefix = f"{tab}_controlnet_ControlNet-{index}"
        with gr.Row():
            enabled = gr.Checkbox(False, label="Enable", elem_id=f"{prefix}_enable_checkbox")
            pixel_perfect = gr.Checkbox(False, label="Pixel Perfect", elem_id=f"{prefix}_pixel_perfect_checkbox")
        image = gr.Image(type="pil", label="Image", elem_id=f"{prefix}_input_image", height=240)
        with gr.Row():
            module = gr.Dropdown([p.label for p in PREPROCESSORS.values()], value="none", label="Preprocessor",
                                 elem_id=f"{prefix}_preprocessor")
            model = gr.Dropdown(model_titles(), value="None", label="Model", elem_id=f"{prefix}_model")
            create_refresh_button(model, lambda: None, lambda: {"choices": model_titles()},
                                  f"{prefix}_refresh_models")
        with gr.Row():
            weight = gr.Slider(0, 2, value=1, step=0.05, label="Control Weight", elem_id=f"{prefix}_control_weight")
            start = gr.Slider(0, 1, value=0, step=0.01, label="Starting Control Step", elem_id=f"{prefix}_start")
            end = gr.Slider(0, 1, value=1, step=0.01, label="Ending Control Step", elem_id=f"{prefix}_end")
        with gr.Row():  # the chosen preprocessor's own sliders (names, ranges, defaults), hidden when it has none
            resolution = gr.Slider(-1, 2048, value=-1, step=8, label="Preprocessor Resolution", visible=False,
                                   elem_id=f"{prefix}_processor_res")
            threshold_a = gr.Slider(-1, 256, value=-1, step=1, label="Threshold A", visible=False,
                                    elem_id=f"{prefix}_threshold_A")
            threshold_b = gr.Slider(-1, 256, value=-1, step=1, label="Threshold B", visible=False,
                                    elem_id=f"{prefix}_threshold_B")
        module.change(preprocessor_sliders, inputs=module, outputs=[resolution, threshold_a, threshold_b],
                      queue=False, api_visibility="private")
        control_mode = gr.Radio(list(CONTROL_MODES), value=CONTROL_MODES[0], label="Control Mode",
                                elem_id=f"{prefix}_control_mode_radio")
        resize_mode = gr.Radio(list(RESIZE_MODES), value=RESIZE_MODES[1], label="Resize Mode",
                               elem_id=f"{prefix}_resize_mode_radio")
        controls = [enabled, image, module, model, weight, start, end, control_mode, resize_mode, pixel_perfect,
                    resolution, threshold_a, threshold_b]
        state = gr.State(None)
        gr.on([c.change for c in controls], lambda *values: dict(zip(UNIT_CONTROLS, values)), inputs=controls,
              outputs=state, queue=False, api_visibility="private")
        return state

    def process(self, p, *units):
        p.control_units = []
        requests = [u for u in unit_requests(units) if u.enabled]
        if not requests:
            return
        init = p.init_images[0] if getattr(p, "init_images", None) else None
        prepared = prepare_units(requests, p.width, p.height, shared.sd_model, cache, model_files(), init,
                                 getattr(p, "image_mask", None), seed=int(p.seed))
        p.control_units = prepared.units
        p.extra_generation_params.update(prepared.params)


def on_app_started(demo, app):
    @app.get("/controlnet/version")
    def version():
        return {"version": API_VERSION}

    @app.get("/controlnet/model_list")
    def model_list():
        return {"model_list": [f.title for f in model_files()]}

    @app.get("/controlnet/module_list")
    def module_list(alias_names: bool = False):
        names = [p.label if alias_names else p.name for p in PREPROCESSORS.values()]
        detail = {(p.label if alias_names else p.name): {"model_free": True, "sliders": p.api_sliders()}
                  for p in PREPROCESSORS.values()}
        return {"module_list": names, "module_detail": detail}

    @app.get("/controlnet/settings")
    def settings():
        return {"control_net_unit_count": UNIT_COUNT}


script_callbacks.on_app_started(on_app_started)
