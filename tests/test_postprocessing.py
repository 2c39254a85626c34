"""Extras: upscaling pictures, keeping their parameters."""
import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from modules.generation import extras, saving
from modules.generation.extras import ExtrasRequest, PostprocessError, Upscaling, pictures_in, run_extras
from modules.postprocessing.upscalers import Upscalers

RESAMPLERS_ONLY = Upscaling(Upscalers([]))


def upscale(image, req):
    return extras.upscale(image, req, RESAMPLERS_ONLY)


def picture(w=40, h=20, text=None):
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (h, w, 3), dtype=np.uint8))
    if text:
        meta = PngImagePlugin.PngInfo()
        meta.add_text("parameters", text)
        img.info["parameters"] = text
    return img


def test_scale_by_and_to():
    out, params = upscale(picture(), ExtrasRequest(upscaling_resize=2.5))
    assert out.size == (100, 50) and params["Postprocess upscale by"] == 2.5
    out, _ = upscale(picture(), ExtrasRequest(resize_mode=1, upscaling_resize_w=64, upscaling_resize_h=64))
    assert out.size == (64, 64)  # cropped to fill, not stretched
    stretched, _ = upscale(picture(), ExtrasRequest(resize_mode=1, upscaling_resize_w=64, upscaling_resize_h=64,
                                                    upscaling_crop=False))
    assert stretched.size == (64, 64) and not np.array_equal(np.asarray(out), np.asarray(stretched))


def test_second_upscaler_blends_in():
    a, _ = upscale(picture(), ExtrasRequest(upscaler_1="Lanczos"))
    b, _ = upscale(picture(), ExtrasRequest(upscaler_1="Nearest"))
    mix, params = upscale(picture(), ExtrasRequest(upscaler_1="Lanczos", upscaler_2="Nearest",
                                                   extras_upscaler_2_visibility=0.5))
    expected = (np.asarray(a, dtype=float) + np.asarray(b, dtype=float)) / 2
    assert np.abs(np.asarray(mix, dtype=float) - expected).max() <= 1
    assert params["Postprocess upscaler 2"] == "Nearest"
    with pytest.raises(PostprocessError, match="Lanczos"):
        upscale(picture(), ExtrasRequest(upscaler_1="ESRGAN_9x"))


def test_saved_with_the_original_parameters(tmp_path):
    src = picture(text="a cat\nSteps: 20, Seed: 1")
    results, texts, paths = run_extras([src], ExtrasRequest(upscaling_resize=2), tmp_path)
    assert paths[0].parent == tmp_path / "extras-images" and paths[0].name == "00000.png"  # A1111: no subfolder
    saved = saving.read_infotext(Image.open(paths[0]))
    assert saved == texts[0] == "a cat\nSteps: 20, Seed: 1, Postprocess upscale by: 2, Postprocess upscaler: Lanczos"


def test_folder_with_a_broken_file(tmp_path):
    picture().save(tmp_path / "a.png")
    (tmp_path / "b.png").write_bytes(b"junk")
    pictures, problems = pictures_in(tmp_path)
    assert len(pictures) == 1 and "b.png" in problems[0]
    with pytest.raises(PostprocessError):
        pictures_in(tmp_path / "missing")
