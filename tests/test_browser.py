"""The page in a real browser (Debian's Chromium driven by Playwright): type, generate, read back."""
import json
import re
import shutil
import time
import urllib.parse
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from tests.helpers import (
    choose,
    component,
    generate_small_picture,
    http_get,
    serving_checkpoints,
    set_number,
    set_size_and_steps,
)

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = [pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Chromium is not installed (run ./run_tests.sh)"),
              pytest.mark.server]
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_dir):
    data = tmp_path_factory.mktemp("browser")
    lora_dir = data / "models" / "Lora" / "ink"
    lora_dir.mkdir(parents=True)
    save_file({"lora_unet_mid_block_attentions_0_proj_in.lora_down.weight": torch.zeros(4, 64),
               "lora_unet_mid_block_attentions_0_proj_in.lora_up.weight": torch.zeros(64, 4)},
              str(lora_dir / "pencil.safetensors"))
    Image.new("RGB", (300, 200), (250, 120, 0)).save(lora_dir / "pencil.png")
    (data / "embeddings").mkdir()
    save_file({"emb_params": torch.ones(2, 64)}, str(data / "embeddings" / "shiny.safetensors"))
    with serving_checkpoints(data, tiny_dir, checkpoints=("tiny-sd1", "tiny-sdxl")) as running:
        yield running.url, data


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


def apply_settings(page, expect: str = "changed") -> None:
    page.locator("#settings_submit").click()
    page.wait_for_function(f"document.querySelector('#settings_result').innerText.includes('{expect}')")


def paint_stroke(page, editor_id: str, half_length: int = 30) -> None:
    """A horizontal brush stroke across the middle of an image editor's canvas."""
    canvas = page.locator(f"#{editor_id} canvas").first
    canvas.wait_for()
    page.locator(f"#{editor_id} button[aria-label*='rush'], #{editor_id} button[title*='rush']").first.click()
    box = canvas.bounding_box()
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(cx - half_length, cy)
    page.mouse.down()
    page.mouse.move(cx + half_length, cy, steps=8)
    page.mouse.up()


def saved_pictures(data: Path, folder: str = "txt2img-images", pattern: str = "*.png") -> list[Path]:
    return sorted((data / "outputs" / folder).rglob(pattern))


@pytest.mark.browser
def test_generate_from_the_page_and_read_the_png_back(server, browser):
    url, data = server
    page = browser.new_page(viewport={"width": 1300, "height": 1000})
    page.goto(url)
    page.locator("#txt2img_prompt textarea").fill("a red circle, (blue sky:1.2)")
    page.locator("#txt2img_neg_prompt textarea").fill("green")
    page.wait_for_function("document.querySelector('#txt2img_token_counter').innerText.trim() == '6/75'")
    set_size_and_steps(page, "txt2img", steps=4)
    page.locator("#txt2img_seed input").fill("4242")
    page.locator("#txt2img_prompt textarea").press("Control+Enter")
    page.wait_for_selector("#txt2img_gallery img", timeout=120_000)
    info = page.locator("#html_info_txt2img").inner_text()
    assert "Steps: 4" in info and "Seed: 4242" in info and "Size: 64x64" in info

    saved = saved_pictures(data)
    assert [p.name for p in saved] == ["00000-4242.png"]
    assert np.asarray(Image.open(saved[0])).std() > 0

    # PNG Info: drop the file in, send its parameters back to txt2img
    page.get_by_role("tab", name="PNG Info").click()
    page.locator("#pnginfo_image input[type=file]").set_input_files(str(saved[0]))
    page.wait_for_function("document.querySelector('#pnginfo_generation_info').innerText.includes('Seed: 4242')")
    page.get_by_role("tab", name="txt2img").click()
    page.locator("#txt2img_prompt textarea").fill("")
    page.locator("#txt2img_seed input").fill("-1")
    page.get_by_role("tab", name="PNG Info").click()
    page.locator("#pnginfo_send_to_txt2img").click()
    page.wait_for_function("document.querySelector('#txt2img_prompt textarea').value.includes('a red circle')")
    assert page.locator("#txt2img_seed input").input_value() == "4242"
    assert page.locator("#txt2img_neg_prompt textarea").input_value() == "green"
    page.close()


