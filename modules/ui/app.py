"""The whole page: quicksettings on top, then the tabs."""
from __future__ import annotations

from collections.abc import Callable

import gradio as gr

from modules.localization import list_localizations, load_localization
from modules.model_manager import ModelManager
from modules.paths import REPO_ROOT
from modules.ui import extras, generation, paste, quicksettings, settings
from modules.worker import GenerationWorker

LOCALIZATION_DIRS = [REPO_ROOT / "localizations"]
CSS = """
.progress { position: relative; height: 1.6em; background: var(--block-background-fill);
            border: 1px solid var(--border-color-primary); border-radius: 4px; overflow: hidden; }
.progress-bar { position: absolute; inset: 0 auto 0 0; background: var(--color-accent-soft); }
.progress span { position: relative; padding-left: 0.5em; }
.warning { color: #b7791f; } .error { color: #c53030; }
"""

# Ctrl+Enter in a prompt box presses that tab's Generate button, as in A1111.
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
document.addEventListener('keydown', (e) => {
  if (!(e.ctrlKey || e.metaKey) || e.key !== 'Enter') return;
  const box = e.target.closest('[id$="_prompt"], [id$="_neg_prompt"]');
  if (!box) return;
  const tab = box.id.startsWith('img2img') ? 'img2img' : 'txt2img';
  document.getElementById(tab + '_generate')?.click();
  e.preventDefault();
});
</script>
"""


def create_ui(manager: ModelManager, worker: GenerationWorker, save_settings: Callable[[], None],
              show_dir_fields: bool = True, freeze_settings: bool = False) -> gr.Blocks:
    current = manager.current
    size = current.spec.native_size if current is not None else 512
    with gr.Blocks(title="Stable Diffusion", analytics_enabled=False) as demo:
        quicksettings.build(manager, save_settings, worker)
        with gr.Tabs(elem_id="tabs") as main_tabs:
            with gr.Tab("txt2img", id="txt2img", elem_id="tab_txt2img"):
                t2i = generation.build_txt2img(worker, size)
            with gr.Tab("img2img", id="img2img", elem_id="tab_img2img"):
                i2i = generation.build_img2img(worker, size, show_dir_fields)
            with gr.Tab("Extras", id="extras", elem_id="tab_extras"):
                extras.build(worker.ctx.outputs_dir, show_dir_fields)
            with gr.Tab("PNG Info", id="pnginfo", elem_id="tab_pnginfo"):
                paste.build_png_info({"txt2img": t2i, "img2img": i2i}, main_tabs)
            with gr.Tab("Settings", id="settings", elem_id="tab_settings"):
                settings.build(manager.options, save_settings, freeze_settings, show_dir_fields,
                               list_localizations(LOCALIZATION_DIRS))
        for tab in (t2i, i2i):
            paste.wire_paste_button(tab)
        translations = gr.JSON(visible=False)
        demo.load(lambda: load_localization(LOCALIZATION_DIRS, manager.options.localization), outputs=translations,
                  api_visibility="private"
                  ).then(None, inputs=translations, js="(d) => { window.applyLocalization(d); }",
                         api_visibility="private")
    return demo
