"""The Extensions tab in a real browser (Debian's Chromium driven by Playwright): the tab alone, served in this
process over a temporary data folder with a fake restart, so that the test sees Apply's restart and config.json."""
import json
import random
import shutil
from pathlib import Path

import pytest

from modules.cmd_args import parse_args
from modules.options import Options
from modules.ui.extensions import ExtensionsTab, build
from tests.helpers import free_port

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = [pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Chromium is not installed (run ./run_tests.sh)"),
              pytest.mark.server, pytest.mark.browser]
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]


def serve_tab(tab: ExtensionsTab):
    """The tab on a page of its own, on a free loopback port; the page's load event shows the current state."""
    import gradio as gr
    with gr.Blocks(analytics_enabled=False) as demo:
        with gr.Tab("Extensions", elem_id="tab_extensions"):
            page = build(tab)
        demo.load(page.current, outputs=page.outputs, api_visibility="private", show_progress="hidden")
    port = free_port()
    demo.queue().launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, ssr_mode=False,
                        quiet=True)
    return demo, f"http://127.0.0.1:{port}"


def test_unchecking_and_apply_saves_disabled_extensions_restarts_and_survives_a_reload(tmp_path):
    from playwright.sync_api import sync_playwright
    data, builtin = tmp_path / "data", tmp_path / "extensions-builtin"
    for folder in (data / "extensions" / "alpha", data / "extensions" / "beta", builtin / "ours"):
        (folder / "scripts").mkdir(parents=True)
    options = Options()
    restarts, served = [], []

    def restart():  # as if the program started again: its page gets a new app id, as a new Gradio app has
        restarts.append("restart")
        served[0].app_id = random.getrandbits(64)

    tab = ExtensionsTab(data / "extensions", options, lambda: options.save(data / "config.json"), restart,
                        parse_args(["--data-dir", str(data)]), builtin_dir=builtin)
    demo, url = serve_tab(tab)
    served.append(demo)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            page = browser.new_page()
            page.goto(url)
            beta = page.locator("#extensions input[name=enable_beta]")
            beta.wait_for(timeout=30_000)
            rows = page.locator("#extensions tbody tr")
            assert [r.split("\t")[0].strip() for r in rows.all_inner_texts()] == ["ours", "alpha", "beta"]
            assert "built-in" in rows.nth(0).inner_text()
            assert beta.is_checked()
            beta.uncheck()
            with page.expect_navigation(timeout=30_000):  # the page reloads itself once the program is back
                page.locator("#extensions_apply").click()
                page.wait_for_function(
                    "document.querySelector('#extensions_result').innerText.includes('Restarting')", timeout=30_000)
            assert restarts == ["restart"]
            assert json.loads((data / "config.json").read_text())["disabled_extensions"] == ["beta"]

            page.locator("#extensions input[name=enable_beta]").wait_for(timeout=30_000)
            assert not page.locator("#extensions input[name=enable_beta]").is_checked()
            assert page.locator("#extensions input[name=enable_alpha]").is_checked()
            assert "disabled" in page.locator("#extensions tbody tr").nth(2).inner_text()
            page.reload()
            page.locator("#extensions input[name=enable_beta]").wait_for(timeout=30_000)
            assert not page.locator("#extensions input[name=enable_beta]").is_checked()
            browser.close()
    finally:
        demo.close()
