"""The extension mechanism as a user meets it: the test extensions of tests/data/extensions copied into a data dir's
extensions/, one real server started over it (with the flag prompt-suffix's preload.py adds), then used through
/sdapi/v1 and through the page in a real browser (Debian's Chromium driven by Playwright, one page for the module)."""
import ast
import base64
import io
import json
import shutil
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from modules.paths import REPO_ROOT
from tests.helpers import generate_small_picture, serving

TEST_EXTENSIONS = Path(__file__).parent / "data" / "extensions"
SUFFIX = "drawn by the test"  # --prompt-suffix-default: the default of prompt-suffix's setting
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
SCREENSHOTS = Path("/tmp")

pytestmark = pytest.mark.server


def in_browser(test):
    """A test that drives the module's page in Chromium."""
    no_chromium = pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                     reason="Chromium is not installed (run ./run_tests.sh)")
    return pytest.mark.browser(no_chromium(test))


@pytest.fixture(scope="module")
def program(tmp_path_factory):
    """(server, data dir) of the one server of this module, with every test extension installed."""
    data = tmp_path_factory.mktemp("extensions-in-use")
    shutil.copytree(TEST_EXTENSIONS, data / "extensions")
    with serving(data, "--api", "--prompt-suffix-default", SUFFIX) as server:
        yield server, data


@pytest.fixture(scope="module")
def page(program):
    """The page, loaded once for the module's browser tests (each opens the tab it needs)."""
    from playwright.sync_api import sync_playwright
    server, _ = program
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        opened = browser.new_page(viewport={"width": 1400, "height": 1200})
        opened.goto(server.url)
        opened.locator("#txt2img_prompt textarea").wait_for(timeout=60_000)
        yield opened
        browser.close()


def call(server, path: str, body=None) -> tuple[int, object]:
    """(status, parsed JSON answer) of a GET, or a POST when there is a body."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(server.url + path, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


def png_b64(picture: Image.Image) -> str:
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def decoded(b64: str) -> Image.Image:
    picture = Image.open(io.BytesIO(base64.b64decode(b64)))
    picture.load()
    return picture


def pixels(picture: Image.Image) -> np.ndarray:
    return np.asarray(picture.convert("RGB"), dtype=np.int16)


def striped_picture() -> Image.Image:
    """64x64, every pixel different from its inverse."""
    rng = np.random.default_rng(3)
    return Image.fromarray(rng.integers(0, 120, (64, 64, 3), dtype=np.uint8))


def small_txt2img(**fields) -> dict:
    return {"prompt": "a red square", "steps": 3, "width": 64, "height": 64, "seed": 21, **fields}


def builtin_script_titles() -> set[str]:
    """The titles the repo's scripts/*.py return as plain strings (a literal, or a module-level constant)."""
    titles = set()
    for path in sorted((REPO_ROOT / "scripts").glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        constants = {target.id: node.value.value for node in tree.body if isinstance(node, ast.Assign)
                     for target in node.targets if isinstance(target, ast.Name)
                     and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)}
        for method in ast.walk(tree):
            if not (isinstance(method, ast.FunctionDef) and method.name == "title"):
                continue
            for returned in (n.value for n in ast.walk(method) if isinstance(n, ast.Return)):
                if isinstance(returned, ast.Constant) and isinstance(returned.value, str):
                    titles.add(returned.value)
                elif isinstance(returned, ast.Name) and returned.id in constants:
                    titles.add(constants[returned.id])
    return titles


# ---- through /sdapi/v1 ------------------------------------------------------------------------------------------

def test_the_selectable_scripts_and_the_arguments_of_tile_redraw_are_listed(program):
    server, _ = program
    status, listed = call(server, "/sdapi/v1/scripts")
    assert status == 200
    assert "tile redraw" in listed["img2img"] and "tile redraw" not in listed["txt2img"]  # show() is is_img2img
    assert {t.lower() for t in builtin_script_titles()} <= set(listed["txt2img"]) | set(listed["img2img"])
    assert "prompt suffix" in listed["txt2img"]  # as A1111's: every script of the tab, always-on ones too

    status, info = call(server, "/sdapi/v1/script-info")
    assert status == 200
    [tile] = [s for s in info if s["name"] == "tile redraw"]
    assert tile["is_img2img"] and not tile["is_alwayson"]
    upscaler, scale, size = tile["args"]
    assert upscaler["label"] == "Upscaler" and "Lanczos" in upscaler["choices"]
    assert upscaler["value"] == upscaler["choices"][0]
    assert (scale["label"], scale["value"], scale["minimum"], scale["maximum"], scale["step"]) == ("Scale", 2, 1, 4, 1)
    assert (size["label"], size["value"], size["minimum"], size["maximum"], size["step"]) == (
        "Tile size", 64, 32, 512, 8)
    suffix = [s for s in info if s["name"] == "prompt suffix"]
    assert {s["is_img2img"] for s in suffix} == {False, True} and all(s["is_alwayson"] for s in suffix)
    assert suffix[0]["args"][0]["label"] == "Append the suffix" and suffix[0]["args"][0]["value"] is False


