"""A1111's `modules.shared`: the process-wide names extensions read (`opts`, `state`, `cmd_opts`, `sd_model`,
`sd_upscalers`, `device`...).

This is the one module with global state, because A1111's extensions expect it; our own code passes the services
explicitly. `bind(services, args)` points it at the running program once at start-up. Within a script's run,
`opts` reads the job's copy of the settings (with the request's override_settings).
"""
from __future__ import annotations

import logging
import math
import threading
from argparse import Namespace
from dataclasses import fields as dataclass_fields
from pathlib import Path
from typing import Any

from modules import shared_services, user_files
from modules.options import Options, SettingError

log = logging.getLogger(__name__)


cmd_opts = Namespace()
demo = None  # the Gradio page, once built (A1111 sets it too)
hide_dirs = {"visible": True}  # A1111 passes these to gr components that show folders
total_tqdm = None
parallel_processing_allowed = True
OPTION_NAMES = frozenset(f.name for f in dataclass_fields(Options))


class OptionInfo:
    """An extension's setting, as A1111 declares it: `shared.opts.add_option(key, shared.OptionInfo(default, label,
    gr.Slider, {"minimum": 0}, section=("my-ext", "My extension")))`."""

    def __init__(self, default=None, label="", component=None, component_args=None, onchange=None, section=None,
                 refresh=None, comment_before="", comment_after="", infotext=None, restrict_api=False,
                 category_id=None):
        self.default = default
        self.label = label
        self.component = component
        self.component_args = component_args
        self.onchange = onchange
        self.section = section
        self.category_id = category_id
        self.refresh = refresh
        self.do_not_save = False
        self.comment_before = comment_before
        self.comment_after = comment_after
        self.infotext = infotext
        self.restrict_api = restrict_api

    def link(self, label: str, url: str) -> OptionInfo:
        self.comment_before += f"[<a href='{url}' target='_blank'>{label}</a>]"
        return self

    def js(self, label: str, js_func: str) -> OptionInfo:
        self.comment_before += f"[<a onclick='{js_func}(); return false'>{label}</a>]"
        return self

    def info(self, info: str) -> OptionInfo:
        self.comment_after += f"<span class='info'>({info})</span>"
        return self

    def html(self, html: str) -> OptionInfo:
        self.comment_after += html
        return self

    def needs_restart(self) -> OptionInfo:
        self.comment_after += " <span class='info'>(requires restart)</span>"
        return self

    def needs_reload_ui(self) -> OptionInfo:
        self.comment_after += " <span class='info'>(requires Reload UI)</span>"
        return self


class OptionHTML(OptionInfo):
    """A block of text in the Settings page (A1111's), not a setting."""

    def __init__(self, text: str):
        super().__init__(str(text).strip(), label="", component=None)
        self.do_not_save = True


def options_section(section_identifier: tuple, options_dict: dict) -> dict:
    """Put every OptionInfo of `options_dict` into one Settings section (A1111's helper)."""
    for value in options_dict.values():
        if len(section_identifier) == 2:
            value.section = section_identifier
        elif len(section_identifier) == 3:
            value.section = section_identifier[0:2]
            value.category_id = section_identifier[2]
    return options_dict


