"""The whole page: quicksettings on top, then the tabs."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import gradio as gr

from modules.localization import list_localizations, load_localization
from modules.models.manager import ModelManager
from modules.paths import REPO_ROOT
from modules.ui import extensions, extras, generation, networks, paste, quicksettings, settings
from modules.ui.ui_config import apply_ui_config
from modules.generation.worker import GenerationWorker

LOCALIZATION_DIRS = [REPO_ROOT / "localizations"]
CSS = """
.progress { position: relative; height: 1.6em; background: var(--block-background-fill);
            border: 1px solid var(--border-color-primary); border-radius: 4px; overflow: hidden; }
.progress-bar { position: absolute; inset: 0 auto 0 0; background: var(--color-accent-soft); }
.progress span { position: relative; padding-left: 0.5em; }
.warning { color: #b7791f; } .error { color: #c53030; }
#generate_forever_menu button { padding: 6px 12px; background: var(--block-background-fill); color: var(--body-text-color);
                                border: 1px solid var(--border-color-primary); border-radius: 4px; cursor: pointer; }
.generate-forever { animation: forever 1.5s ease-in-out infinite; }
@keyframes forever { 50% { filter: brightness(1.3); } }
""" + networks.CSS

# Ctrl+Enter in a prompt box presses that tab's Generate button, as in A1111; Ctrl+Up/Down edit emphasis.
# applyLocalization replaces English UI text (text nodes and placeholders) by the chosen translation,
# now and in whatever the page adds later.
HEAD = """
<script>
window.applyLocalization = (dict) => {
  if (!dict || !Object.keys(dict).length) return;
  const translate = (text) => {
    const key = text.trim();
    return Object.prototype.hasOwnProperty.call(dict, key) ? text.replace(key, dict[key]) : null;
  };
  const visit = (root) => {
    if (root.nodeType === 3) {
      const t = translate(root.nodeValue);
      if (t !== null) root.nodeValue = t;
      return;
    }
    if (root.nodeType !== 1 || ['SCRIPT', 'STYLE', 'TEXTAREA'].includes(root.tagName)) return;
    const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
    for (let n = walker.nextNode(); n; n = walker.nextNode()) {
      if (n.parentElement && ['SCRIPT', 'STYLE', 'TEXTAREA'].includes(n.parentElement.tagName)) continue;
      const t = translate(n.nodeValue);
      if (t !== null) n.nodeValue = t;
    }
    [root, ...root.querySelectorAll('[placeholder]')].forEach((e) => {
      if (!e.getAttribute || !e.getAttribute('placeholder')) return;
      const t = translate(e.getAttribute('placeholder'));
      if (t !== null) e.setAttribute('placeholder', t);
    });
  };
  visit(document.body);
  new MutationObserver((records) => records.forEach((r) => r.addedNodes.forEach(visit)))
    .observe(document.body, {childList: true, subtree: true});
};
// Ctrl+Up / Ctrl+Down in a prompt box: emphasis of the selection (or the word or (group:w) at the cursor)
// goes up / down by 0.1, written as (text:1.1); at 1.0 the brackets go away.
const EMPHASIS_DELIMITERS = /[\s.,\\/!?%^*;:{}=`~()\[\]<>|]/;
window.editEmphasis = (box, up) => {
  const t = box.value;
  let s = box.selectionStart, e = box.selectionEnd;
  const weightAfter = (i) => t.slice(i).match(/^:(-?\d+(?:\.\d+)?)\)/);
  if (s === e) {
    const open = t.lastIndexOf('(', s - 1), close = t.indexOf(')', s);
    if (open >= 0 && close >= 0 && !t.slice(open + 1, s).includes(')') && !t.slice(s, close).includes('(')
        && /:-?\d+(?:\.\d+)?$/.test(t.slice(open + 1, close))) {
      s = open + 1; e = t.lastIndexOf(':', close);
    } else {
      while (s > 0 && !EMPHASIS_DELIMITERS.test(t[s - 1])) s--;
      while (e < t.length && !EMPHASIS_DELIMITERS.test(t[e])) e++;
    }
  }
  while (s < e && /\s/.test(t[s])) s++;
  while (e > s && /\s/.test(t[e - 1])) e--;
  if (s === e) return false;
  const inner = t.slice(s, e);
  let weight = 1.0, from = s, to = e;
  const m = s > 0 && t[s - 1] === '(' ? weightAfter(e) : null;
  if (m) { weight = parseFloat(m[1]); from = s - 1; to = e + m[0].length; }
  weight = Math.round((weight + (up ? 0.1 : -0.1)) * 100) / 100;
  const text = weight === 1 ? inner : '(' + inner + ':' + weight + ')';
  box.setRangeText(text, from, to);
  const innerStart = weight === 1 ? from : from + 1;
  box.setSelectionRange(innerStart, innerStart + inner.length);
  box.dispatchEvent(new Event('input', {bubbles: true}));
  return true;
};
// "Generate forever" from the Generate button's right-click menu, as in A1111; Interrupt also ends it.
window.generateForever = {};
window.generateForeverNext = (tab) => {
  if (window.generateForever[tab]) setTimeout(() => document.getElementById(tab + '_generate')?.click(), 100);
};
window.setGenerateForever = (tab, on) => {
  window.generateForever[tab] = on;
  const button = document.getElementById(tab + '_generate');
  button?.classList.toggle('generate-forever', on);
  if (button) button.title = on ? 'Generating forever: right-click to stop' : '';
};
document.addEventListener('contextmenu', (e) => {
  const button = e.target.closest('#txt2img_generate, #img2img_generate');
  if (!button) return;
  e.preventDefault();
  const tab = button.id.replace('_generate', '');
  document.getElementById('generate_forever_menu')?.remove();
  const menu = document.createElement('div');
  menu.id = 'generate_forever_menu';
  menu.style.cssText = `position:fixed;left:${e.clientX}px;top:${e.clientY}px;z-index:1000`;
  const item = document.createElement('button');
  item.textContent = window.generateForever[tab] ? 'Cancel generate forever' : 'Generate forever';
  item.onclick = () => {
    menu.remove();
    const on = !window.generateForever[tab];
    window.setGenerateForever(tab, on);
    if (on) button.click();
  };
  menu.appendChild(item);
  document.body.appendChild(menu);
  setTimeout(() => document.addEventListener('click', () => menu.remove(), {once: true}), 0);
});
document.addEventListener('click', (e) => {
  const interrupt = e.target.closest('#txt2img_interrupt, #img2img_interrupt');
  if (interrupt) window.setGenerateForever(interrupt.id.replace('_interrupt', ''), false);
});
document.addEventListener('keydown', (e) => {
  if ((e.ctrlKey || e.metaKey) && (e.key === 'ArrowUp' || e.key === 'ArrowDown')
      && e.target.tagName === 'TEXTAREA' && e.target.closest('[id$="_prompt"], [id$="_neg_prompt"]')) {
    if (window.editEmphasis(e.target, e.key === 'ArrowUp')) e.preventDefault();
    return;
  }
  if (!(e.ctrlKey || e.metaKey) || e.key !== 'Enter') return;
  const box = e.target.closest('[id$="_prompt"], [id$="_neg_prompt"]');
  if (!box) return;
  const tab = box.id.startsWith('img2img') ? 'img2img' : 'txt2img';
  document.getElementById(tab + '_generate')?.click();
  e.preventDefault();
});
</script>
<script>""" + networks.JS + """</script>
"""


def _picked(gallery_value, index: int, last: dict):
    """The picture selected in a gallery (first if none) and its infotext."""
    if not gallery_value:
        return None, ""
    index = min(max(int(index or 0), 0), len(gallery_value) - 1)
    image = gallery_value[index][0]  # (picture, caption)
    texts = (last or {}).get("infotexts") or [""]
    return image, texts[min(index, len(texts) - 1)]


def _wire_send_buttons(source: dict, i2i: dict, extras_image: gr.Image, main_tabs: gr.Tabs) -> None:
    """Send to img2img / inpaint (picture and parameters) / extras (picture)."""
    inputs = [source["gallery"], source["selected"], source["last"]]

    def to_img2img(gallery_value, index, last):
        image, text = _picked(gallery_value, index, last)
        return [image, *paste.values_from_infotext(text), gr.Tabs(selected="img2img"), gr.Tabs(selected="img2img"),
                "img2img"]

    def to_inpaint(gallery_value, index, last):
        image, text = _picked(gallery_value, index, last)
        editor = {"background": image, "layers": [], "composite": image} if image is not None else None
        return [editor, *paste.values_from_infotext(text), gr.Tabs(selected="img2img"), gr.Tabs(selected="inpaint"),
                "inpaint"]

    def to_extras(gallery_value, index, last):
        image, _ = _picked(gallery_value, index, last)
        return image, gr.Tabs(selected="extras")

    fields = paste.paste_outputs(i2i)
    source["send"]["img2img"].click(to_img2img, inputs=inputs, outputs=[i2i["image"], *fields, main_tabs, i2i["tabs"], i2i["mode"]],
                                    api_visibility="private")
    source["send"]["inpaint"].click(to_inpaint, inputs=inputs, outputs=[i2i["inpaint"], *fields, main_tabs, i2i["tabs"], i2i["mode"]],
                                    api_visibility="private")
    source["send"]["extras"].click(to_extras, inputs=inputs, outputs=[extras_image, main_tabs],
                                   api_visibility="private")


def _follow_native_size(manager: ModelManager, checkpoint: gr.Dropdown, size: int, controls: list) -> None:
    """Width and height that are at the old checkpoint's native size move to the new one's (64 for the demo
    model, 1024 for SDXL); sizes the user chose stay."""
    native = gr.State(size)
    sliders = [s for c in controls for s in (c.width, c.height)]

    def follow(previous, *values):
        current = manager.current
        new = current.spec.native_size if current is not None else previous
        return [new] + [new if v == previous else v for v in values]

    checkpoint.change(follow, inputs=[native, *sliders], outputs=[native, *sliders], queue=False,
                      api_visibility="private")


def create_ui(manager: ModelManager, worker: GenerationWorker, save_settings: Callable[[], None],
              show_dir_fields: bool = True, freeze_settings: bool = False, ui_config_file: Path | None = None,
              extensions_dir: Path = REPO_ROOT / "extensions") -> gr.Blocks:
    current = manager.current
    size = current.spec.native_size if current is not None else 512
    with gr.Blocks(title="Stable Diffusion", analytics_enabled=False) as demo:
        checkpoint, status, switch_checkpoint = quicksettings.build(manager, save_settings, worker)
        thumbnails = networks.Thumbnails()
        with gr.Tabs(elem_id="tabs") as main_tabs:
            with gr.Tab("txt2img", id="txt2img", elem_id="tab_txt2img"):
                t2i = generation.build_txt2img(worker, size, thumbnails)
            with gr.Tab("img2img", id="img2img", elem_id="tab_img2img"):
                i2i = generation.build_img2img(worker, size, show_dir_fields, thumbnails)
            with gr.Tab("Extras", id="extras", elem_id="tab_extras"):
                extras_image = extras.build(worker.ctx.outputs_dir, show_dir_fields)
            with gr.Tab("PNG Info", id="pnginfo", elem_id="tab_pnginfo"):
                paste.build_png_info({"txt2img": t2i, "img2img": i2i}, main_tabs)
            with gr.Tab("Extensions", id="extensions", elem_id="tab_extensions"):
                extensions.build(extensions_dir)
            with gr.Tab("Settings", id="settings", elem_id="tab_settings"):
                settings.build(manager.options, save_settings, freeze_settings, show_dir_fields,
                               list_localizations(LOCALIZATION_DIRS))
        for tab in (t2i, i2i):
            paste.wire_paste_button(tab)
            _wire_send_buttons(tab, i2i, extras_image, main_tabs)
        networks.wire_checkpoint_cards([t2i["checkpoint_box"], i2i["checkpoint_box"]], checkpoint, status,
                                       switch_checkpoint)
        _follow_native_size(manager, checkpoint, size, [t2i["controls"], i2i["controls"]])
        translations = gr.JSON(visible=False)
        demo.load(lambda: load_localization(LOCALIZATION_DIRS, manager.options.localization), outputs=translations,
                  api_visibility="private"
                  ).then(None, inputs=translations, js="(d) => { window.applyLocalization(d); }",
                         api_visibility="private")
        if ui_config_file is not None:
            apply_ui_config(demo, ui_config_file)
    return demo