def test_every_test_extension_is_listed_and_the_one_that_failed_to_load_is_not_enabled(program):
    server, _ = program
    status, listed = call(server, "/sdapi/v1/extensions")
    assert status == 200
    enabled = {e["name"]: e["enabled"] for e in listed}
    ours = {p.name for p in TEST_EXTENSIONS.iterdir() if p.is_dir()}
    assert ours <= set(enabled)
    assert enabled["broken-import"] is False
    assert all(enabled[name] for name in ours - {"broken-import"}), enabled  # broken-hooks loads: its hooks fail


def test_an_always_on_script_joins_a_job_only_when_its_arguments_say_so(program):
    server, _ = program
    status, suffixed = call(server, "/sdapi/v1/txt2img", small_txt2img(alwayson_scripts={
        "Prompt suffix": {"args": [True]}}))
    assert status == 200, suffixed
    [infotext] = json.loads(suffixed["info"])["infotexts"]
    prompt, parameters = infotext.split("\n", 1)
    assert prompt == f"a red square, {SUFFIX}"
    assert f"Prompt suffix: {SUFFIX}" in parameters

    status, switched_off = call(server, "/sdapi/v1/txt2img", small_txt2img(alwayson_scripts={
        "Prompt suffix": {"args": [False]}}))
    assert status == 200, switched_off
    status, plain = call(server, "/sdapi/v1/txt2img", small_txt2img())
    assert status == 200, plain
    for answer in (switched_off, plain):
        assert json.loads(answer["info"])["infotexts"][0].startswith("a red square\n")
        assert "Prompt suffix" not in json.loads(answer["info"])["infotexts"][0]
    assert np.array_equal(pixels(decoded(switched_off["images"][0])), pixels(decoded(plain["images"][0])))


def test_the_options_include_the_setting_an_extension_declared(program):
    server, _ = program
    status, options = call(server, "/sdapi/v1/options")
    assert status == 200
    assert options.get("prompt_suffix_text") == SUFFIX


def test_an_extension_setting_set_through_the_api_is_used_by_the_next_job_and_saved(program):
    server, data = program
    try:
        status, answer = call(server, "/sdapi/v1/options", {"prompt_suffix_text": "in ink"})
        assert status == 200, answer
        assert json.loads((data / "config.json").read_text(encoding="utf-8"))["prompt_suffix_text"] == "in ink"
        status, job = call(server, "/sdapi/v1/txt2img", small_txt2img(alwayson_scripts={
            "Prompt suffix": {"args": [True]}}))
        assert status == 200, job
        [infotext] = json.loads(job["info"])["infotexts"]
        assert infotext.startswith("a red square, in ink\n") and "Prompt suffix: in ink" in infotext
        status, answer = call(server, "/sdapi/v1/options", {"prompt_suffix_text": 3})
        assert status == 422 and "prompt_suffix_text" in answer  # the setting holds text
    finally:
        call(server, "/sdapi/v1/options", {"prompt_suffix_text": SUFFIX})


def test_a_selectable_img2img_script_enlarges_by_tiles_and_saves_its_picture(program):
    server, data = program
    folder = data / "outputs" / "img2img-images"
    before = set(folder.rglob("*.png"))
    status, answer = call(server, "/sdapi/v1/img2img", {
        "init_images": [png_b64(striped_picture())], "prompt": "a red square", "steps": 3, "width": 64,
        "height": 64, "seed": 9, "denoising_strength": 0.3, "script_name": "Tile redraw",
        "script_args": ["Lanczos", 2, 64]})
    assert status == 200, answer
    [returned] = answer["images"]
    picture = decoded(returned)
    assert picture.size == (128, 128)
    [saved] = set(folder.rglob("*.png")) - before
    with Image.open(saved) as written:
        assert written.size == (128, 128)
        parameters = written.info["parameters"]
    assert parameters == picture.info["parameters"] == json.loads(answer["info"])["infotexts"][0]
    assert parameters.startswith("a red square\n") and "Seed: 9" in parameters
    assert "Denoising strength: 0.3" in parameters
    status, read_back = call(server, "/sdapi/v1/png-info", {"image": base64.b64encode(saved.read_bytes()).decode()})
    assert status == 200 and read_back["info"] == parameters


