"""The whole page: quicksettings on top, then the tabs."""
from __future__ import annotations

import html
import logging
from collections.abc import Callable
from pathlib import Path

import gradio as gr

from modules.generation.worker import GenerationWorker
from modules.localization import list_localizations, load_localization, localization_folders
from modules.models.manager import ModelManager
from modules.paths import REPO_ROOT
from modules.ui import extension_settings as extension_settings_ui
from modules.ui import extensions, extras, generation, merger, networks, paste, quicksettings, settings
from modules.ui.ui_config import apply_ui_config

CSS = """
.progress { position: relative; height: 1.6em; background: var(--block-background-fill);
            border: 1px solid var(--border-color-primary); border-radius: 4px; overflow: hidden; }
.progress-bar { position: absolute; inset: 0 auto 0 0; background: var(--color-accent-soft); }
.progress span { position: relative; padding-left: 0.5em; }
.warning { color: #b7791f; } .error { color: #c53030; }
#generate_forever_menu button { padding: 6px 12px; background: var(--block-background-fill);
                                color: var(--body-text-color);
                                border: 1px solid var(--border-color-primary); border-radius: 4px; cursor: pointer; }
.generate-forever { animation: forever 1.5s ease-in-out infinite; }
@keyframes forever { 50% { filter: brightness(1.3); } }
/* on a phone the pictures come right after the prompts and Generate, before the parameters */
@media (max-width: 768px) { #txt2img_results_column, #img2img_results_column { order: -1; } }
/* token counters in the prompt boxes' top right corner, as in A1111, not on rows of their own: each counter comes
   right before its box and takes no room */
[id$="_token_counter"] { position: relative; height: 0 !important; min-height: 0 !important; padding: 0 !important;
                         margin-bottom: calc(-1 * var(--layout-gap)) !important; border: none !important;
                         overflow: visible !important; z-index: 5; background: none !important; }
[id$="_token_counter"] span { position: absolute; right: 0.8em; top: 0.6em; font-size: 0.8em; opacity: 0.75;
                              padding: 0 0.3em; border-radius: 3px; background: var(--block-background-fill); }
""" + networks.CSS

SCRIPTS_DIR = REPO_ROOT / "javascript"
log = logging.getLogger(__name__)


