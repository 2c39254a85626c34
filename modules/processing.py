"""A1111's `modules.processing` for scripts and extensions: the `p` objects, `process_images(p)` and `Processed`.

A `p` carries A1111's attribute names; `process_images` turns it into our typed request and runs our one job loop
(modules/generation) with the scripts of `p` joined at A1111's points (`process`, `before_process_batch`,
`process_batch`, `postprocess_batch`, `postprocess_image`, `postprocess`). It is an adapter, not a second
pipeline.
"""
from __future__ import annotations

import json
import logging
import random
from dataclasses import MISSING, fields, replace

import numpy as np
import torch
from PIL import Image

from modules import infotext_utils, script_callbacks, shared
from modules.generation import (
    GenerationError,
    GenerationRequest,
    GenerationResult,
    Img2ImgRequest,
    Txt2ImgRequest,
    process_img2img,
    process_txt2img,
)
from modules.generation.job import Batch, Job, JobHooks
from modules.generation.requests import MAX_SEED, VERSION
from modules.options import Options, SettingError
from modules.sampling.samplers import find_sampler, sampler_and_scheduler

log = logging.getLogger(__name__)

MODEL_SETTINGS = ("sd_model_checkpoint", "sd_vae")
OPTION_NAMES = frozenset(f.name for f in fields(Options))
# A1111 lets a script give these as lists, one per picture (Prompt matrix does): p attribute -> the job's list
_PER_PICTURE = {"prompt": "all_prompts", "negative_prompt": "all_negative", "seed": "all_seeds",
                "subseed": "all_subseeds"}
# A1111's processing defaults where they differ from our page's (its API uses them too)
_A1111_DEFAULTS = {"steps": 50, "sampler_name": None, "scheduler": None, "seed_resize_from_h": -1,
                   "seed_resize_from_w": -1}
# What `p` has besides the request's fields (A1111's names), with their defaults.
_P_ONLY = {
    "outpath_samples": None, "outpath_grids": None, "do_not_save_samples": False, "do_not_save_grid": False,
    "extra_generation_params": dict, "override_settings": dict, "override_settings_restore_afterwards": True,
    "scripts": None, "script_args": (), "all_prompts": None, "all_negative_prompts": None, "all_seeds": None,
    "all_subseeds": None, "all_hr_prompts": None, "all_hr_negative_prompts": None, "prompts": None,
    "negative_prompts": None, "seeds": None, "subseeds": None, "iteration": 0, "batch_index": 0, "is_api": False,
    "disable_extra_networks": False, "user": None, "seed_enable_extras": True, "sampler_index": None,
    "s_min_uncond": 0.0, "token_merging_ratio": 0.0, "token_merging_ratio_hr": 0.0, "do_not_reload_embeddings":
    False, "paste_to": None, "color_corrections": None, "overlay_images": None, "sampler": None,
    "ddim_discretize": None, "job_timestamp": None, "cached_uc": [None, None], "cached_c": [None, None],
    "comments": dict, "refiner_checkpoint": None, "refiner_switch_at": None, "firstpass_image": None,
    "script_args_value": None, "main_prompt": None, "main_negative_prompt": None, "modified_noise": None,
}


def fix_seed(p) -> None:
    """A1111's: a seed of -1 (or None, or "") becomes a random one, on `p` itself."""
    p.seed = _fixed(p.seed)
    p.subseed = _fixed(p.subseed)


def _fixed(seed) -> int:
    if seed is None or seed == "" or int(seed) == -1:
        return int(random.randrange(MAX_SEED))
    return int(seed)


def get_fixed_seed(seed) -> int:
    return _fixed(seed)


