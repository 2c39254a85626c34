"""The Settings tab: every setting as a control (A1111's `setting_<name>` ids) in A1111's sections, with a
search box, saved on Apply; and the quicksettings chosen in the "Quicksettings list" setting.

The page shows what the options hold on every load (a page opened before a change, or reloaded after one,
never shows stale values), and Apply writes only the settings the user changed on this page since it loaded,
so a stale page cannot undo a change made elsewhere. Apply checks every value with `Options.check` (the
constraints the API and config.json loading use too) and changes nothing unless all of them fit.
"""
from __future__ import annotations

import html
from collections.abc import Callable
from dataclasses import dataclass, field, fields

import gradio as gr

from modules.generation import VERSION
from modules.options import PATH_SETTINGS, SECTIONS, Options, SettingError, choices_of, info_of
from modules.paths import REPO_ROOT

# The checkpoint and VAE have their own pickers in the top bar (with a refresh button and a status line).
OWN_PICKERS = ("sd_model_checkpoint", "sd_vae")
# Read by the page's scripts (window.opts), as A1111's javascript reads `opts`.
PAGE_SCRIPT_SETTINGS = ("send_seed", "send_size", "show_progress_in_title", "notification_audio",
                        "notification_volume", "disable_token_counters", "hidden_tabs", "return_grid")


def to_page_scripts(page: SettingsPage) -> dict:
    """Arguments of a `.then(...)` that hands the settings the page's scripts read to them (window.opts)."""
    return dict(fn=None, inputs=page.page_opts, js="(o) => { window.setPageOpts(o); }", api_visibility="private")


def label_of(name: str) -> str:
    return info_of(name)["label"] or name


def shown_settings(show_dir_fields: bool) -> list[str]:
    return [f.name for f in fields(Options)
            if info_of(f.name)["section"] != "hidden" and f.name not in OWN_PICKERS
            and (show_dir_fields or f.name not in PATH_SETTINGS)]


def _control(name: str, value, *, elem_id: str, interactive: bool, extra_choices: dict[str, list[str]],
             visible: bool = True):
    meta = info_of(name)
    kwargs = dict(label=meta["label"] or name, value=value, elem_id=elem_id, interactive=interactive,
                  info=meta["info"] or None, visible=visible)
    if meta["needs_reload"]:
        kwargs["info"] = "; ".join(filter(None, [meta["info"], "reload the page to see the change"]))
    if isinstance(value, list):
        return gr.Dropdown(extra_choices.get(name, []), multiselect=True, **kwargs)
    choices = extra_choices.get(name) or choices_of(name)
    if choices:
        return gr.Dropdown(list(choices), **kwargs)
    if isinstance(value, bool):
        return gr.Checkbox(**kwargs)
    if isinstance(value, int | float):
        low, high = meta["minimum"], meta["maximum"]
        if low is not None and high is not None and high - low <= 200:
            step = 1 if isinstance(value, int) else (0.001 if high - low <= 2 else 0.01)
            return gr.Slider(low, high, step=step, **kwargs)
        return gr.Number(precision=0 if isinstance(value, int) else None, minimum=low, maximum=high, **kwargs)
    return gr.Textbox(**kwargs)


def page_choices(localizations: list[str], tab_names: list[str], upscalers: list[str]) -> dict[str, list[str]]:
    """Choices known only when the page is built, for the Settings tab and the quicksettings alike."""
    return {"localization": ["None", *localizations], "hidden_tabs": [t for t in tab_names if t != "Settings"],
            "quicksettings_list": [f.name for f in fields(Options) if info_of(f.name)["section"] != "hidden"],
            "upscaler_for_img2img": upscalers}


@dataclass
class SettingsPage:
    """What the page-load event needs: every settings control and the snapshot of what the page shows."""
    options: Options
    controls: dict[str, gr.components.Component]
    shown: gr.State
    page_opts: gr.JSON
    tabs: dict[str, gr.Tab] = field(default_factory=dict)
    quick: dict[str, gr.components.Component] = field(default_factory=dict)

    def outputs(self) -> list:
        return [*self.controls.values(), *self.quick.values(), self.shown, self.page_opts]

    def current(self) -> list:
        """The values config.json holds now, for every control (quicksettings shown if listed), the snapshot, and
        the page's script settings."""
        values = {name: getattr(self.options, name) for name in self.controls}
        listed = set(self.options.quicksettings_list)
        return [*values.values(),
                *(gr.update(value=getattr(self.options, n), visible=n in listed) for n in self.quick),
                values, self.page_opts_now()]

    def page_opts_now(self) -> dict:
        """The settings the page's scripts read, and the element ids of the tabs to hide (Gradio 6 does not
        hide a tab on a visibility update, so the page's script does)."""
        ids = {name: tab.elem_id for name, tab in self.tabs.items()}
        return {**{name: getattr(self.options, name) for name in PAGE_SCRIPT_SETTINGS},
                "hidden_tab_ids": [ids[n] for n in self.options.hidden_tabs if n in ids],
                # whether the user put a notification.mp3 beside webui.py (A1111 plays it; asking for a missing
                # one would show an error in the browser's console)
                "notification_file": (REPO_ROOT / "notification.mp3").is_file()}


