"""A1111's Script API (`modules.scripts`): the `Script` class scripts derive from, loading them from `scripts/` and the
extensions' `scripts/` folders, and the runners that give each tab its scripts.

A selectable script (shown in the "Script" dropdown) replaces the generation with its `run(p, *args)`; an always-on
script (`show` returns `AlwaysVisible`) joins every job at A1111's points (`process`, `process_batch`,
`postprocess_image`...). A script's arguments are the values of the components its `ui()` returned, in order;
the runner keeps one list of every script's components (`inputs`), each script owning `args_from:args_to`, and the
API fills the same list (`script_args`, `alwayson_scripts`). A script that fails to load, to build its controls or
in a hook is reported with its file and left out; the job and the page go on.
"""
from __future__ import annotations

import importlib.util
import inspect
import logging
import math
import re
import sys
import threading
from collections import namedtuple
from dataclasses import dataclass, field
from pathlib import Path

from modules import paths, script_callbacks, shared
from modules.generation import GenerationError, GenerationResult, saving
from modules.processing import (  # noqa: F401 - A1111 scripts import these from modules.scripts too
    PostprocessBatchListArgs,
    PostprocessImageArgs,
    Processed,
    p_from_request,
    process_images,
    result_from_processed,
)

log = logging.getLogger(__name__)

AlwaysVisible = object()
"""What `Script.show` returns for a script that is always on (shown in its own section, not in the dropdown)."""

SCRIPTS_DIR = paths.REPO_ROOT / "scripts"  # the built-in scripts
current_basedir = str(paths.REPO_ROOT)


def basedir() -> str:
    """The folder of the extension whose script is being loaded (the program's folder for built-in scripts); A1111
    scripts call it at import time to find their own files."""
    return current_basedir


class PostProcessMaskOverlayArgs:
    def __init__(self, index, mask_for_overlay, overlay_image):
        self.index = index
        self.mask_for_overlay = mask_for_overlay
        self.overlay_image = overlay_image


class MaskBlendArgs:
    def __init__(self, current_latent, nmask, init_latent, mask, blended_latent, denoiser=None, sigma=None):
        self.current_latent, self.nmask, self.init_latent = current_latent, nmask, init_latent
        self.mask, self.blended_latent, self.denoiser, self.sigma = mask, blended_latent, denoiser, sigma
        self.is_final_blend = denoiser is None


