"""X/Y/Z plot from the page in a real browser (Debian's Chromium driven by Playwright): pick it in txt2img's Script
dropdown, choose the axes, generate, and find the grid in the gallery and in the grids folder; the swap and 📒
buttons and the dropdown of values of a choice axis."""
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.helpers import serving, set_size_and_steps

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = [pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Chromium is not installed (run ./run_tests.sh)"),
              pytest.mark.server, pytest.mark.browser]
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
PLOT = "#txt2img_script_xyz_plot"  # the script's controls on the txt2img tab
SCREENSHOT = Path("/tmp/xyz_plot_page.png")
GRID_COPY = Path("/tmp/xyz_plot_grid.png")


def pick(page, elem_id: str, option: str) -> None:
    """Pick the option of a Gradio dropdown whose text is exactly `option`."""
    page.locator(f"#{elem_id} input").click()
    page.locator(f"#{elem_id}").get_by_role("option", name=option, exact=True).click()


def text_field(page, elem_id: str):
    return page.locator(f"#{elem_id} textarea, #{elem_id} input").first


def test_a_plot_from_the_page_shows_the_grid_and_saves_it(tmp_path):
    from playwright.sync_api import sync_playwright
    with serving(tmp_path) as server, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1200})
        page.goto(server.url)
        page.locator("#txt2img_prompt textarea").fill("a red square")
        page.locator("#txt2img_seed input").fill("77")
        assert not page.locator(PLOT).first.is_visible()
        pick(page, "txt2img_script", "X/Y/Z plot")
        page.locator(PLOT).first.wait_for(state="visible")  # (Gradio gives a group's id to two nested elements)
        pick(page, "script_txt2img_xyz_plot_x_type", "Steps")
        text_field(page, "script_txt2img_xyz_plot_x_values").fill("2,3,4")
        pick(page, "script_txt2img_xyz_plot_y_type", "CFG Scale")
        text_field(page, "script_txt2img_xyz_plot_y_values").fill("3,7")
        set_size_and_steps(page, "txt2img", steps=4)
        page.locator("#txt2img_generate").click()
        page.wait_for_function("document.querySelector('#html_info_txt2img').innerText.includes('X Type: Steps')",
                               timeout=180_000)
        info = page.locator("#html_info_txt2img").inner_text()
        assert 'X Values: "2,3,4", Y Type: CFG Scale, Y Values: "3,7"' in info and "Seed: 77" in info
        shown = page.locator("#txt2img_gallery img").first
        shown.wait_for()
        size = page.evaluate("(img) => [img.naturalWidth, img.naturalHeight]", shown.element_handle())
        page.screenshot(path=str(SCREENSHOT), full_page=True)

        [saved] = sorted((tmp_path / "outputs" / "txt2img-grids").rglob("xyz_grid-*.png"))
        shutil.copy(saved, GRID_COPY)
        with Image.open(saved) as grid:
            assert grid.size == tuple(size)  # the gallery shows the grid
            left = grid.width - 3 * 64  # the row legends: at least A1111's 3/4 of a cell, wider to stay readable
            assert left >= 64 * 3 // 4 and grid.height > 2 * 64  # 3x2 cells and the legends
            assert "X Type: Steps" in grid.info["parameters"]
            legend = np.asarray(grid.convert("L"))[:grid.height - 2 * 64, left:]
            assert legend.min() < 100  # text above the columns

        # swap X and Y: types and values change places
        page.locator(f"{PLOT} #xy_grid_swap_axes_button").click()
        page.wait_for_function(
            "document.querySelector('#script_txt2img_xyz_plot_x_type input').value === 'CFG Scale'")
        assert text_field(page, "script_txt2img_xyz_plot_x_values").input_value() == "3,7"
        assert page.locator("#script_txt2img_xyz_plot_y_type input").input_value() == "Steps"
        assert text_field(page, "script_txt2img_xyz_plot_y_values").input_value() == "2,3,4"

        # a choice axis: a dropdown of values instead of the text box, and 📒 fills it with every choice
        pick(page, "script_txt2img_xyz_plot_x_type", "Sampler")
        values = page.locator("#script_txt2img_xyz_plot_x_values_dropdown")
        values.wait_for(state="visible")
        assert not page.locator("#script_txt2img_xyz_plot_x_values").is_visible()
        fill = page.locator(f"{PLOT} #xyz_grid_fill_x_tool_button")
        fill.click()
        values.get_by_text("DPM++ 2M", exact=True).wait_for()
        assert values.get_by_text("Euler a", exact=True).is_visible()
        # in CSV mode the same choices are written into the text box
        page.locator("#script_txt2img_xyz_plot_csv_mode input").check()
        page.wait_for_function("(document.querySelector('#script_txt2img_xyz_plot_x_values textarea') || "
                               "document.querySelector('#script_txt2img_xyz_plot_x_values input')).value"
                               ".startsWith('DPM++ 2M,')")
        assert not values.is_visible()
        browser.close()
