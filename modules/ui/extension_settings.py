"""The settings extensions declare (A1111's `shared.opts.add_option` in an on_ui_settings callback), in the Settings
tab under ours: each with the control the extension chose, saved to config.json by their own Apply button."""
from __future__ import annotations

import html
import logging

import gradio as gr

log = logging.getLogger(__name__)


def _control(key: str, info, value, interactive: bool):
    """The extension's component (a Gradio class, with its arguments: a dict or a function giving one), else one
    that fits the default's type."""
    kwargs = {"label": info.label or key, "value": value, "elem_id": f"setting_{key}", "interactive": interactive}
    if info.component is not None:
        try:
            args = info.component_args() if callable(info.component_args) else (info.component_args or {})
            return info.component(**{**args, **kwargs})
        except Exception:  # noqa: BLE001 - someone else's arguments: fall back to a plain control
            log.exception("the control of extension setting %s could not be made; a plain one is shown", key)
    if isinstance(info.default, bool):
        return gr.Checkbox(**kwargs)
    if isinstance(info.default, int | float):
        return gr.Number(**kwargs)
    return gr.Textbox(**kwargs)


def build(settings, frozen: bool) -> tuple[list, object] | None:
    """The section, if extensions declared settings; returns (its controls, a function giving their current
    values) for the page's load event, so a reload shows what config.json holds."""
    if settings is None or not settings.keys():
        return None
    values = settings.values()
    controls: dict[str, gr.components.Component] = {}
    with gr.Group(elem_id="settings_extensions"):
        gr.Markdown("## Settings of extensions")
        for title, keys in settings.sections():
            gr.Markdown(f"### {html.escape(title)}")
            for key in keys:
                controls[key] = _control(key, settings.info(key), values[key], not frozen)
        apply = gr.Button("Apply extension settings", elem_id="settings_extensions_apply", interactive=not frozen)
        status = gr.HTML(elem_id="settings_extensions_status")
    keys = list(controls)

    def save(*new_values):
        if frozen:
            return "<p class='error'>❌ Settings are frozen (--freeze-settings).</p>"
        try:
            checked = {k: settings.check(k, v) for k, v in zip(keys, new_values)}
        except ValueError as e:
            return f"<p class='error'>❌ {html.escape(str(e))}</p>"
        for key, value in checked.items():
            settings.set(key, value)
        try:
            settings.save()
        except OSError as e:
            return f"<p class='error'>❌ Not saved: {html.escape(str(e))}</p>"
        return f"<p>Saved {len(checked)} settings of extensions.</p>"

    apply.click(save, inputs=list(controls.values()), outputs=status, api_visibility="private")

    def current():  # Gradio takes a one-item list for one output as that output's value
        values = [settings.values()[k] for k in keys]
        return values if len(values) > 1 else values[0]
    return list(controls.values()), current
