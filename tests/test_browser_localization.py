"""zh_CN covers the page: with the Chinese localization chosen, every visible English text of every tab (labels,
buttons, hints, placeholders, tooltips, messages) has an entry, except names that stay as they are (samplers,
files, formats, flags)."""
import json
import re
import shutil
from pathlib import Path

import pytest

from modules.paths import REPO_ROOT
from tests.helpers import serving_checkpoints

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = [pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Chromium is not installed (run ./run_tests.sh)"),
              pytest.mark.server, pytest.mark.browser]

# Texts that read the same in Chinese: proper names, units, syntax, values.
KEPT = re.compile(r"^(SD VAE|VAE|LoRA|Lora|CFG|ENSD|PNG|JPEG|WebP|png|jpg|jpeg|webp|avif|GPU|CPU|SDXL|SD ?1\.x|rho|"
                  r"Automatic|None|Original|No norm|Default|Euler.*|DPM.*|LMS.*|Heun|DDIM.*|PLMS|UniPC|LCM|Restart|"
                  r"Karras|Exponential|Uniform|SGM Uniform|Simple|Normal|Beta|Polyexponential|Align Your Steps|"
                  r"KL Optimal|"
                  r"DDIM|Lanczos|Nearest|Latent.*|Bicubic|Bilinear|Base|Citrus|Glass|Monochrome|Ocean|Origin|Soft|"
                  r"CodeFormer|GFPGAN|RestoreFormer|"  # face restorers
                  r"Disable|Enable|Enable for SDXL|Textual Inversion|Checkpoints|Stable Diffusion( XL)?|"
                  r"safetensors|ckpt|[\w .-]+\.(safetensors|ckpt|pt|png|json|yaml)( \[\w+\])?|.*\d+(\.\d+)?%?.*|\W*|"
                  r"[a-z]+(_[A-Za-z0-9]+)+|common\.\w+)$")  # setting keys; Gradio's own untranslated i18n keys


def english_texts(page) -> list[str]:
    return page.evaluate(r"""() => {
        const seen = new Set();
        const visible = (el) => el && el.offsetParent !== null && getComputedStyle(el).visibility !== 'hidden';
        const skip = (el) => el.closest('textarea, code, .extra-network-cards, [data-testid="textbox"], .options');
        const walker = document.createTreeWalker(document.querySelector('gradio-app') || document.body,
                                                 NodeFilter.SHOW_TEXT);
        for (let n = walker.nextNode(); n; n = walker.nextNode()) {
            const el = n.parentElement;
            const text = n.nodeValue.trim();
            if (text && /[A-Za-z]{2}/.test(text) && !/[\u4e00-\u9fff]/.test(text) && visible(el) && !skip(el)) {
                seen.add(text);
            }
        }
        document.querySelectorAll('[placeholder], button[title]').forEach((el) => {
            if (!visible(el)) return;
            for (const a of ['placeholder', 'title']) {
                const t = (el.getAttribute(a) || '').trim();
                if (t && /[A-Za-z]{2}/.test(t) && !/[\u4e00-\u9fff]/.test(t)) seen.add(t);
            }
        });
        return [...seen];
    }""")


def test_every_visible_english_text_has_a_chinese_entry(tmp_path, tiny_dir):
    from playwright.sync_api import sync_playwright
    (tmp_path / "config.json").write_text(json.dumps({"localization": "zh_CN"}))
    translations = json.loads((REPO_ROOT / "localizations" / "zh_CN.json").read_text(encoding="utf-8"))
    missing: dict[str, set[str]] = {}
    with serving_checkpoints(tmp_path, tiny_dir) as running, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 1200})
        page.goto(running.url)
        page.get_by_role("tab", name="文生图").wait_for(timeout=30_000)
        tabs = page.locator("#tabs button[role=tab]")
        for i in range(tabs.count()):
            tab = tabs.nth(i)
            if not tab.is_visible():
                continue
            tab.click()
            page.wait_for_timeout(700)
            for accordion in page.locator("[id$='_extra_networks'] button.label-wrap").all():
                if accordion.is_visible() and "open" not in (accordion.get_attribute("class") or ""):
                    accordion.click()  # the extra-network cards too
                    page.wait_for_timeout(500)
            for text in english_texts(page):
                if text not in translations and not KEPT.match(text):
                    missing.setdefault(text, set()).add(tab.inner_text())
        browser.close()
    assert not missing, "no zh_CN entry for:\n" + "\n".join(f"{t!r} ({', '.join(sorted(w))})"
                                                           for t, w in sorted(missing.items()))
