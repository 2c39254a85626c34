"""Filling the generation controls from an infotext (PNG Info's "Send to", the ↙️ button, and a picture dropped on a
prompt box), as A1111 does: generation fields directly, settings (clip skip, ENSD, schedule parameters, checkpoint)
as entries of the tab's "Override settings" box that apply to its next jobs only."""
from __future__ import annotations

import html
import math
from collections.abc import Callable
from dataclasses import MISSING, dataclass, fields
from pathlib import Path
from typing import Any

import gradio as gr
from PIL import Image

from modules import infotext_utils
from modules.generation import Img2ImgRequest, Txt2ImgRequest, saving
from modules.generation.requests import MAX_INPUT_PIXELS
from modules.sampling.samplers import find_sampler
from modules.sampling.schedules import find_scheduler
from modules.ui.picture_inputs import picture_input

Getter = str | Callable[[dict, "PasteContext"], Any]  # an infotext key, or a function of the parsed parameters


@dataclass(frozen=True)
class PasteContext:
    """What filling the fields needs to know of the program: settings, styles, checkpoint files."""
    options: Any  # modules.options.Options
    styles: Any = None  # modules.conditioning.styles.StyleDatabase
    models: Any = None  # modules.models.manager.ModelManager


def _hires_enabled(d: dict) -> bool:
    """A1111: an infotext with a denoising strength and hires keys was made with hires fix."""
    resized = str(d.get("Hires resize-1", 0)) not in ("0", "") or str(d.get("Hires resize-2", 0)) not in ("0", "")
    return "Denoising strength" in d and ("Hires upscale" in d or "Hires upscaler" in d or resized)


def _sampler(key: str, keep: str | None = None):
    def get(d: dict, _ctx) -> str | None:
        name = d.get(key)
        if name is None or name == keep:
            return name
        try:
            return find_sampler(str(name)).name
        except ValueError:
            return None
    return get


def _scheduler(key: str, keep: str | None = None):
    def get(d: dict, _ctx) -> str | None:
        name = d.get(key)
        if name is None or name == keep:
            return name
        try:
            return find_scheduler(str(name)).label
        except ValueError:
            return "Automatic" if keep is None else keep
    return get


def _checkpoint_choice(key: str, absent: str) -> Getter:
    """The dropdown entry for the checkpoint the infotext names under `key` (its title gains a hash once loaded:
    any entry naming the same file will do; the entries are refreshed when none does); `absent` when the key is
    missing, as A1111 unticks its refiner and goes back to "Use same checkpoint"."""
    def get(d: dict, ctx: PasteContext, control=None) -> Any:
        if key not in d:
            return absent
        try:
            wanted = ctx.models.find_checkpoint(str(d[key]))
        except Exception:  # not among the checkpoints here (CheckpointError), or no model manager
            return None
        for _, choice in getattr(control, "choices", None) or []:
            if choice != absent and wanted.matches(choice):
                return choice
        return gr.update(choices=[absent] + ctx.models.checkpoint_titles(), value=wanted.title)
    get.needs_control = True
    return get


_refiner = _checkpoint_choice("Refiner", "None")
_hires_checkpoint = _checkpoint_choice("Hires checkpoint", "Use same checkpoint")


