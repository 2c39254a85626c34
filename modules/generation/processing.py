"""Generation jobs: typed requests in, images with their infotext out.

The UI and the HTTP API fill the same request objects (field names as A1111's /sdapi/v1 API).
A job runs batch by batch: LoRAs from the prompt are applied, prompts are encoded (cached),
noise comes from each image's own seed, the sampler runs through the CFG denoiser, the latents
are decoded, and each image is saved with the parameters that reproduce it.
"""
from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageFilter, ImageOps, PngImagePlugin

from modules import infotext_utils
from modules.conditioning import extra_networks
from modules.generation import saving as images
from modules.sampling import rng
from modules.sampling.denoiser import CFGDenoiser, LatentMask, UNetDenoiser, sdxl_time_ids
from modules.models.detection import Family
from modules.options import Options
from modules.generation.progress import GenerationState
from modules.conditioning.text import (ConditioningCache, EncodeSettings, PromptEncoder, learned_conditioning,
                                       multicond_learned_conditioning)

log = logging.getLogger(__name__)

LATENT_UPSCALE_MODES = {
    "Latent": ("bilinear", False),
    "Latent (antialiased)": ("bilinear", True),
    "Latent (bicubic)": ("bicubic", False),
    "Latent (bicubic antialiased)": ("bicubic", True),
    "Latent (nearest)": ("nearest", False),
    "Latent (nearest-exact)": ("nearest-exact", False),
}
IMAGE_UPSCALERS = {"None": None, "Lanczos": Image.LANCZOS, "Nearest": Image.NEAREST}
RESIZE_MODES = ("Just resize", "Crop and resize", "Resize and fill", "Just resize (latent upscale)")
MASKED_CONTENT = ("fill", "original", "latent noise", "latent nothing")
VERSION = "0.1.0"


class GenerationError(Exception):
    """A request that cannot be carried out; the message is for the user."""


@dataclass
class Txt2ImgRequest:
    prompt: str = ""
    negative_prompt: str = ""
    styles: list[str] = field(default_factory=list)
    seed: int = -1
    subseed: int = -1
    subseed_strength: float = 0.0
    seed_resize_from_h: int = 0
    seed_resize_from_w: int = 0
    sampler_name: str = "DPM++ 2M"
    scheduler: str = "Automatic"
    batch_size: int = 1
    n_iter: int = 1
    steps: int = 20
    cfg_scale: float = 7.0
    width: int = 512
    height: int = 512
    tiling: bool = False
    eta: float | None = None
    s_churn: float | None = None
    s_tmin: float | None = None
    s_tmax: float | None = None
    s_noise: float | None = None
    clip_skip: int | None = None
    save_images: bool = True
    do_not_save_grid: bool = False
    # hires fix
    enable_hr: bool = False
    hr_scale: float = 2.0
    hr_upscaler: str = "Latent"
    hr_second_pass_steps: int = 0
    hr_resize_x: int = 0
    hr_resize_y: int = 0
    denoising_strength: float = 0.7
    hr_sampler_name: str | None = None
    hr_scheduler: str | None = None
    hr_prompt: str = ""
    hr_negative_prompt: str = ""
    # SDXL refiner
    refiner_checkpoint: str | None = None
    refiner_switch_at: float = 0.8

    mode = "txt2img"


@dataclass
class Img2ImgRequest(Txt2ImgRequest):
    init_images: list[Image.Image] = field(default_factory=list)
    mask: Image.Image | None = None
    mask_blur: int = 4
    inpainting_mask_invert: bool = False
    inpainting_fill: int = 1  # index into MASKED_CONTENT
    inpaint_full_res: bool = False  # "Only masked"
    inpaint_full_res_padding: int = 32
    resize_mode: int = 0  # index into RESIZE_MODES
    denoising_strength: float = 0.75
    initial_noise_multiplier: float = 1.0

    mode = "img2img"


@dataclass
class GenerationResult:
    images: list[Image.Image]
    infotexts: list[str]
    seeds: list[int]
    subseeds: list[int]
    paths: list[Path] = field(default_factory=list)
    grid: Image.Image | None = None
    warnings: list[str] = field(default_factory=list)
    interrupted: bool = False


@dataclass
class ProcessingContext:
    """What a job needs besides its request; passed explicitly, no globals."""
    models: object  # modules.models.manager.ModelManager
    options: Options
    outputs_dir: Path
    state: GenerationState
    cond_cache: ConditioningCache = field(default_factory=ConditioningCache)
    embeddings: object | None = None  # modules.conditioning.embeddings.EmbeddingDatabase
    loras: object | None = None  # modules.conditioning.lora.LoraApplier
    styles: object | None = None  # modules.conditioning.styles.StyleDatabase


# ---- helpers ---------------------------------------------------------------------------------

def _fix_seed(seed: int) -> int:
    return int(random.randrange(4294967294)) if seed is None or int(seed) == -1 else int(seed)


