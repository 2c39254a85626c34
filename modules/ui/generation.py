"""txt2img and img2img tabs: controls with A1111's element ids, streaming progress and previews."""
from __future__ import annotations

import html
import logging
import os
import subprocess
import sys
import time
import zipfile
from dataclasses import MISSING, fields
from pathlib import Path

import gradio as gr
from PIL import Image, ImageChops

from modules import infotext_utils
from modules.generation import (
    LATENT_UPSCALE_MODES,
    MASKED_CONTENT,
    RESIZE_MODES,
    GenerationError,
    GenerationResult,
    Img2ImgRequest,
    Txt2ImgRequest,
    saving,
)
from modules.generation.filenames import FilenameGenerator, NameInfo
from modules.generation.progress import ProgressSnapshot
from modules.generation.worker import GenerationWorker, Queued
from modules.sampling.samplers import SAMPLERS
from modules.sampling.schedules import SCHEDULERS
from modules.ui import networks
from modules.ui.paste import option_overrides
from modules.ui.picture_inputs import picture_editor, picture_input

log = logging.getLogger(__name__)
DIR_ACCESS_REFUSED = ("Folders on the server cannot be used from the page: it was started with --hide-ui-dir-config "
                      "(implied by --listen, --share and --server-name unless --enable-insecure-extension-access).")


def progress_html(s: ProgressSnapshot) -> str:
    eta = f" ETA {s.eta_seconds:.0f}s" if s.eta_seconds is not None else ""
    return (f"<div class='progress'><div class='progress-bar' style='width:{s.progress * 100:.0f}%'></div>"
            f"<span>{s.progress * 100:.0f}% — step {s.step}/{s.steps}, batch {s.job_no + 1}/{s.job_count}"
            f"{eta}</span></div>")


def infotext_html(result: GenerationResult) -> str:
    return _text_html(result.infotexts[0] if result.infotexts else "") + _notes_html(result)


def _text_html(text: str) -> str:
    return f"<p>{html.escape(text).replace(chr(10), '<br>')}</p>" if text else ""


def _notes_html(result: GenerationResult) -> str:
    parts = [f"<p class='warning'>⚠️ {html.escape(w)}</p>" for w in result.warnings]
    if result.interrupted:
        parts.append("<p>Interrupted: the images finished so far are shown.</p>")
    return "".join(parts)


def selected_info(index: int, last: dict) -> str:
    """The infotext under the gallery for the picture selected in it (A1111's update_generation_info)."""
    texts = (last or {}).get("infotexts") or []
    if not texts:
        return gr.skip()
    index = min(max(int(index or 0), 0), len(texts) - 1)
    return _text_html(texts[index]) + (last or {}).get("notes", "")


def override_settings_box(tab: str) -> gr.Dropdown:
    """A1111's "Override settings": settings a pasted infotext names (clip skip, ENSD, checkpoint...), applied to
    this tab's jobs only; shown once a paste fills it."""
    return gr.Dropdown([], value=[], multiselect=True, label="Override settings", visible=False,
                       allow_custom_value=True, elem_id=f"{tab}_override_settings")


