"""Test extension: an always-on script whose hooks raise, and a callback that raises; jobs must still finish."""
import gradio as gr

from modules import script_callbacks, scripts


def on_app_started(demo, app):
    raise RuntimeError("broken-hooks: app_started fails on purpose")


script_callbacks.on_app_started(on_app_started)


class BrokenHooks(scripts.Script):
    def title(self):
        return "Broken hooks"

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def ui(self, is_img2img):
        return [gr.Checkbox(True, label="Break", elem_id=self.elem_id("break"))]

    def process(self, p, *args):
        raise RuntimeError("broken-hooks: process fails on purpose")

    def postprocess_image(self, p, pp, *args):
        raise RuntimeError("broken-hooks: postprocess_image fails on purpose")
