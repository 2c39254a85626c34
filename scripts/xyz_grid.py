"""X/Y/Z plot, A1111's built-in script: one picture per combination of up to three axes of values (steps, CFG scale,
sampler, checkpoint, a prompt search and replace...), laid out in a grid with each column and row labelled.

A1111's interface, kept as its clients and extensions use it: the title "X/Y/Z plot"; the `ui()` controls in A1111's
order (the API's `script_args` are positional); the axis types as indices into A1111's axis list, with an entry that
says it is not available here where we lack one of A1111's axes, so that every index means the same axis as in
A1111; and the module's names (`AxisOption`, `axis_options`, `apply_field`...) for extensions that find this module
in `modules.scripts.scripts_data` by its file name and append axes of their own to `axis_options`.
"""
# ruff: noqa: ARG001 - the axes' functions keep A1111's signatures (p, x, xs) / (p, opt, x), used or not
from __future__ import annotations

import csv
import logging
import math
import os.path
import random
import re
from collections import namedtuple
from copy import copy
from dataclasses import fields
from io import StringIO
from itertools import chain, permutations, product

import gradio as gr
import numpy as np
from PIL import Image

from modules import errors, images, processing, scripts, sd_models, sd_samplers, sd_schedulers, shared
from modules.generation import GenerationError, saving
from modules.generation.requests import LATENT_UPSCALE_MODES, MAX_CLIP_SKIP, MAX_SEED, MAX_STEPS
from modules.options import RANDN_SOURCES
from modules.processing import Processed, StableDiffusionProcessingTxt2Img, process_images
from modules.shared import opts, state
from modules.ui_components import ToolButton

log = logging.getLogger(__name__)

fill_values_symbol = "\U0001f4d2"  # 📒
AxisInfo = namedtuple("AxisInfo", ["axis", "values"])  # what `shared.state.xyz_plot_x` etc. hold during a plot
MAX_GRID_MEGAPIXELS = 200  # A1111's default img_max_size_mp
MAX_AXIS_VALUES = 1000  # a range like "1-10000000000" is refused before its values are made


class XYZPlotError(GenerationError, RuntimeError):
    """A plot that cannot be made (an unknown sampler, a bad range...): said before anything is generated. A
    RuntimeError as A1111's, a GenerationError so that the page and the API report it as the user's mistake."""


# ---- what an axis does to `p` (A1111's signature: apply(p, value, all values of the axis))

def apply_field(field):
    def set_attribute(p, x, xs):
        setattr(p, field, x)
    return set_attribute


def apply_override(field, boolean: bool = False):
    """Set the setting `field` for this picture only (`p.override_settings`); `boolean`: the value is "True" or
    "False"."""
    def set_setting(p, x, xs):
        p.override_settings[field] = x.lower() == "true" if boolean else x
    return set_setting


def apply_prompt(p, x, xs):
    """Prompt S/R: replace the axis's first value, which must be in the prompt or the negative prompt, by `x`."""
    confirm_prompt_sr(p, xs)
    p.prompt = p.prompt.replace(xs[0], x)
    p.negative_prompt = p.negative_prompt.replace(xs[0], x)


def apply_order(p, x, xs):
    """Prompt order: the tokens of `x` (one permutation) put into the places the tokens held in the prompt."""
    rest, pieces = p.prompt, []
    for token in sorted(x, key=p.prompt.find):
        at = rest.find(token)
        pieces.append(rest[:at])
        rest = rest[at + len(token):]
    p.prompt = "".join(piece + token for piece, token in zip(pieces, x)) + rest


def apply_checkpoint(p, x, xs):
    info = sd_models.get_closet_checkpoint_match(x)
    if info is None:
        raise XYZPlotError(f"Unknown checkpoint: {x}")
    p.override_settings["sd_model_checkpoint"] = info.title


def apply_clip_skip(p, x, xs):
    """Our request's own clip skip wins over the setting, so both are set."""
    p.clip_skip = x
    p.override_settings["CLIP_stop_at_last_layers"] = x


def apply_size(p, x: str, xs) -> None:
    p.width, p.height = _size(x)


def apply_vae(p, x, xs):
    p.override_settings["sd_vae"] = find_vae(x)


def apply_styles(p, x: str, xs):
    p.styles.extend(name.strip() for name in x.split(","))


def apply_face_restore(p, opt, x):
    """"CodeFormer" or "GFPGAN" restore with that model; "true"/"yes"/"1" with the model of the settings."""
    opt = opt.lower()
    models = {"codeformer": "CodeFormer", "gfpgan": "GFPGAN"}
    if opt in models:
        p.face_restoration_model = models[opt]
        p.override_settings["face_restoration_model"] = models[opt]
    p.restore_faces = opt in models or opt in ("true", "yes", "y", "1")


def do_nothing(p, x, xs):
    """The "Nothing" axis."""


def _size(text: str) -> tuple[int, int]:
    width, _, height = str(text).lower().partition("x")
    try:
        return int(width.strip()), int(height.strip())
    except ValueError:
        raise XYZPlotError(f"Size: {text!r} is not a size; give width x height, e.g. 512x768") from None


def find_vae(name: str) -> str | None:
    """The VAE choice `name` means (Automatic, None or a file's name, any case); None when there is no such VAE."""
    wanted = name.strip().lower()
    if wanted in ("auto", "automatic"):
        return "Automatic"
    choices = shared.services().models.vae_choices()
    return next((c for c in choices if wanted in (c.lower(), os.path.basename(c).lower())), None)