class Controls:
    """The parameter widgets shared by both tabs, created inside the current layout."""

    def __init__(self, tab: str, default_size: int, resize_by: bool = False):
        """`resize_by`: img2img's "Resize to" / "Resize by" tabs; the size then may come from the picture times a
        scale (`resize_by_selected`, `scale_by`)."""
        self.tab = tab
        with gr.Row():
            self.sampler = gr.Dropdown([s.name for s in SAMPLERS], value="DPM++ 2M", label="Sampling method",
                                       elem_id=f"{tab}_sampling")
            self.scheduler = gr.Dropdown([s.label for s in SCHEDULERS], value="Automatic", label="Schedule type",
                                         elem_id=f"{tab}_scheduler")
            self.steps = gr.Slider(1, 150, value=20, step=1, label="Sampling steps", elem_id=f"{tab}_steps")
        with gr.Row():
            with gr.Column(scale=4):
                if resize_by:
                    with gr.Tabs(elem_id=f"{tab}_tabs_resize"):
                        with gr.Tab("Resize to", elem_id=f"{tab}_tab_resize_to") as to_tab:
                            self._size_sliders(tab, default_size)
                        with gr.Tab("Resize by", elem_id=f"{tab}_tab_resize_by") as by_tab:
                            self.scale_by = gr.Slider(0.05, 4, value=1, step=0.05, label="Scale",
                                                      elem_id=f"{tab}_scale")
                            self.scale_by_size = gr.HTML(elem_id=f"{tab}_scale_resolution_preview")
                    self.resize_by_selected = gr.State(False)
                    to_tab.select(lambda: False, outputs=self.resize_by_selected, queue=False,
                                  api_visibility="private")
                    by_tab.select(lambda: True, outputs=self.resize_by_selected, queue=False,
                                  api_visibility="private")
                else:
                    self._size_sliders(tab, default_size)
            swap = gr.Button("⇅", elem_id=f"{tab}_res_switch_btn", scale=0, min_width=40)
            with gr.Column(scale=2):
                self.batch_count = gr.Slider(1, 100, value=1, step=1, label="Batch count",
                                             elem_id=f"{tab}_batch_count")
                self.batch_size = gr.Slider(1, 8, value=1, step=1, label="Batch size", elem_id=f"{tab}_batch_size")
        swap.click(lambda w, h: (h, w), inputs=[self.width, self.height], outputs=[self.width, self.height],
                   queue=False, api_visibility="private")
        self.cfg = gr.Slider(1, 30, value=7, step=0.5, label="CFG Scale", elem_id=f"{tab}_cfg_scale")
        with gr.Row():
            self.seed = gr.Number(value=-1, label="Seed", precision=0, elem_id=f"{tab}_seed", scale=4)
            random_seed = gr.Button("🎲", elem_id=f"{tab}_random_seed", scale=0, min_width=40)
            self.reuse_seed = gr.Button("♻️", elem_id=f"{tab}_reuse_seed", scale=0, min_width=40)
        random_seed.click(lambda: -1, outputs=self.seed, queue=False, api_visibility="private")
        with gr.Accordion("Extra seed options", open=False):
            with gr.Row():
                self.subseed = gr.Number(value=-1, label="Variation seed", precision=0, elem_id=f"{tab}_subseed")
                self.subseed_strength = gr.Slider(0, 1, value=0, step=0.01, label="Variation strength",
                                                  elem_id=f"{tab}_subseed_strength")
            with gr.Row():
                self.seed_resize_w = gr.Slider(0, 2048, value=0, step=8, label="Resize seed from width",
                                               elem_id=f"{tab}_seed_resize_from_w")
                self.seed_resize_h = gr.Slider(0, 2048, value=0, step=8, label="Resize seed from height",
                                               elem_id=f"{tab}_seed_resize_from_h")
        self.tiling = gr.Checkbox(False, label="Tiling", elem_id=f"{tab}_tiling")

    def _size_sliders(self, tab: str, default_size: int) -> None:
        self.width = gr.Slider(64, 2048, value=default_size, step=8, label="Width", elem_id=f"{tab}_width")
        self.height = gr.Slider(64, 2048, value=default_size, step=8, label="Height", elem_id=f"{tab}_height")

    def request_inputs(self) -> dict[str, gr.components.Component]:
        """These controls by the request field each one fills."""
        return {"sampler_name": self.sampler, "scheduler": self.scheduler, "steps": self.steps, "width": self.width,
                "height": self.height, "n_iter": self.batch_count, "batch_size": self.batch_size,
                "cfg_scale": self.cfg, "seed": self.seed, "subseed": self.subseed,
                "subseed_strength": self.subseed_strength, "seed_resize_from_w": self.seed_resize_w,
                "seed_resize_from_h": self.seed_resize_h, "tiling": self.tiling}


def build_request(cls, values: dict[str, object], **computed):
    """A `cls` request from control values by field name, plus fields the tab computed itself.

    Gradio hands sliders over as floats and an emptied box as None: each value is converted to the
    type of its field's default, and None becomes that default."""
    defaults = {f.name: f.default if f.default is not MISSING else f.default_factory() for f in fields(cls)}
    unknown = values.keys() - defaults.keys()
    if unknown:
        raise TypeError(f"{cls.__name__} has no fields {sorted(unknown)}")
    converted = {}
    for name, value in values.items():
        try:
            converted[name] = _as_type_of(defaults[name], value)
        except (TypeError, ValueError, OverflowError) as e:  # NaN or infinity for a whole number, ...
            raise GenerationError(f"{name}: {value!r} is not a valid value ({e})") from e
    return cls(**converted, **computed)


def error_html(e: Exception) -> str:
    return f"<p class='error'>❌ {html.escape(str(e))}</p>"


def _as_type_of(default, value):
    if value is None:
        return default
    for kind in (bool, int, float, list):  # bool first: it is an int too
        if isinstance(default, kind):
            return kind(value)
    return value


def txt2img_request(values: dict[str, object]) -> Txt2ImgRequest:
    """The request from the txt2img tab's control values, by field name."""
    if values.get("refiner_checkpoint") == "None":  # the refiner dropdown's entry for no refiner
        values = {**values, "refiner_checkpoint": None}
    return build_request(Txt2ImgRequest, values)


