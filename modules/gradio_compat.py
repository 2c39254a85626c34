"""What extensions written for Gradio 3.x (A1111's Gradio) call and Gradio 6 removed, put back for them.

`install()` (idempotent; call it before extensions are loaded) only adds names Gradio 6 lacks and accepts
keywords it removed: a call that is valid in Gradio 6 behaves as Gradio documents it. What it shims:

- `gr.Box`: Gradio 3's bordered container, drawn as a `gr.Group`.
- `gr.components.IOComponent`: another name for `gr.components.Component` (for isinstance checks).
- `Component.update(...)` on every component and layout class (`gr.Dropdown.update(choices=[...])`,
  `gr.Tabs.update(selected=...)`), as a class or an instance method: it returns `gr.update(...)`, which
  event handlers return in Gradio 6. (`gr.Row.update` is Gradio 6's own.)
- `tooltip=` on every component (A1111's own keyword): kept as `component.webui_tooltip`.
- `Component.style(...)`: returns the component. `grid=` sets a Gallery's `columns`; a keyword that is a
  constructor argument of the component (`height`, `container`, `size`, `equal_height`, `object_fit`,
  `preview`, `columns`, `rows`...) sets it; the rest (`full_width`, `rounded`, `border`, `margin`,
  `mobile_collapse`...) has no effect.
- Constructor keywords removed since 3.x: `source=` of Image, Audio and Video becomes `sources=[source]`
  (3.x's `source="canvas"` is dropped); File's and UploadButton's `type="file"` becomes "filepath" (the
  handler gets the path as a string, not a file object) and `type="bytes"` "binary"; dropped: Image's `tool`,
  `shape`, `invert_colors`, `brush_radius`, `brush_color`, `mask_opacity`, `mirror_webcam`; `show_download_button`,
  `show_share_button`, `show_edit_button`, `show_copy_button` (Gradio 6 has `buttons=`); Dataframe's
  `max_rows`, `max_cols`, `overflow_row_behaviour`, `container`, `height`; Chatbot's `bubble_full_width`.
- Event listeners (`.click`, `.change`, `.then`, `Blocks.load`...): `_js=` becomes `js=`, `show_api=False`
  becomes `api_visibility="private"`; `every=` (periodic runs: Gradio 6 has `gr.Timer`) and `status_tracker=`
  are dropped.

Each keyword translated or dropped is logged once for each class or listener that received it. Not shimmed:
what 3.x components did that Gradio 6 ones do not, e.g. `gr.Image(tool="sketch")` returning
{"image", "mask"}; an extension that needs it has to use `gr.ImageEditor`.
"""
from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import reprlib
from collections.abc import Callable, Iterator
from typing import Any

import gradio as gr
from gradio import component_meta
from gradio.blocks import Block
from gradio.events import EventListener

log = logging.getLogger(__name__)

Translation = Callable[[Any], dict[str, Any]]  # a 3.x keyword's value -> the Gradio 6 keywords that stand for it


def _dropped(_value) -> dict[str, Any]:
    return {}


def _as_sources(source) -> dict[str, Any]:
    """3.x's one `source` as Gradio 6's list; "canvas" (a blank drawing) has no Gradio 6 source."""
    return {"sources": [source]} if source in ("upload", "webcam", "microphone", "clipboard") else {}


def _renaming_values(keyword: str, new_names: dict[Any, Any]) -> Translation:
    return lambda value: {keyword: new_names.get(value, value)}


_SHARE_AND_DOWNLOAD = {"show_download_button": _dropped, "show_share_button": _dropped}

# By class: its 3.x constructor keywords that Gradio 6 refuses.
_CONSTRUCTOR_KEYWORDS: dict[type, dict[str, Translation]] = {
    gr.Image: {"source": _as_sources, **_SHARE_AND_DOWNLOAD, **dict.fromkeys(
        ("tool", "shape", "invert_colors", "brush_radius", "brush_color", "mask_opacity", "mirror_webcam"), _dropped)},
    gr.Audio: {"source": _as_sources, "show_edit_button": _dropped, **_SHARE_AND_DOWNLOAD},
    gr.Video: {"source": _as_sources, "mirror_webcam": _dropped, **_SHARE_AND_DOWNLOAD},
    gr.Gallery: _SHARE_AND_DOWNLOAD,
    gr.Textbox: {"show_copy_button": _dropped},
    gr.Chatbot: {"show_copy_button": _dropped, "bubble_full_width": _dropped, **_SHARE_AND_DOWNLOAD},
    gr.Dataframe: dict.fromkeys(("max_rows", "max_cols", "overflow_row_behaviour", "container", "height"), _dropped),
}
_FILE_TYPES = {"file": "filepath", "bytes": "binary"}
# By class: 3.x values of a keyword Gradio 6 still has, and what stands for them now.
_CONSTRUCTOR_VALUES: dict[type, dict[str, dict[Any, Any]]] = {gr.File: {"type": _FILE_TYPES},
                                                             gr.UploadButton: {"type": _FILE_TYPES}}

_LISTENER_KEYWORDS: dict[str, Translation] = {
    "_js": lambda js: {"js": js},
    "show_api": lambda shown: {} if shown else {"api_visibility": "private"},
    "every": _dropped,
    "status_tracker": _dropped,
}

_reported: set[tuple[str, str]] = set()
_installed = False


def _report_once(where: str, keyword: str, what: str) -> None:
    if (where, keyword) not in _reported:
        _reported.add((where, keyword))
        log.info("Gradio 3.x keyword %s(%s=...) %s", where, keyword, what)


