"""Screenshots of every tab for docs/ and the README, in English and in Chinese (zh_CN), taken with Chromium on
a running server.

    venv/bin/python tools/screenshots.py     # starts webui.py on a free port with a temporary data dir, twice

The page starts on the built-in demo model; txt2img is shown after a real generation. English pictures are
docs/screenshot-<tab>.png, Chinese ones docs/screenshot-<tab>-zh_CN.png.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
TABS = ("img2img", "extras", "pnginfo", "modelmerger", "extensions", "settings")


def shoot(localization: str | None) -> None:
    from playwright.sync_api import sync_playwright

    data = Path(tempfile.mkdtemp())
    if localization:
        (data / "config.json").write_text(json.dumps({"localization": localization}))
    suffix = f"-{localization}" if localization else ""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = data / "server.log"
    proc = subprocess.Popen([sys.executable, "webui.py", "--data-dir", str(data), "--port", str(port)], cwd=ROOT,
                            stdout=open(log, "w"), stderr=subprocess.STDOUT)
    try:
        while "Running on local URL" not in log.read_text():
            if proc.poll() is not None:
                raise SystemExit(log.read_text())
            time.sleep(0.5)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"http://127.0.0.1:{port}")
            page.locator("#txt2img_prompt textarea").fill("a large purple triangle on a yellow background")
            page.locator("#txt2img_batch_size input[type=number]").fill("4")
            page.locator("#txt2img_batch_size input[type=number]").press("Enter")
            page.locator("#txt2img_seed input").fill("3")
            page.locator("#txt2img_generate").click()
            page.wait_for_selector("#html_info_txt2img p", timeout=120_000)
            page.locator("#txt2img_extra_networks").click()
            page.locator("#txt2img_lora_cards_tab-button").click()
            page.wait_for_timeout(800)
            page.screenshot(path=str(ROOT / "docs" / f"screenshot-txt2img{suffix}.png"), full_page=True)
            for tab in TABS:
                page.locator(f"#tab_{tab}-button").click()
                page.wait_for_timeout(800)
                page.screenshot(path=str(ROOT / "docs" / f"screenshot-{tab}{suffix}.png"))
            browser.close()
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main() -> int:
    for localization in (None, "zh_CN"):
        shoot(localization)
    print("wrote docs/screenshot-*.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