def prompt_boxes(tab: str, worker: GenerationWorker, steps: gr.Slider):
    with gr.Row(elem_id=f"{tab}_toprow"):
        with gr.Column(scale=6):
            # each counter comes before its box and sits in the box's top right corner (CSS in app.py), so that what
            # extensions put after a box (A1111's after_component) does not come between them
            prompt_count = gr.HTML("<span>0/75</span>", elem_id=f"{tab}_token_counter")
            prompt = gr.Textbox(label="Prompt", lines=4, elem_id=f"{tab}_prompt",
                                placeholder="Prompt (press Ctrl+Enter to generate)")
            negative_count = gr.HTML("<span>0/75</span>", elem_id=f"{tab}_negative_token_counter")
            negative = gr.Textbox(label="Negative prompt", lines=3, elem_id=f"{tab}_neg_prompt",
                                  placeholder="Negative prompt")
        with gr.Column(scale=1, min_width=160):
            generate = gr.Button("Generate", variant="primary", elem_id=f"{tab}_generate")
            with gr.Row():
                interrupt = gr.Button("Interrupt", elem_id=f"{tab}_interrupt", min_width=60)
                skip = gr.Button("Skip", elem_id=f"{tab}_skip", min_width=60)
            with gr.Row(elem_id=f"{tab}_tools"):
                paste = gr.Button("↙️", elem_id=f"{tab}_paste", min_width=36)
                style_buttons = [gr.Button(icon, elem_id=f"{tab}_style_{action}", min_width=36)
                                 for icon, action in (("📋", "apply"), ("🔄", "refresh"), ("✏️", "edit"))]
            styles = _styles_controls(tab, worker, prompt, negative, *style_buttons)

    def count(text: str, n: int, negative: bool = False) -> str:
        tokens, limit = worker.token_count(text or "", int(n or 20), negative)
        return f"<span>{tokens}/{limit}</span>"

    prompt.change(count, inputs=[prompt, steps], outputs=prompt_count, queue=False, api_visibility="private")
    negative.change(lambda t, n: count(t, n, True), inputs=[negative, steps], outputs=negative_count, queue=False,
                    api_visibility="private")
    interrupt.click(worker.interrupt, queue=False, api_visibility="private")
    skip.click(worker.skip, queue=False, api_visibility="private")
    return prompt, negative, generate, paste, styles


def _styles_controls(tab: str, worker: GenerationWorker, prompt: gr.Textbox, negative: gr.Textbox,
                     apply: gr.Button, refresh: gr.Button, edit: gr.Button) -> gr.Dropdown:
    """Styles from styles.csv: pick them for the next generation, write them into the prompt (📋), read the file
    again (🔄), and an editor (✏️) to create, change and delete them."""
    from modules.conditioning.styles import PromptStyle, StyleError
    db = worker.ctx.styles
    styles = gr.Dropdown(db.names() if db else [], multiselect=True, label="Styles", elem_id=f"{tab}_styles")
    with gr.Group(visible=False, elem_id=f"{tab}_style_editor") as editor:
        name = gr.Textbox(label="Style name", elem_id=f"{tab}_style_name")
        style_prompt = gr.Textbox(label="Prompt", lines=2, elem_id=f"{tab}_style_prompt",
                                  info="{prompt} marks where the prompt goes; without it the style is appended")
        style_negative = gr.Textbox(label="Negative prompt", lines=2, elem_id=f"{tab}_style_neg_prompt")
        with gr.Row():
            save = gr.Button("Save style", elem_id=f"{tab}_style_save", variant="primary", min_width=60)
            delete = gr.Button("Delete style", elem_id=f"{tab}_style_delete", variant="stop", min_width=60)
            close = gr.Button("Close", elem_id=f"{tab}_style_close", min_width=60)
    status = gr.HTML(elem_id=f"{tab}_style_status")

    def apply_to_prompt(p, n, chosen):
        if db is None or not chosen:
            return p, n, chosen
        return db.apply_to_prompt(p or "", chosen), db.apply_to_negative(n or "", chosen), []

    def open_editor(chosen, p, n):
        """The first chosen style to edit, or the prompts as a new style."""
        style = db.styles.get(chosen[0]) if db is not None and chosen else None
        if style is not None:
            return gr.Group(visible=True), style.name, style.prompt, style.negative_prompt, ""
        return gr.Group(visible=True), "", p or "", n or "", ""

    def names_update(chosen: list[str] | None = None):
        names = db.names() if db else []
        return gr.update(choices=names, value=[c for c in chosen or [] if c in names])

    def save_style(style_name, p, n, chosen):
        if db is None:
            return gr.skip(), "Styles are not available."
        try:
            db.save_style(PromptStyle((style_name or "").strip(), p or "", n or ""))
        except (ValueError, StyleError, OSError) as e:
            return gr.skip(), f"<span class='error'>{html.escape(str(e))}</span>"
        return names_update(chosen), f"Saved style “{html.escape(style_name.strip())}”."

    def delete_style(style_name, chosen):
        if db is None:
            return gr.skip(), "Styles are not available."
        try:
            deleted = db.delete_style((style_name or "").strip())
        except (StyleError, OSError) as e:
            return gr.skip(), f"<span class='error'>{html.escape(str(e))}</span>"
        if not deleted:
            return gr.skip(), f"No style named “{html.escape(style_name or '')}”."
        return names_update(chosen), f"Deleted style “{html.escape(style_name.strip())}”."

    def reload(chosen):
        if db is not None:
            db.reload()
        return names_update(chosen)

    apply.click(apply_to_prompt, inputs=[prompt, negative, styles], outputs=[prompt, negative, styles], queue=False,
                api_visibility="private")
    edit.click(open_editor, inputs=[styles, prompt, negative], outputs=[editor, name, style_prompt, style_negative,
                                                                        status], api_visibility="private")
    close.click(lambda: gr.Group(visible=False), outputs=editor, queue=False, api_visibility="private")
    save.click(save_style, inputs=[name, style_prompt, style_negative, styles], outputs=[styles, status],
               api_visibility="private")
    delete.click(delete_style, inputs=[name, styles], outputs=[styles, status], api_visibility="private")
    refresh.click(reload, inputs=styles, outputs=styles, queue=False, api_visibility="private")
    return styles