@pytest.mark.browser
def test_switching_checkpoint_from_the_top_bar(server, browser):
    url, _ = server
    page = browser.new_page()
    page.goto(url)
    assert page.locator("#txt2img_width input[type=number]").input_value() == "512"
    page.locator("#tab_img2img-button").click()
    set_number(page, "img2img_width", 320)  # a size the user chose stays
    choose(page, "setting_sd_model_checkpoint", "tiny-sdxl.safetensors")
    page.wait_for_function("document.querySelector('#sd_model_status').innerText.includes('SDXL')", timeout=60_000)
    # sizes left at the old model's native size follow the new model's (SDXL: 1024)
    page.wait_for_function("document.querySelector('#img2img_height input[type=number]').value === '1024'")
    assert page.locator("#img2img_width input[type=number]").input_value() == "320"
    page.locator("#tab_txt2img-button").click()
    assert page.locator("#txt2img_width input[type=number]").input_value() == "1024"
    page.close()


@pytest.mark.browser
def test_settings_are_applied_and_saved(server, browser):
    url, data = server
    page = browser.new_page()
    page.goto(url)
    page.get_by_role("tab", name="Settings").click()
    page.locator("#setting_eta_noise_seed_delta input").fill("31337")
    page.locator("#setting_live_previews_enable input").uncheck()
    apply_settings(page, "2 settings changed")
    saved = json.loads((data / "config.json").read_text())
    assert saved["eta_noise_seed_delta"] == 31337 and saved["live_previews_enable"] is False
    page.close()


@pytest.mark.browser
def test_settings_stick_across_reloads_and_a_stale_page_does_not_undo_them(tmp_path, tiny_dir, browser):
    with serving_checkpoints(tmp_path, tiny_dir) as running:
        settings_stick(running.url, tmp_path, browser)


def settings_stick(url, data, browser):
    stale = browser.new_page()
    stale.goto(url)  # opened before the change below
    page = browser.new_page()
    page.goto(url)
    page.get_by_role("tab", name="Settings").click()
    set_number(page, "setting_s_churn", 2.5)
    apply_settings(page, "1 settings changed: sigma churn.")
    page.reload()
    page.get_by_role("tab", name="Settings").click()
    page.wait_for_function("document.querySelector('#setting_s_churn input[type=number]').value === '2.5'")

    stale.get_by_role("tab", name="Settings").click()
    set_number(stale, "setting_s_tmin", 0.5)
    apply_settings(stale, "1 settings changed: sigma tmin.")  # its old sigma churn is not written back
    saved = json.loads((data / "config.json").read_text())
    assert (saved["s_churn"], saved["s_tmin"]) == (2.5, 0.5)
    stale.close()

    search = page.locator("#settings_search textarea, #settings_search input").first
    search.fill("sigma churn")
    assert page.locator("#setting_s_churn").is_visible() and not page.locator("#setting_s_tmin").is_visible()
    assert not page.locator("#settings_saving-images").first.is_visible()
    search.fill("")
    assert page.locator("#setting_s_tmin").is_visible() and page.locator("#settings_saving-images").first.is_visible()

    for elem_id, option in (("setting_quicksettings_list", "CLIP_stop_at_last_layers"),
                            ("setting_hidden_tabs", "Extras")):
        page.locator(f"#{elem_id} input").click()
        page.locator(f"#{elem_id}").get_by_role("option", name=option, exact=True).click()
        page.keyboard.press("Escape")
    apply_settings(page, "2 settings changed")
    page.reload()
    page.locator("#quicksettings_CLIP_stop_at_last_layers").wait_for(state="visible")
    page.get_by_role("tab", name="Extras").wait_for(state="hidden")  # the page script hides it after the load
    set_number(page, "quicksettings_CLIP_stop_at_last_layers", 2)  # a quicksetting applies at once
    deadline = time.monotonic() + 30
    while json.loads((data / "config.json").read_text())["CLIP_stop_at_last_layers"] != 2:
        assert time.monotonic() < deadline, "the quicksetting was not saved"
        time.sleep(0.2)
    page.close()