def page_head() -> str:
    """The page's scripts, javascript/*.js in name order, as <script> elements for the page head."""
    return "".join(f"<script>\n{path.read_text(encoding='utf-8')}</script>\n"
                   for path in sorted(SCRIPTS_DIR.glob("*.js")))


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
        return [image, *paste.values_from_infotext(text, i2i, sending=True), gr.Tabs(selected="img2img"),
                gr.Tabs(selected="img2img"), "img2img"]

    def to_inpaint(gallery_value, index, last):
        image, text = _picked(gallery_value, index, last)
        editor = {"background": image, "layers": [], "composite": image} if image is not None else None
        return [editor, *paste.values_from_infotext(text, i2i, sending=True), gr.Tabs(selected="img2img"),
                gr.Tabs(selected="inpaint"), "inpaint"]

    def to_extras(gallery_value, index, last):
        image, _ = _picked(gallery_value, index, last)
        return image, gr.Tabs(selected="extras")

    fields = paste.paste_outputs(i2i)
    tab_switch = [main_tabs, i2i["tabs"], i2i["mode"]]
    source["send"]["img2img"].click(to_img2img, inputs=inputs, outputs=[i2i["image"], *fields, *tab_switch],
                                    api_visibility="private")
    source["send"]["inpaint"].click(to_inpaint, inputs=inputs, outputs=[i2i["inpaint"], *fields, *tab_switch],
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


def _read_only_extensions_tab(folder: Path, options, save_settings: Callable[[], None]) -> extensions.ExtensionsTab:
    """The Extensions tab of a page built without the program's extension state (tools, tests): a list only."""
    from argparse import Namespace
    flags = Namespace(disable_extension_access=True, disable_all_extensions=False, disable_extra_extensions=False,
                      hide_ui_dir_config=True)
    return extensions.ExtensionsTab(folder, options, save_settings, lambda: None, flags)


def _usable_tabs(found: list) -> list[tuple]:
    """The (blocks, title, elem_id) an extension's on_ui_tabs gave, without what is not one (reported)."""
    usable = []
    for entry in found:
        if isinstance(entry, tuple | list) and len(entry) == 3 and isinstance(entry[0], gr.Blocks) and entry[1]:
            usable.append((entry[0], str(entry[1]), str(entry[2] or entry[1])))
        else:
            log.error("an extension's on_ui_tabs gave %r, not (blocks, title, elem_id); left out", entry)
    return usable


def _scripts_tab(scripts, tab: str | None) -> None:
    """Tell the scripts which tab's components are being made (they may act on them as they appear)."""
    if scripts is not None:
        scripts.tab_begins(tab)


# The tabs "Hidden UI tabs" can hide, by A1111's names.
TAB_NAMES = ["txt2img", "img2img", "Extras", "PNG Info", "Checkpoint Merger", "Extensions", "Settings"]


def create_ui(manager: ModelManager, worker: GenerationWorker, save_settings: Callable[[], None],
              show_dir_fields: bool = True, freeze_settings: bool = False, ui_config_file: Path | None = None,
              extensions_dir: Path = REPO_ROOT / "extensions", scripts=None,
              extension_tabs: Callable[[], list] | None = None, extension_settings=None,
              extensions_tab: extensions.ExtensionsTab | None = None) -> gr.Blocks:
    """`scripts`: the tabs' scripts (modules.scripts.ScriptHost); `extension_tabs`: the tabs extensions add, as
    A1111's on_ui_tabs callbacks return them: (blocks, title, elem_id) each, built before the page;
    `extension_settings`: the settings they declared (modules.shared.ExtensionSettings); `extensions_tab`: what
    the Extensions tab manages (None: the extensions in `extensions_dir`, shown but not changeable)."""
    current = manager.current
    added_tabs = _usable_tabs(extension_tabs() if extension_tabs is not None else [])
    size = current.spec.native_size if current is not None else 512
    translation_folders = localization_folders(REPO_ROOT, extensions_dir)
    with gr.Blocks(title="Stable Diffusion", analytics_enabled=False) as demo:
        localizations = list_localizations(translation_folders)
        checkpoint, status, switch_checkpoint = quicksettings.build(manager, save_settings, worker)
        choices = settings.page_choices(localizations, TAB_NAMES, worker.ctx.upscalers.names())
        quick = settings.build_quicksettings(manager.options, freeze_settings, show_dir_fields, choices)
        previews = networks.PreviewFiles()
        tabs: dict[str, gr.Tab] = {}
        with gr.Tabs(elem_id="tabs") as main_tabs:
            with gr.Tab("txt2img", id="txt2img", elem_id="tab_txt2img") as tabs["txt2img"]:
                _scripts_tab(scripts, "txt2img")
                t2i = generation.build_txt2img(worker, previews, size, show_dir_fields, scripts)
            # drawn at load though hidden (Gradio draws a tab on its first visit otherwise), as in A1111: extensions'
            # page scripts look for img2img's and Extras' elements when the page has loaded
            with gr.Tab("img2img", id="img2img", elem_id="tab_img2img", render_children=True) as tabs["img2img"]:
                _scripts_tab(scripts, "img2img")
                i2i = generation.build_img2img(worker, previews, size, show_dir_fields, scripts)
            _scripts_tab(scripts, None)
            with gr.Tab("Extras", id="extras", elem_id="tab_extras", render_children=True) as tabs["Extras"]:
                extras_image = extras.build(worker, show_dir_fields, scripts)
            with gr.Tab("PNG Info", id="pnginfo", elem_id="tab_pnginfo") as tabs["PNG Info"]:
                paste.build_png_info({"txt2img": t2i, "img2img": i2i}, main_tabs, extras_image)
            with gr.Tab("Checkpoint Merger", id="modelmerger", elem_id="tab_modelmerger") as tabs["Checkpoint Merger"]:
                merger.build(manager, worker, checkpoint)
            for blocks, title, elem_id in added_tabs:
                with gr.Tab(title, id=elem_id, elem_id=f"tab_{elem_id}") as tabs[title]:
                    try:
                        blocks.render()
                    except Exception as e:  # an extension's tab: the page goes on without it
                        log.exception("the tab %r an extension added could not be shown", title)
                        gr.HTML(f"<p class='error'>❌ This tab could not be shown: {html.escape(str(e))}</p>")
            with gr.Tab("Extensions", id="extensions", elem_id="tab_extensions") as tabs["Extensions"]:
                extensions_page = extensions.build(extensions_tab or _read_only_extensions_tab(
                    extensions_dir, manager.options, save_settings))
            with gr.Tab("Settings", id="settings", elem_id="tab_settings"):
                settings_page = settings.build(manager.options, save_settings, worker.with_lock, freeze_settings,
                                               show_dir_fields, choices, quick, tabs)
                theirs = extension_settings_ui.build(extension_settings, freeze_settings)
        for tab in (t2i, i2i):
            paste.wire_paste_button(tab)
            _wire_send_buttons(tab, i2i, extras_image, main_tabs)
        networks.wire_checkpoint_cards([t2i["checkpoint_box"], i2i["checkpoint_box"]], checkpoint, status,
                                       switch_checkpoint)
        _follow_native_size(manager, checkpoint, size, [t2i["controls"], i2i["controls"]])
        # every load shows what the settings hold now, not what they held when the page was built
        demo.load(settings_page.current, outputs=settings_page.outputs(), api_visibility="private",
                  show_progress="hidden").then(**settings.to_page_scripts(settings_page))
        if theirs is not None:
            demo.load(theirs[1], outputs=theirs[0], api_visibility="private", show_progress="hidden")
        demo.load(extensions_page.current, outputs=extensions_page.outputs, api_visibility="private",
                  show_progress="hidden")
        translations = gr.JSON(visible=False)
        demo.load(lambda: load_localization(translation_folders, manager.options.localization), outputs=translations,
                  api_visibility="private"
                  ).then(None, inputs=translations, js="(d) => { window.applyLocalization(d); }",
                         api_visibility="private")
        if ui_config_file is not None:
            apply_ui_config(demo, ui_config_file)
    demo.extra_network_previews = previews  # for the server's preview route (webui.create_server_app)
    demo.gradio_theme = manager.options.gradio_theme  # for the server, which applies it when it mounts the page
    # where Save and Zip put the files the page offers (for the server's allowed_paths)
    demo.download_folders = generation.download_folders(worker.ctx.options, worker.ctx.outputs_dir)
    return demo
