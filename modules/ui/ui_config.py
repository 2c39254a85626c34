"""ui-config.json: default values, ranges and visibility of the page's controls, editable by the user.

A1111's file and keys ("txt2img/Sampling steps/value", "img2img/Width/maximum", ...): every labelled
control of the txt2img, img2img and Extras tabs is written there with its built-in defaults the first
time; what the user changed in the file is applied when the page is built. A value that does not fit
the control (wrong type, not one of the choices, outside the slider) is reported and ignored.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import gradio as gr

from modules import user_files

log = logging.getLogger(__name__)

TABS = {"tab_txt2img": "txt2img", "tab_img2img": "img2img", "tab_extras": "extras"}
CONTROLS = (gr.Textbox, gr.Slider, gr.Number, gr.Checkbox, gr.Dropdown, gr.Radio, gr.CheckboxGroup)


def _tab_of(block) -> str | None:
    while block is not None:
        name = TABS.get(getattr(block, "elem_id", None) or "")
        if name:
            return name
        block = getattr(block, "parent", None)
    return None


# Width and height follow the checkpoint's native size; they are pinned only if the user adds these keys.
NOT_WRITTEN = {"txt2img/Width/value", "txt2img/Height/value", "img2img/Width/value", "img2img/Height/value"}


def _settable(component) -> list[str]:
    """Ranges before the value, so a file may raise a maximum and set a value above the old one."""
    attrs = ["minimum", "maximum", "step"] if isinstance(component, gr.Slider) else []
    return attrs + ["value", "visible"]


def _problem(component, attr: str, value) -> str | None:
    """Why `value` cannot be set on the control, or None."""
    current = getattr(component, attr)
    if attr == "visible":
        return None if isinstance(value, bool) else "expected true or false"
    if isinstance(component, gr.Slider | gr.Number):
        if isinstance(value, bool) or not isinstance(value, int | float):
            return "expected a number"
        if attr == "value" and isinstance(component, gr.Slider) and not (
                component.minimum <= value <= component.maximum):
            return f"outside {component.minimum}..{component.maximum}"
        return None
    if isinstance(component, gr.Checkbox):
        return None if isinstance(value, bool) else "expected true or false"
    if isinstance(component, gr.Dropdown | gr.Radio | gr.CheckboxGroup):
        choices = [c[1] if isinstance(c, tuple) else c for c in component.choices or []]
        wanted = value if isinstance(value, list) else [value]
        if getattr(component, "multiselect", False) or isinstance(component, gr.CheckboxGroup):
            if not isinstance(value, list):
                return "expected a list"
        unknown = [v for v in wanted if v not in choices]
        return f"not one of {choices}" if unknown and not getattr(component, "allow_custom_value", False) else None
    if isinstance(current, str) or current is None:
        return None if isinstance(value, str) else "expected text"
    return None


def _read(path: Path) -> tuple[dict, list[str], bool]:
    """(stored values, problems, whether the file may be written). A file that is not a JSON object is kept
    as `ui-config.json.bad-<date>` and a fresh one written; one that cannot be opened is left alone."""
    user_files.remove_leftover_temp_files(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return {}, [], True
    except OSError as e:
        return {}, [f"{path}: cannot read it ({e}); using the built-in defaults and leaving the file as it is"], False
    try:
        stored = json.loads(raw.decode("utf-8-sig"))
        if not isinstance(stored, dict):
            raise ValueError(f"expected a JSON object, found {type(stored).__name__}")
    except ValueError as e:  # UnicodeDecodeError included
        kept = user_files.quarantine(path, str(e))
        if kept is None:
            return {}, [f"{path}: cannot read it ({e}); using the built-in defaults"], False
        return {}, [f"{path}: cannot read it ({e}); kept it as {kept.name} and wrote the built-in defaults"], True
    return stored, [], True


def apply_ui_config(blocks: gr.Blocks, path: Path) -> list[str]:
    """Apply the file's values to the controls built so far (call inside the Blocks context) and add the
    missing keys to the file. Returns the problems found."""
    stored, problems, writable = _read(path)
    seen: set[str] = set()
    added = False
    for component in list(blocks.blocks.values()):
        if not isinstance(component, CONTROLS) or not component.label:
            continue
        tab = _tab_of(component)
        if tab is None:
            continue
        prefix = f"{tab}/{component.label}"
        if prefix in seen:  # two controls with one label: the first one owns the keys
            continue
        seen.add(prefix)
        for attr in _settable(component):
            key = f"{prefix}/{attr}"
            if key not in stored:
                if key in NOT_WRITTEN:
                    continue
                stored[key] = getattr(component, attr)
                added = True
                continue
            value = stored[key]
            if value == getattr(component, attr):
                continue
            problem = _problem(component, attr, value)
            if problem:
                problems.append(f"{path.name}: {key} = {value!r}: {problem}; keeping {getattr(component, attr)!r}")
            else:
                setattr(component, attr, value)
    if added and writable:
        try:
            user_files.write_atomically(path, json.dumps(stored, indent=4, ensure_ascii=False))
        except OSError as e:
            problems.append(f"{path}: cannot write it ({e})")
    for p in problems:
        log.warning("%s", p)
    return problems