# ---- checks of an axis's values before anything is generated (A1111's confirm(p, values))

def confirm_samplers(p, xs):
    for x in xs:
        if x.lower() not in sd_samplers.samplers_map:
            valid = ", ".join(s.name for s in sd_samplers.all_samplers)
            raise XYZPlotError(f"Unknown sampler: {x}; valid: {valid}")


def confirm_checkpoints(p, xs):
    for x in xs:
        if sd_models.get_closet_checkpoint_match(x) is None:
            raise XYZPlotError(f"Unknown checkpoint: {x}")


def confirm_checkpoints_or_none(p, xs):
    confirm_checkpoints(p, [x for x in xs if x not in (None, "", "None", "none")])


def confirm_range(min_val, max_val, axis_label):
    def confirm_in_range(p, xs):
        for x in xs:
            if not min_val <= x <= max_val:
                raise XYZPlotError(f'{axis_label} value "{x}" out of range [{min_val}, {max_val}]')
    return confirm_in_range


def confirm_choices(axis_label, choices):
    """Every value one of `choices()` (any case)."""
    def confirm_known(p, xs):
        known = choices()
        lowered = {c.lower() for c in known}
        for x in xs:
            if str(x).lower() not in lowered:
                raise XYZPlotError(f"Unknown {axis_label}: {x}; valid: {', '.join(known)}")
    return confirm_known


def confirm_prompt_sr(p, xs):
    if xs[0] not in p.prompt and xs[0] not in p.negative_prompt:
        raise XYZPlotError(f"Prompt S/R did not find {xs[0]} in prompt or negative prompt.")


def confirm_order(p, xs):
    for token in chain.from_iterable(xs):
        if token not in p.prompt:
            raise XYZPlotError(f"Prompt order: {token} is not in the prompt")


def confirm_styles(p, xs):
    known = _style_names()
    for x in xs:
        for name in (n.strip() for n in x.split(",")):
            if name not in known:
                raise XYZPlotError(f"Unknown style: {name}; valid: {', '.join(known) or 'none (styles.csv is empty)'}")


def confirm_vaes(p, xs):
    for x in xs:
        if find_vae(x) is None:
            raise XYZPlotError(f"Unknown VAE: {x}; valid: {', '.join(shared.services().models.vae_choices())}")


def confirm_sizes(p, xs):
    for x in xs:
        _size(x)


def confirm_field_of(field, axis_label, then=None):
    """The axis sets a field that only one tab's jobs have (the refiner: txt2img; noise multiplier: img2img); `then`:
    the values' own check."""
    def confirm_has_field(p, xs):
        if field not in {f.name for f in fields(p.request_class)}:
            tab = "img2img" if isinstance(p, StableDiffusionProcessingTxt2Img) else "txt2img"
            raise XYZPlotError(f"{axis_label}: works on the {tab} tab only")
        if then is not None:
            then(p, xs)
    return confirm_has_field


def _style_names() -> list[str]:
    ctx = shared.current_context()
    return ctx.styles.names() if ctx is not None and ctx.styles is not None else []


# ---- legends (A1111's format_value(p, axis option, value))

def format_value_add_label(p, opt, x):
    if type(x) is float:
        x = round(x, 8)
    return f"{opt.label}: {x}"


def format_value(p, opt, x):
    if type(x) is float:
        x = round(x, 8)
    return x


def format_value_join_list(p, opt, x):
    return ", ".join(x)


def format_nothing(p, opt, x):
    return ""


def format_remove_path(p, opt, x):
    return os.path.basename(x)


def str_permutations(x):
    """The type of the Prompt order axis: its values are every ordering of the tokens given."""
    return x


def boolean_choice(reverse: bool = False):
    def choices():
        return ["False", "True"] if reverse else ["True", "False"]
    return choices


def list_to_csv_string(data_list) -> str:
    with StringIO() as out:
        csv.writer(out).writerow(data_list)
        return out.getvalue().strip()


def csv_string_to_list_strip(data_str: str) -> list[str]:
    """Comma-separated values, quotes as CSV's ("a, b" is one value), each stripped; lines join."""
    return [v.strip() for v in chain.from_iterable(csv.reader(StringIO(data_str), skipinitialspace=True))]


# ---- the axes

class AxisOption:
    """One kind of axis: its label, the type of its values, how a value changes `p`, how it is labelled in the
    legend, a check of all values before the plot starts (`confirm`), how costly a change of value is (the costliest
    axis changes least often: a checkpoint switch per row, not per cell), the choices of a dropdown of values, and
    `prepare`, which turns the text typed into the list of values (instead of CSV and ranges)."""

    def __init__(self, label, type, apply, format_value=format_value_add_label, confirm=None, cost=0.0, choices=None,
                 prepare=None):
        self.label = label
        self.type = type
        self.apply = apply
        self.format_value = format_value
        self.confirm = confirm
        self.cost = cost
        self.prepare = prepare
        self.choices = choices


class AxisOptionImg2Img(AxisOption):
    """An axis of the img2img tab only."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.is_img2img = True


class AxisOptionTxt2Img(AxisOption):
    """An axis of the txt2img tab only."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.is_img2img = False


