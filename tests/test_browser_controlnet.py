"""The built-in ControlNet as a user meets it in a real browser: the txt2img "ControlNet" accordion's Unit 0 with a
picture, the canny preprocessor and a tiny random ControlNet on the tiny SD1 checkpoint; the infotext names the unit
while it is enabled and not once it is unticked."""
import re
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from tests.controlnet_fixtures import write_tiny_controlnet
from tests.helpers import choose, generate_small_picture, serving_checkpoints
from tests.test_browser import CHROMIUM, browser  # noqa: F401 (browser: the fixture)

pytestmark = [pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Chromium is not installed (run ./run_tests.sh)"),
              pytest.mark.server, pytest.mark.browser]

UNIT = "txt2img_controlnet_ControlNet-0"  # the elem_id prefix of Unit 0's controls on txt2img


def square_outline(path: Path) -> Path:
    picture = Image.new("RGB", (64, 64), "black")
    ImageDraw.Draw(picture).rectangle((16, 16, 47, 47), outline="white", width=3)
    picture.save(path)
    return path


def model_options(page, expect: str) -> list[str]:
    """What Unit 0's Model dropdown offers once it offers an option starting with `expect` (it is left open)."""
    page.locator(f"#{UNIT}_model input").click()
    page.get_by_role("option", name=re.compile(f"^{re.escape(expect)}")).wait_for()
    options = page.get_by_role("option")
    return [text.strip().splitlines()[-1].strip() for text in options.all_inner_texts()]


def test_a_controlnet_unit_guides_txt2img_while_enabled(tmp_path, tiny_dir, browser):  # noqa: F811
    data = tmp_path / "data"
    models = data / "models" / "ControlNet"
    write_tiny_controlnet(models / "tiny-canny.safetensors", "ldm", "sd1", seed=3)
    picture = square_outline(tmp_path / "square.png")
    with serving_checkpoints(data, tiny_dir) as server:
        page = browser.new_page(viewport={"width": 1300, "height": 1400})
        errors = []
        page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(server.url)
        page.wait_for_function("document.querySelector('#setting_sd_model_checkpoint input')?.value"
                               "?.startsWith('tiny-sd1')")
        page.locator("#txt2img_prompt textarea").fill("a square")
        page.locator("#txt2img_seed input").fill("4242")

        page.locator("#txt2img_controlnet button.label-wrap").first.click()
        page.locator(f"#{UNIT}_enable_checkbox input").check()
        page.locator(f"#{UNIT}_input_image input[type=file]").set_input_files(str(picture))
        page.wait_for_selector(f"#{UNIT}_input_image img")
        choose(page, f"{UNIT}_preprocessor", re.compile("^canny$"))
        # the sliders become canny's own, at its defaults (the infotext below records them)
        page.locator(f"#{UNIT}_threshold_A").get_by_text("Canny Low Threshold").wait_for(timeout=30_000)
        # a model added after the page loaded shows up after a click on the refresh button
        write_tiny_controlnet(models / "tiny-later.safetensors", "ldm", "sd1", seed=4)
        page.locator(f"#{UNIT}_refresh_models").click()
        options = model_options(page, "tiny-later [")
        assert options[0] == "None" and [o.split(" [")[0] for o in options[1:]] == ["tiny-canny", "tiny-later"]
        page.get_by_role("option", name=re.compile(r"^tiny-canny \[")).click()
        page.wait_for_function(f"document.querySelector('#{UNIT}_model input')?.value?.startsWith('tiny-canny [')")

        info = generate_small_picture(page, "txt2img", steps=3, expect="Seed: 4242")
        assert 'ControlNet 0: "Module: canny, Model: tiny-canny' in info
        assert "Threshold A: 100" in info and "Threshold B: 200" in info
        page.screenshot(path="/tmp/controlnet_accordion.png", full_page=True)

        page.locator(f"#{UNIT}_enable_checkbox input").uncheck()
        page.locator("#txt2img_seed input").fill("4243")
        page.locator("#txt2img_generate").click()
        page.wait_for_function("document.querySelector('#html_info_txt2img').innerText.includes('Seed: 4243')",
                               timeout=120_000)
        assert "ControlNet 0" not in page.locator("#html_info_txt2img").inner_text()
        assert errors == [], errors
        page.close()
