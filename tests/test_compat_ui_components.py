"""A1111's `modules.ui_components` and the Gradio 3.x shim (`modules.gradio_compat`), used as extensions use them:
the Blocks they build, the values their handlers get and return, and our own page unchanged by the shim."""
import asyncio
import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import gradio as gr
import pytest
from gradio.state_holder import SessionState

from modules import gradio_compat
from tests.helpers import REPO, component, free_port

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
BROWSER_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="module", autouse=True)
def shim():
    gradio_compat.install()


def run_event(demo: gr.Blocks, dependency, *inputs) -> list:
    """What the page receives when the event runs with `inputs`, through Gradio's own pre- and postprocessing."""
    answer = asyncio.run(demo.process_api(block_fn=demo.fns[dependency["id"]], inputs=list(inputs),
                                          state=SessionState(demo), request=None))
    return answer["data"]


def props(config: dict, elem_id: str) -> dict:
    return component(config, elem_id)["props"]


def child_ids(layout: dict, block_id: int) -> list[int]:
    """The ids of the blocks directly inside `block_id` in a page layout."""
    if layout["id"] == block_id:
        return [child["id"] for child in layout.get("children", [])]
    return next((ids for child in layout.get("children", []) if (ids := child_ids(child, block_id))), [])


def test_each_ui_component_is_drawn_by_a_gradio_component():
    from modules import ui_components as uc

    with gr.Blocks() as demo:
        with uc.ResizeHandleRow(elem_id="resizable"), uc.FormColumn(elem_id="column"), uc.FormGroup(elem_id="group"):
            with uc.FormRow(elem_id="row"):
                uc.DropdownMulti(choices=["a", "b"], value=["a"], label="Pick", elem_id="multi")
                uc.DropdownEditable(choices=["x"], value="x", elem_id="editable")
                uc.ToolButton("🔄", elem_id="refresh", elem_classes="mine")
            uc.FormHTML("<b>note</b>", elem_id="note")
            uc.FormColorPicker("#ff0000", elem_id="colour")
        with uc.InputAccordion(False, label="Enable the thing", elem_id="thing") as enabled:
            with enabled.extra():
                uc.FormHTML("beside the label", elem_id="thing_hint")
            gr.Slider(0, 10, 3, elem_id="strength")
    config = demo.get_config_file()

    types = {elem_id: component(config, elem_id)["type"] for elem_id in (
        "resizable", "column", "group", "row", "multi", "editable", "refresh", "note", "colour", "thing",
        "thing-checkbox", "thing-extra")}
    assert types == {"resizable": "row", "column": "column", "group": "group", "row": "row", "multi": "dropdown",
                     "editable": "dropdown", "refresh": "button", "note": "html", "colour": "colorpicker",
                     "thing": "accordion", "thing-checkbox": "checkbox", "thing-extra": "column"}
    assert props(config, "multi")["multiselect"] and props(config, "multi")["value"] == ["a"]
    assert props(config, "editable")["allow_custom_value"] and not props(config, "editable").get("multiselect")
    refresh = props(config, "refresh")
    assert refresh["elem_classes"] == ["mine", "tool"] and refresh["scale"] == 0 and refresh["value"] == "🔄"
    assert "resize-handle-row" in props(config, "resizable")["elem_classes"]

    accordion, checkbox = props(config, "thing"), props(config, "thing-checkbox")
    assert accordion["label"] == checkbox["label"] == "Enable the thing" and accordion["open"] is False
    assert checkbox["visible"] is False and checkbox["value"] is False
    assert enabled.accordion._id == component(config, "thing")["id"]
    inside = child_ids(config["layout"], component(config, "thing")["id"])
    assert component(config, "thing-extra")["id"] in inside and component(config, "thing-checkbox")["id"] not in inside
    assert not (REPO / "modules" / "ui_components.pyi").exists()  # Gradio writes one beside a class unless told not