@pytest.mark.browser
def test_styles_save_apply_edit_and_delete(server, browser):
    url, data = server
    page = browser.new_page()
    page.goto(url)
    page.locator("#txt2img_prompt textarea").fill("{prompt}, watercolor")
    page.locator("#txt2img_neg_prompt textarea").fill("photo")
    page.locator("#txt2img_style_edit").click()  # a new style from the prompts
    page.locator("#txt2img_style_prompt textarea").wait_for()
    assert page.locator("#txt2img_style_prompt textarea").input_value() == "{prompt}, watercolor"
    page.locator("#txt2img_style_name textarea, #txt2img_style_name input").first.fill("watercolor")
    page.locator("#txt2img_style_save").click()
    page.wait_for_function("document.querySelector('#txt2img_style_status').innerText.includes('Saved')")
    assert 'watercolor,"{prompt}, watercolor",photo' in (data / "styles.csv").read_text(encoding="utf-8-sig"
                                                                                         ).replace("\r", "")
    page.locator("#txt2img_prompt textarea").fill("a fox")
    page.locator("#txt2img_neg_prompt textarea").fill("")
    choose(page, "txt2img_styles", "watercolor")
    page.locator("#txt2img_style_apply").click()
    page.wait_for_function("document.querySelector('#txt2img_prompt textarea').value == 'a fox, watercolor'")
    assert page.locator("#txt2img_neg_prompt textarea").input_value() == "photo"

    choose(page, "txt2img_styles", "watercolor")  # edit the chosen style
    page.keyboard.press("Escape")
    page.locator("#txt2img_style_edit").click()
    page.wait_for_function("document.querySelector('#txt2img_style_name textarea, #txt2img_style_name input')"
                           ".value == 'watercolor'")
    # the editor is still open from the save, showing the same values: the edit event has answered when it has
    # cleared the save's status (typing before that is overwritten by its answer)
    page.wait_for_function("!document.querySelector('#txt2img_style_status').innerText.includes('Saved')")
    page.locator("#txt2img_style_prompt textarea").fill("{prompt}, ink wash")
    page.locator("#txt2img_style_save").click()
    deadline = time.monotonic() + 30
    while 'watercolor,"{prompt}, ink wash",photo' not in (data / "styles.csv").read_text(encoding="utf-8-sig"):
        assert time.monotonic() < deadline, (data / "styles.csv").read_text(encoding="utf-8-sig")
        time.sleep(0.2)
    page.locator("#txt2img_style_delete").click()
    page.wait_for_function("document.querySelector('#txt2img_style_status').innerText.includes('Deleted')")
    assert "watercolor" not in (data / "styles.csv").read_text(encoding="utf-8-sig")
    page.reload()
    page.locator("#txt2img_styles input").click()
    assert page.get_by_role("option", name="watercolor").count() == 0
    page.close()


@pytest.mark.browser
def test_extras_upscales_a_picture(server, browser, tmp_path):
    url, data = server
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (40, 60, 3), dtype=np.uint8)).save(tmp_path / "s.png")
    page = browser.new_page()
    page.goto(url)
    page.get_by_role("tab", name="Extras").click()
    page.locator("#extras_image input[type=file]").set_input_files(str(tmp_path / "s.png"))
    page.wait_for_selector("#extras_image img")
    page.locator("#extras_generate").click()
    page.wait_for_function(
        "document.querySelector('#html_info_extras').innerText.includes('Postprocess upscale by: 2')")
    saved = saved_pictures(data, "extras-images")
    assert Image.open(saved[-1]).size == (120, 80)
    page.close()


