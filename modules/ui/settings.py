"""The Settings tab: every field of Options as a control (A1111's `setting_<name>` ids), saved on Apply.

Apply checks every value with `Options.check` (the constraints the API and config.json loading use too) and
changes nothing unless all of them fit.
"""
from __future__ import annotations

import html
from collections.abc import Callable
from dataclasses import fields

import gradio as gr

from modules.generation import VERSION
from modules.options import PATH_SETTINGS, Options, SettingError, choices_of

LABELS: dict[str, str] = {
    "sd_model_checkpoint": "Stable Diffusion checkpoint",
    "sd_vae": "SD VAE",
    "sd_checkpoints_limit": "Maximum number of checkpoints loaded at the same time",
    "fp8_storage": "FP8 weight (UNet stored in 8 bits)",
    "CLIP_stop_at_last_layers": "Clip skip",
    "emphasis": "Emphasis mode",
    "comma_padding_backtrack": "Prompt word wrap length limit (tokens moved to the next chunk at a comma)",
    "sdxl_clip_l_skip": "Clip skip for SDXL's CLIP-L too",
    "use_old_scheduling": "Use old prompt editing timelines",
    "eta_ancestral": "Eta for ancestral samplers",
    "eta_ddim": "Eta for DDIM",
    "eta_noise_seed_delta": "Eta noise seed delta (ENSD)",
    "randn_source": "Random number generator source",
    "s_churn": "sigma churn",
    "s_tmin": "sigma tmin",
    "s_tmax": "sigma tmax (0 = infinity)",
    "s_noise": "sigma noise",
    "sigma_min": "Schedule min sigma (0 = default)",
    "sigma_max": "Schedule max sigma (0 = default)",
    "rho": "Schedule rho (0 = default)",
    "always_discard_next_to_last_sigma": "Always discard next-to-last sigma",
    "img2img_fix_steps": "With img2img, do exactly the amount of steps the slider specifies",
    "inpainting_mask_weight": "Inpainting conditioning mask strength",
    "sdxl_refiner_high_aesthetic_score": "SDXL refiner high aesthetic score",
    "sdxl_refiner_low_aesthetic_score": "SDXL refiner low aesthetic score",
    "samples_save": "Always save all generated images",
    "samples_format": "File format for images",
    "grid_save": "Always save all generated image grids",
    "return_grid": "Show grid in gallery",
    "outdir_txt2img_samples": "Output directory for txt2img images (empty: outputs/txt2img-images)",
    "outdir_img2img_samples": "Output directory for img2img images (empty: outputs/img2img-images)",
    "localization": "Localization (reload the page after applying)",
    "live_previews_enable": "Show live previews of the created image",
    "show_progress_every_n_steps": "Live preview display period (steps; 0 = off)",
}
HIDDEN = {"sd_model_checkpoint", "sd_vae"}  # set from the top bar


def build(options: Options, save: Callable[[], None], run_exclusive: Callable[[Callable[[], None]], object],
          frozen: bool, show_dir_fields: bool, localizations: list[str]) -> None:
    controls: dict[str, gr.components.Component] = {}
    if frozen:
        gr.Markdown("Settings are frozen (--freeze-settings): they can be read but not changed here.")
    with gr.Row():
        apply = gr.Button("Apply settings", variant="primary", elem_id="settings_submit", interactive=not frozen)
    result = gr.HTML(elem_id="settings_result")
    for f in fields(Options):
        if f.name in HIDDEN or (f.name in PATH_SETTINGS and not show_dir_fields):
            continue
        label, choices = LABELS.get(f.name, f.name), choices_of(f.name)
        if f.name == "localization":
            choices = ("None", *localizations)
        value = getattr(options, f.name)
        kwargs = dict(label=label, value=value, elem_id=f"setting_{f.name}", interactive=not frozen)
        if choices:
            controls[f.name] = gr.Dropdown(list(choices), **kwargs)
        elif isinstance(value, bool):
            controls[f.name] = gr.Checkbox(**kwargs)
        elif isinstance(value, int | float):
            controls[f.name] = gr.Number(precision=0 if isinstance(value, int) else None, **kwargs)
        else:
            controls[f.name] = gr.Textbox(**kwargs)
    gr.Markdown(f"Version {VERSION}")

    def apply_settings(**values):
        if frozen:
            return "Settings are frozen."
        checked, problems = {}, []
        for name, value in values.items():
            if value is None:  # an emptied number field keeps its setting
                continue
            try:
                checked[name] = Options.check(name, value)
            except SettingError as e:
                problems.append(str(e))
        if problems:
            return html.escape("Nothing was changed: " + "; ".join(problems) + ".")
        changed = []

        def apply() -> None:  # in the worker's turn: a running job keeps the settings it started with
            for name, value in checked.items():
                if value != getattr(options, name):
                    setattr(options, name, value)
                    changed.append(LABELS.get(name, name))
            save()

        try:
            run_exclusive(apply)
        except OSError as e:
            return html.escape(f"The settings are in effect until restart but were not saved: {e}")
        return html.escape(f"{len(changed)} settings changed" + (f": {', '.join(changed)}." if changed else "."))

    apply.click(apply_settings, inputs_kwargs=controls, outputs=result, api_visibility="private")