class Script:
    """Derive from this in a file under `scripts/` (A1111's API; every method is optional but `title`)."""

    name = None
    section = None
    filename = None
    args_from = None
    args_to = None
    alwayson = False
    is_txt2img = False
    is_img2img = False
    tabname = None
    group = None
    create_group = True
    infotext_fields = None
    paste_field_names = None
    api_info = None
    on_before_component_elem_id = None
    on_after_component_elem_id = None
    setup_for_ui_only = False
    controls = None
    sorting_priority = 0

    def title(self) -> str:
        raise NotImplementedError

    def ui(self, is_img2img: bool):
        """The controls whose values become the arguments of the other methods, in order."""

    def show(self, is_img2img: bool):
        """True: in the Script dropdown of this tab; False: not on this tab; AlwaysVisible: always on."""
        return True

    def run(self, p, *args):
        """A selectable script's job: return a Processed (usually from processing.process_images(p))."""

    def setup(self, p, *args):
        """Before anything: `p` as the page or the API made it."""

    def before_process(self, p, *args):
        """Before the job is set up (prompts, seeds)."""

    def process(self, p, *args):
        """Prompts and seeds are fixed (p.all_prompts, p.all_seeds); nothing sampled yet."""

    def before_process_batch(self, p, *args, **kwargs):
        """Before a batch's extra networks are taken from its prompts (kwargs: batch_number, prompts, seeds...)."""

    def after_extra_networks_activate(self, p, *args, **kwargs):
        """Not called here: our extra networks are applied with the batch (see process_batch)."""

    def process_before_every_sampling(self, p, *args, **kwargs):
        """Not called here."""

    def process_batch(self, p, *args, **kwargs):
        """A batch is about to be sampled (kwargs: batch_number, prompts, seeds, subseeds)."""

    def postprocess_batch(self, p, *args, **kwargs):
        """A batch's pictures as a tensor (kwargs: images, batch_number)."""

    def postprocess_batch_list(self, p, pp: PostprocessBatchListArgs, *args, **kwargs):
        """A batch's pictures as a list of tensors; they may be replaced in `pp.images`."""

    def post_sample(self, p, ps, *args):
        """Not called here."""

    def on_mask_blend(self, p, mba: MaskBlendArgs, *args):
        """Not called here."""

    def postprocess_image(self, p, pp: PostprocessImageArgs, *args):
        """One picture before it is saved; it may be replaced in `pp.image`."""

    def postprocess_maskoverlay(self, p, ppmo: PostProcessMaskOverlayArgs, *args):
        """Not called here."""

    def postprocess_image_after_composite(self, p, pp: PostprocessImageArgs, *args):
        """Not called here."""

    def postprocess(self, p, processed, *args):
        """The job is done; `processed` is what it returns."""

    def before_hr(self, p, *args):
        """Not called here: our hires pass runs inside the job."""

    def before_component(self, component, **kwargs):
        """Called before each component of the page is made (kwargs: elem_id, label...)."""

    def after_component(self, component, **kwargs):
        """Called after each component of the page is made."""

    def on_before_component(self, callback, *, elem_id):
        """Call `callback(OnComponent)` before the component `elem_id` is made."""
        if self.on_before_component_elem_id is None:
            self.on_before_component_elem_id = []
        self.on_before_component_elem_id.append((elem_id, callback))

    def on_after_component(self, callback, *, elem_id):
        """Call `callback(OnComponent)` after the component `elem_id` is made."""
        if self.on_after_component_elem_id is None:
            self.on_after_component_elem_id = []
        self.on_after_component_elem_id.append((elem_id, callback))

    def describe(self) -> str:
        return ""

    def elem_id(self, item_id: str) -> str:
        """An element id for one of this script's controls, unique per tab (A1111's scheme)."""
        need_tabname = self.show(True) == self.show(False)
        tabkind = "img2img" if self.is_img2img else "txt2img"
        tabname = f"{tabkind}_" if need_tabname else ""
        title = re.sub(r"[^a-z_0-9]", "", re.sub(r"\s", "_", self.title().lower()))
        return f"script_{tabname}{title}_{item_id}"


class ScriptBuiltinUI(Script):
    setup_for_ui_only = True

    def elem_id(self, item_id: str) -> str:
        return f"{'img2img' if self.is_img2img else 'txt2img'}_{item_id}"


@dataclass
class OnComponent:
    component: object


ScriptFile = namedtuple("ScriptFile", ["basedir", "filename", "path"])
ScriptClassData = namedtuple("ScriptClassData", ["script_class", "path", "basedir", "module"])

scripts_data: list[ScriptClassData] = []
postprocessing_scripts_data: list[ScriptClassData] = []
load_errors: dict[str, str] = {}  # extension name (or script file) -> why it is not loaded
hook_errors: dict[str, str] = {}  # extension name (or script file) -> the last error of one of its scripts' hooks
_lock = threading.Lock()


def _owner_name(path: Path) -> str:
    return script_callbacks.extension_name(path) or path.name


def list_script_files(extensions) -> list[ScriptFile]:
    """The built-in scripts, then each active extension's `scripts/*.py`, in A1111's order."""
    found = []
    if SCRIPTS_DIR.is_dir():
        found += [ScriptFile(str(paths.REPO_ROOT), f.name, str(f)) for f in sorted(SCRIPTS_DIR.glob("*.py"))]
    for ext in extensions:
        folder = Path(ext.path) / "scripts"
        if folder.is_dir():
            found += [ScriptFile(str(ext.path), f.name, str(f)) for f in sorted(folder.glob("*.py")) if f.is_file()]
    return found


def _import_file(path: Path):
    """Import one script file as its own module, named as A1111 names it (the file's name)."""
    spec = importlib.util.spec_from_file_location(path.name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.name] = module  # dataclasses and pickling look a class's module up there
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(path.name, None)
        raise
    return module