def _apply(options: Options, save: Callable[[], None], run_exclusive: Callable, submitted: dict,
           shown: dict | None) -> tuple[list[str], list[str]]:
    """Check and apply the values the user changed since the page showed `shown`; returns (changed labels,
    problems). Nothing changes unless every value fits."""
    checked, problems = {}, []
    for name, value in submitted.items():
        if value is None:  # an emptied number field keeps its setting
            continue
        if shown is not None and name in shown and value == shown[name]:
            continue  # not touched on this page: what config.json holds now stays
        try:
            checked[name] = Options.check(name, value)
        except SettingError as e:
            problems.append(str(e))
    if problems:
        return [], problems
    changed: list[str] = []

    def apply() -> None:  # in the worker's turn: a running job keeps the settings it started with
        for name, value in checked.items():
            if value != getattr(options, name):
                setattr(options, name, value)
                changed.append(label_of(name))
        if changed:
            save()

    run_exclusive(apply)
    return changed, []


def build(options: Options, save: Callable[[], None], run_exclusive: Callable[[Callable[[], None]], object],
          frozen: bool, show_dir_fields: bool, extra_choices: dict[str, list[str]],
          quick: dict[str, gr.components.Component], tabs: dict[str, gr.Tab]) -> SettingsPage:
    """The Settings tab's content, wired with the quicksettings; wire `SettingsPage.current` to the page's load
    event. `tabs`: the page's tabs by name, for "Hidden UI tabs"; `extra_choices`: `page_choices`."""
    names = shown_settings(show_dir_fields)
    controls: dict[str, gr.components.Component] = {}
    if frozen:
        gr.Markdown("Settings are frozen (--freeze-settings): they can be read but not changed here.")
    with gr.Row(elem_id="settings_top"):
        apply_button = gr.Button("Apply settings", variant="primary", elem_id="settings_submit",
                                 interactive=not frozen)
        reload_button = gr.Button("Reload UI", elem_id="settings_restart_gradio")
    result = gr.HTML(elem_id="settings_result")
    gr.Textbox(label="Search", placeholder="Search settings...", elem_id="settings_search", show_label=False,
               container=False)
    with gr.Column(elem_id="settings"):
        for section, title in SECTIONS.items():
            in_section = [n for n in names if info_of(n)["section"] == section]
            if not in_section:
                continue
            with gr.Group(elem_id=f"settings_{section}", elem_classes="settings-section"):
                gr.HTML(f"<h2>{html.escape(title)}</h2>", elem_classes="settings-section-title")
                for name in in_section:
                    controls[name] = _control(name, getattr(options, name), elem_id=f"setting_{name}",
                                              interactive=not frozen, extra_choices=extra_choices)
    gr.Markdown(f"Version {VERSION}")
    shown = gr.State({name: getattr(options, name) for name in controls})
    page = SettingsPage(options, controls, shown, gr.JSON(visible=False, elem_id="settings_json"),
                        tabs={n: t for n, t in tabs.items() if n != "Settings"}, quick=quick)
    _wire_quicksettings(page, save, run_exclusive, frozen)

    def apply_settings(shown_values, *values):
        if frozen:
            return "Settings are frozen.", shown_values, page.page_opts_now()
        submitted = dict(zip(controls, values))
        # what the page shows from now on: its own values, not the options, which may hold a change made elsewhere
        # that this page never showed and must not write back
        showing = {**(shown_values or {}), **{n: v for n, v in submitted.items() if v is not None}}
        try:
            changed, problems = _apply(options, save, run_exclusive, submitted, shown_values)
        except OSError as e:
            return (html.escape(f"The settings are in effect until restart but were not saved: {e}"), showing,
                    page.page_opts_now())
        if problems:
            return html.escape("Nothing was changed: " + "; ".join(problems) + "."), shown_values, page.page_opts_now()
        message = f"{len(changed)} settings changed" + (f": {', '.join(changed)}." if changed else ".")
        return html.escape(message), showing, page.page_opts_now()

    apply_button.click(apply_settings, inputs=[shown, *controls.values()], outputs=[result, shown, page.page_opts],
                       api_visibility="private").then(**to_page_scripts(page))
    reload_button.click(None, js="() => { location.reload(); }")
    return page


def build_quicksettings(options: Options, frozen: bool, show_dir_fields: bool, extra_choices: dict[str, list[str]]
                        ) -> dict[str, gr.components.Component]:
    """A control in the top bar for every setting the user may list in "Quicksettings list"; those not listed
    are hidden (the page-load event shows the listed ones). `build` wires them: a change applies and saves at
    once, as in A1111."""
    quick = {}
    with gr.Row(elem_id="quicksettings_extra"):
        for name in shown_settings(show_dir_fields):
            quick[name] = _control(name, getattr(options, name), elem_id=f"quicksettings_{name}",
                                   interactive=not frozen, extra_choices=extra_choices,
                                   visible=name in options.quicksettings_list)
    return quick


def _wire_quicksettings(page: SettingsPage, save: Callable[[], None], run_exclusive: Callable, frozen: bool) -> None:
    options = page.options

    def changed(name: str):
        def on_change(value):
            if frozen or value is None or value == getattr(options, name):
                return gr.update(), page.page_opts_now()
            try:
                _, problems = _apply(options, save, run_exclusive, {name: value}, None)
            except OSError as e:
                problems = [str(e)]
            for problem in problems:
                gr.Warning(problem)
            return gr.update(value=getattr(options, name)), page.page_opts_now()
        return on_change

    for name, control in page.quick.items():
        control.change(changed(name), inputs=control, outputs=[control, page.page_opts], api_visibility="private",
                       show_progress="hidden").then(**to_page_scripts(page))
