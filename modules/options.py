"""User settings: one typed object with defaults, persisted to config.json (A1111 key names)."""
from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass
class Options:
    sd_model_checkpoint: str = ""
    sd_vae: str = "Automatic"
    sd_checkpoints_limit: int = 1  # checkpoints kept loaded in RAM at once
    fp8_storage: str = "Disable"  # Disable | Enable for SDXL | Enable
    CLIP_stop_at_last_layers: int = 1
    # conditioning
    emphasis: str = "Original"  # Original | No norm | None
    comma_padding_backtrack: int = 20
    sdxl_clip_l_skip: bool = False
    use_old_scheduling: bool = False
    # sampling
    eta_ancestral: float = 1.0
    eta_ddim: float = 0.0
    eta_noise_seed_delta: int = 0
    randn_source: str = "GPU"  # GPU | CPU
    s_churn: float = 0.0
    s_tmin: float = 0.0
    s_tmax: float = 0.0  # 0 = infinity
    s_noise: float = 1.0
    sigma_min: float = 0.0  # 0 = the model's
    sigma_max: float = 0.0
    rho: float = 0.0
    always_discard_next_to_last_sigma: bool = False
    img2img_fix_steps: bool = False
    inpainting_mask_weight: float = 1.0
    sdxl_refiner_high_aesthetic_score: float = 6.0
    sdxl_refiner_low_aesthetic_score: float = 2.5
    # saving
    samples_save: bool = True
    samples_format: str = "png"
    grid_save: bool = True
    return_grid: bool = True
    outdir_txt2img_samples: str = ""  # empty: outputs/txt2img-images
    outdir_img2img_samples: str = ""
    # user interface
    localization: str = "None"  # a file name (without .json) in localizations/
    # progress
    live_previews_enable: bool = True
    show_progress_every_n_steps: int = 10

    @classmethod
    def load(cls, path: Path) -> Options:
        """Read config.json, ignoring keys we don't know and values of the wrong type."""
        opts = cls()
        if not path.is_file():
            return opts
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            log.warning("settings file %s is unreadable (%s); using defaults", path, e)
            return opts
        for f in fields(cls):
            if f.name in data:
                value = data[f.name]
                default = getattr(opts, f.name)
                if isinstance(value, type(default)) and not (isinstance(default, int) and isinstance(value, bool)):
                    setattr(opts, f.name, value)
                else:
                    log.warning("setting %s=%r has the wrong type; keeping %r", f.name, value, default)
        return opts

    def save(self, path: Path) -> None:
        """Write settings, keeping keys of config.json that other tools put there."""
        data = {}
        if path.is_file():
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                data = {}
        data.update(asdict(self))
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=4, ensure_ascii=False), encoding="utf-8")
        os.replace(tmp, path)