def load_scripts(extensions=()) -> None:
    """Import the scripts of the program and of `extensions` (modules.extensions' active ones), recording each
    `Script` and `ScriptPostprocessing` subclass they define. A file that fails is reported and skipped."""
    global current_basedir
    from modules import scripts_postprocessing
    with _lock:
        scripts_data.clear()
        postprocessing_scripts_data.clear()
        load_errors.clear()
        for file in list_script_files(extensions):
            path = Path(file.path)
            saved_path = list(sys.path)
            if file.basedir != str(paths.REPO_ROOT):
                sys.path.insert(0, file.basedir)
            current_basedir = file.basedir
            try:
                with script_callbacks.loading_script(path):
                    module = _import_file(path)
                for _, cls in inspect.getmembers(module, inspect.isclass):
                    if cls.__module__ != module.__name__:
                        continue  # imported from elsewhere, e.g. Script itself
                    if issubclass(cls, Script) and cls is not Script:
                        scripts_data.append(ScriptClassData(cls, str(path), file.basedir, module))
                    elif issubclass(cls, scripts_postprocessing.ScriptPostprocessing):
                        postprocessing_scripts_data.append(ScriptClassData(cls, str(path), file.basedir, module))
            except (Exception, SystemExit) as e:  # noqa: BLE001 - any failure of someone else's file
                owner = _owner_name(path)
                load_errors[owner] = f"{path.name}: {type(e).__name__}: {e}"
                log.exception("script %s (%s) could not be loaded; left out", path, owner)
            finally:
                sys.path[:] = saved_path
                current_basedir = str(paths.REPO_ROOT)


def _instances(found: list[ScriptClassData]):
    """An instance of each script class, with its `filename`; one whose constructor fails is reported and left
    out."""
    for data in found:
        try:
            script = data.script_class()
        except Exception:  # noqa: BLE001 - someone else's class
            log.exception("script class %s of %s could not be made; left out", data.script_class, data.path)
            continue
        script.filename = data.path
        yield script


def _report(script: Script, what: str) -> None:
    log.exception("%s of script %s (%s) failed; the job goes on without it", what, script.title_safe,
                  script.filename)
    error = sys.exc_info()[1]
    owner = _owner_name(Path(script.filename or "script"))
    hook_errors[owner] = f"{script.title_safe}: {what} raised {type(error).__name__}: {error}"


def _title(script: Script) -> str:
    try:
        return str(script.title())
    except Exception:  # noqa: BLE001
        return Path(script.filename or "script").stem


