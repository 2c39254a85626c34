"""Model upscalers and face restorers as a user meets them in a real browser: Extras' upscaler and GFPGAN
visibility, hires fix with a model upscaler (and its infotext pasted back), and "Restore faces" from the Settings
page. One server over tiny checkpoints, the tiny upscaler folders and the face models, all given by A1111's folder
flags."""
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.face_fixtures import FACE_REGION, astronaut
from tests.helpers import choose, generate_small_picture, serving_checkpoints, set_number
from tests.test_browser import CHROMIUM, apply_settings, browser, saved_pictures  # noqa: F401 (browser: the fixture)
from tests.test_face_restoration_wiring import face_flags
from tests.test_upscaler_wiring import folder_flags
from tests.upscaler_fixtures import write_tiny_upscalers

pytestmark = [pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Chromium is not installed (run ./run_tests.sh)"),
              pytest.mark.server, pytest.mark.browser]

SLOW = 120_000  # ms: a job on the 2-core test machine, models loaded on first use


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_dir, face_models_dir):
    data = tmp_path_factory.mktemp("browser-upscalers")
    upscalers = write_tiny_upscalers(tmp_path_factory.mktemp("upscalers"))
    with serving_checkpoints(data, tiny_dir, *folder_flags(upscalers), *face_flags(face_models_dir)) as running:
        yield running.url, data


def wait_text(page, selector: str, text: str, timeout: int = SLOW) -> str:
    """Wait until the element's text shows `text`; returns the text."""
    page.wait_for_function(f"document.querySelector({json.dumps(selector)})?.innerText.includes({json.dumps(text)})",
                           timeout=timeout)
    return page.locator(selector).inner_text()


def dropdown_options(page, elem_id: str) -> list[str]:
    """The options a Gradio dropdown lists when opened (it is left open); the chosen one's check mark left out."""
    page.locator(f"#{elem_id} input").click()
    options = page.get_by_role("option")
    options.first.wait_for()
    return [text.strip().splitlines()[-1].strip() for text in options.all_inner_texts()]


def pick(page, elem_id: str, option: str) -> None:
    choose(page, elem_id, re.compile(f"^{re.escape(option)}$"))


def parameters(path: Path) -> str:
    return Image.open(path).info.get("parameters", "")


def test_extras_upscales_with_a_model(server, browser, tmp_path):  # noqa: F811
    url, data = server
    source = tmp_path / "small.png"
    Image.fromarray(np.random.default_rng(5).integers(0, 255, (16, 24, 3), dtype=np.uint8)).save(source)
    page = browser.new_page(viewport={"width": 1300, "height": 1000})
    page.goto(url)
    page.get_by_role("tab", name="Extras").click()
    options = dropdown_options(page, "extras_upscaler_1")
    assert options[:3] == ["None", "Lanczos", "Nearest"]
    assert {"realesr-tiny-x2", "4x-Tiny", "RealESRGAN_x4plus_tiny", "SwinIR_x2_tiny"} <= set(options)
    page.get_by_role("option", name="realesr-tiny-x2", exact=True).click()
    page.wait_for_function("document.querySelector('#extras_upscaler_1 input')?.value === 'realesr-tiny-x2'")
    page.locator("#extras_image input[type=file]").set_input_files(str(source))
    page.wait_for_selector("#extras_image img")
    set_number(page, "extras_upscaling_resize", 2)
    page.locator("#extras_generate").click()
    info = wait_text(page, "#html_info_extras", "Postprocess upscaler: realesr-tiny-x2")
    assert "Postprocess upscale by: 2" in info
    page.wait_for_selector("#extras_gallery img")

    saved = saved_pictures(data, "extras-images")
    assert len(saved) == 1
    assert Image.open(saved[0]).size == (48, 32)
    assert "Postprocess upscaler: realesr-tiny-x2" in parameters(saved[0])
    shown = page.locator("#extras_gallery img").first
    shown.evaluate("(img) => img.decode()")
    assert shown.evaluate("(img) => [img.naturalWidth, img.naturalHeight]") == [48, 32]
    page.close()