def test_input_accordion_is_an_event_input_and_an_output():
    from modules.ui_components import InputAccordion

    with gr.Blocks() as demo:
        with InputAccordion(True, label="Enable") as enabled:
            strength = gr.Slider(0, 10, 3)
        out = gr.Textbox()
        report = gr.Button().click(lambda on, value: f"{on} {value}", inputs=[enabled, strength], outputs=out)
        switch_off = gr.Button().click(lambda: gr.update(value=False), outputs=enabled)
    assert run_event(demo, report, True, 4) == ["True 4"]
    assert run_event(demo, report, False, 4) == ["False 4"]
    assert run_event(demo, switch_off) == [{"__type__": "update", "value": False}]
    assert enabled.accordion.open is True
    assert len([d for d in demo.config["dependencies"] if d["js"]]) == 3  # expand, collapse, value -> open


@pytest.mark.browser
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Chromium is not installed (run ./run_tests.sh)")
def test_input_accordion_in_the_browser_is_checked_while_open():
    """A1111's behaviour: opening the accordion enables what it holds, closing it disables it; an event that sets
    its value opens it. And a Gradio 3.x handler's `gr.Dropdown.update(choices=...)` reaches the page."""
    from playwright.sync_api import sync_playwright

    from modules.ui_components import InputAccordion, ToolButton

    with gr.Blocks() as demo:
        with InputAccordion(False, label="Enable the thing", elem_id="thing") as enabled:
            strength = gr.Slider(0, 10, 3, elem_id="strength")
        out = gr.Textbox(elem_id="out", interactive=True)
        choices = gr.Dropdown(choices=["old"], value="old", elem_id="choices", interactive=True)
        with gr.Box():
            gr.Button("report", elem_id="report").click(lambda on, value: f"{on} {value:g}",
                                                        inputs=[enabled, strength], outputs=out)
            gr.Button("enable", elem_id="enable").click(lambda: gr.Checkbox.update(value=True), outputs=enabled)
            ToolButton("🔄", elem_id="refresh").style(full_width=False).click(
                lambda: gr.Dropdown.update(choices=["new", "newer"], value="newer"), outputs=choices, _js="() => []")
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
            page = browser.new_page()
            page.goto(f"http://127.0.0.1:{port}/")

            def reported() -> str:
                page.locator("#out textarea").fill("")
                page.locator("#report").click()
                page.wait_for_function("document.querySelector('#out textarea').value !== ''")
                return page.locator("#out textarea").input_value()

            assert reported() == "False 3" and not page.locator("#strength").is_visible()
            page.locator("#thing .label-wrap").click()
            page.locator("#strength").wait_for(state="visible")
            assert reported() == "True 3"
            page.locator("#thing .label-wrap").click()
            page.locator("#strength").wait_for(state="hidden")
            assert reported() == "False 3"
            page.locator("#enable").click()
            page.locator("#strength").wait_for(state="visible")
            assert reported() == "True 3"

            page.locator("#refresh").click()
            page.wait_for_function("document.querySelector('#choices input').value === 'newer'")
            page.locator("#choices input").click()
            assert [text.split()[-1] for text in page.get_by_role("option").all_inner_texts()] == ["new", "newer"]
            browser.close()
    finally:
        demo.close()


def test_an_extension_written_for_gradio_3_builds_and_runs():
    with gr.Blocks() as demo:
        with gr.Box(elem_id="box"):
            picture = gr.Image(type="pil", source="upload", tool="sketch", brush_radius=20, elem_id="picture").style(
                height=300)
            gr.Image(source="webcam", mirror_webcam=False, elem_id="webcam")
            gr.Gallery(elem_id="gallery", show_share_button=False).style(grid=[2, 4], height="auto")
            notes = gr.Textbox(show_copy_button=True, elem_id="notes").style(container=False)
            gr.Dataframe(headers=["a"], max_rows=5, overflow_row_behaviour="paginate", elem_id="table")
            upload = gr.File(type="file", elem_id="upload")
            with gr.Row().style(equal_height=True, mobile_collapse=False):
                choice = gr.Dropdown(choices=["a"], value="a", elem_id="choice")
                refresh = gr.Button("🔄").style(full_width=False, size="sm")
        refill = refresh.click(fn=lambda: gr.Dropdown.update(choices=["b", "c"], value="c"), outputs=choice,
                               show_progress=False, show_api=False)
        refill.then(fn=None, _js="() => { window.refreshed = true; }", every=5)
        show = refresh.click(lambda value: (gr.Textbox.update(value), gr.Image.update(visible=False)), inputs=choice,
                             outputs=[notes, picture], status_tracker=None)
        demo.load(None, _js="() => console.log('loaded')")
    config = demo.get_config_file()

    assert component(config, "box")["type"] == "group"
    assert props(config, "picture")["sources"] == ["upload"] and props(config, "picture")["height"] == 300
    assert props(config, "webcam")["sources"] == ["webcam"]
    assert props(config, "gallery")["columns"] == 4 and props(config, "gallery")["height"] == "auto"
    assert props(config, "notes")["container"] is False and refresh.size == "sm"
    assert props(config, "table")["headers"] == ["a"] and upload.type == "filepath"
    js = {d["js"]: d for d in config["dependencies"] if d["js"]}
    assert set(js) == {"() => { window.refreshed = true; }", "() => console.log('loaded')"}
    assert next(d for d in config["dependencies"] if d["id"] == refill["id"])["api_visibility"] == "private"

    assert run_event(demo, refill) == [
        {"__type__": "update", "choices": [["b", "b"], ["c", "c"]], "value": "c"}]
    assert run_event(demo, show, "a") == [{"__type__": "update", "value": "a"},
                                            {"__type__": "update", "visible": False}]