class ScriptRunner:
    """The scripts of one tab (txt2img or img2img): always-on and selectable, and the list of their controls."""

    def __init__(self):
        self.scripts: list[Script] = []
        self.selectable_scripts: list[Script] = []
        self.alwayson_scripts: list[Script] = []
        self.titles: list[str] = []
        self.title_map: dict[str, Script] = {}
        self.infotext_fields: list = []
        self.paste_field_names: list = []
        self.inputs: list = [None]
        self.is_img2img = False
        self.laid_out = False
        self.dropdown = None

    def initialize_scripts(self, is_img2img: bool) -> None:
        self.__init__()
        self.is_img2img = is_img2img
        for script in _instances(scripts_data):
            script.is_txt2img = not is_img2img
            script.is_img2img = is_img2img
            script.tabname = "img2img" if is_img2img else "txt2img"
            script.title_safe = _title(script)
            try:
                visibility = script.show(is_img2img)
            except Exception:  # noqa: BLE001
                _report(script, "show()")
                continue
            if visibility is AlwaysVisible:
                script.alwayson = True
                self.alwayson_scripts.append(script)
            elif visibility:
                self.selectable_scripts.append(script)
            else:
                continue
            script.name = script.title_safe.lower()
            self.scripts.append(script)
        self.alwayson_scripts.sort(key=lambda s: getattr(s, "sorting_priority", 0))
        self.titles = [s.title_safe for s in self.selectable_scripts]
        self.title_map = {t.lower(): s for t, s in zip(self.titles, self.selectable_scripts)}

    # ---- controls
    def _create_ui(self, script: Script) -> None:
        """Build a script's controls in the current Blocks; its arguments are the span they take in `inputs`."""
        import gradio as gr
        script.args_from = len(self.inputs)
        try:
            controls = script.ui(script.is_img2img)
        except Exception:  # noqa: BLE001
            _report(script, "ui()")
            controls = None
        if controls is None:
            controls = []
        elif not isinstance(controls, list | tuple):
            controls = [controls]
        controls = [c for c in controls if isinstance(c, gr.blocks.Block)]
        script.controls = controls
        self.inputs.extend(controls)
        script.args_to = len(self.inputs)
        script.api_info = {"name": script.name, "is_img2img": script.is_img2img, "is_alwayson": script.alwayson,
                           "args": [_arg_info(c) for c in controls]}
        if script.infotext_fields:
            self.infotext_fields.extend(script.infotext_fields)
        if script.paste_field_names:
            self.paste_field_names.extend(script.paste_field_names)

    def setup_ui(self):
        """The page's script controls: always-on ones each in its section, then the Script dropdown and the
        selected script's controls. Returns every input in order (the dropdown first)."""
        import gradio as gr
        tab = "img2img" if self.is_img2img else "txt2img"
        self.inputs = [None]
        for script in self.alwayson_scripts:
            with gr.Group(elem_id=f"{tab}_script_container_{_slug(script.name)}"):
                self._create_ui(script)
        self.dropdown = gr.Dropdown(["None", *self.titles], value="None", label="Script", elem_id=f"{tab}_script")
        self.inputs[0] = self.dropdown
        groups = []
        for script in self.selectable_scripts:
            with gr.Group(visible=False, elem_id=f"{tab}_script_{_slug(script.name)}") as group:
                self._create_ui(script)
            script.group = group
            groups.append(group)

        def show_selected(title):
            return [gr.Group(visible=title == t) for t in self.titles]
        if groups:
            self.dropdown.change(show_selected, inputs=self.dropdown, outputs=groups, queue=False,
                                 api_visibility="private")
        self.laid_out = True
        return list(self.inputs)

    def lay_out_without_page(self) -> None:
        """With no page (--nowebui), build the controls once in a Blocks that is never shown, so that the scripts'
        arguments have their places and defaults for the API."""
        import gradio as gr
        if self.laid_out:
            return
        with gr.Blocks():
            self.setup_ui()

    def default_args(self) -> list:
        """Every control's initial value: what the API fills where a client gives nothing (as A1111)."""
        self.lay_out_without_page()
        return [0] + [getattr(c, "value", None) for c in self.inputs[1:]]

    # ---- running
    def selected_index(self, title) -> int:
        """0 for "None", else 1 + the script's place among the selectable ones (A1111's dropdown index)."""
        if isinstance(title, int):
            return title
        if not title or title == "None":
            return 0
        script = self.title_map.get(str(title).lower())
        return 1 + self.selectable_scripts.index(script) if script is not None else 0

    def run(self, p, *args):
        index = args[0] if args else 0
        if not index:
            return None
        script = self.selectable_scripts[index - 1]
        p.script_args_value = args
        return script.run(p, *args[script.args_from:script.args_to])

    def uses(self, method: str) -> bool:
        """Whether an always-on script has its own `method` (the job skips the work of handing it over if not)."""
        return any(getattr(type(s), method, None) is not getattr(Script, method) for s in self.alwayson_scripts)

    def _each(self, method: str, p, *extra, **kwargs) -> None:
        for script in self.alwayson_scripts:
            try:
                getattr(script, method)(p, *extra, *p.script_args[script.args_from:script.args_to], **kwargs)
            except GenerationError:  # a script refusing the request, with a message for the user: the job stops
                raise
            except Exception:  # noqa: BLE001
                _report(script, f"{method}()")

    def setup_scrips(self, p, *, is_ui: bool = True) -> None:  # A1111's spelling
        for script in self.alwayson_scripts:
            if not is_ui and script.setup_for_ui_only:
                continue
            try:
                script.setup(p, *p.script_args[script.args_from:script.args_to])
            except Exception:  # noqa: BLE001
                _report(script, "setup()")

    def before_process(self, p) -> None:
        self._each("before_process", p)

    def process(self, p) -> None:
        self._each("process", p)

    def before_process_batch(self, p, **kwargs) -> None:
        self._each("before_process_batch", p, **kwargs)

    def process_batch(self, p, **kwargs) -> None:
        self._each("process_batch", p, **kwargs)

    def postprocess(self, p, processed) -> None:
        self._each("postprocess", p, processed)

    def postprocess_batch(self, p, images, **kwargs) -> None:
        self._each("postprocess_batch", p, images=images, **kwargs)

    def postprocess_batch_list(self, p, pp, **kwargs) -> None:
        self._each("postprocess_batch_list", p, pp, **kwargs)

    def postprocess_image(self, p, pp) -> None:
        self._each("postprocess_image", p, pp)

    def before_hr(self, p) -> None:
        self._each("before_hr", p)

    # ---- carrying out a request from the page or the API
    def run_request(self, args: list, req, ctx) -> GenerationResult:
        """The job of a request with these script arguments: the selected script's run, else the usual job with the
        always-on scripts joined in."""
        p = p_from_request(req)
        p.outpath_samples = str(saving.output_folder(ctx.options, ctx.outputs_dir, f"{req.mode}-images"))
        p.outpath_grids = str(saving.output_folder(ctx.options, ctx.outputs_dir, f"{req.mode}-grids"))
        p.scripts = self
        p.script_args = tuple(args)
        ctx.state.begin(1, text=req.mode)  # the jobs a script runs count on from here (state.job_count, interrupt)
        try:
            with shared.job_context(ctx):
                self.setup_scrips(p)
                processed = self.run(p, *args)
                if processed is None:
                    processed = process_images(p)
                if not isinstance(processed, Processed):
                    script = self.selectable_scripts[args[0] - 1]
                    raise GenerationError(f"the script {script.title_safe} returned {type(processed).__name__}, not "
                                          f"the pictures it made (a Processed)")
                return result_from_processed(processed)
        finally:
            ctx.state.end()