@pytest.mark.browser
def test_every_icon_button_has_a_tooltip(server, browser):
    url, _data = server
    page = browser.new_page()
    page.goto(url)
    page.locator("#txt2img_generate").wait_for()
    untitled = page.evaluate("""() => [...document.querySelectorAll('button')]
        .filter((b) => b.offsetParent !== null && b.getAttribute('role') !== 'tab'
                       && !/[A-Za-z]{2}/.test(b.textContent) && b.textContent.trim() && !b.title)
        .map((b) => (b.id || '?') + ' ' + b.textContent.trim())""")
    assert untitled == []
    assert page.locator("#txt2img_reuse_seed").get_attribute("title").startswith("Reuse the seed")
    page.close()


@pytest.mark.browser
@pytest.mark.xfail(reason="known bug: in the full suite the 'Resize by' preview sometimes keeps its old text "
                          "(2 of 4 fresh-clone runs); passes alone; to be fixed (compute the preview in the page)",
                   strict=False)
def test_img2img_resize_by_and_inpaint_options_where_they_apply(server, browser, tmp_path):
    url, _data = server
    Image.new("RGB", (100, 60), (30, 160, 90)).save(tmp_path / "green.png")
    page = browser.new_page(viewport={"width": 1300, "height": 1100})
    page.goto(url)
    page.get_by_role("tab", name="img2img").first.click()
    page.locator("#img2img_inpaint_options").first.wait_for(state="hidden")  # no mask on the img2img tab
    page.locator("#img2img_image input[type=file]").set_input_files(str(tmp_path / "green.png"))
    page.wait_for_selector("#img2img_image img")  # uploaded before the scale changes
    page.get_by_role("tab", name="Resize by").click()
    set_number(page, "img2img_scale", 1.6)
    page.wait_for_function("document.querySelector('#img2img_scale_resolution_preview').innerText"
                           ".includes('100x60 → 160x96')")
    set_number(page, "img2img_steps", 2)
    page.locator("#img2img_generate").click()
    page.wait_for_function("document.querySelector('#html_info_img2img').innerText.includes('Size: 160x96')",
                           timeout=120_000)
    page.get_by_role("tab", name="Inpaint", exact=True).click()
    page.locator("#img2img_inpaint_options").first.wait_for(state="visible")
    page.get_by_role("tab", name="img2img", exact=True).last.click()
    page.locator("#img2img_inpaint_options").first.wait_for(state="hidden")
    page.close()


@pytest.mark.browser
def test_on_a_phone_the_pictures_follow_the_prompt_and_nothing_overflows(server, browser):
    url, _data = server
    page = browser.new_page(viewport={"width": 400, "height": 800})
    page.goto(url)
    page.locator("#txt2img_generate").wait_for()
    box = {name: page.locator(f"#{name}").first.bounding_box()
           for name in ("txt2img_generate", "txt2img_gallery", "txt2img_sampling")}
    assert box["txt2img_generate"]["y"] < box["txt2img_gallery"]["y"] < box["txt2img_sampling"]["y"]
    assert box["txt2img_gallery"]["y"] < 1500  # reachable with a short scroll
    assert page.evaluate("document.documentElement.scrollWidth") <= 400  # no sideways scrolling
    page.close()


