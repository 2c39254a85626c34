"""Filling the generation controls from an infotext (PNG Info's "Send to", and the ↙️ button)."""
from __future__ import annotations

import html

import gradio as gr

from modules import infotext_utils
from modules.generation import saving

# infotext key -> (control attribute on Controls or tab dict key, converter)
_FIELDS = [
    ("Prompt", "prompt", str),
    ("Negative prompt", "negative", str),
    ("Steps", "steps", int),
    ("Sampler", "sampler", str),
    ("Schedule type", "scheduler", str),
    ("CFG scale", "cfg", float),
    ("Seed", "seed", int),
    ("Size-1", "width", int),
    ("Size-2", "height", int),
    ("Variation seed", "subseed", int),
    ("Variation seed strength", "subseed_strength", float),
]


def _target(tab: dict, name: str):
    return tab[name] if name in tab else getattr(tab["controls"], name)


def paste_outputs(tab: dict) -> list:
    return [_target(tab, name) for _, name, _ in _FIELDS]


def values_from_infotext(text: str) -> list:
    """One update per pasted control; keys missing from the text leave their control alone."""
    params = infotext_utils.parse_generation_parameters(text or "")
    out = []
    for key, _, convert in _FIELDS:
        if key not in params or (key not in ("Prompt", "Negative prompt") and params[key] in ("", None)):
            out.append(gr.skip())
            continue
        try:
            out.append(convert(float(params[key])) if convert is int else convert(params[key]))
        except (TypeError, ValueError):
            out.append(gr.skip())
    return out


def build_png_info(tabs: dict[str, dict], main_tabs: gr.Tabs) -> None:
    """The PNG Info tab: drop a picture, read its parameters, send them on."""
    with gr.Row():
        with gr.Column():
            image = gr.Image(label="Source", type="pil", elem_id="pnginfo_image", height=400)
        with gr.Column():
            shown = gr.HTML(elem_id="pnginfo_generation_info")
            raw = gr.Textbox(visible=False, elem_id="pnginfo_raw")
            with gr.Row():
                buttons = {name: gr.Button(f"Send to {name}", elem_id=f"pnginfo_send_to_{name}") for name in tabs}

    def read(img):
        if img is None:
            return "", ""
        text = saving.read_infotext(img)
        if not text:
            return "<p>No generation parameters in this image.</p>", ""
        return f"<p>{html.escape(text).replace(chr(10), '<br>')}</p>", text

    image.change(read, inputs=image, outputs=[shown, raw], api_visibility="private")
    for name, button in buttons.items():
        button.click(values_from_infotext, inputs=raw, outputs=paste_outputs(tabs[name]), api_visibility="private"
                     ).then(lambda n=name: gr.Tabs(selected=n), outputs=main_tabs, api_visibility="private")


def wire_paste_button(tab: dict) -> None:
    """↙️ beside Generate: read an infotext pasted into the prompt box and fill every field."""
    tab["paste"].click(values_from_infotext, inputs=tab["prompt"], outputs=paste_outputs(tab), api_visibility="private")
