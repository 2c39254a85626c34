"""A1111's callback registry (`modules.script_callbacks`): extensions register functions with `on_*`, our code
runs them with the matching `*_callback`.

Every registered callback remembers the script file that registered it: the one the script loader announced with
`loading_script` / `set_current_script`, otherwise the registering caller's file (as A1111 finds it on the stack).
A callback that raises is logged with its extension or script and the kind of callback, and the others still run.
Registration may happen while a job runs callbacks on another thread: runners iterate over a copy of the list.
"""
from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import logging
import os
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import PurePath
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fastapi import FastAPI
    from gradio import Blocks

log = logging.getLogger(__name__)

EXTENSION_FOLDERS = ("extensions", "extensions-builtin")
"""Folders whose subfolders are extensions, as in A1111."""


@dataclasses.dataclass(eq=False)
class ImageSaveParams:
    image: Any
    """the PIL image; a before-saved callback may replace it"""
    p: Any
    """the processing object (StableDiffusionProcessing or an object with its fields)"""
    filename: str
    """the file the image is (or was) saved to"""
    pnginfo: dict
    """text chunks written with the image; the infotext is under 'parameters'"""


@dataclasses.dataclass(eq=False)
class ExtraNoiseParams:
    noise: Any
    """noise from the seed"""
    x: Any
    """latent of the image"""
    xi: Any
    """latent of the image with the noise added"""


@dataclasses.dataclass(eq=False)
class CFGDenoiserParams:
    x: Any
    """latent being denoised"""
    image_cond: Any
    sigma: Any
    sampling_step: int
    total_sampling_steps: int
    text_cond: Any
    """conditioning of the prompt"""
    text_uncond: Any
    """conditioning of the negative prompt"""
    denoiser: Any = None
    """the CFG denoiser running this step"""


@dataclasses.dataclass(eq=False)
class CFGDenoisedParams:
    x: Any
    sampling_step: int
    total_sampling_steps: int
    inner_model: Any


@dataclasses.dataclass(eq=False)
class AfterCFGCallbackParams:
    x: Any
    sampling_step: int
    total_sampling_steps: int


@dataclasses.dataclass(eq=False)
class UiTrainTabParams:
    txt2img_preview_params: Any


@dataclasses.dataclass(eq=False)
class ImageGridLoopParams:
    imgs: list
    cols: int
    rows: int


@dataclasses.dataclass
class BeforeTokenCounterParams:
    prompt: str
    steps: int
    styles: list
    is_positive: bool = True


@dataclasses.dataclass
class ScriptCallback:
    script: str
    """the file that registered the callback"""
    callback: Callable
    name: str | None = None
    """unique per kind: "<extension or 'base'>/<file name>/<kind>[/<name given>]", as in A1111"""


callback_map: dict[str, list[ScriptCallback]] = {
    key: []
    for key in (
        "callbacks_app_started", "callbacks_model_loaded", "callbacks_ui_tabs", "callbacks_ui_train_tabs",
        "callbacks_ui_settings", "callbacks_before_image_saved", "callbacks_image_saved", "callbacks_extra_noise",
        "callbacks_cfg_denoiser", "callbacks_cfg_denoised", "callbacks_cfg_after_cfg", "callbacks_before_component",
        "callbacks_after_component", "callbacks_image_grid", "callbacks_infotext_pasted",
        "callbacks_script_unloaded", "callbacks_before_ui", "callbacks_on_reload", "callbacks_list_optimizers",
        "callbacks_list_unets", "callbacks_before_token_counter",
    )
}

_registry_lock = threading.Lock()
_current_script: contextvars.ContextVar[str | None] = contextvars.ContextVar("current_script", default=None)


def set_current_script(path: str | os.PathLike | None) -> None:
    """The script loader announces the script file it is executing; callbacks registered meanwhile belong to it."""
    _current_script.set(None if path is None else os.fspath(path))


@contextlib.contextmanager
def loading_script(path: str | os.PathLike) -> Iterator[None]:
    token = _current_script.set(os.fspath(path))
    try:
        yield
    finally:
        _current_script.reset(token)


