"""The adapters between Gradio values and requests: masks painted in the editor, pasted infotexts."""
import gradio as gr
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


def test_pasting_an_a1111_infotext_fills_the_fields():
    text = ("a cat, (masterpiece:1.2)\nNegative prompt: dog\nSteps: 28, Sampler: DPM++ 2M Karras, CFG scale: 6.5, "
            "Seed: 12345, Size: 512x768, Model hash: 6ce0161689, Variation seed: 7, Variation seed strength: 0.3")
    prompt, negative, steps, sampler, scheduler, cfg, seed, width, height, subseed, strength = \
        values_from_infotext(text)
    assert (prompt, negative, steps, sampler, scheduler) == ("a cat, (masterpiece:1.2)", "dog", 28, "DPM++ 2M",
                                                             "Karras")
    assert (cfg, seed, width, height, subseed, strength) == (6.5, 12345, 512, 768, 7, 0.3)
    only_prompt = values_from_infotext("just words")
    assert only_prompt[0] == "just words" and isinstance(only_prompt[2], type(gr.skip()))


def test_a_failing_generation_becomes_a_message():
    from modules.generation.processing import GenerationError
    from modules.ui.generation import stream

    class Failing:
        def __init__(self, error):
            self.error = error

        def run_streaming(self, req):
            raise self.error
            yield  # pragma: no cover

    *_, (progress, gallery, info, seed) = stream(Failing(RuntimeError("CUDA out of memory. Tried to allocate")), None)
    assert "Generation failed" in info and "--medvram" in info
    *_, (progress, gallery, info, seed) = stream(Failing(GenerationError("width and height must be ...")), None)
    assert "width and height" in info and "Generation failed" not in info