def unavailable(label: str, value_type, why: str, option_class=AxisOption) -> AxisOption:
    """One of A1111's axes that we lack, keeping its place in the list (clients send axes by index): choosing it is
    an error that says why, before anything is generated."""
    def refuse(*_):
        raise XYZPlotError(f"The X/Y/Z plot axis {label!r} is not available here: {why}")
    return option_class(label, value_type, refuse, confirm=refuse, prepare=refuse)


def _sampler_names(for_img2img: bool = False) -> list[str]:
    return [s.name for s in (sd_samplers.samplers_for_img2img if for_img2img else sd_samplers.samplers)]


def _schedule_types() -> list[str]:
    return [s.label for s in sd_schedulers.schedulers]


def _checkpoint_titles() -> list[str]:
    return sorted(sd_models.checkpoints_list, key=str.casefold)


def _hires_upscalers() -> list[str]:
    return [*LATENT_UPSCALE_MODES, *[u.name for u in shared.sd_upscalers]]


def _vae_choices() -> list[str]:
    return shared.services().models.vae_choices()


axis_options = [
    AxisOption("Nothing", str, do_nothing, format_value=format_nothing),
    AxisOption("Seed", int, apply_field("seed")),
    AxisOption("Var. seed", int, apply_field("subseed")),
    AxisOption("Var. strength", float, apply_field("subseed_strength"), confirm=confirm_range(0, 1, "Var. strength")),
    AxisOption("Steps", int, apply_field("steps"), confirm=confirm_range(1, MAX_STEPS, "Steps")),
    AxisOptionTxt2Img("Hires steps", int, apply_field("hr_second_pass_steps"),
                      confirm=confirm_range(0, MAX_STEPS, "Hires steps")),
    AxisOption("CFG Scale", float, apply_field("cfg_scale")),
    unavailable("Image CFG Scale", float, "it is for instruct-pix2pix models, which are not supported",
                AxisOptionImg2Img),
    AxisOption("Prompt S/R", str, apply_prompt, format_value=format_value, confirm=confirm_prompt_sr),
    AxisOption("Prompt order", str_permutations, apply_order, format_value=format_value_join_list,
               confirm=confirm_order),
    AxisOptionTxt2Img("Sampler", str, apply_field("sampler_name"), format_value=format_value, confirm=confirm_samplers,
                      choices=_sampler_names),
    AxisOptionTxt2Img("Hires sampler", str, apply_field("hr_sampler_name"), confirm=confirm_samplers,
                      choices=lambda: _sampler_names(for_img2img=True)),
    AxisOptionImg2Img("Sampler", str, apply_field("sampler_name"), format_value=format_value, confirm=confirm_samplers,
                      choices=lambda: _sampler_names(for_img2img=True)),
    AxisOption("Checkpoint name", str, apply_checkpoint, format_value=format_remove_path, confirm=confirm_checkpoints,
               cost=1.0, choices=_checkpoint_titles),
    unavailable("Negative Guidance minimum sigma", float, "skipping the negative prompt at low sigmas is not "
                                                          "implemented"),
    AxisOption("Sigma Churn", float, apply_field("s_churn"), confirm=confirm_range(0, math.inf, "Sigma Churn")),
    AxisOption("Sigma min", float, apply_field("s_tmin"), confirm=confirm_range(0, math.inf, "Sigma min")),
    AxisOption("Sigma max", float, apply_field("s_tmax"), confirm=confirm_range(0, math.inf, "Sigma max")),
    AxisOption("Sigma noise", float, apply_field("s_noise"), confirm=confirm_range(0, math.inf, "Sigma noise")),
    AxisOption("Schedule type", str, apply_field("scheduler"),
               confirm=confirm_choices("schedule type", _schedule_types), choices=_schedule_types),
    AxisOption("Schedule min sigma", float, apply_override("sigma_min"),
               confirm=confirm_range(0, 1000, "Schedule min sigma")),
    AxisOption("Schedule max sigma", float, apply_override("sigma_max"),
               confirm=confirm_range(0, 1000, "Schedule max sigma")),
    AxisOption("Schedule rho", float, apply_override("rho"), confirm=confirm_range(0, 100, "Schedule rho")),
    unavailable("Skip Early CFG", float, "skipping CFG on early steps is not implemented"),
    unavailable("Beta schedule alpha", float, "the Beta schedule's alpha is fixed at 0.6"),
    unavailable("Beta schedule beta", float, "the Beta schedule's beta is fixed at 0.6"),
    AxisOption("Eta", float, apply_field("eta"), confirm=confirm_range(0, math.inf, "Eta")),
    AxisOption("Clip skip", int, apply_clip_skip, confirm=confirm_range(1, MAX_CLIP_SKIP, "Clip skip")),
    AxisOption("Denoising", float, apply_field("denoising_strength"), confirm=confirm_range(0, 1, "Denoising")),
    AxisOption("Initial noise multiplier", float, apply_field("initial_noise_multiplier"),
               confirm=confirm_field_of("initial_noise_multiplier", "Initial noise multiplier")),
    unavailable("Extra noise", float, "img2img's extra noise setting is not implemented"),
    AxisOptionTxt2Img("Hires upscaler", str, apply_field("hr_upscaler"),
                      confirm=confirm_choices("hires upscaler", _hires_upscalers), choices=_hires_upscalers),
    AxisOptionImg2Img("Cond. Image Mask Weight", float, apply_override("inpainting_mask_weight"),
                      confirm=confirm_range(0, 1, "Cond. Image Mask Weight")),
    AxisOption("VAE", str, apply_vae, cost=0.7, confirm=confirm_vaes, choices=_vae_choices),
    AxisOption("Styles", str, apply_styles, confirm=confirm_styles, choices=_style_names),
    unavailable("UniPC Order", int, "UniPC's order is fixed at 3"),
    AxisOption("Face restore", str, apply_face_restore, format_value=format_value),
    unavailable("Token merging ratio", float, "token merging is not implemented"),
    unavailable("Token merging ratio high-res", float, "token merging is not implemented"),
    AxisOption("Always discard next-to-last sigma", str, apply_override("always_discard_next_to_last_sigma", True),
               choices=boolean_choice(reverse=True)),
    unavailable("SGM noise multiplier", str, "the SGM noise multiplier setting is not implemented"),
    AxisOption("Refiner checkpoint", str, apply_field("refiner_checkpoint"), format_value=format_remove_path,
               confirm=confirm_field_of("refiner_checkpoint", "Refiner checkpoint", confirm_checkpoints_or_none),
               cost=1.0, choices=lambda: ["None", *_checkpoint_titles()]),
    AxisOption("Refiner switch at", float, apply_field("refiner_switch_at"),
               confirm=confirm_field_of("refiner_switch_at", "Refiner switch at",
                                        confirm_range(0, 1, "Refiner switch at"))),
    AxisOption("RNG source", str, apply_override("randn_source"), confirm=confirm_choices("RNG source",
                                                                                          lambda: list(RANDN_SOURCES)),
               choices=lambda: list(RANDN_SOURCES)),
    unavailable("FP8 mode", str, "it applies when a checkpoint is loaded; change it in Settings"),
    AxisOption("Size", str, apply_size, confirm=confirm_sizes),
]