def _calling_script() -> str:
    """The script announced by the loader, else the file of the first caller outside this module."""
    announced = _current_script.get()
    if announced is not None:
        return announced
    frame = sys._getframe(1)
    while frame is not None and frame.f_code.co_filename == __file__:
        frame = frame.f_back
    return frame.f_code.co_filename if frame is not None else "unknown file"


def extension_name(path: str | os.PathLike) -> str | None:
    """The extension a file belongs to: the folder right under the nearest extensions/ or extensions-builtin/."""
    parts = PurePath(path).parts
    for index in range(len(parts) - 2, 0, -1):
        if parts[index - 1] in EXTENSION_FOLDERS:
            return parts[index]
    return None


def _owner(script: str) -> str:
    extension = extension_name(script)
    return f"extension '{extension}' ({script})" if extension else f"script {script}"


def report_exception(callback: ScriptCallback, kind: str) -> None:
    """Log the exception being handled, with the traceback, the owner of the callback and its kind."""
    log.exception("Error running %s callback %s of %s", kind, getattr(callback.callback, "__qualname__", "?"),
                  _owner(callback.script))


def add_callback(callbacks: list[ScriptCallback], fun: Callable, *, name: str | None = None,
                 category: str = "unknown", filename: str | None = None) -> None:
    script = filename if filename is not None else _calling_script()
    base_name = f"{(extension_name(script) or 'base').lower()}/{os.path.basename(script)}/{category}"
    if name is not None:
        base_name += f"/{name}"
    with _registry_lock:
        taken = {c.name for c in callbacks}
        unique_name = base_name
        suffix = 1
        while unique_name in taken:
            unique_name = f"{base_name}-{suffix}"
            suffix += 1
        callbacks.append(ScriptCallback(script, fun, unique_name))


def ordered_callbacks(category: str) -> list[ScriptCallback]:
    """A copy of the callbacks of one kind ('cfg_denoiser'...), in registration order, safe to iterate while
    another thread registers or removes callbacks."""
    with _registry_lock:
        return list(callback_map["callbacks_" + category])


def enumerate_callbacks() -> Iterator[tuple[str, list[ScriptCallback]]]:
    """(kind, callbacks) for every kind."""
    for category in [key.removeprefix("callbacks_") for key in callback_map]:
        yield category, ordered_callbacks(category)


def _remove_where(matches: Callable[[ScriptCallback], bool]) -> None:
    with _registry_lock:
        for callbacks in callback_map.values():
            callbacks[:] = [c for c in callbacks if not matches(c)]


def clear_callbacks() -> None:
    with _registry_lock:
        for callbacks in callback_map.values():
            callbacks.clear()


def remove_current_script_callbacks() -> None:
    """Remove every callback registered by the calling script (a script being reloaded calls this first)."""
    script = _calling_script()
    if script != "unknown file":
        _remove_where(lambda c: c.script == script)


def remove_callbacks_for_function(callback_func: Callable) -> None:
    _remove_where(lambda c: c.callback == callback_func)


def _run(category: str, kind: str, call: Callable[[Callable], Any], *, reverse: bool = False) -> None:
    """call(callback function) for each callback of the category; one that raises is reported, the others run."""
    callbacks = ordered_callbacks(category)
    for callback in reversed(callbacks) if reverse else callbacks:
        try:
            call(callback.callback)
        except Exception:
            report_exception(callback, kind)


def app_started_callback(demo: Blocks | None, app: FastAPI) -> None:
    _run("app_started", "app_started", lambda f: f(demo, app))


def app_reload_callback() -> None:
    _run("on_reload", "before_reload", lambda f: f())


def model_loaded_callback(sd_model) -> None:
    _run("model_loaded", "model_loaded", lambda f: f(sd_model))


def ui_tabs_callback() -> list:
    """The (blocks, title, elem_id) tabs of every on_ui_tabs callback that worked."""
    tabs = []
    _run("ui_tabs", "ui_tabs", lambda f: tabs.extend(f() or []))
    return tabs


