"""One generation loop for every mode.

A job runs batch by batch: LoRAs from the prompt are applied, prompts are encoded (cached), noise
comes from each image's own seed, the sampler runs through the CFG denoiser (switching to the
refiner when asked), and each finished image is saved with the parameters that reproduce it.
A mode (txt2img, img2img) only supplies how one batch is sampled: `Mode.sample_batch`.
"""
from __future__ import annotations

import contextlib
import logging
import random
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Protocol

import psutil
import torch
from PIL import Image

from modules import infotext_utils, prompt_parser, user_files
from modules.conditioning import extra_networks
from modules.conditioning.text import (
    ConditioningCache,
    EncodeSettings,
    PromptEncoder,
    learned_conditioning,
    multicond_learned_conditioning,
)
from modules.generation import saving
from modules.generation.filenames import FilenameGenerator, NameInfo
from modules.generation.progress import GenerationState
from modules.generation.requests import VERSION, GenerationError, GenerationRequest, GenerationResult, check_prompt
from modules.models.checkpoint_io import CheckpointError
from modules.options import Options
from modules.postprocessing.face_restoration import FaceRestorers, RestorerError
from modules.postprocessing.upscalers import Upscalers
from modules.sampling import preview, rng
from modules.sampling.denoiser import CFGDenoiser, ControlSet, ControlUnit, LatentMask, StepHooks, UNetDenoiser
from modules.sampling.samplers import BrownianTreeNoiseSampler, SamplerInfo, find_sampler
from modules.sampling.schedules import find_scheduler, get_sigmas

log = logging.getLogger(__name__)


class JobHooks:
    """Where scripts and extensions join a job, at the points of A1111's Script methods. These do nothing; the
    compatibility layer (modules/processing.py) gives a job its own through `ProcessingContext.hooks`."""

    def prepared(self, job: Job) -> None:
        """Prompts (styles applied), seeds and sampler fixed, nothing sampled yet (A1111's `process`). May change
        the job's `all_prompts`, `all_negative`, `all_seeds`, `all_subseeds` and `generation_params`."""

    def before_batch(self, job: Job, number: int, first: int, size: int) -> None:
        """Before batch `number` (pictures `first` to `first + size`) takes its LoRA tags out of its prompts
        (`before_process_batch`); may still change the job's prompt and seed lists."""

    def batch_ready(self, job: Job, batch: Batch) -> None:
        """The batch's LoRAs are applied; sampling starts next (`process_batch`)."""

    def batch_pictures(self, job: Job, batch: Batch, pictures: list[Image.Image]) -> list[Image.Image]:
        """The batch's finished pictures before they are saved (`postprocess_batch`, `postprocess_image`)."""
        return pictures

    def saving(self, job: Job, image: Image.Image, infotext: str) -> tuple[Image.Image, str]:
        """A picture about to be written, with its infotext (A1111's before_image_saved); what to write."""
        return image, infotext

    def saved(self, job: Job, path: Path, image: Image.Image, infotext: str) -> None:
        """A picture was written to `path` (A1111's image_saved)."""

    def step_hooks(self, job: Job, total_steps: int) -> StepHooks | None:
        """What runs at each model call of a sampling pass of `total_steps` (None: nothing)."""
        return None


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
    upscalers: Upscalers = field(default_factory=lambda: Upscalers([]))  # the resamplers only, unless given
    face_restorers: FaceRestorers | None = None
    hooks: JobHooks = field(default_factory=JobHooks)  # a job's scripts; none unless the job has some


@dataclass(frozen=True)
class Batch:
    """One batch of a job: its number, the index of its first image, and per image seeds and prompts
    (LoRA tags taken out and applied)."""
    number: int
    first: int
    seeds: list[int]
    subseeds: list[int]
    prompts: list[str]
    negatives: list[str]


@dataclass
class BatchOutput:
    """What a mode made of one batch: finished pictures, the infotext parameters only this mode knows,
    and the size to record (None: the request's)."""
    images: list[Image.Image]
    params: dict = field(default_factory=dict)
    size: tuple[int, int] | None = None


class Mode(Protocol):
    name: str  # shown in the progress bar: "txt2img"
    passes_per_batch: int  # sampling passes per batch, for progress

    def sample_batch(self, job: Job, batch: Batch) -> BatchOutput: ...


@dataclass(frozen=True)
class RefinerSwitch:
    checkpoint: str
    switch_at: float  # fraction of the steps after which the refiner takes over