def output_panel(tab: str, worker: GenerationWorker, show_dir_fields: bool = True):
    with gr.Column(elem_id=f"{tab}_results"):
        progress = gr.HTML("", elem_id=f"{tab}_progress")
        # PNG: lossless, so "Send to" hands on the exact pixels
        gallery = gr.Gallery(label="Output", elem_id=f"{tab}_gallery", columns=2, height=520, preview=True,
                             format="png", type="pil", interactive=False, object_fit="contain")
        with gr.Row():
            open_folder = gr.Button("📂", elem_id=f"{tab}_open_folder", size="sm", min_width=40, scale=0,
                                    visible=show_dir_fields)
            save = gr.Button("💾 Save", elem_id=f"save_{tab}", size="sm")
            save_zip = gr.Button("🗃️ Zip", elem_id=f"save_zip_{tab}", size="sm")
            send = {target: gr.Button(label, elem_id=f"{tab}_send_to_{target}", size="sm")
                    for target, label in (("img2img", "Send to img2img"), ("inpaint", "Send to inpaint"),
                                          ("extras", "Send to extras"))}
        download = gr.File(label="Download", visible=False, elem_id=f"download_files_{tab}", file_count="multiple")
        info = gr.HTML("", elem_id=f"html_info_{tab}")
        notice = gr.HTML("", elem_id=f"{tab}_files_notice")
    selected = gr.State(0)
    last = gr.State({})
    gallery.select(_selected_index, outputs=selected, queue=False, api_visibility="private"
                   ).then(selected_info, inputs=[selected, last], outputs=info, queue=False, api_visibility="private")
    last.change(lambda: 0, outputs=selected, queue=False, api_visibility="private")  # a new result: its first
    outputs_dir = worker.ctx.outputs_dir
    folder = outputs_dir / f"{tab}-images"
    servable_folders = download_folders(worker.ctx.options, outputs_dir)  # fixed when the page is built, as Gradio's

    def save_selected(gallery_value, index, last_value):
        """A1111's Save: the selected picture (all of them without save_selected_only) into outdir_save, named
        by the saving settings from each picture's infotext; offered for download where the page may serve it."""
        if not gallery_value:
            return gr.update(visible=False), "<p class='warning'>Nothing to save yet.</p>"
        opts = worker.ctx.options
        index = min(max(int(index or 0), 0), len(gallery_value) - 1)
        texts = (last_value or {}).get("infotexts") or [""]
        chosen = [index] if opts.save_selected_only else range(len(gallery_value))
        target = saving.output_folder(opts, outputs_dir, "save")
        paths = []
        for i in chosen:
            picture, text = gallery_value[i][0], texts[min(i, len(texts) - 1)] or None
            info = NameInfo.from_params(infotext_utils.parse_generation_parameters(text)) if text else NameInfo()
            names = FilenameGenerator(info, picture, max_prompt_words=opts.directories_max_prompt_words)
            paths.append(saving.save_image(picture, target, info.seed, text, opts.samples_format, opts=opts,
                                           names=names, save_to_dirs=opts.use_save_to_dirs_for_ui))
        listed = ", ".join(html.escape(str(p)) for p in paths)
        servable = [str(p) for p in paths if _servable(p, servable_folders)]
        return gr.update(value=servable or None, visible=bool(servable)), f"<p>Saved {listed}</p>"

    def zip_all(gallery_value, last_value):
        if not gallery_value:
            return gr.update(visible=False), "<p class='warning'>Nothing to zip yet.</p>"
        texts = (last_value or {}).get("infotexts") or [""]
        path = _zip_pictures([item[0] for item in gallery_value], texts, outputs_dir / "saved")
        return gr.update(value=[str(path)], visible=True), f"<p>Saved {html.escape(str(path))}</p>"

    def open_outputs():
        return f"<p>{html.escape(open_in_file_manager(folder))}</p>"

    save.click(save_selected, inputs=[gallery, selected, last], outputs=[download, notice], api_visibility="private")
    save_zip.click(zip_all, inputs=[gallery, last], outputs=[download, notice], api_visibility="private")
    if show_dir_fields:  # with --hide-ui-dir-config there is no event a client could call to start a file manager
        open_folder.click(open_outputs, outputs=notice, api_visibility="private")
    return progress, gallery, info, send, selected, last


def download_folders(options, outputs_dir: Path) -> list[Path]:
    """The folders whose files the page offers for download (Gradio's allowed_paths): where Zip writes, and where
    Save writes (outdir_save as it is when the page is built) unless that folder holds the data folder (say the
    owner chose "." or their home): everything in it would be served, config.json included. Saving there still
    works; only the download is not offered."""
    folders = [outputs_dir / "saved"]
    save = saving.output_folder(options, outputs_dir, "save").resolve()
    data = outputs_dir.parent.resolve()
    if not data.is_relative_to(save):
        folders.append(save)
    return folders


def _servable(path: Path, folders: list[Path]) -> bool:
    """Whether Gradio will offer this file for download: it serves files of the download folders (allowed_paths)
    only."""
    where = path.resolve()
    return any(where.is_relative_to(Path(folder).resolve()) for folder in folders)


