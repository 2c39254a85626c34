"""User settings: one typed object with defaults, persisted to config.json (A1111 key names).

Each setting's constraints (its type, the default's; choices; a range) sit on its field, and `Options.check`
applies them for every writer: the API's set_options and override_settings, the Settings page, and load.
"""
from __future__ import annotations

import logging
import math
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from modules import user_files

log = logging.getLogger(__name__)

RANDN_SOURCES = ("GPU", "CPU")
SAMPLE_FORMATS = ("png", "jpg", "jpeg", "webp", "avif")
EMPHASIS_MODES = ("Original", "No norm", "None")
FP8_MODES = ("Disable", "Enable for SDXL", "Enable")
INFOTEXT_STYLES = ("Ignore", "Apply", "Discard", "Apply if any")
# Gradio's built-in themes: a theme from the Hub would need a download.
FACE_RESTORERS = ("CodeFormer", "GFPGAN", "RestoreFormer")  # A1111's two, and RestoreFormer (a GFPGAN-folder file)
GRADIO_THEMES = ("Default", "Base", "Citrus", "Glass", "Monochrome", "Ocean", "Origin", "Soft")
# "Disable all extensions": none, "extra" (all but the built-in ones) or all (A1111's values).
EXTENSION_SWITCH_OFF = ("none", "extra", "all")

# The Settings tab's sections, in A1111's order and with its ids (the page's `settings_<id>` tabs).
SECTIONS: dict[str, str] = {
    "saving-images": "Saving images/grids",
    "saving-paths": "Paths for saving",
    "saving-to-dirs": "Saving to a directory",
    "upscaling": "Upscaling",
    "face-restoration": "Face restoration",
    "sd": "Stable Diffusion",
    "sdxl": "Stable Diffusion XL",
    "vae": "VAE",
    "img2img": "img2img",
    "optimizations": "Optimizations",
    "compatibility": "Compatibility",
    "ui": "User interface",
    "infotext": "Infotext",
    "live-previews": "Live previews",
    "sampler-params": "Sampler parameters",
    "hidden": "",  # kept in config.json and the API, not shown
}


