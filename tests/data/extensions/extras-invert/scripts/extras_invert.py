"""Test extension: an Extras postprocessing script that inverts the picture's colours when enabled."""
import gradio as gr
from PIL import ImageOps

from modules import scripts_postprocessing


class ExtrasInvert(scripts_postprocessing.ScriptPostprocessing):
    name = "Invert colours"
    order = 5000

    def ui(self):
        enabled = gr.Checkbox(False, label="Invert colours", elem_id="extras_invert_enabled")
        return {"enabled": enabled}

    def process(self, pp, enabled):
        if not enabled:
            return
        pp.image = ImageOps.invert(pp.image.convert("RGB"))
        pp.info["Inverted"] = True