def gr_block_type():
    import gradio as gr
    return gr.blocks.Block


def _slug(name: str | None) -> str:
    return re.sub(r"[^a-z_0-9]", "", re.sub(r"\s", "_", (name or "").lower()))


def _arg_info(component) -> dict:
    """One control as /sdapi/v1/script-info describes it (A1111's ScriptArg)."""
    choices = getattr(component, "choices", None)
    if choices:
        choices = [c[0] if isinstance(c, list | tuple) else c for c in choices]
    return {"label": getattr(component, "label", None), "value": getattr(component, "value", None),
            "minimum": getattr(component, "minimum", None), "maximum": getattr(component, "maximum", None),
            "step": getattr(component, "step", None), "choices": choices}


class PostprocessingRunner:
    """The extensions' Extras scripts (`scripts_postprocessing.ScriptPostprocessing`): their controls under the
    Extras tab's own, and each picture through their `process` after upscaling and face restoration."""

    def __init__(self):
        self.scripts: list = []
        self.inputs: list = []
        self.laid_out = False

    def initialize_scripts(self) -> None:
        self.__init__()
        for script in _instances(postprocessing_scripts_data):
            script.title_safe = script.name or Path(script.filename).stem
            self.scripts.append(script)
        self.scripts.sort(key=lambda s: getattr(s, "order", 1000))

    def setup_ui(self) -> list:
        import gradio as gr
        self.inputs = []
        for script in self.scripts:
            with gr.Group(elem_id=f"extras_script_{_slug(script.title_safe)}"):
                try:
                    controls = dict(script.ui() or {})
                except Exception:  # noqa: BLE001
                    _report(script, "ui()")
                    controls = {}
            script.controls = {k: c for k, c in controls.items() if isinstance(c, gr.blocks.Block)}
            script.args_from = len(self.inputs)
            self.inputs.extend(script.controls.values())
            script.args_to = len(self.inputs)
        self.laid_out = True
        return list(self.inputs)

    def default_values(self) -> list:
        import gradio as gr
        if not self.laid_out:
            with gr.Blocks():
                self.setup_ui()
        return [getattr(c, "value", None) for c in self.inputs]

    def postprocess(self, values: list | None):
        """What the scripts do to one picture, with the controls' `values` (None: their defaults, as the API has)."""
        if not self.scripts:
            return None
        values = list(values) if values is not None else self.default_values()

        def run(picture):
            from modules.scripts_postprocessing import PostprocessedImage
            pp = PostprocessedImage(picture.convert("RGB"))
            for stage in ("process_firstpass", "process"):
                for script in self.scripts:
                    args = dict(zip(script.controls, values[script.args_from:script.args_to]))
                    try:
                        getattr(script, stage)(pp, **args)
                    except Exception:  # noqa: BLE001
                        _report(script, f"{stage}()")
            return pp.image, {k: v for k, v in pp.info.items() if v is not None}
        return run