def _sampler(name: str):
    from modules.sampling.samplers import find_sampler
    try:
        return find_sampler(name)
    except ValueError as e:
        raise GenerationError(str(e)) from e


def _sigmas(model, denoiser: UNetDenoiser, sampler, scheduler: str, steps: int, opts: Options) -> torch.Tensor:
    from modules.sampling.schedules import get_sigmas
    try:
        sigmas = get_sigmas(scheduler, steps, denoiser.sigmas, sampler=sampler,
                            is_sdxl=model.spec.family in (Family.SDXL, Family.SDXL_REFINER),
                            sigma_min=opts.sigma_min or None, sigma_max=opts.sigma_max or None, rho=opts.rho or None)
    except ValueError as e:
        raise GenerationError(str(e)) from e
    if opts.always_discard_next_to_last_sigma and not sampler.discard_next_to_last_sigma and len(sigmas) > 2:
        sigmas = torch.cat([sigmas[:-2], sigmas[-1:]])
    return sigmas


def _total_steps(sampler, steps: int) -> int:
    """Prompt schedules count model calls: twice the steps for second-order samplers (A1111)."""
    return steps * 2 if sampler.second_order else steps


def decode(model, latent: torch.Tensor) -> list[Image.Image]:
    with model.placement.use("vae") as vae, torch.no_grad():
        dtype = model.policy.vae.compute
        x = vae.decode((latent / vae.config.scaling_factor).to(model.policy.device, dtype)).sample.float().cpu()
    x = ((x + 1) / 2).clamp(0, 1)
    arr = (x.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    return [Image.fromarray(a) for a in arr]


def encode(model, pil_images: list[Image.Image]) -> torch.Tensor:
    arr = np.stack([np.asarray(im.convert("RGB"), dtype=np.float32) / 127.5 - 1 for im in pil_images])
    x = torch.from_numpy(arr).permute(0, 3, 1, 2)
    with model.placement.use("vae") as vae, torch.no_grad():
        dist = vae.encode(x.to(model.policy.device, model.policy.vae.compute)).latent_dist
        return (dist.mean * vae.config.scaling_factor).float().cpu()


class _Tiling:
    """Seamless tiling: circular padding in every conv of the UNet and VAE while active."""

    def __init__(self, model, enabled: bool):
        self.convs = [m for part in (model.unet, model.vae) for m in part.modules()
                      if isinstance(m, torch.nn.Conv2d)] if enabled else []

    def __enter__(self):
        self.saved = [c.padding_mode for c in self.convs]
        for c in self.convs:
            c.padding_mode = "circular"

    def __exit__(self, *exc):
        for c, mode in zip(self.convs, self.saved):
            c.padding_mode = mode


# ---- the job ---------------------------------------------------------------------------------

class Job:
    """One request being carried out."""

    def __init__(self, req: Txt2ImgRequest, ctx: ProcessingContext):
        self.req = req
        self.ctx = ctx
        self.opts = ctx.options
        model = ctx.models.ensure_selected()
        if model is None:
            raise GenerationError("no checkpoint is loaded: put one into models/Stable-diffusion and pick it")
        if model.spec.is_instruct_pix2pix:
            raise GenerationError(f"{model.file.name} is an instruct-pix2pix model; generating with those is not "
                                  f"supported yet")
        self.model = model
        self.base = model  # what the infotext names, even after a switch to the refiner
        if req.width % 8 or req.height % 8 or req.width < 8 or req.height < 8:
            raise GenerationError(f"width and height must be positive multiples of 8 (got {req.width}x{req.height})")
        if req.steps < 1 or req.batch_size < 1 or req.n_iter < 1:
            raise GenerationError("steps, batch size and batch count must be at least 1")
        self.sampler = _sampler(req.sampler_name)
        self.hr_sampler = _sampler(req.hr_sampler_name) if req.enable_hr and req.hr_sampler_name not in (
            None, "", "Use same sampler") else self.sampler
        self.warnings: list[str] = []
        self.denoiser = UNetDenoiser(model)
        clip_skip = req.clip_skip if req.clip_skip is not None else self.opts.CLIP_stop_at_last_layers
        self.encode_settings = EncodeSettings(clip_skip=clip_skip, emphasis=self.opts.emphasis,
                                              comma_padding_backtrack=self.opts.comma_padding_backtrack,
                                              sdxl_clip_l_skip=self.opts.sdxl_clip_l_skip)
        self.embeddings = {}
        if ctx.embeddings is not None:
            ctx.embeddings.reload()
            self.embeddings, _skipped = ctx.embeddings.for_model(model.spec)
        self.prompt_encoder = PromptEncoder(model, self.embeddings, self.encode_settings)
        prompt, negative = req.prompt, req.negative_prompt
        if req.styles and ctx.styles is not None:
            prompt = ctx.styles.apply_to_prompt(prompt, req.styles)
            negative = ctx.styles.apply_to_negative(negative, req.styles)
        total = req.batch_size * req.n_iter
        self.seed = _fix_seed(req.seed)
        self.subseed = _fix_seed(req.subseed)
        vary = req.subseed_strength != 0
        self.all_seeds = [self.seed + (0 if vary else i) for i in range(total)]
        self.all_subseeds = [self.subseed + i for i in range(total)]
        self.all_prompts = [prompt] * total
        self.all_negative = [negative] * total
        self.applied_loras: list = []
        self.refiner_info: dict = {}

    def batches(self):
        """(batch number, first index, seeds, subseeds, prompts without LoRA tags, negatives) per batch, on the
        chosen model, with the batch's LoRAs applied; stops early when interrupted."""
        req = self.req
        for n in range(req.n_iter):
            if self.ctx.state.interrupted:
                return
            lo, hi = n * req.batch_size, (n + 1) * req.batch_size
            self.back_to_base()
            prompts = self._apply_networks(self.all_prompts[lo:hi])
            yield n, lo, self.all_seeds[lo:hi], self.all_subseeds[lo:hi], prompts, self.all_negative[lo:hi]

    def back_to_base(self) -> None:
        """After a batch finished on the refiner, the next one starts on the chosen model again."""
        if self.refiner_info:
            self.model = self.ctx.models.ensure_selected()
            self.denoiser = UNetDenoiser(self.model)
            self.prompt_encoder = PromptEncoder(self.model, self.embeddings, self.encode_settings)
            self.refiner_info = {}

    # ---- conditioning ----
    def _context_key(self) -> tuple:
        lora_key = self.ctx.loras.signature(self.model) if self.ctx.loras is not None else ()
        emb_key = tuple(sorted((name, id(e)) for name, e in self.embeddings.items()))
        return (id(self.model), self.encode_settings, emb_key, lora_key)

    def _apply_networks(self, prompts: list[str]) -> list[str]:
        cleaned, networks = extra_networks.parse_prompts(prompts)
        tags, warnings = extra_networks.lora_tags(networks.get("lora", []))
        self.warnings += warnings
        if self.ctx.loras is not None:
            from modules.conditioning.lora import LoraRequest
            self.warnings += self.ctx.loras.apply(self.model, [LoraRequest(t.name, t.te_multiplier, t.unet_multiplier)
                                                               for t in tags])
            self.applied_loras = tags
        elif tags:
            self.warnings.append("LoRA support is not available; tags ignored: "
                                 + ", ".join(t.name for t in tags))
        for kind in networks:
            if kind != "lora":
                self.warnings.append(f"unknown extra network type <{kind}:...>: ignored")
        return cleaned

    def conds(self, prompts: list[str], negatives: list[str], steps: int, hires_steps: int | None = None):
        key = self._context_key()
        uc = learned_conditioning(self.prompt_encoder, negatives, steps, hires_steps, self.opts.use_old_scheduling,
                                  is_negative=True, cache=self.ctx.cond_cache, context_key=key)
        c = multicond_learned_conditioning(self.prompt_encoder, prompts, steps, hires_steps,
                                           self.opts.use_old_scheduling, cache=self.ctx.cond_cache, context_key=key)
        return c, uc

    # ---- sampling ----
    def _sampler_kwargs(self, sampler) -> dict:
        req, opts = self.req, self.opts
        default_eta = opts.eta_ddim if sampler.name in ("DDIM", "PLMS", "UniPC") else opts.eta_ancestral
        return dict(eta=req.eta if req.eta is not None else default_eta,
                    s_churn=req.s_churn if req.s_churn is not None else opts.s_churn,
                    s_tmin=req.s_tmin if req.s_tmin is not None else opts.s_tmin,
                    s_tmax=(req.s_tmax if req.s_tmax is not None else opts.s_tmax) or float("inf"),
                    s_noise=req.s_noise if req.s_noise is not None else opts.s_noise)

    def _run_sampler(self, sampler, cfg: CFGDenoiser, x: torch.Tensor, sigmas: torch.Tensor, noise_rng,
                     seeds: list[int]) -> torch.Tensor:
        from modules.sampling.samplers import BrownianTreeNoiseSampler
        state = self.ctx.state
        if sampler.brownian_noise:
            nonzero = sigmas[sigmas > 0]
            noise_sampler = BrownianTreeNoiseSampler(x, float(nonzero.min()), float(sigmas.max()), seeds)
        else:
            noise_sampler = lambda sigma, sigma_next: noise_rng.next()  # noqa: E731
        state.begin_pass(len(sigmas) - 1)
        every = self.opts.show_progress_every_n_steps

        def callback(d):
            preview = None
            if self.opts.live_previews_enable and every > 0 and (d["i"] + 1) % every == 0:
                preview = latent_preview(self.model, d["denoised"][:1])
            state.step_done(preview)

        return sampler.function(cfg, x, sigmas, extra_args={}, callback=callback, noise_sampler=noise_sampler,
                                should_stop=lambda: state.should_stop, **self._sampler_kwargs(sampler))

    def _time_ids(self, width: int, height: int):
        if self.model.spec.family not in (Family.SDXL, Family.SDXL_REFINER):
            return None
        aesthetic = (self.opts.sdxl_refiner_high_aesthetic_score, self.opts.sdxl_refiner_low_aesthetic_score)
        return (sdxl_time_ids(self.model, width, height, False, aesthetic),
                sdxl_time_ids(self.model, width, height, True, aesthetic))

    def _image_rng(self, shape, seeds, subseeds) -> rng.ImageRNG:
        req = self.req
        return rng.ImageRNG(shape, seeds, subseeds=subseeds, subseed_strength=req.subseed_strength,
                            seed_resize_from_h=req.seed_resize_from_h, seed_resize_from_w=req.seed_resize_from_w,
                            source=self.opts.randn_source, device=torch.device("cpu"),
                            eta_noise_seed_delta=self.opts.eta_noise_seed_delta if self.sampler.uses_ensd else 0,
                            latent_scale=self.model.latent_scale)

    def txt2img_latents(self, c, uc, seeds, subseeds, image_cond=None, prompts=None, negatives=None) -> torch.Tensor:
        req = self.req
        f = self.model.latent_scale
        shape = (self.model.unet.config.out_channels, req.height // f, req.width // f)
        noise_rng = self._image_rng(shape, seeds, subseeds)
        x = noise_rng.next()
        sigmas = _sigmas(self.model, self.denoiser, self.sampler, req.scheduler, req.steps, self.opts)
        refiner = None
        if req.refiner_checkpoint and req.refiner_checkpoint != "None" and req.refiner_switch_at < 1:
            refiner = lambda cfg: self._switch_to_refiner(cfg, prompts, negatives)  # noqa: E731
        cfg = CFGDenoiser(self.denoiser, c, uc, req.cfg_scale, time_ids=self._time_ids(req.width, req.height),
                          image_cond=image_cond, refiner=refiner, refiner_switch_at=req.refiner_switch_at)
        return self._run_sampler(self.sampler, cfg, x * sigmas[0], sigmas, noise_rng, seeds)

    def _switch_to_refiner(self, cfg: CFGDenoiser, prompts: list[str], negatives: list[str]) -> None:
        """Load the refiner (without making it the user's choice) and continue with its conditioning."""
        from modules.models.checkpoint_io import CheckpointError
        try:
            refiner = self.ctx.models.load(self.req.refiner_checkpoint, remember=False)
        except CheckpointError as e:
            self.warnings.append(f"refiner not used: {e}")
            return
        self.model = refiner
        self.denoiser = UNetDenoiser(refiner)
        self.prompt_encoder = PromptEncoder(refiner, {}, self.encode_settings)
        c, uc = self.conds(prompts, negatives, _total_steps(self.sampler, self.req.steps))
        cfg.denoiser, cfg.cond, cfg.uncond = self.denoiser, c, uc
        cfg.time_ids = self._time_ids(self.req.width, self.req.height)
        self.refiner_info = {"Refiner": refiner.file.title, "Refiner switch at": self.req.refiner_switch_at}

    def img2img_latents(self, init_latent, c, uc, seeds, subseeds, steps: int, strength: float, sampler, scheduler,
                        width: int, height: int, image_cond=None, mask: LatentMask | None = None,
                        noise_multiplier: float = 1.0) -> torch.Tensor:
        """A1111's img2img step semantics: the schedule of `steps` is entered at `strength`."""
        if self.opts.img2img_fix_steps:
            t_enc = steps - 1
            steps = int(steps / min(strength, 0.999)) if strength > 0 else 0
        else:
            t_enc = int(min(strength, 0.999) * steps)
        sigmas = _sigmas(self.model, self.denoiser, sampler, scheduler, steps, self.opts)
        sigma_sched = sigmas[steps - t_enc - 1:]
        noise_rng = self._image_rng(tuple(init_latent.shape[1:]), seeds, subseeds)
        noise = noise_rng.next() * noise_multiplier
        x = init_latent + noise * sigma_sched[0]
        cfg = CFGDenoiser(self.denoiser, c, uc, self.req.cfg_scale, time_ids=self._time_ids(width, height),
                          image_cond=image_cond, mask=mask)
        return self._run_sampler(sampler, cfg, x, sigma_sched, noise_rng, seeds)

    # ---- infotext / saving ----
    def infotext(self, index: int, extra: dict | None = None, width: int | None = None,
                 height: int | None = None) -> str:
        req, opts = self.req, self.opts
        uses_vary = req.subseed_strength != 0
        params = {
            "Steps": req.steps,
            "Sampler": self.sampler.name,
            "Schedule type": req.scheduler,
            "CFG scale": req.cfg_scale,
            "Seed": self.all_seeds[index],
            "Size": f"{width or req.width}x{height or req.height}",
            "Model hash": self.base.file.shorthash,
            "Model": self.base.file.model_name,
            "FP8 weight": None if opts.fp8_storage == "Disable" else opts.fp8_storage,
            "VAE": Path(self.base.vae_file.name).name if self.base.vae_file else None,
            "Variation seed": self.all_subseeds[index] if uses_vary else None,
            "Variation seed strength": req.subseed_strength if uses_vary else None,
            "Seed resize from": f"{req.seed_resize_from_w}x{req.seed_resize_from_h}"
            if req.seed_resize_from_w > 0 and req.seed_resize_from_h > 0 else None,
            "Denoising strength": None,
            "Clip skip": self.encode_settings.clip_skip if self.encode_settings.clip_skip > 1 else None,
            "ENSD": opts.eta_noise_seed_delta if opts.eta_noise_seed_delta and self.sampler.uses_ensd else None,
            "RNG": opts.randn_source if opts.randn_source != "GPU" else None,
            "Tiling": "True" if req.tiling else None,
        }
        params.update(extra or {})
        if self.applied_loras:
            params["Lora hashes"] = ", ".join(f"{t.name}: {self.ctx.loras.short_hash(t.name)}"
                                              for t in self.applied_loras
                                              ) or None
        if opts.emphasis != "Original":
            params["Emphasis"] = opts.emphasis
        params["Version"] = VERSION
        return infotext_utils.create_infotext(self.all_prompts[index], self.all_negative[index], params)

    def save(self, image: Image.Image, index: int, infotext: str) -> Path | None:
        if not (self.req.save_images and self.opts.samples_save):
            return None
        kind = f"{self.req.mode}-images"
        custom = self.opts.outdir_txt2img_samples if self.req.mode == "txt2img" else self.opts.outdir_img2img_samples
        folder = Path(custom) if custom else images.dated_folder(self.ctx.outputs_dir, kind)
        return images.save_image(image, folder, self.all_seeds[index], infotext, self.opts.samples_format)

    def add_image(self, result: GenerationResult, image: Image.Image, index: int, infotext: str) -> None:
        """Record one finished image (and save it, if saving is on)."""
        result.images.append(image)
        result.infotexts.append(infotext)
        result.seeds.append(self.all_seeds[index])
        result.subseeds.append(self.all_subseeds[index])
        path = self.save(image, index, infotext)
        if path:
            result.paths.append(path)

    def finish(self, result: GenerationResult) -> GenerationResult:
        result.warnings = self.warnings
        result.interrupted = self.ctx.state.interrupted
        return result

    def save_grid(self, result: GenerationResult) -> None:
        if len(result.images) < 2 or not self.opts.return_grid:
            return
        result.grid = images.image_grid(result.images)
        if self.req.save_images and self.opts.grid_save and not self.req.do_not_save_grid:
            folder = images.dated_folder(self.ctx.outputs_dir, f"{self.req.mode}-grids")
            images.save_image(result.grid, folder, self.all_seeds[0], result.infotexts[0], self.opts.samples_format,
                              suffix="-grid")


# ---- txt2img ---------------------------------------------------------------------------------

def _hires_size(req: Txt2ImgRequest) -> tuple[int, int]:
    if req.hr_resize_x == 0 and req.hr_resize_y == 0:
        return int(req.width * req.hr_scale) // 8 * 8, int(req.height * req.hr_scale) // 8 * 8
    if req.hr_resize_y == 0:
        return req.hr_resize_x // 8 * 8, (req.hr_resize_x * req.height // req.width) // 8 * 8
    if req.hr_resize_x == 0:
        return (req.hr_resize_y * req.width // req.height) // 8 * 8, req.hr_resize_y // 8 * 8
    return req.hr_resize_x // 8 * 8, req.hr_resize_y // 8 * 8


def _inpaint_model_image_cond(model, latent_shape, batch: int) -> torch.Tensor | None:
    """txt2img with an inpainting model: a fully masked, grey 'masked image' (A1111)."""
    if not model.spec.is_inpainting:
        return None
    f = model.latent_scale
    h, w = latent_shape[-2] * f, latent_shape[-1] * f
    grey = encode(model, [Image.new("RGB", (w, h), (127, 127, 127))]).repeat(batch, 1, 1, 1)
    return torch.cat([torch.ones(batch, 1, h // f, w // f), grey], dim=1)


def process_txt2img(req: Txt2ImgRequest, ctx: ProcessingContext) -> GenerationResult:
    job = Job(req, ctx)
    model = job.model
    state = ctx.state
    result = GenerationResult([], [], [], [])
    hr_w, hr_h = _hires_size(req) if req.enable_hr else (req.width, req.height)
    if req.enable_hr and req.hr_upscaler not in LATENT_UPSCALE_MODES and req.hr_upscaler not in IMAGE_UPSCALERS:
        raise GenerationError(f"unknown hires upscaler {req.hr_upscaler!r}; choose one of "
                              f"{', '.join(list(LATENT_UPSCALE_MODES) + list(IMAGE_UPSCALERS))}")
    state.begin(req.n_iter * (2 if req.enable_hr else 1), text="txt2img")
    try:
        with _Tiling(model, req.tiling):
            for n, lo, seeds, subseeds, prompts, negatives in job.batches():
                model = job.model
                state.begin_pass(req.steps, job_no=n * (2 if req.enable_hr else 1))
                c, uc = job.conds(prompts, negatives, _total_steps(job.sampler, req.steps))
                f = model.latent_scale
                image_cond = _inpaint_model_image_cond(model, (req.height // f, req.width // f), len(seeds))
                latent = job.txt2img_latents(c, uc, seeds, subseeds, image_cond, prompts, negatives)
                extra = dict(job.refiner_info)
                if req.enable_hr and not state.should_stop:
                    latent, extra = _hires_pass(job, latent, prompts, negatives, seeds, subseeds, hr_w, hr_h,
                                                n * 2 + 1)
                if state.skipped and not state.interrupted:
                    continue
                w, h = (hr_w, hr_h) if req.enable_hr else (req.width, req.height)
                for k, image in enumerate(decode(job.model, latent)):
                    job.add_image(result, image, lo + k, job.infotext(lo + k, extra, w, h))
        job.save_grid(result)
    finally:
        state.end()
    return job.finish(result)


def _hires_pass(job: Job, latent, prompts, negatives, seeds, subseeds, width: int, height: int, job_no: int):
    req, model = job.req, job.model
    steps = req.hr_second_pass_steps or req.steps
    extra = {"Denoising strength": req.denoising_strength, "Hires upscale": req.hr_scale
             if not (req.hr_resize_x or req.hr_resize_y) else None,
             "Hires resize": f"{width}x{height}" if (req.hr_resize_x or req.hr_resize_y) else None,
             "Hires steps": req.hr_second_pass_steps or None, "Hires upscaler": req.hr_upscaler}
    if req.hr_upscaler in LATENT_UPSCALE_MODES:
        mode, antialias = LATENT_UPSCALE_MODES[req.hr_upscaler]
        f = model.latent_scale
        latent = F.interpolate(latent, size=(height // f, width // f), mode=mode, antialias=antialias)
    else:
        pics = decode(model, latent)
        resample = IMAGE_UPSCALERS[req.hr_upscaler]
        if resample is not None:
            pics = [p.resize((width, height), resample) for p in pics]
        latent = encode(model, pics)
    hr_prompts = [req.hr_prompt] * len(prompts) if req.hr_prompt else prompts
    hr_negatives = [req.hr_negative_prompt] * len(negatives) if req.hr_negative_prompt else negatives
    if req.hr_prompt:
        extra["Hires prompt"] = req.hr_prompt
        hr_prompts = job._apply_networks(hr_prompts)
    if req.hr_negative_prompt:
        extra["Hires negative prompt"] = req.hr_negative_prompt
    if job.hr_sampler is not job.sampler:
        extra["Hires sampler"] = job.hr_sampler.name
    scheduler = req.hr_scheduler if req.hr_scheduler not in (None, "", "Use same scheduler") else req.scheduler
    if scheduler != req.scheduler:
        extra["Hires schedule type"] = scheduler
    job.ctx.state.begin_pass(steps, job_no=job_no)
    c, uc = job.conds(hr_prompts, hr_negatives, _total_steps(job.sampler, req.steps),
                      hires_steps=_total_steps(job.hr_sampler, steps))
    image_cond = _inpaint_model_image_cond(model, latent.shape, latent.shape[0])
    latent = job.img2img_latents(latent, c, uc, seeds, subseeds, steps, req.denoising_strength, job.hr_sampler,
                                 scheduler, width, height, image_cond=image_cond)
    return latent, extra


# ---- img2img ---------------------------------------------------------------------------------

def resize_image(mode: int, im: Image.Image, width: int, height: int) -> Image.Image:
    """A1111's resize modes: 0 just resize, 1 crop and resize, 2 resize and fill (3: as 0, latent side)."""
    if mode in (0, 3):
        return im.resize((width, height), Image.LANCZOS)
    ratio, src_ratio = width / height, im.width / im.height
    if mode == 1:
        src_w = width if ratio > src_ratio else im.width * height // im.height
        src_h = height if ratio <= src_ratio else im.height * width // im.width
        resized = im.resize((src_w, src_h), Image.LANCZOS)
        out = Image.new("RGB", (width, height))
        out.paste(resized, box=(width // 2 - src_w // 2, height // 2 - src_h // 2))
        return out
    src_w = width if ratio < src_ratio else im.width * height // im.height
    src_h = height if ratio >= src_ratio else im.height * width // im.width
    resized = im.resize((src_w, src_h), Image.LANCZOS)
    out = Image.new("RGB", (width, height))
    out.paste(resized, box=(width // 2 - src_w // 2, height // 2 - src_h // 2))
    if ratio < src_ratio:
        fill = height // 2 - src_h // 2
        if fill > 0:
            out.paste(resized.resize((width, fill), box=(0, 0, width, 0)), box=(0, 0))
            out.paste(resized.resize((width, fill), box=(0, resized.height, width, resized.height)),
                      box=(0, fill + src_h))
    elif ratio > src_ratio:
        fill = width // 2 - src_w // 2
        if fill > 0:
            out.paste(resized.resize((fill, height), box=(0, 0, 0, height)), box=(0, 0))
            out.paste(resized.resize((fill, height), box=(resized.width, 0, resized.width, height)),
                      box=(fill + src_w, 0))
    return out


def _masked_region(mask: Image.Image, padding: int) -> tuple[int, int, int, int] | None:
    box = mask.getbbox()
    if box is None:
        return None
    x1, y1, x2, y2 = box
    return (max(x1 - padding, 0), max(y1 - padding, 0), min(x2 + padding, mask.width), min(y2 + padding, mask.height))


def _prepare_mask(req: Img2ImgRequest, init: Image.Image) -> Image.Image | None:
    mask = req.mask
    if mask is None and init.mode == "RGBA" and init.getextrema()[3][0] < 255:
        mask = Image.eval(init.getchannel("A"), lambda a: 255 - a)  # transparent pixels get painted
    if mask is None:
        return None
    mask = mask.convert("L")
    if mask.size != init.size:
        mask = mask.resize(init.size, Image.LANCZOS)
    if req.inpainting_mask_invert:
        mask = ImageOps.invert(mask)
    return mask


def process_img2img(req: Img2ImgRequest, ctx: ProcessingContext) -> GenerationResult:
    if not req.init_images:
        raise GenerationError("img2img needs an input image")
    job = Job(req, ctx)
    model, state = job.model, ctx.state
    result = GenerationResult([], [], [], [])
    init_src = req.init_images[0]
    if req.denoising_strength <= 0:  # nothing to do: the input is the result (A1111 would still take one step)
        image = resize_image(req.resize_mode, init_src.convert("RGB"), req.width, req.height)
        text = job.infotext(0, {"Denoising strength": 0})
        return GenerationResult([image], [text], job.all_seeds[:1], job.all_subseeds[:1],
                                [p for p in [job.save(image, 0, text)] if p])
    mask_full = _prepare_mask(req, init_src)
    state.begin(req.n_iter, text="img2img")
    try:
        with _Tiling(model, req.tiling):
            for n, lo, seeds, subseeds, prompts, negatives in job.batches():
                state.begin_pass(req.steps, job_no=n)
                images_out = _img2img_batch(job, init_src, mask_full, prompts, negatives, seeds, subseeds)
                if state.skipped and not state.interrupted:
                    continue
                for k, image in enumerate(images_out):
                    index = lo + k
                    extra = {"Denoising strength": req.denoising_strength}
                    if mask_full is not None:
                        extra.update({"Mask blur": req.mask_blur,
                                      "Masked content": None if req.inpainting_fill == 1
                                      else MASKED_CONTENT[req.inpainting_fill],
                                      "Inpaint area": "Only masked" if req.inpaint_full_res else None,
                                      "Masked area padding": req.inpaint_full_res_padding
                                      if req.inpaint_full_res else None})
                    job.add_image(result, image, index, job.infotext(index, extra))
        job.save_grid(result)
    finally:
        state.end()
    return job.finish(result)


def _img2img_batch(job: Job, init_src: Image.Image, mask_full: Image.Image | None, prompts, negatives, seeds,
                   subseeds) -> list[Image.Image]:
    req, model = job.req, job.model
    w, h = req.width, req.height
    init = resize_image(req.resize_mode if req.resize_mode != 3 else 0, init_src.convert("RGB"), w, h)
    mask = None
    crop_box = None
    if mask_full is not None:
        mask = resize_image(req.resize_mode if req.resize_mode != 3 else 0, mask_full.convert("RGB"), w, h).convert("L")
        original, original_mask = init, mask
        if req.mask_blur > 0:
            mask = mask.filter(ImageFilter.GaussianBlur(req.mask_blur))
        if req.inpaint_full_res:
            crop_box = _masked_region(original_mask, req.inpaint_full_res_padding)
            if crop_box is not None:
                init = init.crop(crop_box).resize((w, h), Image.LANCZOS)
                mask = mask.crop(crop_box).resize((w, h), Image.LANCZOS)
        if req.inpainting_fill == 0:  # fill: smear surrounding colours into the hole
            init = _fill_masked(init, mask)
    batch = len(seeds)
    init_latent = encode(model, [init]).repeat(batch, 1, 1, 1)
    latent_mask = None
    image_cond = None
    noise_multiplier = req.initial_noise_multiplier
    if mask is not None:
        f = model.latent_scale
        m = torch.from_numpy(np.asarray(mask.resize((w // f, h // f), Image.LANCZOS), dtype=np.float32) / 255)
        m = m.round()[None, None].repeat(batch, 1, 1, 1)  # 1 = paint here
        if req.inpainting_fill == 2:  # latent noise
            noise = rng.ImageRNG(tuple(init_latent.shape[1:]), seeds).next()
            init_latent = init_latent * (1 - m) + noise * m
        elif req.inpainting_fill == 3:  # latent nothing
            init_latent = init_latent * (1 - m)
        latent_mask = LatentMask(init_latent, 1 - m)
        if model.spec.is_inpainting:
            weight = job.opts.inpainting_mask_weight
            masked = np.asarray(init, dtype=np.float32) * (1 - np.asarray(mask, dtype=np.float32)[..., None] / 255 * weight)
            masked_latent = encode(model, [Image.fromarray(masked.round().astype(np.uint8))]).repeat(batch, 1, 1, 1)
            image_cond = torch.cat([m, masked_latent], dim=1)
    elif model.spec.is_inpainting:
        masked_latent = init_latent
        f = model.latent_scale
        image_cond = torch.cat([torch.zeros(batch, 1, h // f, w // f), masked_latent], dim=1)
    c, uc = job.conds(prompts, negatives, _total_steps(job.sampler, req.steps))
    latent = job.img2img_latents(init_latent, c, uc, seeds, subseeds, req.steps, req.denoising_strength, job.sampler,
                                 req.scheduler, w, h, image_cond=image_cond, mask=latent_mask,
                                 noise_multiplier=noise_multiplier)
    out = decode(model, latent)
    if mask is None:
        return out
    # paste back: unmasked pixels stay exactly what they were
    results = []
    for image in out:
        if crop_box is not None:
            x1, y1, x2, y2 = crop_box
            patch = image.resize((x2 - x1, y2 - y1), Image.LANCZOS)
            full = original.copy()
            full.paste(patch, (x1, y1))
            image = full
        blurred = original_mask.filter(ImageFilter.GaussianBlur(req.mask_blur)) if req.mask_blur > 0 else original_mask
        results.append(Image.composite(image, original, blurred))
    return results


def _fill_masked(image: Image.Image, mask: Image.Image) -> Image.Image:
    """Masked content 'fill': replace the masked area with blurred surrounding colours."""
    keep = ImageOps.invert(mask.point(lambda v: 255 if v > 127 else 0))
    out = image.copy()
    for radius in (256, 64, 16, 4, 1):
        blurred = Image.composite(image, image, keep).filter(ImageFilter.GaussianBlur(radius))
        out = Image.composite(out, blurred, keep)
        keep = keep.filter(ImageFilter.MaxFilter(3))
    return out


# ---- previews --------------------------------------------------------------------------------

def latent_preview(model, latent: torch.Tensor) -> Image.Image:
    """A cheap latent-to-RGB picture (no extra weights): a linear map fitted once per model."""
    from modules.sampling.preview import preview_image
    return preview_image(model, latent)


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def process_img2img_folder(req: Img2ImgRequest, ctx: ProcessingContext, input_dir: Path, output_dir: Path | None,
                           mask_dir: Path | None = None) -> GenerationResult:
    """img2img "Batch" tab: every picture of a folder, with a same-named mask from `mask_dir` if there
    is one, saved under its own name into `output_dir` (or the usual outputs when empty).
    Unreadable files are reported and skipped."""
    from dataclasses import replace

    files = sorted(p for p in Path(input_dir).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) \
        if Path(input_dir).is_dir() else []
    if not files:
        raise GenerationError(f"no images found in {input_dir}")
    total = GenerationResult([], [], [], [])
    for path in files:
        if ctx.state.interrupted:
            break
        try:
            with Image.open(path) as im:
                image = im.copy()
            mask = None
            if mask_dir is not None:
                candidates = [m for m in Path(mask_dir).glob(path.stem + ".*") if m.suffix.lower() in IMAGE_SUFFIXES]
                if candidates:
                    with Image.open(candidates[0]) as m:
                        mask = m.copy()
        except OSError as e:
            total.warnings.append(f"{path.name}: not a readable image ({e}); skipped")
            continue
        res = process_img2img(replace(req, init_images=[image], mask=mask, save_images=output_dir is None
                                      and req.save_images), ctx)
        for k, out in enumerate(res.images):
            if output_dir is not None:
                Path(output_dir).mkdir(parents=True, exist_ok=True)
                name = path.stem + (f"-{k}" if len(res.images) > 1 else "") + ".png"
                meta = PngImagePlugin.PngInfo()
                meta.add_text("parameters", res.infotexts[k])
                out.save(Path(output_dir) / name, pnginfo=meta)
                total.paths.append(Path(output_dir) / name)
        total.images += res.images
        total.infotexts += res.infotexts
        total.seeds += res.seeds
        total.subseeds += res.subseeds
        total.paths += res.paths
        total.warnings += res.warnings
    total.interrupted = ctx.state.interrupted
    return total
