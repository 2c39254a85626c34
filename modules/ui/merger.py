"""The Checkpoint Merger tab (A1111's controls and elem_ids); the merge itself is modules/models/merge.py."""
from __future__ import annotations

import html

import gradio as gr

from modules.generation.worker import GenerationWorker
from modules.models.checkpoint_io import CheckpointError
from modules.models.manager import ModelManager
from modules.models.merge import (
    CHECKPOINT_FORMATS,
    CONFIG_SOURCES,
    INTERP_METHODS,
    VAE_NONE,
    WEIGHTED_SUM,
    MergeError,
    MergeRequest,
    merge_checkpoints,
    read_metadata,
    safetensors_metadata,
)

DESCRIPTIONS = {
    "No interpolation": "No interpolation will be used. Requires one model; A. Allows for format conversion and "
                        "VAE baking.",
    "Weighted sum": "A weighted sum will be used for interpolation. Requires two models; A and B. The result is "
                    "calculated as A * (1 - M) + B * M",
    "Add difference": "The difference between the last two models will be added to the first. Requires three "
                      "models; A, B and C. The result is calculated as A + (B - C) * M",
}


def describe(method: str) -> str:
    return f"<p style='margin-bottom: 2.5em'>{html.escape(DESCRIPTIONS.get(method, ''))}</p>"


def _vae_choices(manager: ModelManager) -> list[str]:
    return [VAE_NONE] + [v.name for v in manager.vaes]


def _same_file_title(manager: ModelManager, chosen: str | None) -> str | None:
    """The chosen checkpoint's title after a rescan (it gains its hash once hashed)."""
    if not chosen:
        return chosen
    try:
        return manager.find_checkpoint(chosen).title
    except CheckpointError:
        return None