@pytest.mark.browser
def test_chinese_localization(server, browser):
    url, data = server
    page = browser.new_page()
    page.goto(url)
    page.get_by_role("tab", name="Settings").click()
    choose(page, "setting_localization", "zh_CN")
    apply_settings(page)
    page.reload()
    page.get_by_role("tab", name="文生图").wait_for(timeout=30_000)
    assert page.get_by_role("tab", name="图生图").is_visible()
    assert page.locator("#txt2img_generate").inner_text().strip() == "生成"
    assert "反向提示词" in page.locator("#txt2img_neg_prompt").inner_text()
    assert page.locator("#txt2img_random_seed").get_attribute("title").startswith("随机种子")
    assert page.locator("#txt2img_generate").get_attribute("title").startswith("生成 (Ctrl+Enter)")
    page.screenshot(path=str(data / "zh_CN.png"))
    # back to English for the other tests
    page.get_by_role("tab", name="设置").click()
    choose(page, "setting_localization", re.compile("^(None|无)$"))
    apply_settings(page)
    page.close()


@pytest.mark.browser
def test_send_to_img2img_and_paint_an_inpaint_mask(server, browser):
    url, data = server
    page = browser.new_page(viewport={"width": 1300, "height": 1100})
    page.goto(url)
    page.locator("#txt2img_prompt textarea").fill("a blue square")
    page.locator("#txt2img_seed input").fill("77")
    generate_small_picture(page, "txt2img", steps=3, expect="Seed: 77")
    page.locator("#txt2img_send_to_img2img").click()
    page.wait_for_selector("#img2img_image img")
    assert page.locator("#img2img_prompt textarea").input_value() == "a blue square"
    assert page.locator("#img2img_seed input").input_value() == "77"

    page.locator("#txt2img_send_to_inpaint").evaluate("b => b.click()")  # the button sits on the hidden tab
    paint_stroke(page, "img2maskimg", half_length=20)
    page.locator("#img2img_mask_blur input[type=number]").fill("0")
    generate_small_picture(page, "img2img", steps=3, expect="Mask blur: 0")
    saved = saved_pictures(data, "img2img-images")
    source = saved_pictures(data, "txt2img-images", "*-77.png")[-1]
    a = np.asarray(Image.open(saved[-1]).convert("RGB"), dtype=int)
    b = np.asarray(Image.open(source).convert("RGB"), dtype=int)
    changed = np.abs(a - b).sum(axis=2) > 0
    # only where the stroke went (a wide brush on a 64-pixel picture) did pixels change; the rest is exact
    assert 0.05 < changed.mean() < 0.95 and not changed[0].any() and not changed[-1].any()
    page.close()


@pytest.mark.browser
def test_ctrl_up_and_down_change_emphasis(server, browser):
    url, _ = server
    page = browser.new_page()
    page.goto(url)
    box = page.locator("#txt2img_prompt textarea")
    box.fill("a red circle, blue background")
    box.evaluate("(b) => b.setSelectionRange(3, 3)")  # the cursor inside "red"
    box.press("Control+ArrowUp")
    box.press("Control+ArrowUp")
    assert box.input_value() == "a (red:1.2) circle, blue background"
    box.press("Control+ArrowDown")
    assert box.input_value() == "a (red:1.1) circle, blue background"
    box.press("Control+ArrowDown")
    assert box.input_value() == "a red circle, blue background"
    box.evaluate("(b) => b.setSelectionRange(14, 29)")  # "blue background" selected
    box.press("Control+ArrowDown")
    assert box.input_value() == "a red circle, (blue background:0.9)"
    info = generate_small_picture(page, "txt2img", steps=1, expect="Steps: 1")
    assert "a red circle, (blue background:0.9)" in info  # the edited text is what the job gets
    page.close()