def create_infotext(p, all_prompts=None, all_seeds=None, all_subseeds=None, comments=None, iteration=0,
                    position_in_batch=0, use_main_prompt=False, index=None, all_negative_prompts=None) -> str:
    """The parameters text of picture `index` of `p`, from its A1111 attributes (scripts write grids' texts with
    it). Our own jobs write theirs in the job loop; this one covers what a script changed on `p`."""
    index = index if index is not None else position_in_batch + iteration * p.batch_size
    prompts = all_prompts or p.all_prompts or [p.prompt]
    negatives = all_negative_prompts or p.all_negative_prompts or [p.negative_prompt]
    seeds = all_seeds or p.all_seeds or [p.seed]
    subseeds = all_subseeds or p.all_subseeds or [p.subseed]
    index = min(index, len(prompts) - 1) if not use_main_prompt else 0
    model = shared.services().models.current
    params = {
        "Steps": p.steps, "Sampler": p.sampler_name, "Schedule type": p.scheduler, "CFG scale": p.cfg_scale,
        "Seed": seeds[min(index, len(seeds) - 1)], "Size": f"{p.width}x{p.height}",
        "Model hash": model.file.shorthash if model else None, "Model": model.file.model_name if model else None,
        "Variation seed": subseeds[min(index, len(subseeds) - 1)] if p.subseed_strength else None,
        "Variation seed strength": p.subseed_strength or None,
        "Denoising strength": getattr(p, "denoising_strength", None) if isinstance(
            p, StableDiffusionProcessingImg2Img) or getattr(p, "enable_hr", False) else None,
        **(p.extra_generation_params or {}),
        "Version": VERSION,
    }
    prompt = p.main_prompt if use_main_prompt and p.main_prompt else prompts[index]
    negative = negatives[min(index, len(negatives) - 1)]
    return infotext_utils.create_infotext(prompt, negative, params)


class StableDiffusionProcessing:
    """What a script sees as `p`: A1111's attributes, made into our request by `process_images`. Unknown keyword
    arguments are kept as attributes (extensions pass some of A1111's we do not use)."""

    request_class: type[GenerationRequest] = GenerationRequest

    def __init__(self, sd_model=None, **kwargs):
        for f in fields(self.request_class):
            if f.name in ("init_images", "mask"):
                continue
            default = f.default_factory() if f.default is MISSING else f.default
            setattr(self, f.name, _A1111_DEFAULTS.get(f.name, default))
        for name, default in _P_ONLY.items():
            setattr(self, name, default() if callable(default) else default)
        self.styles = []
        self.sd_model = sd_model
        if "mask" in kwargs:  # our name; A1111's is image_mask
            kwargs["image_mask"] = kwargs.pop("mask")
        for name, value in kwargs.items():
            setattr(self, name, value)
        if self.extra_generation_params is None:
            self.extra_generation_params = {}
        if self.override_settings is None:
            self.override_settings = {}
        if self.styles is None:
            self.styles = []

    # ---- what A1111's p offers besides its fields
    @property
    def sd_model_name(self) -> str | None:
        model = shared.services().models.current
        return model.file.model_name if model else None

    @property
    def sd_model_hash(self) -> str | None:
        model = shared.services().models.current
        return model.file.shorthash if model else None

    @property
    def sd_vae_name(self) -> str | None:
        return shared.opts.sd_vae

    def setup_prompts(self) -> None:
        """`all_prompts` and `all_negative_prompts` for the job's pictures (styles applied), as A1111's."""
        ctx = shared.current_context()
        n = self.batch_size * self.n_iter
        prompt, negative = self.prompt, self.negative_prompt
        if self.styles and ctx is not None and ctx.styles is not None:
            prompt = ctx.styles.apply_to_prompt(prompt, self.styles)
            negative = ctx.styles.apply_to_negative(negative, self.styles)
        self.all_prompts = self.all_prompts or [prompt] * n
        self.all_negative_prompts = self.all_negative_prompts or [negative] * n
        self.main_prompt, self.main_negative_prompt = self.all_prompts[0], self.all_negative_prompts[0]

    def close(self) -> None:
        """A1111 frees the sampler here; ours is gone with the job."""

    def get_token_merging_ratio(self, for_hr: bool = False) -> float:
        return 0.0

    def js(self) -> str:
        return json.dumps({"prompt": self.prompt, "seed": self.seed, "width": self.width, "height": self.height})

    # ---- into our request
    def to_request(self) -> GenerationRequest:
        values = {}
        for f in fields(self.request_class):
            if f.name in ("init_images", "mask"):
                continue
            default = f.default_factory() if f.default is MISSING else f.default
            value = getattr(self, f.name, None)
            if f.name in _PER_PICTURE and isinstance(value, list):  # one per picture: the job takes the list
                value = value[0] if value else None
            values[f.name] = _as_type_of(default, value, f.name)
        values["sampler_name"] = self.sampler_name or self.sampler_index or "Euler a"
        values["scheduler"] = self.scheduler or "Automatic"
        values["sampler_name"], values["scheduler"] = sampler_and_scheduler(values["sampler_name"],
                                                                            values["scheduler"])
        values["seed"], values["subseed"] = _fixed(values["seed"]), _fixed(values["subseed"])
        values["save_images"] = not self.do_not_save_samples
        values["do_not_save_grid"] = bool(self.do_not_save_grid)
        values["styles"] = list(self.styles or [])
        return self.request_class(**values, **self._pictures())

    def _pictures(self) -> dict:
        return {}