class _Opts:
    """A1111's `shared.opts`: attribute access to our settings by their A1111 keys, plus the settings extensions add
    with `add_option`, saved in config.json beside ours."""

    def __init__(self):
        object.__setattr__(self, "data_labels", {})  # extension settings: key -> OptionInfo
        object.__setattr__(self, "extension_values", {})
        object.__setattr__(self, "_onchange", {})
        object.__setattr__(self, "_lock", threading.Lock())

    @property
    def options(self) -> Options:
        """The settings this thread should see: a script job's copy, else the program's."""
        if shared_services.in_script_job():
            return shared_services.current_context().options
        return shared_services.services().options

    @property
    def data(self) -> dict[str, Any]:
        """Every setting's current value by key (A1111 extensions read `opts.data.get(key, default)`)."""
        options = self.options
        return {**{name: getattr(options, name) for name in OPTION_NAMES}, **self.extension_values}

    def __getattr__(self, name: str):
        if name in OPTION_NAMES:
            return getattr(self.options, name)
        if name in self.extension_values:
            return self.extension_values[name]
        if name in self.data_labels:
            return self.data_labels[name].default
        raise AttributeError(f"no setting named {name!r}")

    def __setattr__(self, name: str, value) -> None:
        self.set(name, value)

    def set(self, key: str, value, is_api: bool = False, run_callbacks: bool = True) -> bool:
        """Change a setting; False when it is unknown or the value does not fit. Our settings are checked as from the
        API; an extension's are stored as given."""
        old = self.data.get(key)
        if key in OPTION_NAMES:
            try:
                setattr(self.options, key, Options.check(key, value))
            except SettingError as e:
                log.warning("an extension set %s", e)
                return False
        elif key in self.data_labels:
            self.extension_values[key] = value
        else:
            return False
        if run_callbacks and old != value and key in self._onchange:
            try:
                self._onchange[key]()
            except Exception:
                log.exception("the onchange callback of setting %s failed", key)
        return True

    def get_default(self, key: str):
        if key in self.data_labels:
            return self.data_labels[key].default
        spec = next((f for f in dataclass_fields(Options) if f.name == key), None)
        return None if spec is None else getattr(Options(), key)

    def add_option(self, key: str, info: OptionInfo) -> None:
        """An extension's setting: its value comes from config.json when saved there before, else its default."""
        if key in OPTION_NAMES:
            log.warning("an extension declared setting %s, which exists already; kept as it is", key)
            return
        with self._lock:
            self.data_labels[key] = info
            if key not in self.extension_values:
                saved = _saved_config().get(key, info.default) if not info.do_not_save else info.default
                self.extension_values[key] = saved
        if info.onchange is not None:
            self._onchange[key] = info.onchange

    def onchange(self, key: str, func, call: bool = True) -> None:
        self._onchange[key] = func
        if call:
            func()

    def save(self, filename: str | None = None) -> None:
        """Write ours and the extensions' settings to config.json."""
        if not shared_services.bound():
            return
        shared_services.services().save_settings()
        save_extension_settings()

    def same_type(self, x, y) -> bool:
        return x is None or y is None or type(x) is type(y)

    def dumpjson(self) -> str:
        import json
        return json.dumps(self.data, default=str)


def _config_file() -> Path | None:
    return shared_services.services().paths.config_file if shared_services.bound() else None


def _saved_config() -> dict:
    path = _config_file()
    return user_files.read_json_object(path) if path is not None and path.is_file() else {}


def save_extension_settings() -> None:
    """The extensions' settings into config.json, keeping everything else in it."""
    path = _config_file()
    values = {k: v for k, v in opts.extension_values.items() if not opts.data_labels[k].do_not_save}
    if path is None or not values:
        return
    with user_files.locked(path):
        data = user_files.read_json_object(path)
        data.update(values)
        user_files.write_json(path, data)


class ExtensionSettings:
    """The settings extensions declared (`opts.add_option`), as the Settings page and /sdapi/v1/options show and
    change them. Values are kept as the extension's default's type allows."""

    def keys(self) -> list[str]:
        return [k for k, info in opts.data_labels.items() if not info.do_not_save]

    def restricted(self, key: str) -> bool:
        """An extension marked the setting as not to be changed through the API (A1111's restrict_api)."""
        return bool(opts.data_labels[key].restrict_api)

    def values(self) -> dict:
        return {k: getattr(opts, k) for k in self.keys()}

    def info(self, key: str) -> OptionInfo:
        return opts.data_labels[key]

    def sections(self) -> list[tuple[str, list[str]]]:
        """(section title, keys) in the order extensions declared them."""
        found: dict[str, list[str]] = {}
        for key in self.keys():
            section = opts.data_labels[key].section
            title = section[1] if isinstance(section, tuple | list) and len(section) > 1 else "Other"
            found.setdefault(str(title), []).append(key)
        return list(found.items())

    def check(self, key: str, value):
        """`value` as the setting holds it; ValueError when its type does not fit the default's."""
        default = opts.data_labels[key].default
        if isinstance(default, bool):
            if not isinstance(value, bool):
                raise ValueError(f"setting {key}: expected true or false, got {value!r}")
        elif isinstance(default, int | float):
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise ValueError(f"setting {key}: expected a finite number, got {value!r}")
            value = type(default)(value) if isinstance(default, float) or value == int(value) else value
        elif isinstance(default, str) and not isinstance(value, str):
            raise ValueError(f"setting {key}: expected text, got {value!r}")
        elif isinstance(default, list | tuple) and not (
                isinstance(value, list) and all(isinstance(v, str | int | float | bool) for v in value)):
            raise ValueError(f"setting {key}: expected a list, got {value!r}")
        elif isinstance(default, dict) and not isinstance(value, dict):
            raise ValueError(f"setting {key}: expected an object, got {value!r}")
        elif default is None and not isinstance(value, str | int | float | bool | type(None)):
            raise ValueError(f"setting {key}: expected a plain value, got {value!r}")
        return value

    def set(self, key: str, value) -> None:
        opts.set(key, self.check(key, value))

    def save(self) -> None:
        save_extension_settings()