# request field -> the infotext key that fills its control, or a function giving the value (None: leave the control
# as it is). Only fields the tab has are filled.
_FIELDS: list[tuple[str, Getter]] = [
    ("prompt", "Prompt"),
    ("negative_prompt", "Negative prompt"),
    ("steps", "Steps"),
    ("sampler_name", _sampler("Sampler")),
    ("scheduler", _scheduler("Schedule type")),
    ("cfg_scale", "CFG scale"),
    ("seed", "Seed"),
    ("width", "Size-1"),
    ("height", "Size-2"),
    ("batch_size", "Batch size"),
    ("subseed", "Variation seed"),
    ("subseed_strength", "Variation seed strength"),
    ("seed_resize_from_w", "Seed resize from-1"),
    ("seed_resize_from_h", "Seed resize from-2"),
    ("tiling", "Tiling"),
    ("denoising_strength", "Denoising strength"),
    # txt2img: hires fix and refiner
    ("enable_hr", lambda d, _: _hires_enabled(d)),
    ("hr_scale", "Hires upscale"),
    ("hr_upscaler", "Hires upscaler"),
    ("hr_second_pass_steps", lambda d, _: d.get("Hires steps", 0 if _hires_enabled(d) else None)),
    ("hr_resize_x", "Hires resize-1"),
    ("hr_resize_y", "Hires resize-2"),
    ("hr_checkpoint_name", _hires_checkpoint),
    ("hr_sampler_name", _sampler("Hires sampler", keep="Use same sampler")),
    ("hr_scheduler", _scheduler("Hires schedule type", keep="Use same scheduler")),
    ("hr_prompt", "Hires prompt"),
    ("hr_negative_prompt", "Hires negative prompt"),
    ("refiner_checkpoint", _refiner),
    ("refiner_switch_at", "Refiner switch at"),
    # img2img: inpainting
    ("mask_blur", "Mask blur"),
    ("inpainting_mask_invert", "Mask mode"),
    ("inpainting_fill", "Masked content"),
    ("inpaint_full_res", "Inpaint area"),
    ("inpaint_full_res_padding", "Masked area padding"),
]
# infotext keys filled directly above, so never an "Override settings" entry
_FILLED_KEYS = frozenset(key for _, key in _FIELDS if isinstance(key, str))
# radio buttons that hand the index of their choice to the request: pasted as the choice's text
_CHOICE_FIELDS = frozenset({"inpainting_mask_invert", "inpainting_fill", "inpaint_full_res"})
_TYPES = {f.name: type(f.default) for cls in (Txt2ImgRequest, Img2ImgRequest) for f in fields(cls)
          if f.default is not MISSING}


def _convert(field: str, value: Any) -> Any:
    """An infotext value (mostly text) as the control of `field` takes it."""
    kind = _TYPES.get(field, str)
    if field in _CHOICE_FIELDS or kind is str or field in ("hr_sampler_name", "hr_scheduler", "refiner_checkpoint",
                                                                      "hr_checkpoint_name"):
        return str(value)
    if kind is bool:
        return value if isinstance(value, bool) else str(value).strip().lower() == "true"
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(value)
    return int(number) if kind is int else number


def _fields_of(tab: dict) -> list[tuple[str, Getter]]:
    return [(name, getter) for name, getter in _FIELDS if name in tab["request_inputs"]]


def paste_outputs(tab: dict) -> list:
    """The controls an infotext fills on `tab`, in the order `values_from_infotext` answers."""
    inputs = tab["request_inputs"]
    return ([inputs[name] for name, _ in _fields_of(tab)] + [inputs["styles"], tab["override_settings"]]
            + [component for component, _ in tab.get("script_paste", [])])


def context_of(tab: dict) -> PasteContext:
    ctx = tab["worker"].ctx
    return PasteContext(ctx.options, getattr(ctx, "styles", None), getattr(ctx, "models", None))


def _styles(params: dict, ctx: PasteContext):
    """A1111's "Apply if any": styles whose text the prompts hold are taken out of them and selected."""
    if ctx.styles is None:
        return gr.skip()
    prompt, negative, found = ctx.styles.extract_styles(params.get("Prompt", ""), params.get("Negative prompt", ""))
    if not found:
        return gr.skip()
    params["Prompt"], params["Negative prompt"] = prompt, negative
    return found


def override_entries(params: dict, ctx: PasteContext) -> list[str]:
    """The "Override settings" entries for the settings the infotext names with another value than the current
    one: clip skip, ENSD, schedule parameters...; the checkpoint only where the setting
    disable_weights_auto_swap is off, and checkpoint and VAE only when they are here and not in use already."""
    entries = []
    for key, name, value in infotext_utils.settings_from_params(params, ctx.options, skip=_FILLED_KEYS):
        if name in infotext_utils.MODEL_SETTINGS and not _model_differs(name, str(value), ctx):
            continue
        entries.append(infotext_utils.override_text(key, value))
    return entries


