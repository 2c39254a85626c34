"""Gradio adapters: turn what the user does on the page into calls on the module layer.

The names below are A1111's `modules.ui` ones that extensions import (`from modules.ui import
create_refresh_button`); our own page does not use them."""
from __future__ import annotations

refresh_symbol = "\U0001f504"  # 🔄
save_style_symbol = "\U0001f4be"  # 💾
apply_style_symbol = "\U0001f4cb"  # 📋
clear_prompt_symbol = "\U0001f5d1\ufe0f"  # 🗑️
switch_values_symbol = "\U00002195\ufe0f"  # ↕️
detect_image_size_symbol = "\U0001f4d0"  # 📐
paste_symbol = "\u2199\ufe0f"  # ↙


def gr_show(visible: bool = True) -> dict:
    return {"visible": visible, "__type__": "update"}


def create_refresh_button(refresh_component, refresh_method, refreshed_args, elem_id: str):
    """A 🔄 button that calls `refresh_method()` and gives `refresh_component` (one or a list) the properties
    `refreshed_args` names (a dict, or a function returning one: e.g. {"choices": new_list})."""
    import gradio as gr
    components = refresh_component if isinstance(refresh_component, list) else [refresh_component]
    label = None if not components else getattr(components[0], "label", None)

    def refresh():
        refresh_method()
        args = refreshed_args() if callable(refreshed_args) else refreshed_args
        for component in components:
            for key, value in args.items():
                setattr(component, key, value)
        return [gr.update(**args) for _ in components] if len(components) != 1 else gr.update(**args)

    button = gr.Button(refresh_symbol, elem_id=elem_id, elem_classes=["tool"], scale=0, min_width=40)
    button.click(refresh, outputs=components, api_visibility="private")
    if label:
        button.webui_tooltip = f"Refresh {label}"
    return button