@pytest.mark.browser
def test_extra_networks_cards_insert_tags_search_and_switch_checkpoints(server, browser):
    url, _ = server
    page = browser.new_page(viewport={"width": 1300, "height": 1100})
    page.goto(url)
    page.locator("#txt2img_extra_networks").get_by_text("Extra networks").click()
    page.locator("#txt2img_lora_cards_tab-button").click()
    card = page.locator("#txt2img_lora_cards .extra-network-card", has_text="pencil")
    src = card.locator("img").get_attribute("src")
    assert src.startswith("extra-networks/preview/")  # pencil.png beside it, by URL
    card.scroll_into_view_if_needed()
    card.locator("img").evaluate("(img) => img.decode()")  # it loads (lazily, now that it is shown)
    assert card.locator("img").evaluate("(img) => img.naturalWidth") == 300
    assert "ink" in card.inner_text()
    prompt = page.locator("#txt2img_prompt textarea")
    prompt.fill("a cat")
    card.click()
    assert prompt.input_value() == "a cat <lora:pencil:1>"
    card.click()  # a second click takes it out again
    assert prompt.input_value() == "a cat"

    page.locator("#txt2img_textual_inversion_cards_tab-button").click()
    page.locator("#txt2img_textual_inversion_cards .extra-network-card", has_text="shiny").click()
    assert prompt.input_value() == "a cat shiny"

    page.locator("#txt2img_checkpoints_cards_tab-button").click()
    page.locator("#txt2img_extra_search input, #txt2img_extra_search textarea").first.fill("sdxl")
    cards = page.locator("#txt2img_checkpoints_cards .extra-network-card")
    assert cards.filter(has_text="tiny-sdxl").is_visible() and not cards.filter(has_text="tiny-sd1").is_visible()

    status = page.locator("#sd_model_status").inner_text()
    target, family = ("tiny-sd1", "SD1.x") if "SDXL" in status else ("tiny-sdxl", "SDXL")
    page.locator("#txt2img_extra_search input, #txt2img_extra_search textarea").first.fill("")
    cards.filter(has_text=target).click()
    page.wait_for_function(f"document.querySelector('#sd_model_status').innerText.includes('{family}')",
                           timeout=60_000)
    dropdown = page.locator("#setting_sd_model_checkpoint input").input_value()
    assert dropdown.startswith(target + ".safetensors")
    page.close()


def test_preview_pictures_are_served_by_id_and_only_by_id(server):
    url, data = server
    picture = data / "models" / "Lora" / "ink" / "pencil.png"
    status, config = http_get(f"{url}/config")
    assert status == 200
    cards = component(json.loads(config), "txt2img_lora_cards")["props"]["value"]
    src = re.search(r"<img src='([^']+)'", cards)[1]
    assert "data:image" not in config.decode()  # the page holds the pictures' URLs, not their bytes
    status, body = http_get(f"{url}/{src}")
    assert status == 200 and body == picture.read_bytes()
    for wrong in ("0" * 24, "..%2F..%2Fetc%2Fpasswd", "../../etc/passwd", "%2Fetc%2Fpasswd",
                  urllib.parse.quote(str(picture), safe=""), "pencil.png", "pencil"):
        assert http_get(f"{url}/extra-networks/preview/{wrong}")[0] == 404, wrong


@pytest.mark.browser
@pytest.mark.parametrize("tab, editor_id, kind", [("img2img_img2img_sketch_tab", "img2img_sketch", "sketch"),
                                                  ("img2img_inpaint_sketch_tab", "inpaint_sketch", "inpaint")])
def test_sketch_tabs_use_the_painted_picture(server, browser, tmp_path, tab, editor_id, kind):
    url, data = server
    Image.new("RGB", (64, 64), (255, 255, 255)).save(tmp_path / "white.png")
    page = browser.new_page(viewport={"width": 1300, "height": 1100})
    page.goto(url)
    page.locator("#tab_img2img-button").click()
    page.locator(f"#{tab}-button").click()
    page.locator(f"#{editor_id} input[type=file]").set_input_files(str(tmp_path / "white.png"))
    paint_stroke(page, editor_id)
    # sketch: strength 0 gives back exactly the painted input; inpaint sketch: the stroke is also the mask
    set_number(page, "img2img_denoising_strength", 0 if kind == "sketch" else 0.5)
    if kind == "inpaint":  # the inpaint options are shown only on the tabs with a mask
        set_number(page, "img2img_mask_blur", 0)
    else:
        page.locator("#img2img_mask_blur").first.wait_for(state="hidden")
    page.locator("#img2img_seed input").fill("9191")
    info = generate_small_picture(page, "img2img", steps=2, expect="Seed: 9191")
    assert ("Mask blur" in info) == (kind == "inpaint")
    out = np.asarray(Image.open(saved_pictures(data, "img2img-images", "*-9191.png")[-1]).convert("L"))
    assert (out[:4] == 255).all() and (out[-4:] == 255).all()  # untouched white around the stroke
    if kind == "sketch":
        assert 0.01 < (out < 128).mean() < 0.9  # the black stroke (a wide brush on 64 pixels) across the middle
    else:  # the tiny test model paints noise where the mask is
        assert 0.01 < (out != 255).mean() < 0.9
    page.close()