# ---- values: A1111's ranges and CSV

_INT = r"[+-]?\s*\d+"
_FLOAT = r"[+-]?\s*\d+(?:\.\d*)?"
re_range = re.compile(rf"\s*({_INT})\s*-\s*({_INT})(?:\s*\(\s*([+-]?\s*\d+)\s*\))?\s*")
re_range_float = re.compile(rf"\s*({_FLOAT})\s*-\s*({_FLOAT})(?:\s*\(\s*([+-]?\s*\d+(?:\.\d*)?)\s*\))?\s*")
re_range_count = re.compile(rf"\s*({_INT})\s*-\s*({_INT})\s*\[\s*(\d+)\s*]\s*")
re_range_count_float = re.compile(rf"\s*({_FLOAT})\s*-\s*({_FLOAT})\s*\[\s*(\d+)\s*]\s*")


def _number(text: str, kind):
    return kind(text.replace(" ", ""))


def _stepped(start, end, step, kind, item: str) -> list:
    """start, start + step, ... up to `end`, which is included when a step lands on it, whichever way the range
    runs. (A1111 drops the end of a descending integer range and can overshoot the end of a float range: bugs not
    copied.) No step: 1 towards the end."""
    if step is None:
        step = 1 if end >= start else -1
    if step == 0:
        raise XYZPlotError(f"the range {item!r} has a step of 0")
    count = math.floor((end - start) / step + 1e-9) + 1
    if count <= 0:
        raise XYZPlotError(f"the range {item!r} holds no values: its step goes away from its end")
    _check_count(count, item)
    return [start + i * step if kind is int else round(start + i * step, 8) for i in range(count)]


def _check_count(count: int, what: str) -> None:
    if count > MAX_AXIS_VALUES:
        raise XYZPlotError(f"{what!r} makes {count} values; an axis takes at most {MAX_AXIS_VALUES}")


def _counted(start, end, count: int, kind, item: str) -> list:
    """`count` values spread evenly from start to end (A1111 truncates them to whole numbers on an integer axis)."""
    _check_count(count, item)
    spread = np.linspace(start, end, count).tolist()
    return [int(v) for v in spread] if kind is int else [round(v, 8) for v in spread]


def expand_ranges(items: list[str], kind) -> list:
    """The values of an int or float axis: "1-5", "1-10 (+2)", "10-1 (-3)" (a step), "1-10 [5]" (a count) become
    their values; anything else stays as given, to be converted. Empty items (a trailing comma) are left out."""
    full, counted = (re_range, re_range_count) if kind is int else (re_range_float, re_range_count_float)
    values = []
    for item in items:
        if not item.strip():
            continue
        if match := full.fullmatch(item):
            start, end, step = match.groups()
            values += _stepped(_number(start, kind), _number(end, kind),
                               None if step is None else _number(step, kind), kind, item)
        elif match := counted.fullmatch(item):
            start, end, count = match.groups()
            values += _counted(_number(start, kind), _number(end, kind), int(count), kind, item)
        else:
            values.append(item)
    return values


def _converted(opt: AxisOption, value):
    if opt.type is int:
        try:
            return int(str(value).strip()) if not isinstance(value, int) else value
        except ValueError:
            raise XYZPlotError(f"{opt.label}: {value!r} is not a whole number") from None
    if opt.type is float:
        try:
            number = float(value)
        except ValueError:
            raise XYZPlotError(f"{opt.label}: {value!r} is not a number") from None
        if not math.isfinite(number):
            raise XYZPlotError(f"{opt.label}: {value!r} is not a finite number")
        return number
    try:
        return opt.type(value)
    except (TypeError, ValueError) as e:
        raise XYZPlotError(f"{opt.label}: {value!r} is not a valid value ({e})") from e