def _translate(where: str, translations: dict[str, Translation], kwargs: dict[str, Any]) -> None:
    """Replace in `kwargs` the 3.x keywords of `translations` by what stands for them in Gradio 6; keywords given in
    Gradio 6's spelling win."""
    for keyword in translations.keys() & kwargs.keys():
        value = kwargs.pop(keyword)
        replacement = translations[keyword](value)
        if replacement == {keyword: value}:  # a value Gradio 6 takes as it is
            kwargs[keyword] = value
            continue
        for new_keyword, new_value in replacement.items():
            kwargs.setdefault(new_keyword, new_value)
        _report_once(where, keyword,
                     f"passed as {reprlib.repr(replacement)}" if replacement else "has no effect in Gradio 6")


@contextlib.contextmanager
def no_stub_files() -> Iterator[None]:
    """Gradio writes a .pyi stub file beside the source of each component class defined; not for the classes
    defined in this block (ours, whose folders are not Gradio's to write into)."""
    write_stub = component_meta.create_or_modify_pyi
    component_meta.create_or_modify_pyi = lambda *_args: None
    try:
        yield
    finally:
        component_meta.create_or_modify_pyi = write_stub


with no_stub_files():
    class Box(gr.Group):
        """Gradio 3.x's `gr.Box`: a container drawn as Gradio 6's Group."""

        def get_block_name(self) -> str:
            return "group"


_UNSET = object()


def _update(value=_UNSET, **props) -> dict[str, Any]:
    """Gradio 3.x's `Component.update(value, **props)`."""
    if value is not _UNSET:
        props["value"] = value
    return gr.update(**props)


def _style(self: Block, **styles) -> Block:
    """Gradio 3.x's `Component.style(...)`: sets what Gradio 6 has as constructor arguments, returns the block."""
    parameters = inspect.signature(type(self).__init__).parameters
    for keyword, value in styles.items():
        name = "columns" if keyword == "grid" else keyword
        if keyword == "grid" and isinstance(value, (list, tuple)):
            value = value[-1]  # 3.x: columns per screen width, widest last
        if name in parameters and hasattr(self, name):
            setattr(self, name, value)
            self.constructor_args[name] = value  # an update rebuilds the component from these
        else:
            _report_once(f"{type(self).__name__}.style", keyword, "has no effect in Gradio 6")
    return self


def _all_subclasses(cls: type) -> Iterator[type]:
    for subclass in cls.__subclasses__():
        yield subclass
        yield from _all_subclasses(subclass)


def _accepting_constructor_keywords(cls: type, translations: dict[str, Translation]) -> Callable:
    init = cls.__dict__["__init__"]
    accepted = inspect.signature(init).parameters

    @functools.wraps(init)
    def init_accepting_gradio3_keywords(self, *args, **kwargs):
        tooltip = kwargs.pop("tooltip", None) if "tooltip" not in accepted else None
        _translate(cls.__name__, translations, kwargs)
        init(self, *args, **kwargs)
        if tooltip is not None:  # A1111's own keyword for every component (its page shows it as a title)
            self.webui_tooltip = tooltip

    init_accepting_gradio3_keywords.accepts_gradio3_keywords = True
    return init_accepting_gradio3_keywords


def _accepting_listener_keywords(listener: Callable, event: str) -> Callable:
    if getattr(listener, "accepts_gradio3_keywords", False):
        return listener

    @functools.wraps(listener)
    def listener_accepting_gradio3_keywords(block, *args, **kwargs):
        _translate(f"{type(block).__name__}.{event}", _LISTENER_KEYWORDS, kwargs)
        return listener(block, *args, **kwargs)

    listener_accepting_gradio3_keywords.accepts_gradio3_keywords = True
    return listener_accepting_gradio3_keywords


def _patch_constructors() -> None:
    """Each Gradio class that has its own __init__ accepts the 3.x keywords of the classes it derives from (those
    it does not take itself)."""
    for cls in _all_subclasses(Block):
        init = cls.__dict__.get("__init__")
        if init is None or not cls.__module__.startswith("gradio.") or getattr(init, "accepts_gradio3_keywords", False):
            continue
        accepted = inspect.signature(init).parameters
        translations = {keyword: translate for base, keywords in _CONSTRUCTOR_KEYWORDS.items() if issubclass(cls, base)
                        for keyword, translate in keywords.items() if keyword not in accepted}
        for base, keywords in _CONSTRUCTOR_VALUES.items():
            if issubclass(cls, base):
                translations.update({keyword: _renaming_values(keyword, names) for keyword, names in keywords.items()})
        if translations or (issubclass(cls, gr.components.Component) and "tooltip" not in accepted):
            cls.__init__ = _accepting_constructor_keywords(cls, translations)


def _patch_listeners() -> None:
    """Event listeners of the classes defined so far, and of those defined later (and `.then`/`.success`, which
    Gradio makes for each event), accept the 3.x listener keywords."""
    for cls in (Block, *_all_subclasses(Block)):
        for name, attribute in list(vars(cls).items()):
            if inspect.isfunction(attribute) and attribute.__name__ == "event_trigger":
                setattr(cls, name, _accepting_listener_keywords(attribute, name))
    make_listener = EventListener._setup
    EventListener._setup = staticmethod(  # its first argument is the event's name
        lambda *args, **kwargs: _accepting_listener_keywords(make_listener(*args, **kwargs), str(args[0])))


def install() -> None:
    """Put the Gradio 3.x names and keywords listed in this module's docstring back; a second call does nothing."""
    global _installed
    if _installed:
        return
    _installed = True
    if not hasattr(gr, "Box"):
        gr.Box = Box
    if not hasattr(gr.components, "IOComponent"):
        gr.components.IOComponent = gr.components.Component
    if "update" not in vars(Block):
        Block.update = staticmethod(_update)
    if "style" not in vars(Block):
        Block.style = _style
    _patch_constructors()
    _patch_listeners()