def _model_differs(name: str, value: str, ctx: PasteContext) -> bool:
    models = ctx.models
    if models is None:
        return False
    current = models.current
    if name == "sd_model_checkpoint":
        if getattr(ctx.options, "disable_weights_auto_swap", True):
            return False
        try:
            wanted = models.find_checkpoint(value)
        except Exception:  # CheckpointError: no such checkpoint here
            return False
        return current is None or wanted.path != current.file.path
    if not any(Path(v.name).name == value for v in models.vaes):
        return False
    return current is None or current.vae_file is None or Path(current.vae_file.name).name != value


SEED_FIELDS = frozenset({"seed", "subseed", "subseed_strength", "seed_resize_from_w", "seed_resize_from_h"})
SIZE_FIELDS = frozenset({"width", "height"})


def values_from_infotext(text: str, tab: dict, ctx: PasteContext | None = None, sending: bool = False) -> list:
    """One update per control of `paste_outputs(tab)`; keys missing from the text leave their control alone.
    `sending`: a picture sent from a gallery to another tab, where the send_seed and send_size settings decide
    whether seeds and size go along (A1111)."""
    ctx = ctx or context_of(tab)
    params = infotext_utils.parse_generation_parameters(text or "")
    if tab.get("scripts") is not None:  # extensions may read or change what was pasted (on_infotext_pasted)
        tab["scripts"].infotext_pasted(text or "", params)
    styles = _styles(params, ctx)
    kept = set()
    if sending and not getattr(ctx.options, "send_seed", True):
        kept |= SEED_FIELDS
    if sending and not getattr(ctx.options, "send_size", True):
        kept |= SIZE_FIELDS
    out = []
    for name, getter in _fields_of(tab):
        if name in kept:
            out.append(gr.skip())
            continue
        if getattr(getter, "needs_control", False):
            value = getter(params, ctx, tab["request_inputs"][name])
        else:
            value = getter(params, ctx) if callable(getter) else params.get(getter)
        if value is None or (value == "" and name not in ("prompt", "negative_prompt", "hr_prompt",
                                                          "hr_negative_prompt")):
            out.append(gr.skip())
            continue
        if isinstance(value, dict):  # an update of more than the value
            out.append(value)
            continue
        try:
            out.append(_convert(name, value))
        except (TypeError, ValueError, OverflowError):
            out.append(gr.skip())
    entries = override_entries(params, ctx)
    overrides = gr.update(choices=entries, value=entries, visible=bool(entries))
    return out + [styles, overrides] + _script_values(tab, params)


def _script_values(tab: dict, params: dict) -> list:
    """The scripts' controls that name an infotext key (A1111's `infotext_fields`: a key, or a function of all
    the parameters); a key the text lacks leaves its control alone."""
    out = []
    for _, key in tab.get("script_paste", []):
        try:
            value = key(params) if callable(key) else params.get(key)
        except Exception:  # noqa: BLE001 - an extension's function
            value = None
        out.append(gr.skip() if value is None else value)
    return out


def option_overrides(entries: list[str] | None, options) -> tuple[dict, dict]:
    """(settings for this job only, checkpoint/VAE to use for it) from the "Override settings" entries. The
    checkpoint is dropped while disable_weights_auto_swap is on."""
    overrides = infotext_utils.overrides_from_texts(entries)
    if getattr(options, "disable_weights_auto_swap", True):
        overrides.pop("sd_model_checkpoint", None)
    models = {k: overrides.pop(k) for k in infotext_utils.MODEL_SETTINGS if k in overrides}
    return overrides, models