scripts_txt2img = ScriptRunner()
scripts_img2img = ScriptRunner()
scripts_postproc = PostprocessingRunner()
scripts_current = None  # the runner of the tab being built: its scripts hear of each component made there


def _component_event(component, kwargs: dict, when: str) -> None:
    """A component of the page is about to be made / was made: the extensions' callbacks, then the current tab's
    scripts (`before_component` / `after_component`, and those waiting for this elem_id)."""
    (script_callbacks.before_component_callback if when == "before" else script_callbacks.after_component_callback)(
        component, **kwargs)
    runner = scripts_current
    if runner is None:
        return
    elem_id = kwargs.get("elem_id")
    for script in runner.scripts:
        try:
            getattr(script, f"{when}_component")(component, **kwargs)
            waiting = script.on_before_component_elem_id if when == "before" else script.on_after_component_elem_id
            for wanted, callback in waiting or []:
                if elem_id is not None and wanted == elem_id:
                    callback(OnComponent(component=component))
        except Exception:  # noqa: BLE001
            _report(script, f"{when}_component()")


def install_component_hooks() -> None:
    """Let scripts and extensions see each component of the page as it is made, as A1111 does (once)."""
    import gradio as gr
    base = gr.components.Component
    original = base.__init__
    if getattr(original, "component_hooks", False):
        return

    def init(self, *args, **kwargs):
        _component_event(self, kwargs, "before")
        original(self, *args, **kwargs)
        _component_event(self, kwargs, "after")
    init.component_hooks = True
    base.__init__ = init


class ScriptArgsError(GenerationError, ValueError):
    """A request's script_name, script_args or alwayson_scripts that cannot be used (the API's 422)."""


def check_arguments(runner: ScriptRunner, args: list) -> None:
    """What the page's sliders and number boxes allow, for the values a client sends (any client can send any
    value): a number outside a control's range, or not a number, is refused naming the script and the control."""
    import gradio as gr
    for script in runner.scripts:
        for i, control in enumerate(script.controls or []):
            index = script.args_from + i
            if index >= len(args) or not isinstance(control, gr.Slider | gr.Number):
                continue
            value, low, high = args[index], getattr(control, "minimum", None), getattr(control, "maximum", None)
            if value is None or (low is None and high is None):
                continue
            name = f"{script.title_safe}: {getattr(control, 'label', None) or f'argument {i}'}"
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise ScriptArgsError(f"{name}: expected a number, got {value!r}")
            if (low is not None and value < low) or (high is not None and value > high):
                raise ScriptArgsError(f"{name}: {value} is out of range; give {low} to {high}")


