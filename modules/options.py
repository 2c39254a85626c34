"""User settings: one typed object with defaults, persisted to config.json (A1111 key names).

Each setting's constraints (its type, the default's; choices; a range) sit on its field, and `Options.check`
applies them for every writer: the API's set_options and override_settings, the Settings page, and load.
"""
from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from modules import user_files

log = logging.getLogger(__name__)

RANDN_SOURCES = ("GPU", "CPU")
SAMPLE_FORMATS = ("png", "jpg", "jpeg", "webp", "avif")
EMPHASIS_MODES = ("Original", "No norm", "None")
FP8_MODES = ("Disable", "Enable for SDXL", "Enable")


def _choice(default: str, choices: tuple[str, ...]) -> Any:
    return field(default=default, metadata={"choices": choices})


def _number(default: float, minimum: float | None = None, maximum: float | None = None) -> Any:
    return field(default=default, metadata={"minimum": minimum, "maximum": maximum})


def _file_name(default: str) -> Any:
    """A name looked up in a folder: no separators, so it cannot point elsewhere."""
    return field(default=default, metadata={"file_name": True})


@dataclass
class Options:
    # the checkpoint and VAE names are checked by the model manager, which knows the files
    sd_model_checkpoint: str = ""
    sd_vae: str = "Automatic"
    sd_checkpoints_limit: int = _number(1, 1, 10)  # checkpoints kept loaded in RAM at once
    fp8_storage: str = _choice("Disable", FP8_MODES)
    CLIP_stop_at_last_layers: int = _number(1, 1, 12)
    # conditioning
    emphasis: str = _choice("Original", EMPHASIS_MODES)
    comma_padding_backtrack: int = _number(20, 0, 74)
    sdxl_clip_l_skip: bool = False
    use_old_scheduling: bool = False
    # sampling
    eta_ancestral: float = _number(1.0, 0, 1)
    eta_ddim: float = _number(0.0, 0, 1)
    eta_noise_seed_delta: int = _number(0, 0, 2**32 - 1)
    randn_source: str = _choice("GPU", RANDN_SOURCES)
    s_churn: float = _number(0.0, 0, 100)
    s_tmin: float = _number(0.0, 0, 10)
    s_tmax: float = _number(0.0, 0, 999)  # 0 = infinity
    s_noise: float = _number(1.0, 0, 1.1)
    sigma_min: float = _number(0.0, 0, 1000)  # 0 = the model's
    sigma_max: float = _number(0.0, 0, 1000)
    rho: float = _number(0.0, 0, 100)
    always_discard_next_to_last_sigma: bool = False
    img2img_fix_steps: bool = False
    inpainting_mask_weight: float = _number(1.0, 0, 1)
    sdxl_refiner_high_aesthetic_score: float = _number(6.0, 0, 10)
    sdxl_refiner_low_aesthetic_score: float = _number(2.5, 0, 10)
    # saving
    samples_save: bool = True
    samples_format: str = _choice("png", SAMPLE_FORMATS)
    grid_save: bool = True
    return_grid: bool = True
    outdir_txt2img_samples: str = ""  # empty: outputs/txt2img-images
    outdir_img2img_samples: str = ""
    # user interface
    localization: str = _file_name("None")  # a file name (without .json) in localizations/
    # progress
    live_previews_enable: bool = True
    show_progress_every_n_steps: int = _number(10, 0, 1000)

    @classmethod
    def check(cls, name: str, value: Any) -> Any:
        """`value` as setting `name` holds it (an int for an int setting given 3.0), or SettingError naming
        the setting and what is wrong."""
        spec = _FIELDS.get(name)
        if spec is None:
            raise SettingError(name, "no such setting")
        default = spec.default
        if isinstance(default, bool):
            if not isinstance(value, bool):
                raise SettingError(name, f"expected true or false, got {value!r}")
            return value
        if isinstance(default, int | float):
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise SettingError(name, f"expected a finite number, got {value!r}")
            if isinstance(default, int):
                if value != int(value):
                    raise SettingError(name, f"expected a whole number, got {value!r}")
                value = int(value)
            else:
                value = float(value)
            low, high = spec.metadata.get("minimum"), spec.metadata.get("maximum")
            if (low is not None and value < low) or (high is not None and value > high):
                raise SettingError(name, f"{value!r} is outside {low}..{high}")
            return value
        if not isinstance(value, str):
            raise SettingError(name, f"expected text, got {value!r}")
        choices = spec.metadata.get("choices")
        if choices and value not in choices:
            raise SettingError(name, f"{value!r} is not one of {', '.join(choices)}")
        if spec.metadata.get("file_name") and ("/" in value or "\\" in value or value.startswith(".")):
            raise SettingError(name, f"{value!r} is not a plain file name")
        return value

    @classmethod
    def load(cls, path: Path) -> Options:
        """Read config.json. A file that is not a JSON object is kept as config.json.bad-<date>; a value that
        does not fit its setting is reported and the default kept; keys we don't know are ignored."""
        opts = cls()
        user_files.remove_leftover_temp_files(path)  # once at start, not on every save's re-read
        data = user_files.read_json_object(path)
        for name, spec in _FIELDS.items():
            if name in data:
                try:
                    setattr(opts, name, cls.check(name, data[name]))
                except SettingError as e:
                    log.warning("%s: %s; using the default %r", path, e, spec.default)
        return opts

    def save(self, path: Path) -> None:
        """Write settings, keeping keys of config.json that other tools put there (re-read under the file's
        lock, so a concurrent writer's keys survive). A full disk raises user_files.DiskFullError."""
        with user_files.locked(path):
            data = user_files.read_json_object(path)
            data.update(asdict(self))
            user_files.write_json(path, data)


class SettingError(ValueError):
    def __init__(self, name: str, problem: str):
        super().__init__(f"setting {name}: {problem}")
        self.name = name


_FIELDS = {f.name: f for f in fields(Options)}

# Settings that name places on disk: read-only from the page and the API with --hide-ui-dir-config
# (A1111's restricted_opts).
PATH_SETTINGS = frozenset({"outdir_txt2img_samples", "outdir_img2img_samples"})


def choices_of(name: str) -> tuple[str, ...] | None:
    """The fixed set of values of a setting, if it has one."""
    return _FIELDS[name].metadata.get("choices")