@pytest.mark.browser
def test_generate_forever_until_cancelled_then_save_and_zip(server, browser):
    url, data = server
    page = browser.new_page(viewport={"width": 1300, "height": 1100})
    page.goto(url)
    page.locator("#txt2img_prompt textarea").fill("forever")
    set_size_and_steps(page, "txt2img", steps=1)
    before = len(saved_pictures(data))
    page.locator("#txt2img_generate").click(button="right")
    page.locator("#generate_forever_menu button", has_text="Generate forever").click()
    deadline = time.time() + 120
    while len(saved_pictures(data)) < before + 3:  # it keeps going by itself
        assert time.time() < deadline, "generate forever did not repeat"
        time.sleep(0.3)
    page.locator("#txt2img_generate").click(button="right")
    page.locator("#generate_forever_menu button", has_text="Cancel generate forever").click()
    time.sleep(2)
    stopped_at = len(saved_pictures(data))
    time.sleep(3)
    assert len(saved_pictures(data)) <= stopped_at + 1  # at most the job that was running finishes

    page.locator("#save_txt2img").click()
    page.wait_for_function("document.querySelector('#txt2img_files_notice').innerText.includes('Saved')")
    saved = sorted((data / "log" / "images").glob("*.png"))  # outdir_save
    assert saved and "forever" in Image.open(saved[-1]).info["parameters"]
    assert page.locator("#download_files_txt2img").is_visible()
    page.locator("#save_zip_txt2img").click()
    page.wait_for_function("document.querySelector('#txt2img_files_notice').innerText.includes('.zip')")
    with zipfile.ZipFile(sorted((data / "outputs" / "saved").glob("*.zip"))[-1]) as zf:
        names = zf.namelist()
        assert names and "forever" in Image.open(zf.open(names[0])).info["parameters"]
    page.close()


@pytest.mark.browser
@pytest.mark.parametrize("how", ["button", "Escape"])
def test_interrupt_stops_a_long_run_and_keeps_what_is_done(server, browser, how):
    url, data = server
    page = browser.new_page(viewport={"width": 1300, "height": 1100})
    page.goto(url)
    page.locator("#txt2img_prompt textarea").fill("a long run")
    set_size_and_steps(page, "txt2img", steps=30)
    set_number(page, "txt2img_batch_count", 40)
    page.locator("#txt2img_seed input").fill("5000" if how == "button" else "6000")
    page.locator("#txt2img_generate").click()
    page.wait_for_function("document.querySelector('#txt2img_progress').innerText.includes('batch 2/40')",
                           timeout=120_000)
    if how == "button":
        page.locator("#txt2img_interrupt").click()
    else:
        page.keyboard.press("Escape")
    page.wait_for_function("document.querySelector('#html_info_txt2img').innerText.includes('Interrupted')",
                           timeout=120_000)
    seed = 5000 if how == "button" else 6000
    run = [p for p in saved_pictures(data) if seed <= int(p.stem.split("-")[1]) < seed + 40]
    assert 1 <= len(run) < 40  # stopped early; the pictures finished before are kept
    assert page.locator("#txt2img_gallery img").count() >= 1
    page.close()