class StableDiffusionProcessingTxt2Img(StableDiffusionProcessing):
    request_class = Txt2ImgRequest

    def __init__(self, sd_model=None, **kwargs):
        super().__init__(sd_model, **kwargs)
        self.hr_upscale_to_x = self.hr_upscale_to_y = 0
        self.is_hr_pass = False

    def to_request(self) -> Txt2ImgRequest:
        req = super().to_request()
        if req.refiner_checkpoint in ("", "None"):
            req.refiner_checkpoint = None
        return req


class StableDiffusionProcessingImg2Img(StableDiffusionProcessing):
    request_class = Img2ImgRequest

    def __init__(self, sd_model=None, init_images=None, image_mask=None, **kwargs):
        super().__init__(sd_model, **kwargs)
        self.init_images = list(init_images or [])
        self.image_mask = image_mask if image_mask is not None else getattr(self, "image_mask", None)
        self.init_latent = None
        self.image_conditioning = None
        self.latent_mask = None
        self.mask_for_overlay = None
        self.nmask = self.mask = None

    def _pictures(self) -> dict:
        pictures = [p if isinstance(p, Image.Image) else Image.fromarray(np.asarray(p)) for p in self.init_images]
        return {"init_images": pictures, "mask": self.image_mask}


def _as_type_of(default, value, name: str):
    """A value a script set on `p`, as the request field holds it (sliders hand over floats, grids give text)."""
    if value is None:
        return default
    try:
        for kind in (bool, int, float):  # bool first: it is an int too
            if isinstance(default, kind) and not isinstance(value, kind):
                return kind(float(value)) if kind is int else kind(value)
    except (TypeError, ValueError) as e:
        raise GenerationError(f"{name}: {value!r} is not a valid value") from e
    if isinstance(default, list):
        return list(value)
    return value