def axis_values(opt: AxisOption, text: str, chosen: list | None = None, from_dropdown: bool = False) -> list:
    """The values of one axis of type `opt`: the dropdown's `chosen` values, else the `text` typed (CSV with A1111's
    ranges, or what the axis's `prepare` makes of it), converted to the axis's type. Not yet checked (`confirm`)."""
    if opt.label == "Nothing":
        return [0]
    if from_dropdown:
        items = list(chosen or [])
    elif opt.prepare is not None:
        items = list(opt.prepare(text))
    else:
        items = csv_string_to_list_strip(text or "")
    if opt.type in (int, float):
        items = expand_ranges([str(v) for v in items], opt.type)
    elif opt.type is str_permutations:
        _check_count(math.factorial(len(items)), f"{len(items)} tokens in every order")
        items = list(permutations(items))
    values = [_converted(opt, v) for v in items]
    if not values:
        raise XYZPlotError(f"{opt.label}: give at least one value")
    return values


# ---- the plot

def _largest_cell(p, axes) -> int:
    """The pixels of the largest cell the plot will make: a Size axis's largest size, enlarged by the hires pass."""
    sizes = [_size(v) for axis in axes if axis.option.label == "Size" for v in axis.values]
    width, height = max([(p.width, p.height), *sizes], key=lambda s: s[0] * s[1])
    scale = float(getattr(p, "hr_scale", 1) or 1) if getattr(p, "enable_hr", False) else 1.0
    return int(width * height * max(1.0, scale) ** 2)


class Axis:
    """One of the plot's three axes as a run uses it: its name ("X"), kind, values as the user gave them (the grid's
    infotext says them) and as used."""

    def __init__(self, name: str, option: AxisOption, text: str, values: list, vary_seeds: bool = False):
        self.name, self.option, self.text, self.values, self.vary_seeds = name, option, text, values, vary_seeds

    @property
    def used(self) -> bool:
        return self.option.label != "Nothing"

    def labels(self, p) -> list[list[images.GridAnnotation]]:
        return [[images.GridAnnotation(str(self.option.format_value(p, self.option, v)))] for v in self.values]


def _flag(value) -> bool:
    """A checkbox's value; API clients send some as text ("false")."""
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes", "on")
    return bool(value)


def _fixed_seeds(values: list) -> list:
    return [int(random.randrange(MAX_SEED)) if v in (None, "", -1) else v for v in values]


def cell_order(axes: list[Axis]):
    """(ix, iy, iz) of every cell in the order they are made: the costliest axis changes least often; with equal
    costs Z is the outermost loop and X the innermost (A1111's order)."""
    by_cost = sorted([2, 1, 0], key=lambda k: -axes[k].option.cost)
    for indices in product(*(range(len(axes[k].values)) for k in by_cost)):
        cell = [0, 0, 0]
        for k, i in zip(by_cost, indices):
            cell[k] = i
        yield tuple(cell)


class SharedSettingsStackHelper:
    """The checkpoint and VAE before the plot, put back after it: its cells switch them (Checkpoint name, VAE) without
    switching back after each picture."""

    def __enter__(self):
        models = shared.services().models
        self.checkpoint, self.vae = models.options.sd_model_checkpoint, models.options.sd_vae
        return self

    def __exit__(self, *exc):
        models = shared.services().models
        if models.options.sd_vae != self.vae:
            models.set_vae(self.vae)
        if self.checkpoint and models.options.sd_model_checkpoint != self.checkpoint:
            models.load(self.checkpoint)


def _padded(picture: Image.Image, size: tuple[int, int]) -> Image.Image:
    """A cell of a grid of `size` cells: pictures of another size (the Size axis) are placed top left on black, never
    resampled."""
    if picture.size == size:
        return picture
    cell = Image.new("RGB", size)
    cell.paste(picture, (0, 0))
    return cell