def ui_train_tabs_callback(params: UiTrainTabParams) -> None:
    _run("ui_train_tabs", "ui_train_tabs", lambda f: f(params))


def ui_settings_callback() -> None:
    _run("ui_settings", "ui_settings", lambda f: f())


def before_image_saved_callback(params: ImageSaveParams) -> None:
    _run("before_image_saved", "before_image_saved", lambda f: f(params))


def image_saved_callback(params: ImageSaveParams) -> None:
    _run("image_saved", "image_saved", lambda f: f(params))


def extra_noise_callback(params: ExtraNoiseParams) -> None:
    _run("extra_noise", "extra_noise", lambda f: f(params))


def cfg_denoiser_callback(params: CFGDenoiserParams) -> None:
    _run("cfg_denoiser", "cfg_denoiser", lambda f: f(params))


def cfg_denoised_callback(params: CFGDenoisedParams) -> None:
    _run("cfg_denoised", "cfg_denoised", lambda f: f(params))


def cfg_after_cfg_callback(params: AfterCFGCallbackParams) -> None:
    _run("cfg_after_cfg", "cfg_after_cfg", lambda f: f(params))


def before_component_callback(component, **kwargs) -> None:
    _run("before_component", "before_component", lambda f: f(component, **kwargs))


def after_component_callback(component, **kwargs) -> None:
    _run("after_component", "after_component", lambda f: f(component, **kwargs))


def image_grid_callback(params: ImageGridLoopParams) -> None:
    _run("image_grid", "image_grid", lambda f: f(params))


def infotext_pasted_callback(infotext: str, params: dict[str, Any]) -> None:
    _run("infotext_pasted", "infotext_pasted", lambda f: f(infotext, params))


def script_unloaded_callback() -> None:
    """Newest first, so that hooks are undone in the reverse order they were installed."""
    _run("script_unloaded", "script_unloaded", lambda f: f(), reverse=True)


def before_ui_callback() -> None:
    """Newest first, as in A1111."""
    _run("before_ui", "before_ui", lambda f: f(), reverse=True)


def list_optimizers_callback() -> list:
    """Each callback appends its cross-attention optimizations to the list."""
    optimizers = []
    _run("list_optimizers", "list_optimizers", lambda f: f(optimizers))
    return optimizers


def list_unets_callback() -> list:
    """Each callback appends its alternative UNet options to the list."""
    unets = []
    _run("list_unets", "list_unets", lambda f: f(unets))
    return unets


def before_token_counter_callback(params: BeforeTokenCounterParams) -> None:
    _run("before_token_counter", "before_token_counter", lambda f: f(params))


def on_app_started(callback: Callable, *, name: str | None = None) -> None:
    """callback(demo: gr.Blocks | None, app: FastAPI) once the server is up; extensions add their routes here."""
    add_callback(callback_map["callbacks_app_started"], callback, name=name, category="app_started")


def on_before_reload(callback: Callable, *, name: str | None = None) -> None:
    """callback() just before the server reloads."""
    add_callback(callback_map["callbacks_on_reload"], callback, name=name, category="on_reload")


def on_model_loaded(callback: Callable, *, name: str | None = None) -> None:
    """callback(sd_model) after a checkpoint is loaded."""
    add_callback(callback_map["callbacks_model_loaded"], callback, name=name, category="model_loaded")


def on_ui_tabs(callback: Callable, *, name: str | None = None) -> None:
    """callback() -> None or a list of (blocks, title, elem_id), one per tab to add to the page."""
    add_callback(callback_map["callbacks_ui_tabs"], callback, name=name, category="ui_tabs")


def on_ui_train_tabs(callback: Callable, *, name: str | None = None) -> None:
    """callback(UiTrainTabParams) while the Train tab is built; create tabs with gr.Tab."""
    add_callback(callback_map["callbacks_ui_train_tabs"], callback, name=name, category="ui_train_tabs")