def _zip_pictures(pictures: list[Image.Image], infotexts: list[str], folder: Path) -> Path:
    """All pictures of the gallery as PNGs (with their parameters) in one zip file."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / time.strftime("images-%Y%m%d-%H%M%S.zip")
    n = 1
    while path.exists():
        n += 1
        path = folder / time.strftime(f"images-%Y%m%d-%H%M%S-{n}.zip")
    with zipfile.ZipFile(path, "w") as zf:
        for i, picture in enumerate(pictures):
            text = infotexts[min(i, len(infotexts) - 1)] if infotexts else ""
            zf.writestr(f"{i:05}.png", saving.image_bytes(picture, text))
    return path


def open_in_file_manager(folder: Path) -> str:
    """Open the folder on the computer running this program (where the files are); say where it is."""
    folder.mkdir(parents=True, exist_ok=True)
    try:
        if sys.platform == "win32":
            os.startfile(folder)  # type: ignore[attr-defined]  # noqa: S606 (opening a folder is the point)
        else:
            subprocess.Popen(["open" if sys.platform == "darwin" else "xdg-open", str(folder)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    except OSError:
        return f"No file manager could be started here; the pictures are in {folder}"
    return f"Opened {folder}"


def _selected_index(evt: gr.SelectData) -> int:
    return int(evt.index)


def stream(worker: GenerationWorker, req, option_overrides: dict | None = None, models: dict | None = None,
           runner=None):
    """Generator for Gradio: progress and previews while sampling, then the gallery and infotext.
    `option_overrides` and `models` (from "Override settings") apply to this job only; `runner` carries it out with
    the tab's scripts."""
    extra = {k: v for k, v in (("option_overrides", option_overrides), ("models", models), ("runner", runner))
             if v}
    try:
        for item in worker.run_streaming(req, **extra):
            if isinstance(item, Queued):
                jobs = "job" if item.ahead == 1 else "jobs"
                yield (f"<div class='progress'><span>Waiting: {item.ahead} {jobs} ahead of yours</span></div>",
                       gr.skip(), gr.skip(), gr.skip())
            elif isinstance(item, ProgressSnapshot):
                preview = [item.preview] if item.preview is not None else gr.skip()
                yield progress_html(item), preview, gr.skip(), gr.skip()
            else:
                gallery = ([item.grid] if item.grid is not None else []) + item.images
                texts = ([item.infotexts[0]] if item.grid is not None and item.infotexts else []) + item.infotexts
                last = {"seed": item.seeds[0] if item.seeds else -1, "infotexts": texts, "notes": _notes_html(item)}
                yield "", gallery, infotext_html(item), last
    except GenerationError as e:
        yield "", gr.skip(), error_html(e), gr.skip()
    except Exception as e:  # a bug or the device failing: say so, keep the page and the server alive
        log.exception("generation failed")
        hint = (" Not enough memory: try a smaller size or batch, or start with --medvram / --lowvram."
                if "out of memory" in str(e).lower() else "")
        yield "", gr.skip(), f"<p class='error'>❌ Generation failed: {html.escape(str(e))}.{hint}</p>", gr.skip()


def _forever(tab: str) -> dict:
    """After a generation: press Generate again while "Generate forever" is on (the button's right-click menu)."""
    return dict(fn=None, js=f"() => window.generateForeverNext('{tab}')", api_visibility="private", queue=False)


def script_controls(tab: str, scripts) -> dict[str, gr.components.Component]:
    """The scripts' controls of a tab (`scripts`: modules.scripts.ScriptHost, or None: only an empty Script
    dropdown), by the keyword their values are passed to the tab's run function under."""
    if scripts is None:
        return {"script_0": gr.Dropdown(["None"], value="None", label="Script", elem_id=f"{tab}_script")}
    return {f"script_{i}": c for i, c in enumerate(scripts.build(tab))}


def script_runner(tab: str, scripts, values: dict):
    """Take the scripts' values out of a run's `values`; the runner that carries the job out with them (None: no
    script takes part)."""
    args = [values.pop(f"script_{i}") for i in range(sum(1 for k in values if k.startswith("script_")))]
    return scripts.page_runner(tab, args) if scripts is not None else None


