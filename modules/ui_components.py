"""A1111's `modules.ui_components`: the Gradio components its scripts and extensions build their UI from.

Each is a Gradio 6 component or layout drawn by Gradio's own front end (`get_block_name`), usable in a
`gr.Blocks()` as extensions use them: `with FormRow(): ToolButton("🔄")`, `with InputAccordion(False,
label="My extension") as enabled: ...` where `enabled` is an input of events.
"""
from __future__ import annotations

import functools
import itertools

import gradio as gr

from modules.gradio_compat import no_stub_files


def _with_class(elem_classes: list[str] | str | None, name: str) -> list[str]:
    classes = [elem_classes] if isinstance(elem_classes, str) else list(elem_classes or [])
    return classes if name in classes else [*classes, name]


class FormComponent:
    """A1111's mark of the components below (for isinstance checks). A class that lists it before its Gradio base
    goes into a Gradio form, the box Gradio draws around consecutive inputs."""

    def get_expected_parent(self):
        return gr.components.Form


with no_stub_files():
    class ToolButton(gr.Button, FormComponent):
        """A small button for one symbol or emoji, e.g. 🔄 beside a dropdown; it does not stretch in a row."""

        @functools.wraps(gr.Button.__init__)
        def __init__(self, value="", *, elem_classes=None, **kwargs):
            kwargs.setdefault("scale", 0)
            kwargs.setdefault("min_width", 40)
            super().__init__(value=value, elem_classes=_with_class(elem_classes, "tool"), **kwargs)

        def get_block_name(self) -> str:
            return "button"

    class ResizeHandleRow(gr.Row):
        """A row whose columns A1111 lets the user resize (class `resize-handle-row`)."""

        @functools.wraps(gr.Row.__init__)
        def __init__(self, **kwargs):
            super().__init__(**{**kwargs, "elem_classes": _with_class(kwargs.get("elem_classes"), "resize-handle-row")})

        def get_block_name(self) -> str:
            return "row"

    class FormRow(gr.Row, FormComponent):
        """A gr.Row for form components."""

        def get_block_name(self) -> str:
            return "row"

    class FormColumn(gr.Column, FormComponent):
        """A gr.Column for form components."""

        def get_block_name(self) -> str:
            return "column"

    class FormGroup(gr.Group, FormComponent):
        """A gr.Group for form components."""

        def get_block_name(self) -> str:
            return "group"

    class FormHTML(gr.HTML, FormComponent):
        """A gr.HTML among form components."""

        def get_block_name(self) -> str:
            return "html"

    class FormColorPicker(gr.ColorPicker, FormComponent):
        """A gr.ColorPicker among form components."""

        def get_block_name(self) -> str:
            return "colorpicker"

    class DropdownMulti(gr.Dropdown, FormComponent):
        """A gr.Dropdown where several choices can be picked (its value is a list)."""

        @functools.wraps(gr.Dropdown.__init__)
        def __init__(self, **kwargs):
            super().__init__(**{**kwargs, "multiselect": True})

        def get_block_name(self) -> str:
            return "dropdown"

    class DropdownEditable(gr.Dropdown, FormComponent):
        """A gr.Dropdown whose value can also be typed in, not only picked from its choices."""

        @functools.wraps(gr.Dropdown.__init__)
        def __init__(self, **kwargs):
            super().__init__(**{**kwargs, "allow_custom_value": True})

        def get_block_name(self) -> str:
            return "dropdown"

    class InputAccordionImpl(gr.Checkbox):
        """What `InputAccordion(...)` returns: a hidden checkbox that is True while its accordion is open, so it
        can be an input of events; opening the accordion checks it, and setting its value (an event's output)
        opens or closes the accordion. `with` it to fill the accordion; `.accordion` is the gr.Accordion.

        A1111 draws a checkbox in the accordion's header that can enable it without opening it; here the open
        state is the value, and what `extra()` holds stands at the top of the accordion's content."""

        accordion: gr.Accordion
        accordion_id: str

        def extra(self) -> gr.Column:
            """A column for a few small components that belong with the accordion's label: `with acc.extra(): ...`
            inside the `with acc:` block."""
            return gr.Column(elem_id=f"{self.accordion_id}-extra", elem_classes="input-accordion-extra", min_width=0)

        def __enter__(self):
            self.accordion.__enter__()
            return self

        def __exit__(self, *exc_info):
            self.accordion.__exit__(*exc_info)

        def get_block_name(self) -> str:
            return "checkbox"


_accordion_numbers = itertools.count()


def InputAccordion(value=None, **kwargs) -> InputAccordionImpl:  # noqa: N802 - A1111's name
    """An accordion that is also a checkbox input: `with InputAccordion(False, label="...") as acc:`, `acc` True
    while the accordion is open. `kwargs` are the checkbox's (label, elem_id, ...); those the accordion also
    shows (label, visible) go to it as well. `elem_id` names the accordion, `{elem_id}-checkbox` the checkbox."""
    accordion_id = kwargs.get("elem_id") or f"input-accordion-{next(_accordion_numbers)}"
    checkbox = InputAccordionImpl(value=value, **{**kwargs, "elem_id": f"{accordion_id}-checkbox", "visible": False})
    accordion = gr.Accordion(kwargs.get("label", "Accordion"), open=bool(value), visible=kwargs.get("visible", True),
                             elem_id=accordion_id, elem_classes=["input-accordion"])
    checkbox.accordion, checkbox.accordion_id = accordion, accordion_id
    # Both directions run in the browser: no round trip to the server, no answers overtaking each other.
    accordion.expand(None, js="() => true", outputs=checkbox, show_progress="hidden")
    accordion.collapse(None, js="() => false", outputs=checkbox, show_progress="hidden")
    checkbox.change(None, inputs=checkbox, outputs=accordion, show_progress="hidden",
                    js="(checked) => ({__type__: 'update', open: checked})")
    return checkbox