def on_ui_settings(callback: Callable, *, name: str | None = None) -> None:
    """callback() before the settings are listed; add settings with shared.opts.add_option."""
    add_callback(callback_map["callbacks_ui_settings"], callback, name=name, category="ui_settings")


def on_before_image_saved(callback: Callable, *, name: str | None = None) -> None:
    """callback(ImageSaveParams) before a picture is written; changing the params changes what is written."""
    add_callback(callback_map["callbacks_before_image_saved"], callback, name=name, category="before_image_saved")


def on_image_saved(callback: Callable, *, name: str | None = None) -> None:
    """callback(ImageSaveParams) after a picture is written."""
    add_callback(callback_map["callbacks_image_saved"], callback, name=name, category="image_saved")


def on_extra_noise(callback: Callable, *, name: str | None = None) -> None:
    """callback(ExtraNoiseParams) before noise is added to an img2img or hires latent."""
    add_callback(callback_map["callbacks_extra_noise"], callback, name=name, category="extra_noise")


def on_cfg_denoiser(callback: Callable, *, name: str | None = None) -> None:
    """callback(CFGDenoiserParams) each step, before the model runs; the params may be changed."""
    add_callback(callback_map["callbacks_cfg_denoiser"], callback, name=name, category="cfg_denoiser")


def on_cfg_denoised(callback: Callable, *, name: str | None = None) -> None:
    """callback(CFGDenoisedParams) each step, after the model ran and before CFG combines its outputs."""
    add_callback(callback_map["callbacks_cfg_denoised"], callback, name=name, category="cfg_denoised")


def on_cfg_after_cfg(callback: Callable, *, name: str | None = None) -> None:
    """callback(AfterCFGCallbackParams) each step, after CFG combined the outputs."""
    add_callback(callback_map["callbacks_cfg_after_cfg"], callback, name=name, category="cfg_after_cfg")


def on_before_component(callback: Callable, *, name: str | None = None) -> None:
    """callback(component, **kwargs) before a component of the page is created; kwargs hold its elem_id, label..."""
    add_callback(callback_map["callbacks_before_component"], callback, name=name, category="before_component")


def on_after_component(callback: Callable, *, name: str | None = None) -> None:
    """callback(component, **kwargs) after a component of the page is created."""
    add_callback(callback_map["callbacks_after_component"], callback, name=name, category="after_component")


def on_image_grid(callback: Callable, *, name: str | None = None) -> None:
    """callback(ImageGridLoopParams) before a grid is drawn; the params may be changed."""
    add_callback(callback_map["callbacks_image_grid"], callback, name=name, category="image_grid")


def on_infotext_pasted(callback: Callable, *, name: str | None = None) -> None:
    """callback(infotext: str, params: dict) after an infotext is parsed, before it is applied; may change params."""
    add_callback(callback_map["callbacks_infotext_pasted"], callback, name=name, category="infotext_pasted")


def on_script_unloaded(callback: Callable, *, name: str | None = None) -> None:
    """callback() before scripts are unloaded: undo any hook the script installed."""
    add_callback(callback_map["callbacks_script_unloaded"], callback, name=name, category="script_unloaded")


def on_before_ui(callback: Callable, *, name: str | None = None) -> None:
    """callback() before the page is built."""
    add_callback(callback_map["callbacks_before_ui"], callback, name=name, category="before_ui")


def on_list_optimizers(callback: Callable, *, name: str | None = None) -> None:
    """callback(list) appends cross-attention optimizations to the list."""
    add_callback(callback_map["callbacks_list_optimizers"], callback, name=name, category="list_optimizers")


def on_list_unets(callback: Callable, *, name: str | None = None) -> None:
    """callback(list) appends alternative UNet options to the list."""
    add_callback(callback_map["callbacks_list_unets"], callback, name=name, category="list_unets")


def on_before_token_counter(callback: Callable, *, name: str | None = None) -> None:
    """callback(BeforeTokenCounterParams) before the page counts a prompt's tokens; may change the params."""
    add_callback(callback_map["callbacks_before_token_counter"], callback, name=name,
                 category="before_token_counter")