def test_an_extras_script_keeps_its_default_through_the_api(program):
    server, _ = program
    source = striped_picture()
    status, answer = call(server, "/sdapi/v1/extra-single-image", {
        "image": png_b64(source), "upscaling_resize": 1, "upscaler_1": "None"})
    assert status == 200, answer
    assert np.array_equal(pixels(decoded(answer["image"])), pixels(source))  # "Invert colours" is off by default
    assert "Inverted" not in answer["html_info"]


def test_an_extension_route_answers_with_the_loaded_model(program):
    server, _ = program
    status, models = call(server, "/sdapi/v1/sd-models")
    assert status == 200
    status, answer = call(server, "/hello-route/model")
    assert status == 200
    assert answer == {"model": models[0]["model_name"], "is_sdxl": False}
    assert answer["model"] == "demo-shapes"


def test_broken_extensions_are_named_in_the_log_and_the_server_goes_on(program):
    server, _ = program
    status, answer = call(server, "/sdapi/v1/txt2img", small_txt2img(seed=22))
    assert status == 200 and len(answer["images"]) == 1  # broken-hooks' process() and postprocess_image() raise
    log = server.log()
    assert "broken-import" in log and "No module named 'this_module_does_not_exist'" in log
    assert "broken-hooks: app_started fails on purpose" in log
    assert "broken-hooks: process fails on purpose" in log
    assert "broken-hooks: postprocess_image fails on purpose" in log
    assert call(server, "/sdapi/v1/samplers")[0] == 200


# ---- through the page -------------------------------------------------------------------------------------------

@in_browser
def test_the_scripts_and_style_of_an_extension_reach_the_page(page):
    page.wait_for_function("document.body.dataset.pageMarker === 'extension script ran'", timeout=30_000)
    color = page.evaluate("getComputedStyle(document.querySelector('#tab_txt2img')).outlineColor")
    assert color == "rgb(1, 2, 3)"


@in_browser
def test_the_note_of_an_extension_comes_right_after_the_negative_prompt(page):
    page.get_by_role("tab", name="txt2img").click()
    note = page.locator("#prompt_suffix_note")
    assert note.inner_text().strip() == "Prompt suffix is installed"
    following = page.evaluate("""() => {
        const box = document.querySelector('#txt2img_neg_prompt');
        const later = [...document.querySelectorAll('#tab_txt2img [id]')]
            .filter((e) => box.compareDocumentPosition(e) & Node.DOCUMENT_POSITION_FOLLOWING && !box.contains(e));
        return later[0].id;
    }""")
    assert following == "prompt_suffix_note"
    negative, shown = page.locator("#txt2img_neg_prompt").bounding_box(), note.bounding_box()
    assert shown["y"] >= negative["y"] + negative["height"] - 1
    page.screenshot(path=str(SCREENSHOTS / "extensions_in_use_txt2img.png"), full_page=True)


@in_browser
def test_the_negative_token_counter_stays_in_its_box_after_an_extension_adds_a_note(page):
    page.get_by_role("tab", name="txt2img").click()
    for box, counter in (("txt2img_prompt", "txt2img_token_counter"),
                         ("txt2img_neg_prompt", "txt2img_negative_token_counter")):
        outer = page.locator(f"#{box}").bounding_box()
        shown = page.locator(f"#{counter} span").bounding_box()
        assert outer["y"] <= shown["y"] and shown["y"] + shown["height"] <= outer["y"] + outer["height"], counter


@in_browser
def test_a_tab_of_an_extension_answers_from_the_server(page):
    page.get_by_role("tab", name="Hello").click()
    page.locator("#hello_tab_name textarea, #hello_tab_name input").first.fill("Ada")
    page.locator("#hello_tab_greet").click()
    page.wait_for_function("(document.querySelector('#hello_tab_answer textarea') || "
                           "document.querySelector('#hello_tab_answer input')).value === 'Hello, Ada!'")