@dataclass
class ScriptHost:
    """The scripts as the page and the API use them (they do not import this layer; webui.py hands it over)."""

    runners: dict[str, ScriptRunner] = field(default_factory=lambda: {"txt2img": scripts_txt2img,
                                                                      "img2img": scripts_img2img})

    def tab_begins(self, tab: str | None) -> None:
        """The page starts building `tab` ("txt2img", "img2img"; None: another one): its scripts hear of the
        components made there."""
        global scripts_current
        scripts_current = self.runners.get(tab) if tab else None

    def build(self, tab: str) -> list:
        """The tab's script controls in the current Blocks; the page passes their values back to `page_runner`.
        Every job then runs through the scripts' runner (`p`, the always-on scripts, the extensions' callbacks)."""
        return self.runners[tab].setup_ui()

    def page_runner(self, tab: str, values: list):
        runner = self.runners[tab]
        args = list(values)
        args[0] = runner.selected_index(args[0] if args else 0)
        check_arguments(runner, args)
        return lambda req, ctx: runner.run_request(args, req, ctx)

    def api_runner(self, tab: str, script_name: str | None, script_args: list, alwayson: dict):
        """A1111's API rules: `script_args` are the selected script's, `alwayson_scripts` maps a script's name to
        {"args": [...]}; anything not given keeps its control's default."""
        runner = self.runners[tab]
        args = runner.default_args()
        if script_name:
            script = runner.title_map.get(script_name.lower())
            if script is None:
                raise ScriptArgsError(f"Script '{script_name}' not found")
            args[script.args_from:script.args_to] = _fit(list(script_args or []), script)
            args[0] = runner.selected_index(script.title_safe)
        by_name = {s.name: s for s in runner.alwayson_scripts}
        for name, value in (alwayson or {}).items():
            key = str(name).lower()
            if key in runner.title_map:
                raise ScriptArgsError("Cannot have a selectable script in the always on scripts params")
            script = by_name.get(key)
            if script is None:
                raise ScriptArgsError(f"always on script {name} not found")
            given = value.get("args") if isinstance(value, dict) else None
            if not isinstance(given, list | tuple):
                given = []
            for i, arg in enumerate(list(given)[:script.args_to - script.args_from]):
                args[script.args_from + i] = arg
        check_arguments(runner, args)
        return lambda req, ctx: runner.run_request(args, req, ctx)

    def paste_fields(self, tab: str) -> list[tuple]:
        """(control, infotext key or function of the parameters) of the tab's scripts, for pasting an infotext."""
        return [(c, key) for c, key in self.runners[tab].infotext_fields if isinstance(c, gr_block_type())]

    def infotext_pasted(self, text: str, params: dict) -> None:
        script_callbacks.infotext_pasted_callback(text, params)

    def build_extras(self) -> list:
        """The Extras scripts' controls in the current Blocks."""
        return scripts_postproc.setup_ui()

    def extras_postprocess(self, values: list | None = None):
        """Each Extras picture through the extensions' Extras scripts (None: there are none)."""
        return scripts_postproc.postprocess(values)

    def script_names(self) -> dict[str, list[str]]:
        """Every script of each tab, always-on ones too (clients look for "controlnet" there, as in A1111)."""
        return {tab: [s.name for s in runner.scripts] for tab, runner in self.runners.items()}

    def lay_out_without_page(self) -> None:
        """With no page (--nowebui): the scripts' controls laid out once, at start, for the API's defaults."""
        for runner in self.runners.values():
            runner.lay_out_without_page()
        scripts_postproc.default_values()

    def script_info(self) -> list[dict]:
        found = []
        for runner in self.runners.values():
            runner.lay_out_without_page()
            found += [s.api_info for s in runner.scripts if s.api_info is not None]
        return found


def _fit(values: list, script: Script) -> list:
    """A selected script's arguments as given, the rest at their defaults (A1111 pads the same way)."""
    width = script.args_to - script.args_from
    defaults = [getattr(c, "value", None) for c in script.controls or []]
    return (values + defaults[len(values):])[:width]


def initialize(extensions=()) -> ScriptHost:
    """Load every script and set up both tabs' runners (webui.py, at start)."""
    load_scripts(extensions)
    scripts_txt2img.initialize_scripts(False)
    scripts_img2img.initialize_scripts(True)
    scripts_postproc.initialize_scripts()
    install_component_hooks()
    return ScriptHost()