def build(manager: ModelManager, worker: GenerationWorker, checkpoint_picker: gr.Dropdown | None = None) -> None:
    """Build the tab inside the current Blocks context. `checkpoint_picker` (the top bar's) gets the new
    list after a merge."""
    titles = manager.checkpoint_titles()
    with gr.Row(equal_height=False):
        with gr.Column(variant="compact"):
            description = gr.HTML(describe(WEIGHTED_SUM), elem_id="modelmerger_interp_description")
            with gr.Row(elem_id="modelmerger_models"):
                pickers = []
                for role, label in (("A", "Primary model (A)"), ("B", "Secondary model (B)"),
                                    ("C", "Tertiary model (C)")):
                    key = {"A": "primary", "B": "secondary", "C": "tertiary"}[role]
                    picker = gr.Dropdown(titles, value=None, label=label, elem_id=f"modelmerger_{key}_model_name",
                                         allow_custom_value=True, scale=4)
                    refresh = gr.Button("🔄", elem_id=f"refresh_checkpoint_{role}", scale=0, min_width=40)
                    refresh.click(lambda: (manager.refresh(), gr.update(choices=manager.checkpoint_titles()))[1],
                                  outputs=picker, queue=False, api_visibility="private")
                    pickers.append(picker)
            primary, secondary, tertiary = pickers
            custom_name = gr.Textbox(label="Custom Name (Optional)", elem_id="modelmerger_custom_name")
            amount = gr.Slider(0.0, 1.0, value=0.3, step=0.05, label="Multiplier (M) - set to 0 to get model A",
                               elem_id="modelmerger_interp_amount")
            method = gr.Radio(list(INTERP_METHODS), value=WEIGHTED_SUM, label="Interpolation Method",
                              elem_id="modelmerger_interp_method")
            with gr.Row():
                fmt = gr.Radio(list(CHECKPOINT_FORMATS), value="safetensors", label="Checkpoint format",
                               elem_id="modelmerger_checkpoint_format")
                half = gr.Checkbox(False, label="Save as float16", elem_id="modelmerger_save_as_half")
                prune = gr.Checkbox(False, label="Prune (drop EMA weights)", elem_id="modelmerger_prune")
            with gr.Row():
                config_source = gr.Radio(list(CONFIG_SOURCES), value=CONFIG_SOURCES[0], type="index",
                                         label="Copy config from", elem_id="modelmerger_config_method")
                with gr.Row():
                    bake_vae = gr.Dropdown(_vae_choices(manager), value=VAE_NONE, label="Bake in VAE",
                                           elem_id="modelmerger_bake_in_vae", allow_custom_value=True, scale=4)
                    refresh_vae = gr.Button("🔄", elem_id="modelmerger_refresh_bake_in_vae", scale=0, min_width=40)
            discard = gr.Textbox("", label="Discard weights with matching name", elem_id="modelmerger_discard_weights")
            with gr.Accordion("Metadata", open=False) as metadata_editor:
                with gr.Row():
                    save_metadata = gr.Checkbox(True, label="Save metadata", elem_id="modelmerger_save_metadata")
                    add_recipe = gr.Checkbox(True, label="Add merge recipe metadata", elem_id="modelmerger_add_recipe")
                    copy_metadata = gr.Checkbox(True, label="Copy metadata from merged models",
                                                elem_id="modelmerger_copy_metadata")
                metadata_json = gr.Textbox("{}", lines=6, label="Metadata in JSON format",
                                           elem_id="modelmerger_metadata_json")
                read_button = gr.Button("Read metadata from selected checkpoints", elem_id="modelmerger_read_metadata")
            merge_button = gr.Button("Merge", variant="primary", elem_id="modelmerger_merge")
        with gr.Column(variant="compact", elem_id="modelmerger_results_container"):
            with gr.Group(elem_id="modelmerger_results_panel"):
                result = gr.HTML(elem_id="modelmerger_result")

    method.change(describe, inputs=method, outputs=description, queue=False, api_visibility="private")
    fmt.change(lambda f: gr.update(visible=f == "safetensors"), inputs=fmt, outputs=metadata_editor, queue=False,
               show_progress="hidden", api_visibility="private")

    def on_refresh_vae():
        manager.refresh()
        return gr.update(choices=_vae_choices(manager))

    refresh_vae.click(on_refresh_vae, outputs=bake_vae, queue=False, api_visibility="private")

    def on_read_metadata(*names):
        found = []
        for name in names:
            if not name:
                continue
            try:
                file = manager.find_checkpoint(name)
            except CheckpointError:
                continue
            found.append((file, safetensors_metadata(file)))
        return read_metadata(found)

    read_button.click(on_read_metadata, inputs=[primary, secondary, tertiary], outputs=metadata_json,
                      api_visibility="private")

    def on_merge(a, b, c, interp, m, as_half, name, checkpoint_format, config, vae, discard_weights, do_prune,
                 do_save_metadata, recipe, copy_fields, json_text, progress=gr.Progress()):  # noqa: B008
        req = MergeRequest(primary_model_name=a or "", secondary_model_name=b or "", tertiary_model_name=c or "",
                           interp_method=interp, multiplier=m, save_as_half=bool(as_half), custom_name=name or "",
                           checkpoint_format=checkpoint_format, config_source=config if config is not None else 0,
                           bake_in_vae=vae or VAE_NONE, discard_weights=discard_weights or "", prune=bool(do_prune),
                           save_metadata=bool(do_save_metadata), add_merge_recipe=bool(recipe),
                           copy_metadata_fields=bool(copy_fields), metadata_json=json_text or "{}")
        try:
            merged = worker.with_lock(lambda: merge_checkpoints(manager, req, lambda f, text: progress(f, desc=text)))
            message = "<br>".join(html.escape(line) for line in merged.message.splitlines())
        except MergeError as e:
            message = f"<p class='error'>❌ Error merging checkpoints: {html.escape(str(e))}</p>"
        choices = manager.checkpoint_titles()
        current = manager.current
        picker_updates = [gr.update(choices=choices, value=_same_file_title(manager, v)) for v in (a, b, c)]
        top = gr.update(choices=choices, value=current.file.title if current else None)
        return [*picker_updates, top, message]

    outputs = [primary, secondary, tertiary]
    outputs.append(checkpoint_picker if checkpoint_picker is not None else gr.State())
    merge_button.click(on_merge, inputs=[primary, secondary, tertiary, method, amount, half, custom_name, fmt,
                                         config_source, bake_vae, discard, prune, save_metadata, add_recipe,
                                         copy_metadata, metadata_json],
                       outputs=[*outputs, result], api_name="modelmerger", concurrency_limit=1,
                       concurrency_id="generate")