@in_browser
def test_an_always_on_script_ticked_on_the_page_joins_the_generation(page):
    page.get_by_role("tab", name="txt2img").click()
    checkbox = page.locator("#script_txt2img_prompt_suffix_enabled input")
    assert not checkbox.is_visible()  # inside the closed accordion
    page.get_by_role("button", name="Prompt suffix").click()
    checkbox.check()
    page.locator("#txt2img_prompt textarea").fill("a red square")
    info = generate_small_picture(page, "txt2img", steps=3, expect="Prompt suffix:")
    assert "a red square, " in info and "Steps: 3" in info
    checkbox.uncheck()


@in_browser
def test_an_extension_setting_is_applied_from_the_settings_tab_and_survives_a_reload(page, program):
    server, data = program
    try:
        page.get_by_role("tab", name="Settings").click()
        field = page.locator("#setting_prompt_suffix_text textarea, #setting_prompt_suffix_text input").first
        assert field.input_value() == SUFFIX
        field.fill("with a pencil")
        page.locator("#settings_extensions_apply").click()
        page.wait_for_function("document.querySelector('#settings_extensions_status').innerText.includes('Saved')")
        assert json.loads((data / "config.json").read_text(encoding="utf-8"))["prompt_suffix_text"] == "with a pencil"
        page.reload()
        page.get_by_role("tab", name="Settings").click()
        field = page.locator("#setting_prompt_suffix_text textarea, #setting_prompt_suffix_text input").first
        page.wait_for_function("(document.querySelector('#setting_prompt_suffix_text textarea') || "
                               "document.querySelector('#setting_prompt_suffix_text input')).value === 'with a pencil'")
    finally:
        call(server, "/sdapi/v1/options", {"prompt_suffix_text": SUFFIX})


@in_browser
def test_an_extras_script_ticked_on_the_page_inverts_the_picture(page, program, tmp_path):
    _, data = program
    source = striped_picture()
    source.save(tmp_path / "source.png")
    page.get_by_role("tab", name="Extras").click()
    invert = page.locator("#extras_invert_enabled input")
    assert not invert.is_checked()
    invert.check()
    page.locator("#extras_upscaling_resize input[type=number]").fill("1")
    page.locator("#extras_upscaling_resize input[type=number]").press("Enter")
    page.locator("#extras_image input[type=file]").set_input_files(str(tmp_path / "source.png"))
    page.wait_for_selector("#extras_image img")
    page.locator("#extras_generate").click()
    page.wait_for_function("document.querySelector('#html_info_extras').innerText.includes('Inverted')",
                           timeout=60_000)
    [saved] = sorted((data / "outputs" / "extras-images").rglob("*.png"))
    with Image.open(saved) as written:
        assert np.array_equal(pixels(written), 255 - pixels(source))
    shown = page.locator("#extras_gallery img").first
    shown.wait_for()
    corner = page.evaluate("""async (img) => {
        await img.decode();
        const canvas = document.createElement('canvas');
        canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
        const context = canvas.getContext('2d');
        context.drawImage(img, 0, 0);
        return [img.naturalWidth, ...context.getImageData(0, 0, 1, 1).data.slice(0, 3)];
    }""", shown.element_handle())
    assert corner == [64, *(255 - pixels(source)[0, 0]).tolist()]


@in_browser
def test_a_selectable_script_shows_its_controls_when_chosen_in_img2img(page):
    page.get_by_role("tab", name="img2img").first.click()
    controls = page.locator("#img2img_script_tile_redraw").first  # Gradio gives a group's two nested divs its id
    assert not controls.is_visible()
    page.locator("#img2img_script input").click()
    page.get_by_role("option", name="Tile redraw", exact=True).click()
    controls.wait_for(state="visible")
    for elem_id in ("script_tile_redraw_upscaler", "script_tile_redraw_scale", "script_tile_redraw_tile"):
        assert page.locator(f"#{elem_id}").is_visible(), elem_id
    assert page.locator("#script_tile_redraw_tile input[type=number]").input_value() == "64"


@in_browser
def test_the_extensions_tab_says_which_extension_failed_and_why(page):
    page.get_by_role("tab", name="Extensions").click()
    row = page.locator("#extensions tbody tr", has_text="broken-import")
    row.wait_for(timeout=30_000)
    text = row.inner_text()
    assert "failed" in text and "this_module_does_not_exist" in text
    assert page.locator("#extensions input[name=enable_broken-import]").is_checked()  # enabled, but it failed
    assert "ok" in page.locator("#extensions tbody tr", has_text="prompt-suffix").inner_text()
    page.screenshot(path=str(SCREENSHOTS / "extensions_in_use_extensions_tab.png"), full_page=True)