DECODER_TENSORS_ALIVE = 4  # input, normalised, convolved and residual activations of a decoder block
BYTES_PER_KEPT_PIXEL = 3 * 3  # RGB, plus its encoded copies in the answer (PNG, base64)


def free_memory(device: torch.device) -> int:
    """Bytes a job can still allocate on `device`: free GPU memory plus what torch holds unused, or free RAM."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    return psutil.virtual_memory().available


def fix_seed(seed: int | None) -> int:
    return int(random.randrange(4294967294)) if seed is None or int(seed) == -1 else int(seed)


def sampler_by_name(name: str) -> SamplerInfo:
    try:
        return find_sampler(name)
    except ValueError as e:
        raise GenerationError(str(e)) from e


def model_calls(sampler: SamplerInfo, steps: int) -> int:
    """Prompt schedules count model calls: twice the steps for second-order samplers (A1111)."""
    return steps * 2 if sampler.second_order else steps


class SeamlessTiling:
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


class Job:
    """One request being carried out: what every mode shares."""

    def __init__(self, req: GenerationRequest, ctx: ProcessingContext):
        req.validate()
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
        self.check_memory(req.width, req.height)
        self.sampler = sampler_by_name(req.sampler_name)
        self.warnings: list[str] = []
        self.face_restorer = self._chosen_face_restorer()
        self.generation_params: dict = {}  # infotext keys added on the way (A1111's extra_generation_params)
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
            check_prompt("prompt (with its styles)", prompt)
            check_prompt("negative_prompt (with its styles)", negative)
        total = req.batch_size * req.n_iter
        self.seed = fix_seed(req.seed)
        self.subseed = fix_seed(req.subseed)
        vary = req.subseed_strength != 0
        self.all_seeds = [self.seed + (0 if vary else i) for i in range(total)]
        self.all_subseeds = [self.subseed + i for i in range(total)]
        self.all_prompts = [prompt] * total
        self.all_negative = [negative] * total
        self.applied_loras: list = []
        self.refiner_info: dict = {}
        self.control_units: list[ControlUnit] = []  # ControlNets guiding every sampling pass (set by a script)
        ctx.hooks.prepared(self)

    def check_memory(self, width: int, height: int) -> None:
        """Refuse a size and batch whose decoding cannot fit before starting, rather than exhausting memory.

        The estimate is the VAE decoder's widest stage: per pixel of the batch, its full-resolution channels,
        a few tensors of them alive at once. The pictures of the whole job are held until the answer too."""
        req, model = self.req, self.model
        device = model.policy.device
        channels = model.spec.vae_config["block_out_channels"][0]
        element = torch.empty((), dtype=model.policy.vae.compute).element_size()
        decode = req.batch_size * width * height * channels * element * DECODER_TENSORS_ALIVE
        free = free_memory(device)
        if decode > free:
            raise GenerationError(f"width/height/batch_size: {width}x{height} x {req.batch_size} needs about "
                                  f"{decode / 2**30:.1f} GiB to decode; {free / 2**30:.1f} GiB is free on {device}")
        kept = req.batch_size * req.n_iter * width * height * BYTES_PER_KEPT_PIXEL
        ram = free_memory(torch.device("cpu"))
        if kept > ram:
            raise GenerationError(f"n_iter/batch_size: {req.n_iter} x {req.batch_size} pictures of {width}x{height} "
                                  f"need about {kept / 2**30:.1f} GiB to hold; {ram / 2**30:.1f} GiB of RAM is free")

    def _chosen_face_restorer(self) -> str | None:
        """The restorer's name when the job restores faces (the request's restore_faces, else the setting). Without
        its model file the job goes on without it, saying so (as for a missing LoRA)."""
        restore = self.req.restore_faces if self.req.restore_faces is not None else self.opts.face_restoration
        if not restore:
            return None
        name = self.opts.face_restoration_model
        try:
            if self.ctx.face_restorers is None:
                raise RestorerError("face restoration is not available")
            self.ctx.face_restorers.model(name)
        except RestorerError as e:
            self.warnings.append(f"restore_faces: {e}; faces were not restored")
            log.warning("%s", self.warnings[-1])
            return None
        return name

    def decode(self, latent: torch.Tensor) -> list[Image.Image]:
        """The finished pictures of a batch: decoded, then faces restored when the job asks for it (before img2img's
        colour correction and paste-back, and for interrupted pictures too, as A1111). A restorer that fails is
        reported and left off for the rest of the job; the pictures are kept."""
        pictures = self.model.decode_latents(latent)
        if self.face_restorer is None:
            return pictures
        restorers = self.ctx.face_restorers
        try:
            return [restorers.restore(self.face_restorer, picture, codeformer_weight=self.opts.code_former_weight)
                    for picture in pictures]
        except RestorerError as e:
            self.warnings.append(f"restore_faces: {e}; faces were not restored")
            log.error("%s", self.warnings[-1])
            self.face_restorer = None  # the infotext no longer claims it
            return pictures
        finally:
            if self.opts.face_restoration_unload:
                restorers.offload()

    # ---- the loop ----
    def run(self, mode: Mode) -> GenerationResult:
        """Every batch through `mode`, each finished image recorded with its infotext, then the grid."""
        req, state = self.req, self.ctx.state
        result = GenerationResult([], [], [], [])
        state.begin(req.n_iter * mode.passes_per_batch, text=mode.name)
        try:
            with contextlib.ExitStack() as self._tiling:
                self._tiled: set[int] = set()
                self._tile(self.model)
                for batch in self.batches():
                    out = mode.sample_batch(self, batch)
                    if state.skipped and not state.interrupted:
                        continue
                    out.images = self.ctx.hooks.batch_pictures(self, batch, out.images)
                    params = {**self.refiner_info, **out.params}
                    result.extra_generation_params = {k: v for k, v in {**params, **self.generation_params}.items()
                                                      if v is not None}
                    width, height = out.size or (req.width, req.height)
                    for k, image in enumerate(out.images):
                        index = batch.first + k
                        self.add_image(result, image, index, self.infotext(index, params, width, height))
            self.save_grid(result)
            self.remember_parameters(result)
        finally:
            state.end()
        result.warnings = self.warnings
        result.interrupted = state.interrupted
        return result

    def batches(self):
        """Each batch on the chosen model with its LoRAs applied; stops early when interrupted."""
        req = self.req
        for n in range(req.n_iter):
            if self.ctx.state.interrupted:
                return
            lo, hi = n * req.batch_size, (n + 1) * req.batch_size
            self.back_to_base()
            self.ctx.hooks.before_batch(self, n, lo, req.batch_size)
            prompts = self.apply_networks(self.all_prompts[lo:hi])
            batch = Batch(n, lo, self.all_seeds[lo:hi], self.all_subseeds[lo:hi], prompts, self.all_negative[lo:hi])
            self.ctx.hooks.batch_ready(self, batch)
            yield batch

    def _tile(self, model) -> None:
        """Tiling on `model` until the job ends: the chosen model, the refiner, and the chosen model again when it
        was reloaded after the refiner pushed it out."""
        if self.req.tiling and id(model) not in self._tiled:
            self._tiled.add(id(model))
            self._tiling.enter_context(SeamlessTiling(model, True))

    def back_to_base(self) -> None:
        """After a batch finished on the refiner or the hires checkpoint, the next one starts on the chosen model
        again."""
        if self.refiner_info or self.model is not self.base:
            self.base = self.ctx.models.ensure_selected()
            self._use_model(self.base, self.embeddings)
            self.refiner_info = {}

    def _use_model(self, model, embeddings: dict) -> None:
        """Go on sampling with `model` (tiled if the job is), encoding prompts with `embeddings`."""
        self.model = model
        self._tile(model)
        self.denoiser = UNetDenoiser(model)
        self.prompt_encoder = PromptEncoder(model, embeddings, self.encode_settings)

    def use_hires_checkpoint(self, name: str) -> str:
        """Go on with another checkpoint of the same family for the hires pass (not the user's choice: the next
        batch starts on the chosen one again), with the batch's LoRAs. Returns the name the infotext gives it
        ("Hires checkpoint", A1111's short title)."""
        try:
            model = self.ctx.models.load(name, remember=False)
        except CheckpointError as e:
            raise GenerationError(f"hr_checkpoint_name: {e}") from e
        if model.spec.family is not self.model.spec.family:
            raise GenerationError(f"hr_checkpoint_name: {model.file.title} is {model.spec.label}; the hires pass "
                                  f"needs a checkpoint of the first pass's kind ({self.model.spec.label})")
        self._use_model(model, self.embeddings)
        if self.ctx.loras is not None and self.applied_loras:
            self.warnings += self.ctx.loras.apply(model, self.applied_loras)
        return f"{Path(model.file.name).stem} [{model.file.shorthash}]"

    # ---- conditioning ----
    def _context_key(self) -> tuple:
        lora_key = self.ctx.loras.signature(self.model) if self.ctx.loras is not None else ()
        emb_key = tuple(sorted((name, id(e)) for name, e in self.embeddings.items()))
        return (id(self.model), self.encode_settings, emb_key, lora_key)

    def apply_networks(self, prompts: list[str]) -> list[str]:
        """Take `<lora:...>` tags out of the prompts and merge those networks; returns the cleaned prompts."""
        cleaned, networks = extra_networks.parse_prompts(prompts)
        tags, warnings = extra_networks.lora_tags(networks.get("lora", []))
        self.warnings += warnings
        if self.ctx.loras is not None:
            self.warnings += self.ctx.loras.apply(self.model, tags)
            self.applied_loras = tags
        elif tags:
            self.warnings.append("LoRA support is not available; tags ignored: "
                                 + ", ".join(t.name for t in tags))
        for kind in networks:
            if kind != "lora":
                self.warnings.append(f"unknown extra network type <{kind}:...>: ignored")
        return cleaned

    def conds(self, prompts: list[str], negatives: list[str], steps: int, hires_steps: int | None = None):
        try:
            return self._conds(prompts, negatives, steps, hires_steps)
        except prompt_parser.PromptTooComplexError as e:
            raise GenerationError(f"prompt/negative_prompt: {e}") from e

    def _conds(self, prompts: list[str], negatives: list[str], steps: int, hires_steps: int | None):
        key = self._context_key()
        uc = learned_conditioning(self.prompt_encoder, negatives, steps, hires_steps, self.opts.use_old_scheduling,
                                  is_negative=True, cache=self.ctx.cond_cache, context_key=key)
        c = multicond_learned_conditioning(self.prompt_encoder, prompts, steps, hires_steps,
                                           self.opts.use_old_scheduling, cache=self.ctx.cond_cache, context_key=key)
        return c, uc

    # ---- sampling ----
    def sigmas(self, sampler: SamplerInfo, scheduler: str, steps: int) -> torch.Tensor:
        """The noise levels for `steps` steps; the discard-penultimate-sigma option is decided here only."""
        opts = self.opts
        forced = opts.always_discard_next_to_last_sigma and not sampler.discard_next_to_last_sigma
        if forced:
            self.generation_params["Discard penultimate sigma"] = True
        try:
            return get_sigmas(scheduler, steps, self.denoiser.sigmas,
                              **sampler.schedule_kwargs(opts.always_discard_next_to_last_sigma),
                              is_sdxl=self.model.spec.family.is_xl, sigma_min=opts.sigma_min or None,
                              sigma_max=opts.sigma_max or None, rho=opts.rho or None)
        except ValueError as e:
            raise GenerationError(str(e)) from e

    def _sampler_kwargs(self, sampler: SamplerInfo) -> dict:
        req, opts = self.req, self.opts
        default_eta = opts.eta_ddim if sampler.name in ("DDIM", "PLMS", "UniPC") else opts.eta_ancestral
        return dict(eta=req.eta if req.eta is not None else default_eta,
                    s_churn=req.s_churn if req.s_churn is not None else opts.s_churn,
                    s_tmin=req.s_tmin if req.s_tmin is not None else opts.s_tmin,
                    s_tmax=(req.s_tmax if req.s_tmax is not None else opts.s_tmax) or float("inf"),
                    s_noise=req.s_noise if req.s_noise is not None else opts.s_noise)

    def _run_sampler(self, sampler: SamplerInfo, cfg: CFGDenoiser, x: torch.Tensor, sigmas: torch.Tensor,
                     noise_rng, seeds: list[int]) -> torch.Tensor | None:
        """The sampled latents. Stopped early (interrupt, skip), as A1111: the last step's prediction of the clean
        pictures instead of the still noisy latents, and None when no step was made (nothing to show)."""
        state = self.ctx.state
        last = {"stopped": False, "denoised": None}

        def should_stop() -> bool:
            last["stopped"] = last["stopped"] or state.should_stop
            return last["stopped"]
        if sampler.brownian_noise:
            nonzero = sigmas[sigmas > 0]
            noise_sampler = BrownianTreeNoiseSampler(x, float(nonzero.min()), float(sigmas.max()), seeds)
        else:
            noise_sampler = lambda sigma, sigma_next: noise_rng.next()  # noqa: E731
        state.begin_pass(len(sigmas) - 1)
        every = self.opts.show_progress_every_n_steps

        def callback(d):
            last["denoised"] = d["denoised"]
            picture = None
            if self.opts.live_previews_enable and every > 0 and (d["i"] + 1) % every == 0:
                picture = preview.preview_image(self.model, d["denoised"][:1])
            state.step_done(picture)

        kwargs = self._sampler_kwargs(sampler)
        self._note_sampler_parameters(sampler, kwargs)
        x = sampler.function(cfg, x, sigmas, extra_args={}, callback=callback, noise_sampler=noise_sampler,
                             should_stop=should_stop, **kwargs)
        return last["denoised"] if last["stopped"] else x

    def _note_sampler_parameters(self, sampler: SamplerInfo, kwargs: dict) -> None:
        """A1111's infotext keys for the sampler's own parameters where they differ from its defaults."""
        if sampler.takes_eta and kwargs["eta"] != sampler.eta_default:
            self.generation_params["Eta DDIM" if sampler.name == "DDIM" else "Eta"] = kwargs["eta"]
        if sampler.takes_churn:
            for name, key, default in (("s_churn", "Sigma churn", 0.0), ("s_tmin", "Sigma tmin", 0.0),
                                       ("s_tmax", "Sigma tmax", float("inf")), ("s_noise", "Sigma noise", 1.0)):
                if kwargs[name] != default:
                    self.generation_params[key] = kwargs[name]

    def _time_ids(self, width: int, height: int):
        family = self.model.spec.family
        if not family.time_id_count:
            return None
        aesthetic = (self.opts.sdxl_refiner_high_aesthetic_score, self.opts.sdxl_refiner_low_aesthetic_score)
        return (family.time_ids(width, height, False, aesthetic), family.time_ids(width, height, True, aesthetic))

    def image_rng(self, shape, seeds, subseeds) -> rng.ImageRNG:
        req = self.req
        return rng.ImageRNG(shape, seeds, subseeds=subseeds, subseed_strength=req.subseed_strength,
                            seed_resize_from_h=req.seed_resize_from_h, seed_resize_from_w=req.seed_resize_from_w,
                            source=self.opts.randn_source, device=torch.device("cpu"),
                            eta_noise_seed_delta=self.opts.eta_noise_seed_delta if self.sampler.uses_ensd else 0,
                            latent_scale=self.model.latent_scale)

    def sample_from_noise(self, c, uc, batch: Batch, image_cond=None, refiner: RefinerSwitch | None = None
                          ) -> torch.Tensor | None:
        """Latents of a whole schedule from each image's seed noise (txt2img's first pass); None when stopped
        before the first step."""
        req = self.req
        f = self.model.latent_scale
        shape = (self.model.unet.config.out_channels, req.height // f, req.width // f)
        noise_rng = self.image_rng(shape, batch.seeds, batch.subseeds)
        x = noise_rng.next()
        sigmas = self.sigmas(self.sampler, req.scheduler, req.steps)
        switch = None
        if refiner is not None:
            switch = lambda cfg: self._switch_to_refiner(cfg, refiner, batch)  # noqa: E731
        cfg = CFGDenoiser(self.denoiser, c, uc, req.cfg_scale, time_ids=self._time_ids(req.width, req.height),
                          image_cond=image_cond, refiner=switch,
                          refiner_switch_at=refiner.switch_at if refiner else 1.0,
                          step_hooks=self.ctx.hooks.step_hooks(self, len(sigmas) - 1),
                          controls=self._controls(sigmas))
        return self._run_sampler(self.sampler, cfg, x * sigmas[0], sigmas, noise_rng, batch.seeds)

    def _controls(self, sigmas: torch.Tensor) -> ControlSet | None:
        return ControlSet(self.control_units, sigmas) if self.control_units else None

    def _switch_to_refiner(self, cfg: CFGDenoiser, refiner: RefinerSwitch, batch: Batch) -> None:
        """Load the refiner (without making it the user's choice) and continue with its conditioning."""
        try:
            model = self.ctx.models.load(refiner.checkpoint, remember=False)
        except CheckpointError as e:
            self.warnings.append(f"refiner not used: {e}")
            return
        self._use_model(model, {})  # the refiner's text encoder has no use for the base model's embeddings
        c, uc = self.conds(batch.prompts, batch.negatives, model_calls(self.sampler, self.req.steps))
        cfg.denoiser, cfg.cond, cfg.uncond = self.denoiser, c, uc
        cfg.time_ids = self._time_ids(self.req.width, self.req.height)
        self.refiner_info = {"Refiner": model.file.title, "Refiner switch at": refiner.switch_at}

    def sample_from_latent(self, init_latent, c, uc, batch: Batch, steps: int, strength: float,
                           sampler: SamplerInfo, scheduler: str, width: int, height: int, image_cond=None,
                           mask: LatentMask | None = None, noise_multiplier: float = 1.0) -> torch.Tensor | None:
        """img2img and the hires pass, with A1111's step semantics: the schedule of `steps` is entered at
        `strength`. None when stopped before the first step."""
        if self.opts.img2img_fix_steps:
            t_enc = steps - 1
            steps = int(steps / min(strength, 0.999)) if strength > 0 else 0
        else:
            t_enc = int(min(strength, 0.999) * steps)
        sigmas = self.sigmas(sampler, scheduler, steps)
        sigma_sched = sigmas[steps - t_enc - 1:]
        noise_rng = self.image_rng(tuple(init_latent.shape[1:]), batch.seeds, batch.subseeds)
        noise = noise_rng.next() * noise_multiplier
        x = init_latent + noise * sigma_sched[0]
        cfg = CFGDenoiser(self.denoiser, c, uc, self.req.cfg_scale, time_ids=self._time_ids(width, height),
                          image_cond=image_cond, mask=mask,
                          step_hooks=self.ctx.hooks.step_hooks(self, len(sigma_sched) - 1),
                          controls=self._controls(sigma_sched))
        return self._run_sampler(sampler, cfg, x, sigma_sched, noise_rng, batch.seeds)

    # ---- infotext / saving ----
    @staticmethod
    def schedule_label(scheduler: str, sampler: SamplerInfo) -> str:
        """The schedule a pass really used, as A1111 writes it: "Automatic" becomes the sampler's own schedule
        ("Karras" for DPM++ 2M), and stays "Automatic" for a sampler without one."""
        try:
            chosen = find_scheduler(scheduler or "Automatic")
            if chosen.function is None and sampler.default_scheduler:
                chosen = find_scheduler(sampler.default_scheduler)
        except ValueError:
            return scheduler
        return chosen.label

    def schedule_params(self, sampler: SamplerInfo, scheduler: str) -> dict:
        """The schedule settings that changed this job's sigmas (A1111's "Schedule max sigma"...)."""
        opts = self.opts
        try:
            default_rho = find_scheduler(self.schedule_label(scheduler, sampler)).default_rho
        except ValueError:  # an unknown schedule is refused when sampling; the text only needs to be written
            default_rho = None
        return {"Schedule max sigma": opts.sigma_max or None, "Schedule min sigma": opts.sigma_min or None,
                "Schedule rho": opts.rho if opts.rho and opts.rho != default_rho else None}

    def infotext(self, index: int, extra: dict | None = None, width: int | None = None,
                 height: int | None = None) -> str:
        req, opts = self.req, self.opts
        uses_vary = req.subseed_strength != 0
        params = {
            "Steps": req.steps,
            "Sampler": self.sampler.name,
            "Schedule type": self.schedule_label(req.scheduler, self.sampler),
            "CFG scale": req.cfg_scale,
            "Seed": self.all_seeds[index],
            "Face restoration": self.face_restorer,
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
            **self.schedule_params(self.sampler, req.scheduler),
        }
        params.update(extra or {})
        params.update(self.generation_params)
        if self.applied_loras:  # as A1111, only networks found on disk (a missing one has its warning instead)
            hashes = [(t.name, self.ctx.loras.short_hash(t.name)) for t in self.applied_loras]
            params["Lora hashes"] = ", ".join(f"{name}: {short}" for name, short in hashes if short) or None
        if opts.emphasis != "Original":
            params["Emphasis"] = opts.emphasis
        params["Version"] = VERSION
        return infotext_utils.create_infotext(self.all_prompts[index], self.all_negative[index], params)

    def file_names(self, index: int, image: Image.Image) -> FilenameGenerator:
        """What the saving settings' file and folder patterns can name of picture `index` ([seed], [prompt]...)."""
        req = self.req
        if not getattr(self, "job_timestamp", None):  # one for the whole job: its first picture's
            self.job_timestamp = datetime.now().strftime("%Y%m%d%H%M%S")
        denoising = req.denoising_strength if req.mode == "img2img" or getattr(req, "enable_hr", False) else None
        info = NameInfo(
            seed=self.all_seeds[index], prompt=self.all_prompts[index], prompt_no_styles=req.prompt,
            negative_prompt=self.all_negative[index], steps=req.steps, cfg_scale=req.cfg_scale,
            sampler=self.sampler.name, scheduler=self.schedule_label(req.scheduler, self.sampler), styles=req.styles,
            model_name=Path(self.base.file.name).stem, model_hash=self.base.file.shorthash,
            vae_file=self.base.vae_file.name if self.base.vae_file else None,
            clip_skip=self.encode_settings.clip_skip, denoising=denoising, job_timestamp=self.job_timestamp,
            batch_size=req.batch_size, n_iter=req.n_iter, batch_index=index % req.batch_size,
            iteration=index // req.batch_size, all_seeds=self.all_seeds)
        return FilenameGenerator(info, image, max_prompt_words=self.opts.directories_max_prompt_words)

    def save(self, image: Image.Image, index: int, infotext: str) -> Path | None:
        """Save picture `index` as the saving settings say (folder, name, format, .txt); with an inpainting mask
        and save_mask / save_mask_composite, the mask and the painted part beside it."""
        opts = self.opts
        if not (self.req.save_images and opts.samples_save):
            return None
        folder = saving.output_folder(opts, self.ctx.outputs_dir, f"{self.req.mode}-images")
        seed = self.all_seeds[index]

        def write(picture: Image.Image, suffix: str = "") -> Path:
            return saving.save_image(picture, folder, seed, infotext, opts.samples_format, suffix, opts=opts,
                                     names=self.file_names(index, picture))
        image, infotext = self.ctx.hooks.saving(self, image, infotext)
        path = write(image)
        self.ctx.hooks.saved(self, path, image, infotext)
        mask = getattr(self, "mask_for_overlay", None)  # set by img2img when it paints through a mask
        if mask is not None and opts.save_mask:
            write(mask.convert("RGB"), "-mask")
        if mask is not None and opts.save_mask_composite:
            painted = Image.composite(image.convert("RGBA"), Image.new("RGBA", image.size),
                                      mask.convert("L").resize(image.size, Image.LANCZOS))
            write(painted, "-mask-composite")
        return path

    def add_image(self, result: GenerationResult, image: Image.Image, index: int, infotext: str) -> None:
        """Record one finished image (and save it, if saving is on)."""
        result.images.append(image)
        result.infotexts.append(infotext)
        result.seeds.append(self.all_seeds[index])
        result.subseeds.append(self.all_subseeds[index])
        result.all_prompts.append(self.all_prompts[index])
        result.all_negative_prompts.append(self.all_negative[index])
        path = self.save(image, index, infotext)
        if path:
            result.paths.append(path)

    def remember_parameters(self, result: GenerationResult) -> None:
        """The first picture's infotext in params.txt, for ↙️ with an empty prompt box (A1111 does the same)."""
        if not result.infotexts:
            return
        path = self.ctx.outputs_dir.parent / saving.LAST_PARAMETERS_FILE
        try:
            user_files.write_atomically(path, result.infotexts[0])
        except OSError as e:
            log.warning("%s not written: %s", path, e)

    def save_grid(self, result: GenerationResult) -> None:
        """As A1111: a grid of a batch is made when it is shown (return_grid) or saved (grid_save), and never
        when the request says not to save one (the API's default)."""
        opts = self.opts
        unwanted = len(result.images) < 2 and opts.grid_only_if_multiple
        if not result.images or unwanted or self.req.do_not_save_grid or not (opts.return_grid or opts.grid_save):
            return
        rows = saving.grid_rows(len(result.images), opts.n_rows, self.req.batch_size, opts.grid_prevent_empty_spots)
        grid = saving.image_grid(result.images, rows)
        if self.req.save_images and opts.grid_save:
            folder = saving.output_folder(opts, self.ctx.outputs_dir, f"{self.req.mode}-grids")
            saving.save_image(grid, folder, self.all_seeds[0], result.infotexts[0], opts.grid_format, opts=opts,
                              names=self.file_names(0, grid), basename="grid", grid=True,
                              short_filename=not opts.grid_extended_filename)
        if opts.return_grid:
            result.grid = grid