extension_settings = ExtensionSettings()


class _State:
    """A1111's `shared.state`, read and written by scripts: the running job's progress, interrupt and skip."""

    @property
    def _progress(self):
        ctx = shared_services.current_context()
        return ctx.state if ctx is not None else None

    @property
    def interrupted(self) -> bool:
        return bool(self._progress and self._progress.interrupted)

    @property
    def skipped(self) -> bool:
        return bool(self._progress and self._progress.skipped)

    @property
    def stopping_generation(self) -> bool:
        return self.interrupted

    @property
    def job_count(self) -> int:
        return self._progress.job_count if self._progress else 0

    @job_count.setter
    def job_count(self, value: int) -> None:
        if self._progress:
            self._progress.set_job_count(int(value))

    @property
    def job_no(self) -> int:
        return self._progress.job_no if self._progress else 0

    @job_no.setter
    def job_no(self, value: int) -> None:  # scripts count batches themselves at times; next_job does it for us
        pass

    @property
    def sampling_step(self) -> int:
        return self._progress.step[0] if self._progress else 0

    @property
    def sampling_steps(self) -> int:
        return self._progress.step[1] if self._progress else 0

    @property
    def textinfo(self) -> str:
        return self._progress.text if self._progress else ""

    @textinfo.setter
    def textinfo(self, value: str) -> None:
        if self._progress:
            self._progress.set_text(str(value or ""))

    @property
    def job(self) -> str:
        return self.textinfo

    @job.setter
    def job(self, value: str) -> None:
        self.textinfo = value

    current_image = None
    server_start = None

    def interrupt(self) -> None:
        if self._progress:
            self._progress.interrupt()

    def skip(self) -> None:
        if self._progress:
            self._progress.skip()

    def nextjob(self) -> None:
        if self._progress:
            self._progress.next_job()

    def begin(self, job: str = "(unknown)") -> None:
        """Begun by the program for every job; a script has nothing to do here."""

    def end(self) -> None:
        """Ended by the program for every job."""

    def set_current_image(self) -> None:
        """Live previews are made by the job itself."""

    def assign_current_image(self, image) -> None:
        """Live previews are made by the job itself."""


opts = _Opts()
state = _State()


def bind(services, args: Namespace | None = None) -> None:
    """Point this module at the running program (webui.py, once; tests, for each set of services)."""
    global cmd_opts
    shared_services.bind(services)
    if args is not None:
        cmd_opts = args


job_context = shared_services.job_context
in_script_job = shared_services.in_script_job
current_context = shared_services.current_context
services = shared_services.services


def __getattr__(name: str):
    """Names whose value changes while the program runs (A1111 keeps them as plain globals)."""
    if name == "sd_model":
        from modules import sd_models
        return sd_models.current_model()
    if name == "sd_upscalers":
        from modules import upscaler
        return upscaler.sd_upscalers()
    if name == "device":
        return services().models.policy.device
    if name in ("models_path", "data_path", "script_path"):
        from modules import paths_internal
        return getattr(paths_internal, name)
    if name == "interrogator":
        raise AttributeError("the CLIP interrogator is not available here")
    raise AttributeError(f"module 'modules.shared' has no attribute {name!r}")