def build_txt2img(worker: GenerationWorker, previews: networks.PreviewFiles, default_size: int = 512,
                  show_dir_fields: bool = True, scripts=None):
    steps_proxy = gr.State(20)
    prompt, negative, generate, paste, styles = prompt_boxes("txt2img", worker, steps_proxy)
    checkpoint_box = networks.build("txt2img", worker, previews)
    with gr.Row():
        with gr.Column(scale=1):
            c = Controls("txt2img", default_size)
            with gr.Accordion("Hires. fix", open=False, elem_id="txt2img_hr"):
                enable_hr = gr.Checkbox(False, label="Enable", elem_id="txt2img_enable_hr")
                with gr.Row():
                    hr_upscaler = gr.Dropdown([*LATENT_UPSCALE_MODES, *worker.ctx.upscalers.names()], value="Latent",
                                              label="Upscaler", elem_id="txt2img_hr_upscaler")
                    hr_steps = gr.Slider(0, 150, value=0, step=1, label="Hires steps", elem_id="txt2img_hires_steps")
                    hr_denoise = gr.Slider(0, 1, value=0.7, step=0.01, label="Denoising strength",
                                           elem_id="txt2img_denoising_strength")
                with gr.Row():
                    hr_scale = gr.Slider(1, 4, value=2, step=0.05, label="Upscale by", elem_id="txt2img_hr_scale")
                    hr_x = gr.Slider(0, 2048, value=0, step=8, label="Resize width to", elem_id="txt2img_hr_resize_x")
                    hr_y = gr.Slider(0, 2048, value=0, step=8, label="Resize height to",
                                     elem_id="txt2img_hr_resize_y")
                with gr.Row():
                    hr_checkpoint = gr.Dropdown(["Use same checkpoint"] + worker.ctx.models.checkpoint_titles(),
                                                value="Use same checkpoint", label="Hires checkpoint",
                                                elem_id="hr_checkpoint")
                    hr_sampler = gr.Dropdown(["Use same sampler"] + [s.name for s in SAMPLERS],
                                             value="Use same sampler", label="Hires sampling method",
                                             elem_id="hr_sampler")
                    hr_scheduler = gr.Dropdown(["Use same scheduler"] + [s.label for s in SCHEDULERS],
                                               value="Use same scheduler", label="Hires schedule type",
                                               elem_id="hr_scheduler")
                    hr_prompt = gr.Textbox(label="Hires prompt", lines=1, elem_id="hires_prompt")
                    hr_negative = gr.Textbox(label="Hires negative prompt", lines=1, elem_id="hires_neg_prompt")
            with gr.Accordion("Refiner", open=False, elem_id="txt2img_refiner"):
                refiner = gr.Dropdown(["None"] + worker.ctx.models.checkpoint_titles(), value="None",
                                      label="Checkpoint", elem_id="txt2img_refiner_checkpoint")
                switch_at = gr.Slider(0.01, 1, value=0.8, step=0.01, label="Switch at",
                                      elem_id="txt2img_refiner_switch_at")
            override = override_settings_box("txt2img")
            script_inputs = script_controls("txt2img", scripts)
        with gr.Column(scale=1, elem_id="txt2img_results_column"):
            progress, gallery, info, send, selected, last_seed = output_panel("txt2img", worker, show_dir_fields)
    c.steps.change(lambda n: n, inputs=c.steps, outputs=steps_proxy, queue=False, api_visibility="private")
    c.reuse_seed.click(lambda last: (last or {}).get("seed", -1), inputs=last_seed, outputs=c.seed, queue=False,
                       api_visibility="private")

    request_inputs = {"prompt": prompt, "negative_prompt": negative, "styles": styles, **c.request_inputs(),
                      "enable_hr": enable_hr, "hr_upscaler": hr_upscaler, "hr_second_pass_steps": hr_steps,
                      "denoising_strength": hr_denoise, "hr_scale": hr_scale, "hr_resize_x": hr_x,
                      "hr_resize_y": hr_y, "hr_checkpoint_name": hr_checkpoint, "hr_sampler_name": hr_sampler,
                      "hr_scheduler": hr_scheduler,
                      "hr_prompt": hr_prompt,
                      "hr_negative_prompt": hr_negative, "refiner_checkpoint": refiner, "refiner_switch_at": switch_at}

    def run(override_settings=None, **values):
        try:
            runner = script_runner("txt2img", scripts, values)
            req = txt2img_request(values)
        except GenerationError as e:
            yield "", gr.skip(), error_html(e), gr.skip()
            return
        yield from stream(worker, req, *option_overrides(override_settings, worker.ctx.options), runner=runner)

    run_inputs = {**request_inputs, "override_settings": override, **script_inputs}
    generate.click(run, inputs_kwargs=run_inputs, outputs=[progress, gallery, info, last_seed], api_name="txt2img",
                   concurrency_limit=1, concurrency_id="generate").then(**_forever("txt2img"))
    prompt.submit(run, inputs_kwargs=run_inputs, outputs=[progress, gallery, info, last_seed],
                  api_visibility="private", concurrency_limit=1, concurrency_id="generate").then(**_forever("txt2img"))
    return {"prompt": prompt, "negative": negative, "controls": c, "gallery": gallery, "info": info, "paste": paste,
            "styles": styles, "send": send, "selected": selected, "last": last_seed, "checkpoint_box": checkpoint_box,
            "request_inputs": request_inputs, "override_settings": override, "worker": worker,
            "scripts": scripts, "script_paste": scripts.paste_fields("txt2img") if scripts is not None else []}


def _mask_from_editor(value) -> tuple[Image.Image | None, Image.Image | None]:
    """(image, mask) from an ImageEditor value: painted strokes (any layer) become the mask."""
    if not value:
        return None, None
    background = value.get("background")
    if background is None:
        return None, None
    mask = None
    for layer in value.get("layers") or []:
        if layer is None:
            continue
        alpha = layer.convert("RGBA").getchannel("A").point(lambda a: 255 if a > 0 else 0)
        mask = alpha if mask is None else ImageChops.lighter(mask, alpha)
    return background.convert("RGB"), mask


SKETCH_BRUSH = gr.Brush(colors=["#000000", "#ffffff", "#dc1e1e", "#1eaa28", "#1e3cdc", "#f0dc1e", "#fa8c14",
                               "#8c28b4"], default_color="#000000", color_mode="defaults")