def test_each_3x_keyword_is_logged_once_per_place(caplog):
    """(Keywords no other test here passes: each is logged once a process.)"""
    caplog.set_level(logging.INFO, logger="modules.gradio_compat")
    with gr.Blocks():
        for _ in range(3):
            gr.Image(shape=(64, 64), mask_opacity=0.5)
            gr.Textbox().style(border=False)
        gr.Video(source="upload")
    lines = [r.getMessage() for r in caplog.records]
    assert sum("Image(shape=" in line for line in lines) == 1
    assert sum("Image(mask_opacity=" in line for line in lines) == 1
    assert sum("Textbox.style(border=" in line for line in lines) == 1
    assert any("Video(source=" in line and "upload" in line for line in lines)


def test_valid_gradio_6_calls_are_untouched():
    """The shim only adds: Gradio 6 keywords win over 3.x ones given with them, and it refuses what Gradio 6
    refuses."""
    with gr.Blocks():
        picture = gr.Image(source="upload", sources=["clipboard"])
        button = gr.Button()
        both = button.click(None, js="() => 'new'", _js="() => 'old'")
        with pytest.raises(TypeError):
            gr.Image(no_such_keyword=1)
        with pytest.raises(TypeError):
            button.click(None, no_such_keyword=1)
    assert picture.sources == ["clipboard"] and both["js"] == "() => 'new'"
    assert gr.Row.update(visible=False) == {"__type__": "update", "visible": False}  # Gradio 6's own
    gradio_compat.install()
    assert not getattr(gr.Button.click.__wrapped__, "accepts_gradio3_keywords", False)  # wrapped once


PAGE_CONFIG = """
import json, sys, tempfile
from modules import gradio_compat
from modules.cmd_args import parse_args
from modules.generation.services import build_services
from modules.models.devices import policy_from_args
from modules.paths import Paths
from modules.ui.app import create_ui

args = parse_args(["--data-dir", tempfile.mkdtemp(), "--skip-torch-cuda-test"])
paths = Paths.from_args(args)
paths.ensure()
services = build_services(paths, policy_from_args(args), console_progress=False)

def page():
    config = create_ui(services.models, services.worker, services.save_settings,
                       extensions_dir=paths.data_dir / "extensions").get_config_file()
    components = [[c["type"], c["props"]] for c in config["components"]]
    events = [[d["js"], d["backend_fn"], [t[1] for t in d["targets"]], d["api_visibility"]]
              for d in config["dependencies"]]
    return json.loads(json.dumps([components, events], default=str))

before = page()
gradio_compat.install()
with open(sys.argv[1], "w") as f:
    json.dump({"before": before, "after": page()}, f)
"""


@pytest.mark.slow
def test_our_page_is_the_same_with_the_shim(tmp_path):
    """Our page, built before and after install() in a fresh process: the same components with the same
    properties, the same events."""
    pages_file = tmp_path / "pages.json"
    built = subprocess.run([sys.executable, "-c", PAGE_CONFIG, str(pages_file)], cwd=REPO, capture_output=True,
                           text=True, timeout=600)
    assert built.returncode == 0, built.stderr[-3000:]
    pages = json.loads(pages_file.read_text())
    assert len(pages["before"][0]) > 100 and pages["before"] == pages["after"]