class Processed:
    """What `process_images` returns: the pictures and what made them, with A1111's attribute names."""

    def __init__(self, p, images_list, seed=-1, info="", subseed=None, all_prompts=None, all_negative_prompts=None,
                 all_seeds=None, all_subseeds=None, index_of_first_image=0, infotexts=None, comments=""):
        self.images = list(images_list)
        self.prompt = p.prompt
        self.negative_prompt = p.negative_prompt
        self.seed = seed
        self.subseed = subseed
        self.subseed_strength = p.subseed_strength
        self.info = info
        self.comments = comments
        self.width, self.height = p.width, p.height
        self.sampler_name = p.sampler_name
        self.cfg_scale = p.cfg_scale
        self.image_cfg_scale = getattr(p, "image_cfg_scale", None)
        self.steps = p.steps
        self.batch_size = p.batch_size
        self.restore_faces = p.restore_faces
        self.face_restoration_model = shared.opts.face_restoration_model if p.restore_faces else None
        model = shared.services().models.current
        self.sd_model_name = model.file.model_name if model else None
        self.sd_model_hash = model.file.shorthash if model else None
        self.sd_vae_name = shared.opts.sd_vae
        self.sd_vae_hash = None
        self.seed_resize_from_w, self.seed_resize_from_h = p.seed_resize_from_w, p.seed_resize_from_h
        self.denoising_strength = getattr(p, "denoising_strength", None)
        self.extra_generation_params = p.extra_generation_params
        self.index_of_first_image = index_of_first_image
        self.styles = p.styles
        self.job_timestamp = p.job_timestamp
        self.clip_skip = shared.opts.CLIP_stop_at_last_layers
        self.eta = p.eta
        self.ddim_discretize = p.ddim_discretize
        self.s_churn, self.s_tmin, self.s_tmax, self.s_noise = p.s_churn, p.s_tmin, p.s_tmax, p.s_noise
        self.s_min_uncond = p.s_min_uncond
        self.sampler_noise_scheduler_override = None
        self.is_using_inpainting_conditioning = False
        self.all_prompts = all_prompts or p.all_prompts or [self.prompt]
        self.all_negative_prompts = all_negative_prompts or p.all_negative_prompts or [self.negative_prompt]
        self.all_seeds = all_seeds or p.all_seeds or [self.seed]
        self.all_subseeds = all_subseeds or p.all_subseeds or [self.subseed]
        self.infotexts = infotexts or [info] * len(self.images)
        self.version = "0.1.0"
        self.warnings: list[str] = []
        self.interrupted = False

    def js(self) -> str:
        return json.dumps({
            "prompt": self.prompt, "all_prompts": self.all_prompts, "negative_prompt": self.negative_prompt,
            "all_negative_prompts": self.all_negative_prompts, "seed": self.seed, "all_seeds": self.all_seeds,
            "subseed": self.subseed, "all_subseeds": self.all_subseeds, "subseed_strength": self.subseed_strength,
            "width": self.width, "height": self.height, "sampler_name": self.sampler_name,
            "cfg_scale": self.cfg_scale, "steps": self.steps, "batch_size": self.batch_size,
            "restore_faces": self.restore_faces, "face_restoration_model": self.face_restoration_model,
            "sd_model_name": self.sd_model_name, "sd_model_hash": self.sd_model_hash,
            "sd_vae_name": self.sd_vae_name, "sd_vae_hash": self.sd_vae_hash,
            "seed_resize_from_w": self.seed_resize_from_w, "seed_resize_from_h": self.seed_resize_from_h,
            "denoising_strength": self.denoising_strength, "extra_generation_params": self.extra_generation_params,
            "index_of_first_image": self.index_of_first_image, "infotexts": self.infotexts, "styles": self.styles,
            "job_timestamp": self.job_timestamp, "clip_skip": self.clip_skip,
            "is_using_inpainting_conditioning": self.is_using_inpainting_conditioning, "version": self.version,
        }, default=str, ensure_ascii=False)

    def infotext(self, p, index: int) -> str:
        return self.infotexts[index] if index < len(self.infotexts) else create_infotext(p, index=index)

    def get_token_merging_ratio(self, for_hr: bool = False) -> float:
        return 0.0


class PostprocessImageArgs:
    def __init__(self, image: Image.Image):
        self.image = image


class PostprocessBatchListArgs:
    def __init__(self, images: list):
        self.images = images


def _to_tensor(picture: Image.Image) -> torch.Tensor:
    """A picture as A1111's decoded samples: 3xHxW floats in 0..1."""
    return torch.from_numpy(np.asarray(picture.convert("RGB"), dtype=np.float32) / 255.0).permute(2, 0, 1)


def _to_picture(sample) -> Image.Image:
    if isinstance(sample, Image.Image):
        return sample
    array = sample.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy() if isinstance(
        sample, torch.Tensor) else np.asarray(sample)
    return Image.fromarray((array * 255).round().astype(np.uint8))


class _CallbackSteps:
    """The extensions' on_cfg_denoiser and on_cfg_after_cfg callbacks at each model call."""

    def __init__(self, total_steps: int):
        self.total = total_steps

    def before_step(self, cfg, x, sigma, image_cond):
        params = script_callbacks.CFGDenoiserParams(x, image_cond, sigma, cfg.step, self.total, cfg.cond, cfg.uncond,
                                                    cfg)
        script_callbacks.cfg_denoiser_callback(params)
        return params.x, params.sigma, params.image_cond

    def after_cfg(self, cfg, denoised):
        params = script_callbacks.AfterCFGCallbackParams(denoised, cfg.step, self.total)
        script_callbacks.cfg_after_cfg_callback(params)
        return params.x