def _composite(value) -> Image.Image | None:
    """The picture as painted: background with the strokes on it."""
    if not value or value.get("background") is None:
        return None
    composite = value.get("composite")
    return (composite if composite is not None else value["background"]).convert("RGB")


def scaled_size(size: tuple[int, int], scale: float) -> tuple[int, int]:
    """img2img's "Resize by": the picture's size times `scale`, to the nearest multiple of 8 within the sliders'
    range."""
    return tuple(min(2048, max(64, round(side * float(scale or 1) / 8) * 8)) for side in size)


def build_img2img(worker: GenerationWorker, previews: networks.PreviewFiles, default_size: int = 512,
                  show_dir_fields: bool = True, scripts=None):
    steps_proxy = gr.State(20)
    prompt, negative, generate, paste, styles = prompt_boxes("img2img", worker, steps_proxy)
    checkpoint_box = networks.build("img2img", worker, previews)
    mode = gr.State("img2img")
    with gr.Row():
        with gr.Column(scale=1):
            with gr.Tabs(elem_id="mode_img2img") as tabs:
                with gr.Tab("img2img", id="img2img", elem_id="img2img_img2img_tab") as t1:
                    init_image = picture_input(label="Image for img2img", type="pil", elem_id="img2img_image",
                                              format="png", height=400)
                with gr.Tab("Sketch", id="sketch", elem_id="img2img_img2img_sketch_tab") as t_sketch:
                    sketch = picture_editor(label="Image for img2img (paint on it)", type="pil", format="png",
                                            elem_id="img2img_sketch", height=400, brush=SKETCH_BRUSH)
                with gr.Tab("Inpaint", id="inpaint", elem_id="img2img_inpaint_tab") as t2:
                    inpaint = picture_editor(label="Image for inpainting with mask", type="pil", format="png",
                                             elem_id="img2maskimg", height=400,
                                             brush=gr.Brush(colors=["#ffffff"], color_mode="fixed"))
                with gr.Tab("Inpaint sketch", id="inpaint_sketch", elem_id="img2img_inpaint_sketch_tab") as t_isketch:
                    inpaint_sketch = picture_editor(label="Image for inpainting (paint the new content)", type="pil",
                                                    format="png", elem_id="inpaint_sketch", height=400,
                                                    brush=SKETCH_BRUSH)
                with gr.Tab("Inpaint upload", id="inpaint_upload", elem_id="img2img_inpaint_upload_tab") as t3:
                    upload_image = picture_input(label="Image", type="pil", elem_id="img_inpaint_base", format="png")
                    upload_mask = picture_input(label="Mask", type="pil", elem_id="img_inpaint_mask", image_mode="L",
                                           format="png")
                with gr.Tab("Batch", id="batch", elem_id="img2img_batch_tab", visible=show_dir_fields) as t4:
                    batch_in = gr.Textbox(label="Input directory", elem_id="img2img_batch_input_dir")
                    batch_out = gr.Textbox(label="Output directory", elem_id="img2img_batch_output_dir")
                    batch_mask = gr.Textbox(label="Inpaint batch mask directory (optional)",
                                            elem_id="img2img_batch_inpaint_mask_dir")
            for tab, name in ((t1, "img2img"), (t_sketch, "sketch"), (t2, "inpaint"), (t_isketch, "inpaint_sketch"),
                              (t3, "inpaint_upload"), (t4, "batch")):
                tab.select(lambda n=name: n, outputs=mode, queue=False, api_visibility="private")
            resize_mode = gr.Radio(list(RESIZE_MODES), value=RESIZE_MODES[0], label="Resize mode", type="index",
                                   elem_id="resize_mode")
            denoise = gr.Slider(0, 1, value=0.75, step=0.01, label="Denoising strength",
                                elem_id="img2img_denoising_strength")
            # shown only on the tabs with a mask (javascript/ui.js, which sees every way a tab gets selected)
            with gr.Accordion("Inpaint options", open=True, elem_id="img2img_inpaint_options"):
                mask_blur = gr.Slider(0, 64, value=4, step=1, label="Mask blur", elem_id="img2img_mask_blur")
                mask_mode = gr.Radio(["Inpaint masked", "Inpaint not masked"], value="Inpaint masked",
                                     label="Mask mode", type="index", elem_id="img2img_mask_mode")
                fill = gr.Radio(list(MASKED_CONTENT), value="original", label="Masked content", type="index",
                                elem_id="img2img_inpainting_fill")
                area = gr.Radio(["Whole picture", "Only masked"], value="Whole picture", label="Inpaint area",
                                type="index", elem_id="img2img_inpaint_full_res")
                padding = gr.Slider(0, 256, value=32, step=4, label="Only masked padding, pixels",
                                    elem_id="img2img_inpaint_full_res_padding")
            c = Controls("img2img", default_size, resize_by=True)
            override = override_settings_box("img2img")
            script_inputs = script_controls("img2img", scripts)
        with gr.Column(scale=1, elem_id="img2img_results_column"):
            progress, gallery, info, send, selected, last_seed = output_panel("img2img", worker, show_dir_fields)
    c.steps.change(lambda n: n, inputs=c.steps, outputs=steps_proxy, queue=False, api_visibility="private")
    c.reuse_seed.click(lambda last: (last or {}).get("seed", -1), inputs=last_seed, outputs=c.seed, queue=False,
                       api_visibility="private")

    def resize_by_preview(picture, scale):
        if picture is None:
            return ""
        width, height = scaled_size(picture.size, scale)
        return f"<p><span>Resize:</span> {picture.width}x{picture.height} → {width}x{height}</p>"

    # one queued event with one worker: the answers come in the order of the changes (an upload's answer, computed
    # with the old scale, can no longer arrive after the new scale's)
    gr.on([c.scale_by.change, init_image.change], resize_by_preview, inputs=[init_image, c.scale_by],
          outputs=c.scale_by_size, trigger_mode="always_last", concurrency_limit=1,
          concurrency_id="img2img_resize_preview", show_progress="hidden", api_visibility="private")

    request_inputs = {"prompt": prompt, "negative_prompt": negative, "styles": styles, **c.request_inputs(),
                      "resize_mode": resize_mode, "mask_blur": mask_blur, "inpainting_mask_invert": mask_mode,
                      "inpainting_fill": fill, "inpaint_full_res": area, "inpaint_full_res_padding": padding,
                      "denoising_strength": denoise}
    source_inputs = {"mode": mode, "resize_by": c.resize_by_selected, "scale_by": c.scale_by,
                     "image": init_image, "sketch": sketch, "inpaint": inpaint,
                     "inpaint_sketch": inpaint_sketch, "upload_image": upload_image, "upload_mask": upload_mask,
                     "batch_input_dir": batch_in, "batch_output_dir": batch_out, "batch_mask_dir": batch_mask}

    def run(*, mode, resize_by, scale_by, image, sketch, inpaint, inpaint_sketch, upload_image, upload_mask,
            batch_input_dir, batch_output_dir, batch_mask_dir, override_settings=None, **values):
        try:
            runner = script_runner("img2img", scripts, values)
        except GenerationError as e:  # a script's value the page's controls would not allow
            yield "", gr.skip(), error_html(e), gr.skip()
            return
        mask = None
        if mode == "sketch":
            image = _composite(sketch)
        elif mode == "inpaint":
            image, mask = _mask_from_editor(inpaint)
        elif mode == "inpaint_sketch":  # the painted strokes are the new content and, where painted, the mask
            _, mask = _mask_from_editor(inpaint_sketch)
            image = _composite(inpaint_sketch)
        elif mode == "inpaint_upload":
            image, mask = upload_image, upload_mask
        if resize_by and image is not None and mode != "batch":  # "Resize by": the picture's size times the scale
            values["width"], values["height"] = scaled_size(image.size, scale_by)
        try:
            req = build_request(Img2ImgRequest, values, init_images=[image] if image is not None else [], mask=mask)
        except GenerationError as e:
            yield "", gr.skip(), error_html(e), gr.skip()
            return
        if mode == "batch":
            if not show_dir_fields:  # the tab is hidden, but its select event can still set the mode
                yield "", gr.skip(), f"<p class='error'>❌ {DIR_ACCESS_REFUSED}</p>", gr.skip()
                return
            yield from _batch(worker, req, batch_input_dir, batch_output_dir, batch_mask_dir)
            return
        if image is None:
            yield "", gr.skip(), "<p class='error'>❌ Put an image in first.</p>", gr.skip()
            return
        yield from stream(worker, req, *option_overrides(override_settings, worker.ctx.options), runner=runner)

    generate.click(run, inputs_kwargs={**source_inputs, **request_inputs, "override_settings": override,
                                       **script_inputs},
                   outputs=[progress, gallery, info, last_seed],
                   api_name="img2img", concurrency_limit=1, concurrency_id="generate").then(**_forever("img2img"))
    return {"prompt": prompt, "negative": negative, "controls": c, "gallery": gallery, "info": info,
            "image": init_image, "sketch": sketch, "inpaint": inpaint, "inpaint_sketch": inpaint_sketch, "tabs": tabs,
            "mode": mode, "paste": paste, "send": send,
            "selected": selected, "last": last_seed, "checkpoint_box": checkpoint_box,
            "request_inputs": request_inputs, "override_settings": override, "worker": worker,
            "scripts": scripts, "script_paste": scripts.paste_fields("img2img") if scripts is not None else []}


def _batch(worker: GenerationWorker, req: Img2ImgRequest, input_dir: str, output_dir: str, mask_dir: str):
    from modules.generation import process_img2img_folder
    if not input_dir:
        yield "", gr.skip(), "<p class='error'>❌ Give an input directory.</p>", gr.skip()
        return
    try:
        result = worker.with_lock(lambda: process_img2img_folder(
            req, worker.ctx, Path(input_dir), Path(output_dir) if output_dir else None,
            Path(mask_dir) if mask_dir else None))
    except GenerationError as e:
        yield "", gr.skip(), f"<p class='error'>❌ {html.escape(str(e))}</p>", gr.skip()
        return
    yield "", result.images, infotext_html(result), {"seed": result.seeds[0] if result.seeds else -1,
                                                     "infotexts": result.infotexts}