def build_png_info(tabs: dict[str, dict], main_tabs: gr.Tabs, extras_image: gr.Image | None = None) -> None:
    """The PNG Info tab: drop a picture, read its parameters, send them (and the picture) on."""
    targets = list(tabs) + (["inpaint"] if "img2img" in tabs else []) + (["extras"] if extras_image else [])
    with gr.Row():
        with gr.Column():
            image = picture_input(label="Source", type="pil", elem_id="pnginfo_image", height=400)
        with gr.Column():
            shown = gr.HTML(elem_id="pnginfo_generation_info")
            raw = gr.Textbox(visible=False, elem_id="pnginfo_raw")
            with gr.Row():
                buttons = {name: gr.Button(f"Send to {name}", elem_id=f"pnginfo_send_to_{name}") for name in targets}

    def read(img):
        if img is None:
            return "", ""
        text = saving.read_infotext(img)
        if not text:
            return "<p>No generation parameters in this image.</p>", ""
        return f"<p>{html.escape(text).replace(chr(10), '<br>')}</p>", text

    image.change(read, inputs=image, outputs=[shown, raw], api_visibility="private")
    for name, button in buttons.items():
        if name == "extras":
            button.click(lambda img: (img, gr.Tabs(selected="extras")), inputs=image,
                         outputs=[extras_image, main_tabs], api_visibility="private")
            continue
        tab = tabs["img2img" if name == "inpaint" else name]
        outputs = paste_outputs(tab)
        if name == "txt2img":
            button.click(lambda text, t=tab: values_from_infotext(text, t), inputs=raw, outputs=outputs,
                         api_visibility="private"
                         ).then(lambda: gr.Tabs(selected="txt2img"), outputs=main_tabs, api_visibility="private")
            continue
        mode = "inpaint" if name == "inpaint" else "img2img"

        def send(img, text, t=tab, m=mode):
            picture = img if m == "img2img" or img is None else {"background": img, "layers": [], "composite": img}
            return [picture, *values_from_infotext(text, t), gr.Tabs(selected="img2img"), gr.Tabs(selected=m), m]

        button.click(send, inputs=[image, raw], outputs=[tab["image" if mode == "img2img" else "inpaint"], *outputs,
                                                        main_tabs, tab["tabs"], tab["mode"]], api_visibility="private")


def read_dropped_picture(path: str | None) -> tuple[Any, None]:
    """A picture dropped on a prompt box: its infotext into the prompt box. One without parameters changes nothing
    (a message says so, and the fields are not filled from what the prompt box holds)."""
    if not path:
        return gr.skip(), None
    try:
        with Image.open(path) as picture:
            width, height = picture.size
            if width * height > MAX_INPUT_PIXELS:
                raise gr.Error(f"the picture is {width}x{height}; at most {MAX_INPUT_PIXELS // 1_000_000} "
                               f"megapixels are supported")
            text = saving.read_infotext(picture)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise gr.Error(f"not a readable picture ({e.__class__.__name__})") from e
    if not text:
        raise gr.Error("No generation parameters in this image.")
    return text, None


def wire_paste_button(tab: dict) -> None:
    """↙️ beside Generate: read an infotext pasted into the prompt box (with an empty box, the last generation's,
    from params.txt) and fill every field. A picture dropped on
    a prompt box (javascript/dragdrop.js hands it to a hidden file input) does the same with its infotext."""
    outputs = paste_outputs(tab)
    last_params = tab["worker"].ctx.outputs_dir.parent / saving.LAST_PARAMETERS_FILE

    def paste(text: str) -> list:
        if not (text or "").strip():  # as A1111: an empty prompt box takes the last generation's parameters
            try:
                text = last_params.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                gr.Info("Nothing to paste: put generation parameters into the prompt box, or generate first.")
                return [gr.skip()] * len(outputs)
        return values_from_infotext(text, tab)

    tab["paste"].click(paste, inputs=tab["prompt"], outputs=outputs, api_visibility="private")
    name = tab["prompt"].elem_id.removesuffix("_prompt")
    dropped = gr.File(visible="hidden", file_count="single", type="filepath", elem_id=f"{name}_prompt_image",
                      file_types=["image"])
    dropped.upload(read_dropped_picture, inputs=dropped, outputs=[tab["prompt"], dropped], api_visibility="private",
                   show_progress="hidden"
                   ).success(lambda text: values_from_infotext(text, tab), inputs=tab["prompt"], outputs=outputs,
                             api_visibility="private", show_progress="hidden")