class ScriptHooks(JobHooks):
    """A job's scripts: the always-on scripts of `p.scripts` (and the selected one's hooks) at A1111's points,
    with `p` kept in step with the job."""

    def __init__(self, p):
        self.p = p

    def prepared(self, job: Job) -> None:
        p = self.p
        self._per_picture_lists(job)
        p.seed, p.subseed = job.seed, job.subseed
        p.all_prompts, p.all_negative_prompts = list(job.all_prompts), list(job.all_negative)
        p.all_seeds, p.all_subseeds = list(job.all_seeds), list(job.all_subseeds)
        p.main_prompt, p.main_negative_prompt = p.all_prompts[0], p.all_negative_prompts[0]
        if isinstance(p, StableDiffusionProcessingTxt2Img):
            p.all_hr_prompts = [p.hr_prompt or x for x in p.all_prompts]
            p.all_hr_negative_prompts = [p.hr_negative_prompt or x for x in p.all_negative_prompts]
        p.sd_model = shared.sd_model
        p.extra_generation_params.update(job.generation_params)
        job.generation_params = p.extra_generation_params  # what scripts add is written into the infotext
        before = self._request_values(job)
        if p.scripts is not None:
            p.scripts.process(p)
        job.control_units = list(getattr(p, "control_units", None) or [])  # ControlNets a script prepared
        total = len(job.all_prompts)
        for ours, theirs in (("all_prompts", "all_prompts"), ("all_negative", "all_negative_prompts"),
                             ("all_seeds", "all_seeds"), ("all_subseeds", "all_subseeds")):
            values = list(getattr(p, theirs) or [])
            if len(values) != total:  # a script that changes the number of pictures: A1111 would break too
                log.warning("a script set p.%s to %d entries for %d pictures; ignored", theirs, len(values), total)
                continue
            setattr(job, ours, values)
        self._request_fields_back(job, before)

    def _per_picture_lists(self, job: Job) -> None:
        """Prompts or seeds a script gave as lists (one per picture, repeated when short), styles applied."""
        p, total = self.p, len(job.all_prompts)
        styles = job.ctx.styles if job.req.styles else None
        for name, ours in _PER_PICTURE.items():
            given = getattr(p, name)
            if not isinstance(given, list) or not given:
                continue
            values = (given * total)[:total]
            if name == "prompt" and styles is not None:
                values = [styles.apply_to_prompt(x, job.req.styles) for x in values]
            elif name == "negative_prompt" and styles is not None:
                values = [styles.apply_to_negative(x, job.req.styles) for x in values]
            elif name in ("seed", "subseed"):
                values = [_fixed(x) for x in values]
            setattr(job, ours, values)
            if name in ("seed", "subseed"):
                setattr(job, name, values[0])

    def _request_values(self, job: Job) -> dict:
        """The request's fields as `p` holds them (what a script's `process` may change)."""
        return {f.name: getattr(self.p, f.name, None) for f in fields(job.req)
                if f.name not in ("init_images", "mask") and f.name not in _PER_PICTURE}

    def _request_fields_back(self, job: Job, before: dict) -> None:
        """The fields a script changed on `p` in `process` that the job reads later (steps, CFG scale, sampler...),
        checked as a request is; a change that does not fit is reported and not used."""
        changed = {k: v for k, v in self._request_values(job).items() if v != before[k] and v is not None}
        if not changed:
            return
        try:
            values = {k: _as_type_of(getattr(job.req, k), v, k) for k, v in changed.items()}
            if "sampler_name" in values or "scheduler" in values:
                        values["sampler_name"], values["scheduler"] = sampler_and_scheduler(
                    values.get("sampler_name", job.req.sampler_name), values.get("scheduler", job.req.scheduler))
            wanted = replace(job.req, **values)
            wanted.validate()
            sampler = find_sampler(wanted.sampler_name)
            if {"width", "height", "batch_size", "n_iter"} & values.keys():
                job.check_memory(wanted.width, wanted.height)
        except (GenerationError, ValueError, TypeError) as e:
            log.warning("a script's change to p is not used: %s", e)
            job.warnings.append(f"a script's change to p is not used: {e}")
            return
        for name, value in values.items():
            setattr(job.req, name, value)
        job.sampler = sampler

    def before_batch(self, job: Job, number: int, first: int, size: int) -> None:
        p = self.p
        p.iteration = number
        p.prompts = job.all_prompts[first:first + size]
        p.negative_prompts = job.all_negative[first:first + size]
        p.seeds, p.subseeds = job.all_seeds[first:first + size], job.all_subseeds[first:first + size]
        if p.scripts is not None:
            p.scripts.before_process_batch(p, batch_number=number, prompts=p.prompts, seeds=p.seeds,
                                           subseeds=p.subseeds, negative_prompts=p.negative_prompts)
            if len(p.prompts) == size:
                job.all_prompts[first:first + size] = p.prompts
            if len(p.negative_prompts) == size:
                job.all_negative[first:first + size] = p.negative_prompts

    def batch_ready(self, job: Job, batch: Batch) -> None:
        p = self.p
        p.prompts = list(batch.prompts)  # LoRA tags taken out, as A1111's after extra networks
        if p.scripts is not None:
            p.scripts.process_batch(p, batch_number=batch.number, prompts=p.prompts, seeds=p.seeds,
                                    subseeds=p.subseeds)

    def saving(self, job: Job, image: Image.Image, infotext: str) -> tuple[Image.Image, str]:
        if not script_callbacks.ordered_callbacks("before_image_saved"):
            return image, infotext
        params = script_callbacks.ImageSaveParams(image, self.p, "", {"parameters": infotext})
        script_callbacks.before_image_saved_callback(params)
        return params.image, str(params.pnginfo.get("parameters", infotext))

    def saved(self, job: Job, path, image: Image.Image, infotext: str) -> None:
        if script_callbacks.ordered_callbacks("image_saved"):
            script_callbacks.image_saved_callback(
                script_callbacks.ImageSaveParams(image, self.p, str(path), {"parameters": infotext}))

    def step_hooks(self, job: Job, total_steps: int):
        if not (script_callbacks.ordered_callbacks("cfg_denoiser") or script_callbacks.ordered_callbacks(
                "cfg_after_cfg")):
            return None
        return _CallbackSteps(total_steps)

    def batch_pictures(self, job: Job, batch: Batch, pictures: list[Image.Image]) -> list[Image.Image]:
        p = self.p
        if p.scripts is None or not pictures or not any(
                p.scripts.uses(m) for m in ("postprocess_batch", "postprocess_batch_list", "postprocess_image")):
            return pictures
        samples = torch.stack([_to_tensor(x) for x in pictures])
        originals = samples.clone()  # scripts may change the tensors in place
        p.scripts.postprocess_batch(p, samples, batch_number=batch.number)
        listed = PostprocessBatchListArgs(list(samples))
        p.scripts.postprocess_batch_list(p, listed, batch_number=batch.number)
        if len(listed.images) != len(pictures):
            log.warning("a script changed the number of pictures of a batch; its change is not used")
            listed.images = list(samples)
        changed = [x if isinstance(s, torch.Tensor) and torch.equal(s, o) else _to_picture(s)
                   for s, o, x in zip(listed.images, originals, pictures)]
        out = []
        for k, picture in enumerate(changed):
            p.batch_index = k
            pp = PostprocessImageArgs(picture)
            p.scripts.postprocess_image(p, pp)
            out.append(pp.image if isinstance(pp.image, Image.Image) else _to_picture(pp.image))
        return out


