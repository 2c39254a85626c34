"""The Settings tab: every field of Options as a control (A1111's `setting_<name>` ids), saved on Apply."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields

import gradio as gr

from modules.conditioning.text import EMPHASIS_MODES
from modules.generation import VERSION
from modules.options import Options

# label, and choices for the fields that have a fixed set of values
LABELS: dict[str, tuple[str, list | None]] = {
    "sd_model_checkpoint": ("Stable Diffusion checkpoint", None),
    "sd_vae": ("SD VAE", None),
    "sd_checkpoints_limit": ("Maximum number of checkpoints loaded at the same time", None),
    "fp8_storage": ("FP8 weight (UNet stored in 8 bits)", ["Disable", "Enable for SDXL", "Enable"]),
    "CLIP_stop_at_last_layers": ("Clip skip", None),
    "emphasis": ("Emphasis mode", list(EMPHASIS_MODES)),
    "comma_padding_backtrack": ("Prompt word wrap length limit (tokens moved to the next chunk at a comma)", None),
    "sdxl_clip_l_skip": ("Clip skip for SDXL's CLIP-L too", None),
    "use_old_scheduling": ("Use old prompt editing timelines", None),
    "eta_ancestral": ("Eta for ancestral samplers", None),
    "eta_ddim": ("Eta for DDIM", None),
    "eta_noise_seed_delta": ("Eta noise seed delta (ENSD)", None),
    "randn_source": ("Random number generator source", ["GPU", "CPU"]),
    "s_churn": ("sigma churn", None),
    "s_tmin": ("sigma tmin", None),
    "s_tmax": ("sigma tmax (0 = infinity)", None),
    "s_noise": ("sigma noise", None),
    "sigma_min": ("Schedule min sigma (0 = default)", None),
    "sigma_max": ("Schedule max sigma (0 = default)", None),
    "rho": ("Schedule rho (0 = default)", None),
    "always_discard_next_to_last_sigma": ("Always discard next-to-last sigma", None),
    "img2img_fix_steps": ("With img2img, do exactly the amount of steps the slider specifies", None),
    "inpainting_mask_weight": ("Inpainting conditioning mask strength", None),
    "sdxl_refiner_high_aesthetic_score": ("SDXL refiner high aesthetic score", None),
    "sdxl_refiner_low_aesthetic_score": ("SDXL refiner low aesthetic score", None),
    "samples_save": ("Always save all generated images", None),
    "samples_format": ("File format for images", ["png", "jpg", "webp", "avif"]),
    "grid_save": ("Always save all generated image grids", None),
    "return_grid": ("Show grid in gallery", None),
    "outdir_txt2img_samples": ("Output directory for txt2img images (empty: outputs/txt2img-images)", None),
    "outdir_img2img_samples": ("Output directory for img2img images (empty: outputs/img2img-images)", None),
    "localization": ("Localization (reload the page after applying)", None),
    "live_previews_enable": ("Show live previews of the created image", None),
    "show_progress_every_n_steps": ("Live preview display period (steps; 0 = off)", None),
}
HIDDEN = {"sd_model_checkpoint", "sd_vae"}  # set from the top bar
DIR_FIELDS = {"outdir_txt2img_samples", "outdir_img2img_samples"}


def build(options: Options, save: Callable[[], None], run_exclusive: Callable[[Callable[[], None]], object],
          frozen: bool, show_dir_fields: bool, localizations: list[str]) -> None:
    controls: dict[str, gr.components.Component] = {}
    if frozen:
        gr.Markdown("Settings are frozen (--freeze-settings): they can be read but not changed here.")
    with gr.Row():
        apply = gr.Button("Apply settings", variant="primary", elem_id="settings_submit", interactive=not frozen)
    result = gr.HTML(elem_id="settings_result")
    for f in fields(Options):
        if f.name in HIDDEN or (f.name in DIR_FIELDS and not show_dir_fields):
            continue
        label, choices = LABELS.get(f.name, (f.name, None))
        if f.name == "localization":
            choices = ["None"] + localizations
        value = getattr(options, f.name)
        kwargs = dict(label=label, value=value, elem_id=f"setting_{f.name}", interactive=not frozen)
        if choices:
            controls[f.name] = gr.Dropdown(choices, **kwargs)
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
        changed = []

        def apply() -> None:  # in the worker's turn: a running job keeps the settings it started with
            for name, value in values.items():
                current = getattr(options, name)
                new = type(current)(value) if value is not None else current
                if new != current:
                    setattr(options, name, new)
                    changed.append(LABELS.get(name, (name, None))[0])
            save()

        run_exclusive(apply)
        return f"{len(changed)} settings changed" + (f": {', '.join(changed)}." if changed else ".")

    apply.click(apply_settings, inputs_kwargs=controls, outputs=result, api_visibility="private")