class Script(scripts.Script):
    def title(self):
        return "X/Y/Z plot"

    def ui(self, is_img2img):
        self.current_axis_options = self.axes_of_tab(is_img2img)
        labels = [x.label for x in self.current_axis_options]
        rows = {}
        with gr.Row():
            with gr.Column(scale=19):
                for name, default in (("x", 1), ("y", 0), ("z", 0)):
                    with gr.Row():
                        axis_type = gr.Dropdown(label=f"{name.upper()} type", choices=labels, value=labels[default],
                                                type="index", elem_id=self.elem_id(f"{name}_type"))
                        values = gr.Textbox(label=f"{name.upper()} values", lines=1,
                                            elem_id=self.elem_id(f"{name}_values"))
                        # any value is let through: a swap or a change of axis type sets values and choices together
                        values_dropdown = gr.Dropdown(label=f"{name.upper()} values", visible=False, multiselect=True,
                                                      interactive=True, allow_custom_value=True,
                                                      elem_id=self.elem_id(f"{name}_values_dropdown"))
                        fill = ToolButton(value=fill_values_symbol, elem_id=f"xyz_grid_fill_{name}_tool_button",
                                          visible=False)
                    rows[name] = (axis_type, values, values_dropdown, fill)

        with gr.Row(variant="compact", elem_id="axis_options"):
            with gr.Column():
                draw_legend = gr.Checkbox(label="Draw legend", value=True, elem_id=self.elem_id("draw_legend"))
                no_fixed_seeds = gr.Checkbox(label="Keep -1 for seeds", value=False,
                                             elem_id=self.elem_id("no_fixed_seeds"))
                with gr.Row():
                    vary_seeds = [gr.Checkbox(label=f"Vary seeds for {name.upper()}", value=False, min_width=80,
                                              elem_id=self.elem_id(f"vary_seeds_{name}")) for name in "xyz"]
            with gr.Column():
                include_lone_images = gr.Checkbox(label="Include Sub Images", value=False,
                                                  elem_id=self.elem_id("include_lone_images"))
                include_sub_grids = gr.Checkbox(label="Include Sub Grids", value=False,
                                                elem_id=self.elem_id("include_sub_grids"))
                csv_mode = gr.Checkbox(label="Use text inputs instead of dropdowns", value=False,
                                       elem_id=self.elem_id("csv_mode"))
            with gr.Column():
                margin_size = gr.Slider(label="Grid margins (px)", minimum=0, maximum=500, value=0, step=2,
                                        elem_id=self.elem_id("margin_size"))

        with gr.Row(variant="compact", elem_id="swap_axes"):
            swap_buttons = {pair: gr.Button(value=f"Swap {pair[0].upper()}/{pair[1].upper()} axes",
                                            elem_id=f"{pair}_grid_swap_axes_button") for pair in ("xy", "yz", "xz")}

        self._wire_events(rows, swap_buttons, csv_mode)
        self.infotext_fields = []
        for name, (axis_type, values, values_dropdown, _) in rows.items():
            key = name.upper()
            self.infotext_fields += [(axis_type, f"{key} Type"), (values, f"{key} Values"),
                                     (values_dropdown, lambda params, key=key: gr.update(
                                         value=csv_string_to_list_strip(params.get(f"{key} Values", ""))))]
        return [*rows["x"][:3], *rows["y"][:3], *rows["z"][:3], draw_legend, include_lone_images, include_sub_grids,
                no_fixed_seeds, *vary_seeds, margin_size, csv_mode]

    @staticmethod
    def axes_of_tab(is_img2img: bool) -> list[AxisOption]:
        """The axes this tab offers, in A1111's order: its indices are what the axis type dropdowns and the API use."""
        return [x for x in axis_options if getattr(x, "is_img2img", is_img2img) == is_img2img]

    def _option(self, index) -> AxisOption:
        if index is None or index == "":
            return self.current_axis_options[0]
        if isinstance(index, str) and not index.strip().lstrip("-").isdigit():  # a client sending the axis's label
            found = next((x for x in self.current_axis_options if x.label.lower() == index.strip().lower()), None)
            if found is None:
                raise XYZPlotError(f"Unknown X/Y/Z plot axis type: {index}")
            return found
        index = int(index)
        if not 0 <= index < len(self.current_axis_options):
            raise XYZPlotError(f"X/Y/Z plot axis type {index} does not exist (0 to "
                               f"{len(self.current_axis_options) - 1})")
        return self.current_axis_options[index]

    def _wire_events(self, rows: dict, swap_buttons: dict, csv_mode) -> None:
        def select_axis(axis_type, text, chosen, csv_mode):
            """Show the dropdown of values for an axis with choices (or the text box in CSV mode), carrying over
            the values that fit."""
            choices = self._choices(axis_type)
            chosen = list(chosen or [])
            if choices is not None and csv_mode and chosen:
                text, chosen = list_to_csv_string([v for v in chosen if v in choices]), []
            elif choices is not None and not csv_mode and text:
                text, chosen = "", [v for v in csv_string_to_list_strip(text) if v in choices]
            return (gr.update(visible=choices is not None),
                    gr.update(visible=choices is None or bool(csv_mode), value=text),
                    gr.update(choices=choices or [], visible=choices is not None and not csv_mode, value=chosen))

        def fill(axis_type, csv_mode):
            """📒: every choice of the axis into its values."""
            choices = self._choices(axis_type)
            if choices is None:
                return gr.update(), gr.update()
            return (list_to_csv_string(choices), gr.update()) if csv_mode else (gr.update(), choices)

        def swap(type1, text1, chosen1, type2, text2, chosen2):
            labels = [x.label for x in self.current_axis_options]
            return labels[type2 or 0], text2, chosen2, labels[type1 or 0], text1, chosen1

        def change_choice_mode(csv_mode, *axes):
            return [update for k in range(3) for update in select_axis(*axes[3 * k:3 * k + 3], csv_mode)]

        quiet = {"queue": False, "api_visibility": "private", "show_progress": "hidden"}
        for axis_type, values, values_dropdown, fill_button in rows.values():
            axis_type.change(select_axis, inputs=[axis_type, values, values_dropdown, csv_mode],
                             outputs=[fill_button, values, values_dropdown], **quiet)
            fill_button.click(fill, inputs=[axis_type, csv_mode], outputs=[values, values_dropdown], **quiet)
        for pair, button in swap_buttons.items():
            both = [*rows[pair[0]][:3], *rows[pair[1]][:3]]
            button.click(swap, inputs=both, outputs=both, **quiet)
        every_axis = [c for row in rows.values() for c in row[:3]]
        csv_mode.change(change_choice_mode, inputs=[csv_mode, *every_axis],
                        outputs=[c for row in rows.values() for c in (row[3], row[1], row[2])], **quiet)

    def _choices(self, axis_type) -> list[str] | None:
        axis = self.current_axis_options[axis_type or 0]
        return list(axis.choices()) if axis.choices is not None else None

    def run(self, p, x_type, x_values, x_values_dropdown, y_type, y_values, y_values_dropdown, z_type, z_values,
            z_values_dropdown, draw_legend, include_lone_images, include_sub_grids, no_fixed_seeds, vary_seeds_x,
            vary_seeds_y, vary_seeds_z, margin_size, csv_mode):
        if not hasattr(self, "current_axis_options"):
            self.current_axis_options = self.axes_of_tab(bool(self.is_img2img))
        no_fixed_seeds, csv_mode = _flag(no_fixed_seeds), _flag(csv_mode)
        if not no_fixed_seeds:
            processing.fix_seed(p)
        if not opts.return_grid:
            p.batch_size = 1

        axes = []
        for name, axis_type, text, chosen, vary in (("X", x_type, x_values, x_values_dropdown, vary_seeds_x),
                                                    ("Y", y_type, y_values, y_values_dropdown, vary_seeds_y),
                                                    ("Z", z_type, z_values, z_values_dropdown, vary_seeds_z)):
            opt = self._option(axis_type)
            chosen = list(chosen) if isinstance(chosen, list | tuple) else []
            # a dropdown of choices unless told to use text; a client that filled only the text is taken at its word
            from_dropdown = opt.choices is not None and not csv_mode and (bool(chosen) or not (text or "").strip())
            if from_dropdown:
                text = list_to_csv_string(chosen)
            values = axis_values(opt, text or "", chosen, from_dropdown)
            if opt.confirm:
                opt.confirm(p, values)
            if opt.label in ("Seed", "Var. seed") and not no_fixed_seeds:
                values = _fixed_seeds(values)
            axes.append(Axis(name, opt, text or "", values, _flag(vary)))
        return self.plot(p, axes, draw_legend=_flag(draw_legend), include_lone_images=_flag(include_lone_images),
                         include_sub_grids=_flag(include_sub_grids), no_fixed_seeds=no_fixed_seeds,
                         margin_size=int(margin_size or 0))

    def plot(self, p, axes: list[Axis], *, draw_legend: bool, include_lone_images: bool, include_sub_grids: bool,
             no_fixed_seeds: bool, margin_size: int) -> Processed:
        """Make every cell, then the grids; the answer's pictures are the grid, then the sub-grids and the cells when
        asked for; its infotexts the grids' and every cell's."""
        x, y, z = axes
        count = len(x.values) * len(y.values) * len(z.values)
        megapixels = round(count * _largest_cell(p, axes) / 1_000_000)
        if megapixels >= MAX_GRID_MEGAPIXELS:
            raise XYZPlotError(f"Error: Resulting grid would be too large ({megapixels} MPixels) (max configured size "
                               f"is {MAX_GRID_MEGAPIXELS} MPixels)")
        per_cell = p.n_iter * p.batch_size
        log.info("X/Y/Z plot will create %d images on %d %dx%d grid%s%s.", count * per_cell, len(z.values),
                 len(x.values), len(y.values), "s" if len(z.values) > 1 else "",
                 f"; {per_cell} images per cell" if per_cell > 1 else "")
        state.job_count = count * p.n_iter
        state.xyz_plot_x, state.xyz_plot_y, state.xyz_plot_z = (AxisInfo(a.option, a.values) for a in axes)

        cells: dict[tuple[int, int, int], Processed] = {}
        made: dict[tuple[int, int, int], object] = {}  # each cell's p after its job: the grids' infotexts need it
        failures: list[str] = []
        with SharedSettingsStackHelper():
            for number, (ix, iy, iz) in enumerate(cell_order(axes), start=1):
                if state.interrupted:
                    break
                state.textinfo = f"{number} out of {count}"
                pc = self._cell_p(p, axes, (ix, iy, iz))
                try:
                    cells[ix, iy, iz] = process_images(pc)
                except Exception as e:  # noqa: BLE001 - A1111 leaves a failed cell empty and goes on
                    errors.display(e, "generating image for xyz plot")
                    failures.append(f"{x.option.label} {x.values[ix]}, {y.option.label} {y.values[iy]}, "
                                    f"{z.option.label} {z.values[iz]}: {e}")
                made[ix, iy, iz] = pc
        done = [c for c in cells.values() if c.images]
        if not done:
            if failures:
                raise XYZPlotError(f"X/Y/Z plot: no picture could be made ({failures[0]})")
            nothing = Processed(p, [])  # interrupted before the first cell
            nothing.interrupted = True
            return nothing
        return self._assemble(p, axes, cells, made, failures, draw_legend=draw_legend,
                              include_lone_images=include_lone_images, include_sub_grids=include_sub_grids,
                              no_fixed_seeds=no_fixed_seeds, margin_size=margin_size)

    @staticmethod
    def _cell_p(p, axes: list[Axis], indices: tuple[int, int, int]):
        """`p` for one cell: a copy with each axis's value applied (its own styles, settings and infotext keys)."""
        pc = copy(p)
        pc.styles = list(p.styles or [])
        pc.override_settings = dict(p.override_settings or {})
        pc.extra_generation_params = dict(p.extra_generation_params or {})
        pc.override_settings_restore_afterwards = False  # the checkpoint and VAE are put back after the whole plot
        for axis, i in zip(axes, indices):
            axis.option.apply(pc, axis.values[i], axis.values)
        x, y, _ = axes
        columns = len(x.values) if x.vary_seeds else 1
        rows = len(y.values) if y.vary_seeds else 1
        offset = sum(i * step for axis, i, step in zip(axes, indices, (1, columns, columns * rows)) if axis.vary_seeds)
        if offset and isinstance(pc.seed, int) and pc.seed != -1:
            pc.seed = (pc.seed + offset) % (MAX_SEED + 1)
        return pc

    def _grid_infotext(self, pc, axes: list[Axis], no_fixed_seeds: bool) -> str:
        """A grid's infotext: the first cell's, with the script and its axes (A1111's keys, e.g. "X Type: Steps,
        X Values: 2,3,4")."""
        described = copy(pc)
        params = described.extra_generation_params = dict(pc.extra_generation_params or {})
        params["Script"] = self.title()
        for axis in axes:
            if not axis.used:
                continue
            params[f"{axis.name} Type"] = axis.option.label
            params[f"{axis.name} Values"] = axis.text
            if axis.option.label in ("Seed", "Var. seed") and not no_fixed_seeds:
                params[f"Fixed {axis.name} Values"] = ", ".join(str(v) for v in axis.values)
        return processing.create_infotext(described, described.all_prompts, described.all_seeds,
                                          described.all_subseeds)

    def _assemble(self, p, axes, cells, made, failures, *, draw_legend, include_lone_images, include_sub_grids,
                  no_fixed_seeds, margin_size) -> Processed:
        x, y, z = axes
        order = [(ix, iy, iz) for iz in range(len(z.values)) for iy in range(len(y.values))
                 for ix in range(len(x.values))]
        first_done = next(c for c in cells.values() if c.images)
        pictures = {key: c.images[0] for key, c in cells.items() if c.images}
        size = tuple(max(sides) for sides in zip(*(picture.size for picture in pictures.values())))
        blank = Image.new("RGB", size)  # a cell not made (failed, or after an interrupt)
        per_slice = len(x.values) * len(y.values)
        cell_pictures = [_padded(pictures[key], size) if key in pictures else blank for key in order]

        sub_grids = []
        for iz in range(len(z.values)):
            grid = images.image_grid(cell_pictures[iz * per_slice:(iz + 1) * per_slice], rows=len(y.values))
            if draw_legend:
                grid = images.draw_grid_annotations(grid, size[0], size[1], x.labels(p), y.labels(p), margin_size)
            sub_grids.append(grid)
        main = images.image_grid(sub_grids, rows=1)
        if draw_legend:
            main = images.draw_grid_annotations(main, sub_grids[0].width, sub_grids[0].height, z.labels(p),
                                                [[images.GridAnnotation()]])

        def first_of_slice(iz):
            return made.get((0, 0, iz), p)
        main_info = self._grid_infotext(first_of_slice(0), axes, no_fixed_seeds)
        sub_infos = [self._grid_infotext(first_of_slice(iz), axes[:2], no_fixed_seeds)
                     for iz in range(len(z.values))]
        cell_prompts = [cells[key].prompt if key in cells else p.prompt for key in order]
        cell_seeds = [cells[key].seed if key in cells else p.seed for key in order]
        cell_infos = [cells[key].infotexts[0] if key in pictures else "" for key in order]

        result = copy(first_done)
        result.images = [main, *(sub_grids if include_sub_grids else []),
                         *([pictures.get(key, blank) for key in order] if include_lone_images else [])]
        result.infotexts = [main_info, *(sub_infos if include_sub_grids else []), *cell_infos]
        result.all_prompts = [*([cell_prompts[iz * per_slice] for iz in range(len(z.values))]
                                if include_sub_grids else []), *cell_prompts]
        result.all_seeds = [*([cell_seeds[iz * per_slice] for iz in range(len(z.values))]
                              if include_sub_grids else []), *cell_seeds]
        result.index_of_first_image = 1
        result.info = main_info
        result.warnings = list(dict.fromkeys(w for c in cells.values() for w in getattr(c, "warnings", [])))
        result.warnings += [f"a cell could not be made: {f}" for f in failures]
        result.interrupted = bool(state.interrupted) or any(getattr(c, "interrupted", False) for c in cells.values())
        result.paths = [path for c in cells.values() for path in getattr(c, "paths", [])]

        if opts.grid_save and not p.do_not_save_grid:
            grids = [(main, main_info, 0)]
            if include_sub_grids and len(z.values) > 1:
                grids += [(grid, info, iz * per_slice) for iz, (grid, info) in enumerate(zip(sub_grids, sub_infos))]
            folder = p.outpath_grids or self._grids_folder(p)
            for grid, info, cell in grids:
                images.save_image(grid, folder, "xyz_grid", info=info, extension=opts.grid_format,
                                  prompt=cell_prompts[cell], seed=cell_seeds[cell], grid=True, p=result)
        return result

    @staticmethod
    def _grids_folder(p) -> str:
        """Where a `p` made without the output folders (by an extension) saves grids: the tab's grids folder."""
        ctx = shared.current_context()
        kind = "txt2img-grids" if isinstance(p, StableDiffusionProcessingTxt2Img) else "img2img-grids"
        return str(saving.output_folder(ctx.options, ctx.outputs_dir, kind))