def _job_options(ctx, p):
    """The job's settings: the context's, with `p.override_settings` and `p`'s output folders."""
    overrides = {k: v for k, v in (p.override_settings or {}).items() if k not in MODEL_SETTINGS}
    if p.outpath_samples:  # the folder the whole kind of picture goes to (it wins over the per-tab one)
        overrides.setdefault("outdir_samples", str(p.outpath_samples))
    if p.outpath_grids:
        overrides.setdefault("outdir_grids", str(p.outpath_grids))
    checked = {}
    for key, value in overrides.items():
        try:
            if key in OPTION_NAMES:
                checked[key] = Options.check(key, value)
        except SettingError as e:
            log.warning("override_settings of a script: %s; not used", e)
    return replace(ctx.options, **checked) if checked else ctx.options


def process_images(p) -> Processed:
    """Generate what `p` describes, with its scripts, in the worker's turn (at once when called from a script's
    run, which has the turn already)."""
    services = shared.services()
    base = shared.current_context()
    if p.scripts is not None:
        p.scripts.before_process(p)
    models = services.models
    before = (models.options.sd_model_checkpoint, models.options.sd_vae)
    wanted = {k: v for k, v in (p.override_settings or {}).items() if k in MODEL_SETTINGS and v}

    def run(req, ctx) -> GenerationResult:
        ctx = replace(ctx, options=_job_options(ctx, p), hooks=ScriptHooks(p))
        with shared.job_context(ctx):
            if wanted.get("sd_model_checkpoint"):
                models.load(wanted["sd_model_checkpoint"])
            if wanted.get("sd_vae"):
                models.set_vae(wanted["sd_vae"])
            try:
                return process_img2img(req, ctx) if isinstance(req, Img2ImgRequest) else process_txt2img(req, ctx)
            finally:
                if wanted and p.override_settings_restore_afterwards:
                    if before[1] != models.options.sd_vae:
                        models.set_vae(before[1])
                    if before[0] and before[0] != models.options.sd_model_checkpoint:
                        models.load(before[0])

    req = p.to_request()
    result = run(req, base) if shared.in_script_job() else services.worker.run(req, runner=run)
    processed = processed_from_result(p, result)
    if p.scripts is not None:
        p.scripts.postprocess(p, processed)
    return processed


