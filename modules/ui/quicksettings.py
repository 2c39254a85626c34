"""The top bar: checkpoint and VAE pickers, as in A1111's quicksettings."""
from __future__ import annotations

from collections.abc import Callable

import gradio as gr

from modules.generation.worker import GenerationWorker
from modules.models.checkpoint_io import CheckpointError
from modules.models.manager import ModelManager


def model_status(manager: ModelManager, error: str | None = None) -> str:
    current = manager.current
    lines = []
    if error:
        lines.append(f"**Could not load:** {error}")
        if current is not None:
            lines.append(f"Still using {current.file.title}.")
    if current is not None:
        lines.append(f"**Loaded:** {current.describe()}")  # the label on its own, so that it can be translated
    elif not manager.checkpoints:
        folders = ", ".join(f"`{d}`" for d in manager.paths.checkpoint_dirs[:2])
        lines.append(f"No checkpoint found. Put `.safetensors` or `.ckpt` files into {folders} and press 🔄.")
    else:
        lines.append("No checkpoint loaded yet: pick one above.")
    return "\n\n".join(lines)


def build(manager: ModelManager, save_settings: Callable[[], None], worker: GenerationWorker
          ) -> tuple[gr.Dropdown, gr.Markdown, Callable]:
    """Create the quicksettings row inside the current Blocks context; returns the checkpoint picker, the
    model status line and the function that switches checkpoints (for other controls that pick one)."""
    current = manager.current
    with gr.Row(elem_id="quicksettings"):
        checkpoint = gr.Dropdown(choices=manager.checkpoint_titles(),
                                 value=current.file.title if current else None,
                                 label="Stable Diffusion checkpoint", elem_id="setting_sd_model_checkpoint",
                                 # a page opened before a rescan names files its own way
                                 scale=4, allow_custom_value=True)
        refresh = gr.Button("🔄", elem_id="refresh_sd_model_checkpoint", scale=0, min_width=40)
        vae = gr.Dropdown(choices=manager.vae_choices(), value=manager.options.sd_vae, label="SD VAE",
                          elem_id="setting_sd_vae", scale=2)
    status = gr.Markdown(model_status(manager), elem_id="sd_model_status")

    def titles_update():
        current = manager.current
        return gr.update(choices=manager.checkpoint_titles(), value=current.file.title if current else None)

    def on_checkpoint(title: str):
        error = None
        if title:
            try:
                worker.with_lock(lambda: manager.load(title))  # never in the middle of a generation
                save_settings()
            except (CheckpointError, OSError) as e:  # OSError: the choice works but could not be saved (disk full)
                error = str(e)
        return titles_update(), model_status(manager, error)

    def on_vae(choice: str):
        error = None
        try:
            worker.with_lock(lambda: manager.set_vae(choice))
            save_settings()
        except (CheckpointError, OSError) as e:
            error = str(e)
        return gr.update(value=manager.options.sd_vae), model_status(manager, error)

    def on_refresh():
        manager.refresh()
        return titles_update(), gr.update(choices=manager.vae_choices()), model_status(manager)

    checkpoint.input(on_checkpoint, inputs=checkpoint, outputs=[checkpoint, status], api_name="set_checkpoint")
    vae.input(on_vae, inputs=vae, outputs=[vae, status], api_name="set_vae")
    refresh.click(on_refresh, outputs=[checkpoint, vae, status], api_name="refresh_checkpoints")
    return checkpoint, status, on_checkpoint