def test_extras_gfpgan_restores_the_face(server, browser, tmp_path):  # noqa: F811
    url, data = server
    source = tmp_path / "astronaut.png"
    astronaut().resize((256, 256), Image.LANCZOS).save(source)
    page = browser.new_page(viewport={"width": 1300, "height": 1000})
    page.goto(url)
    page.get_by_role("tab", name="Extras").click()
    page.locator("#extras_image input[type=file]").set_input_files(str(source))
    page.wait_for_selector("#extras_image img")
    pick(page, "extras_upscaler_1", "None")
    set_number(page, "extras_upscaling_resize", 1)
    set_number(page, "extras_gfpgan_visibility", 1)
    before = set(saved_pictures(data, "extras-images"))
    page.locator("#extras_generate").click()
    info = wait_text(page, "#html_info_extras", "GFPGAN visibility: 1", timeout=240_000)
    assert "CodeFormer" not in info

    saved = [p for p in saved_pictures(data, "extras-images") if p not in before]
    assert len(saved) == 1 and "GFPGAN visibility: 1" in parameters(saved[0])
    out = np.asarray(Image.open(saved[0]).convert("RGB"), dtype=int)
    src = np.asarray(Image.open(source).convert("RGB"), dtype=int)
    assert out.shape == src.shape == (256, 256, 3)
    left, top, right, bottom = (v // 2 for v in FACE_REGION)
    assert np.abs(out[top:bottom, left:right] - src[top:bottom, left:right]).mean() > 5  # random weights: changed
    assert np.array_equal(out[-40:], src[-40:])  # far below the face: untouched
    page.close()


def test_hires_fix_with_a_model_upscaler_and_its_infotext_pasted_back(server, browser):  # noqa: F811
    url, data = server
    page = browser.new_page(viewport={"width": 1300, "height": 1400})
    page.goto(url)
    page.locator("#txt2img_prompt textarea").fill("a hires circle")
    page.locator("#txt2img_seed input").fill("2468")
    page.locator("button.label-wrap", has_text="Hires. fix").first.click()
    page.locator("#txt2img_enable_hr input").check()
    options = dropdown_options(page, "txt2img_hr_upscaler")
    assert options[0] == "Latent" and options.index("None") < options.index("Lanczos") < options.index("4x-Tiny")
    page.get_by_role("option", name="4x-Tiny", exact=True).click()
    set_number(page, "txt2img_hr_scale", 2)
    set_number(page, "txt2img_hires_steps", 2)
    info = generate_small_picture(page, "txt2img", steps=2, expect="Seed: 2468")
    assert "Hires upscaler: 4x-Tiny" in info and "Hires upscale: 2" in info

    picture = saved_pictures(data, pattern="*-2468.png")
    assert len(picture) == 1
    assert Image.open(picture[0]).size == (128, 128)
    infotext = parameters(picture[0])
    assert "Hires upscaler: 4x-Tiny" in infotext and "Size: 64x64" in infotext
    shown = page.locator("#txt2img_gallery img").first
    shown.evaluate("(img) => img.decode()")
    assert shown.evaluate("(img) => [img.naturalWidth, img.naturalHeight]") == [128, 128]

    # PNG Info on a fresh page sends the upscaler back to the hires fix
    page.reload()
    page.get_by_role("tab", name="PNG Info").click()
    page.locator("#pnginfo_image input[type=file]").set_input_files(str(picture[0]))
    wait_text(page, "#pnginfo_generation_info", "Hires upscaler: 4x-Tiny")
    page.locator("#pnginfo_send_to_txt2img").click()
    page.wait_for_function("document.querySelector('#txt2img_prompt textarea')?.value === 'a hires circle'")
    page.locator("button.label-wrap", has_text="Hires. fix").first.click()
    page.wait_for_function("document.querySelector('#txt2img_hr_upscaler input')?.value === '4x-Tiny'")
    assert page.locator("#txt2img_enable_hr input").is_checked()

    # a fresh page starts with the default upscaler; the infotext pasted into the prompt box brings 4x-Tiny back
    page.reload()
    page.locator("button.label-wrap", has_text="Hires. fix").first.click()
    assert page.locator("#txt2img_hr_upscaler input").input_value() == "Latent"
    assert not page.locator("#txt2img_enable_hr input").is_checked()
    page.locator("#txt2img_prompt textarea").fill(infotext)
    page.locator("#txt2img_paste").click()
    page.wait_for_function("document.querySelector('#txt2img_hr_upscaler input')?.value === '4x-Tiny'")
    page.wait_for_function("document.querySelector('#txt2img_prompt textarea')?.value === 'a hires circle'")
    assert page.locator("#txt2img_enable_hr input").is_checked()
    assert page.locator("#txt2img_seed input").input_value() == "2468"
    assert page.locator("#txt2img_hires_steps input[type=number]").input_value() == "2"
    assert page.locator("#txt2img_hr_scale input[type=number]").input_value() == "2"
    page.close()


def test_restore_faces_from_the_settings_page(server, browser):  # noqa: F811
    url, data = server
    page = browser.new_page(viewport={"width": 1300, "height": 1000})
    page.goto(url)
    page.get_by_role("tab", name="Settings").click()
    section = page.locator("#settings_face-restoration").first  # Gradio puts a group's id on two nested divs
    assert "Face restoration" in section.inner_text()
    assert dropdown_options(page, "setting_face_restoration_model") == ["CodeFormer", "GFPGAN", "RestoreFormer"]
    page.get_by_role("option", name="RestoreFormer", exact=True).click()
    section.locator("#setting_face_restoration input").check()
    apply_settings(page, "2 settings changed")
    saved = json.loads((data / "config.json").read_text())
    assert saved["face_restoration"] is True and saved["face_restoration_model"] == "RestoreFormer"

    page.reload()
    page.get_by_role("tab", name="Settings").click()
    page.wait_for_function("document.querySelector('#setting_face_restoration input')?.checked")
    page.wait_for_function("document.querySelector('#setting_face_restoration_model input')?.value === 'RestoreFormer'")

    page.get_by_role("tab", name="txt2img").click()
    page.locator("#txt2img_prompt textarea").fill("a face")
    page.locator("#txt2img_seed input").fill("1357")
    info = generate_small_picture(page, "txt2img", steps=2, expect="Seed: 1357")
    assert "Face restoration: RestoreFormer" in info
    picture = saved_pictures(data, pattern="*-1357.png")
    assert len(picture) == 1 and "Face restoration: RestoreFormer" in parameters(picture[0])

    # back to the defaults, so that nothing else on this server restores faces
    page.get_by_role("tab", name="Settings").click()
    page.locator("#setting_face_restoration input").uncheck()
    pick(page, "setting_face_restoration_model", "CodeFormer")
    apply_settings(page, "2 settings changed")
    page.close()