def _setting(default: Any, label: str, section: str, info: str = "", *, choices: tuple[str, ...] | None = None,
             minimum: float | None = None, maximum: float | None = None, file_name: bool = False,
             needs_reload: bool = False) -> Any:
    """One setting: its default, A1111's label and section, and the constraints `Options.check` applies.
    `file_name`: a name looked up in a folder, with no separators, so it cannot point elsewhere. `choices` of a
    list setting constrain its items. `needs_reload`: the page shows a change only after a reload."""
    metadata = {"label": label, "section": section, "info": info, "choices": choices, "minimum": minimum,
                "maximum": maximum, "file_name": file_name, "needs_reload": needs_reload}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class Options:
    # ---- saving images/grids
    samples_save: bool = _setting(True, "Always save all generated images", "saving-images")
    samples_format: str = _setting("png", "File format for images", "saving-images", choices=SAMPLE_FORMATS)
    samples_filename_pattern: str = _setting(
        "", "Images filename pattern", "saving-images",
        "tags such as [seed], [prompt_spaces], [model_name], [datetime<%Y%m%d>]; empty: [seed]")
    save_images_add_number: bool = _setting(True, "Add number to filename when saving", "saving-images")
    grid_save: bool = _setting(True, "Always save all generated image grids", "saving-images")
    grid_format: str = _setting("png", "File format for grids", "saving-images", choices=SAMPLE_FORMATS)
    grid_extended_filename: bool = _setting(False, "Add extended info (seed, prompt) to filename when saving grid",
                                            "saving-images")
    grid_only_if_multiple: bool = _setting(True, "Do not save grids consisting of one picture", "saving-images")
    grid_prevent_empty_spots: bool = _setting(False, "Prevent empty spots in grid (when set to autodetect)",
                                              "saving-images")
    n_rows: int = _setting(-1, "Grid row count; use -1 for autodetect and 0 for it to be same as batch size",
                           "saving-images", minimum=-1, maximum=16)
    enable_pnginfo: bool = _setting(True, "Save text information about generation parameters as chunks to png files",
                                    "saving-images", "in JPEG and WebP files: as EXIF")
    save_txt: bool = _setting(False, "Create a text file next to every image with generation parameters.",
                              "saving-images")
    save_mask: bool = _setting(False, "For inpainting, save a copy of the greyscale mask", "saving-images")
    save_mask_composite: bool = _setting(False, "For inpainting, save a masked composite", "saving-images")
    jpeg_quality: int = _setting(80, "Quality for saved jpeg images", "saving-images", minimum=1, maximum=100)
    webp_lossless: bool = _setting(False, "Use lossless compression for webp images", "saving-images")
    save_selected_only: bool = _setting(True, "When using 'Save' button, only save a single selected image",
                                        "saving-images")
    save_init_img: bool = _setting(False, "Save init images when using img2img", "saving-images")
    # ---- paths (relative ones are inside the data folder)
    outdir_samples: str = _setting("", "Output directory for images; if empty, defaults to three directories below",
                                   "saving-paths")
    outdir_txt2img_samples: str = _setting("outputs/txt2img-images", "Output directory for txt2img images",
                                           "saving-paths")
    outdir_img2img_samples: str = _setting("outputs/img2img-images", "Output directory for img2img images",
                                           "saving-paths")
    outdir_extras_samples: str = _setting("outputs/extras-images", "Output directory for images from extras tab",
                                          "saving-paths")
    outdir_grids: str = _setting("", "Output directory for grids; if empty, defaults to two directories below",
                                 "saving-paths")
    outdir_txt2img_grids: str = _setting("outputs/txt2img-grids", "Output directory for txt2img grids",
                                         "saving-paths")
    outdir_img2img_grids: str = _setting("outputs/img2img-grids", "Output directory for img2img grids",
                                         "saving-paths")
    outdir_save: str = _setting("log/images", "Directory for saving images using the Save button", "saving-paths")
    outdir_init_images: str = _setting("outputs/init-images", "Directory for saving init images when using img2img",
                                       "saving-paths")
    # ---- saving to a directory
    save_to_dirs: bool = _setting(True, "Save images to a subdirectory", "saving-to-dirs")
    grid_save_to_dirs: bool = _setting(True, "Save grids to a subdirectory", "saving-to-dirs")
    use_save_to_dirs_for_ui: bool = _setting(False, 'When using "Save" button, save images to a subdirectory',
                                             "saving-to-dirs")
    directories_filename_pattern: str = _setting("[date]", "Directory name pattern", "saving-to-dirs",
                                                 "tags as in the file name pattern; / makes nested folders")
    directories_max_prompt_words: int = _setting(8, "Max prompt words for [prompt_words] pattern", "saving-to-dirs",
                                                 minimum=1, maximum=20)
    # ---- upscaling
    ESRGAN_tile: int = _setting(192, "Tile size for ESRGAN upscalers.", "upscaling",
                                "0 = no tiling; model upscalers work tile by tile, which bounds their device memory",
                                minimum=0, maximum=512)
    ESRGAN_tile_overlap: int = _setting(8, "Tile overlap for ESRGAN upscalers.", "upscaling",
                                        "Low values = visible seam", minimum=0, maximum=48)
    upscaler_for_img2img: str = _setting("None", "Upscaler for img2img", "upscaling",
                                         "enlarges img2img's input picture to the chosen size; None: Lanczos")
    # ---- face restoration
    face_restoration: bool = _setting(False, "Restore faces", "face-restoration",
                                      "will use a third-party model on generation result to reconstruct faces")
    face_restoration_model: str = _setting("CodeFormer", "Face restoration model", "face-restoration",
                                           "its file goes in models/Codeformer or models/GFPGAN",
                                           choices=FACE_RESTORERS)
    code_former_weight: float = _setting(0.5, "CodeFormer weight", "face-restoration",
                                         "0 = maximum effect; 1 = minimum effect", minimum=0, maximum=1)
    face_restoration_unload: bool = _setting(False, "Move face restoration model from VRAM into RAM after processing",
                                             "face-restoration")
    # ---- Stable Diffusion
    # the checkpoint and VAE names are checked by the model manager, which knows the files
    sd_model_checkpoint: str = _setting("", "Stable Diffusion checkpoint", "sd")
    sd_checkpoints_limit: int = _setting(1, "Maximum number of checkpoints loaded at the same time", "sd",
                                         minimum=1, maximum=10)
    CLIP_stop_at_last_layers: int = _setting(1, "Clip skip", "sd", "ignore the last layers of CLIP; 1 ignores none",
                                             minimum=1, maximum=12)
    emphasis: str = _setting("Original", "Emphasis mode", "sd",
                             "how (text:1.1) is applied: Original normalises the result; No norm does not",
                             choices=EMPHASIS_MODES)
    comma_padding_backtrack: int = _setting(20, "Prompt word wrap length limit", "sd",
                                            "in tokens: text shorter than this that does not fit the 75-token chunk "
                                            "moves to the next one at a comma", minimum=0, maximum=74)
    randn_source: str = _setting("GPU", "Random number generator source", "sd",
                                 "CPU gives the same pictures on every kind of graphics card", choices=RANDN_SOURCES)
    # ---- SDXL
    sdxl_clip_l_skip: bool = _setting(False, "Clip skip for SDXL's CLIP-L too", "sdxl")
    sdxl_refiner_low_aesthetic_score: float = _setting(2.5, "SDXL low aesthetic score", "sdxl",
                                                       "used for the refiner's negative prompt", minimum=0, maximum=10)
    sdxl_refiner_high_aesthetic_score: float = _setting(6.0, "SDXL high aesthetic score", "sdxl",
                                                        "used for the refiner's prompt", minimum=0, maximum=10)
    # ---- VAE
    sd_vae: str = _setting("Automatic", "SD VAE", "vae",
                           "Automatic: a VAE named like the checkpoint, else the checkpoint's own")
    # ---- img2img
    inpainting_mask_weight: float = _setting(1.0, "Inpainting conditioning mask strength", "img2img",
                                             minimum=0, maximum=1)
    img2img_color_correction: bool = _setting(False, "Apply color correction to img2img results to match original "
                                              "colors", "img2img", "keeps repeated img2img passes from drifting in "
                                              "colour")
    img2img_fix_steps: bool = _setting(False, "With img2img, do exactly the amount of steps the slider specifies",
                                       "img2img", "normally fewer are done with less denoising")
    # ---- optimizations
    fp8_storage: str = _setting("Disable", "FP8 weight", "optimizations",
                                "store the UNet's weights in 8 bits: less memory, slower steps", choices=FP8_MODES)
    # ---- compatibility
    use_old_scheduling: bool = _setting(False, "Use old prompt editing timelines", "compatibility",
                                        "first pass and hires fix share one timeline; < 1 is relative, >= 1 absolute")
    # ---- user interface
    localization: str = _setting("None", "Localization", "ui", file_name=True, needs_reload=True)
    quicksettings_list: list = _setting(["sd_model_checkpoint", "sd_vae"], "Quicksettings list", "ui",
                                        "settings shown at the top of the page rather than in this tab",
                                        needs_reload=True)
    hidden_tabs: list = _setting([], "Hidden UI tabs", "ui", needs_reload=True)
    gradio_theme: str = _setting("Default", "Gradio theme", "ui", "Gradio's built-in themes, applied when the "
                                 "program starts; --theme dark/light picks the colours", choices=GRADIO_THEMES)
    return_grid: bool = _setting(True, "Show grid in results for web", "ui")
    send_seed: bool = _setting(True, "Send seed when sending prompt or image to other interface", "ui")
    send_size: bool = _setting(True, "Send size when sending prompt or image to another interface", "ui")
    show_progress_in_title: bool = _setting(True, "Show generation progress in window title", "ui")
    notification_audio: bool = _setting(True, "Play notification sound after image generation", "ui",
                                        "notification.mp3 must be in the program's folder", needs_reload=True)
    notification_volume: int = _setting(100, "Notification sound volume", "ui", "in %", minimum=0, maximum=100)
    disable_token_counters: bool = _setting(False, "Disable prompt token counters", "ui", needs_reload=True)
    # ---- live previews
    live_previews_enable: bool = _setting(True, "Show live previews of the created image", "live-previews")
    show_progress_every_n_steps: int = _setting(10, "Live preview display period", "live-previews",
                                                "in sampling steps; 0 = off", minimum=0, maximum=1000)
    # ---- sampler parameters
    eta_ddim: float = _setting(0.0, "Eta for DDIM", "sampler-params", minimum=0, maximum=1)
    eta_ancestral: float = _setting(1.0, "Eta for k-diffusion samplers", "sampler-params",
                                    "noise multiplier of ancestral and SDE samplers", minimum=0, maximum=1)
    s_churn: float = _setting(0.0, "sigma churn", "sampler-params", minimum=0, maximum=100)
    s_tmin: float = _setting(0.0, "sigma tmin", "sampler-params", minimum=0, maximum=10)
    s_tmax: float = _setting(0.0, "sigma tmax", "sampler-params", "0 = infinity", minimum=0, maximum=999)
    s_noise: float = _setting(1.0, "sigma noise", "sampler-params", minimum=0, maximum=1.1)
    sigma_min: float = _setting(0.0, "sigma min", "sampler-params", "0 = the model's", minimum=0, maximum=1000)
    sigma_max: float = _setting(0.0, "sigma max", "sampler-params", "0 = the model's", minimum=0, maximum=1000)
    rho: float = _setting(0.0, "rho", "sampler-params", "0 = the schedule's default", minimum=0, maximum=100)
    eta_noise_seed_delta: int = _setting(0, "Eta noise seed delta", "sampler-params", "ENSD",
                                         minimum=0, maximum=2**32 - 1)
    always_discard_next_to_last_sigma: bool = _setting(False, "Always discard next-to-last sigma", "sampler-params")
    # ---- infotext
    disable_weights_auto_swap: bool = _setting(True, "Disregard checkpoint information from pasted infotext",
                                               "infotext", "when reading generation parameters from text into UI")
    # ---- hidden
    sd_checkpoint_hash: str = _setting("", "SHA256 hash of the current checkpoint", "hidden")
    # set on the Extensions tab
    disabled_extensions: list = _setting([], "Disable these extensions", "hidden")
    disable_all_extensions: str = _setting("none", "Disable all extensions (preserves the list of disabled extensions)",
                                           "hidden", choices=EXTENSION_SWITCH_OFF)

    @classmethod
    def check(cls, name: str, value: Any) -> Any:
        """`value` as setting `name` holds it (an int for an int setting given 3.0), or SettingError naming
        the setting and what is wrong."""
        spec = _FIELDS.get(name)
        if spec is None:
            raise SettingError(name, "no such setting")
        default = _default(spec)
        if isinstance(default, list):
            return _check_list(spec, value)
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
                    log.warning("%s: %s; using the default %r", path, e, _default(spec))
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
PATH_SETTINGS = frozenset({"samples_filename_pattern", "directories_filename_pattern", "outdir_samples",
                           "outdir_txt2img_samples", "outdir_img2img_samples", "outdir_extras_samples", "outdir_grids",
                           "outdir_txt2img_grids", "outdir_img2img_grids", "outdir_save", "outdir_init_images"})


def choices_of(name: str) -> tuple[str, ...] | None:
    """The fixed set of values of a setting, if it has one."""
    return _FIELDS[name].metadata.get("choices")


def info_of(name: str) -> dict[str, Any]:
    """A setting's label, section, hint and whether the page needs a reload to show a change."""
    return _FIELDS[name].metadata


def _default(spec) -> Any:
    return spec.default_factory() if spec.default is MISSING else spec.default


def _check_list(spec, value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise SettingError(spec.name, f"expected a list of names, got {value!r}")
    if spec.name == "quicksettings_list" and (unknown := [v for v in value if v not in _FIELDS]):
        raise SettingError(spec.name, f"no such setting: {', '.join(unknown)}")
    return list(value)