def processed_from_result(p, result: GenerationResult) -> Processed:
    images, infotexts = list(result.images), list(result.infotexts)
    first = 0
    if result.grid is not None:
        images, infotexts, first = [result.grid, *images], infotexts[:1] + infotexts, 1
    processed = Processed(p, images, seed=result.seeds[0] if result.seeds else p.seed,
                          info=result.infotexts[0] if result.infotexts else "",
                          subseed=result.subseeds[0] if result.subseeds else p.subseed,
                          all_prompts=result.all_prompts, all_negative_prompts=result.all_negative_prompts,
                          all_seeds=result.seeds, all_subseeds=result.subseeds, index_of_first_image=first,
                          infotexts=infotexts)
    processed.warnings = list(result.warnings)
    processed.interrupted = result.interrupted
    if result.extra_generation_params:  # the mode's keys too (hires, denoising, inpaint area...)
        processed.extra_generation_params = {**p.extra_generation_params, **result.extra_generation_params}
    processed.paths = list(result.paths)
    return processed


def result_from_processed(processed: Processed) -> GenerationResult:
    """A script's answer back into our result, for the page and the API: every picture it returns (grids too), each
    with its infotext."""
    texts = list(processed.infotexts) + [processed.info] * (len(processed.images) - len(processed.infotexts))
    images = [_to_picture(x) for x in processed.images]
    return GenerationResult(images, texts, list(processed.all_seeds), list(processed.all_subseeds),
                            paths=list(getattr(processed, "paths", [])),
                            warnings=list(getattr(processed, "warnings", [])),
                            interrupted=bool(getattr(processed, "interrupted", False)),
                            all_prompts=list(processed.all_prompts),
                            all_negative_prompts=list(processed.all_negative_prompts),
                            extra_generation_params=dict(processed.extra_generation_params or {}),
                            first_image=processed.index_of_first_image)


def p_from_request(req: GenerationRequest):
    """The `p` of a request from the page or the API, before its scripts see it."""
    cls = StableDiffusionProcessingImg2Img if isinstance(req, Img2ImgRequest) else StableDiffusionProcessingTxt2Img
    values = {f.name: getattr(req, f.name) for f in fields(req) if f.name not in ("init_images", "mask")}
    p = cls(**values)
    if isinstance(req, Img2ImgRequest):
        p.init_images, p.image_mask = list(req.init_images), req.mask
    p.do_not_save_samples = not req.save_images
    p.do_not_save_grid = req.do_not_save_grid
    return p
