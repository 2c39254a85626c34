"""txt2img: sample from seed noise, optionally followed by the hires-fix pass."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from PIL import Image

from modules.generation.job import (
    Batch,
    BatchOutput,
    Job,
    ProcessingContext,
    RefinerSwitch,
    model_calls,
    sampler_by_name,
)
from modules.generation.requests import (
    LATENT_UPSCALE_MODES,
    MAX_SIDE,
    GenerationError,
    GenerationResult,
    Txt2ImgRequest,
)
from modules.postprocessing.upscalers import UpscaleInterruptedError, UpscalerError, Upscalers


def hires_size(req: Txt2ImgRequest) -> tuple[int, int]:
    """The hires pass's size: scaled, or resized to the given width/height (one of them may be 0)."""
    if req.hr_resize_x == 0 and req.hr_resize_y == 0:
        return int(req.width * req.hr_scale) // 8 * 8, int(req.height * req.hr_scale) // 8 * 8
    if req.hr_resize_y == 0:
        return req.hr_resize_x // 8 * 8, (req.hr_resize_x * req.height // req.width) // 8 * 8
    if req.hr_resize_x == 0:
        return (req.hr_resize_y * req.width // req.height) // 8 * 8, req.hr_resize_y // 8 * 8
    return req.hr_resize_x // 8 * 8, req.hr_resize_y // 8 * 8


def inpaint_model_image_cond(model, latent_shape, batch: int) -> torch.Tensor | None:
    """txt2img with an inpainting model: a fully masked, grey 'masked image' (A1111)."""
    if not model.spec.is_inpainting:
        return None
    f = model.latent_scale
    h, w = latent_shape[-2] * f, latent_shape[-1] * f
    grey = model.encode_images([Image.new("RGB", (w, h), (127, 127, 127))]).repeat(batch, 1, 1, 1)
    return torch.cat([torch.ones(batch, 1, h // f, w // f), grey], dim=1)


class Txt2Img:
    name = "txt2img"

    def __init__(self, req: Txt2ImgRequest, upscalers: Upscalers):
        self.req = req
        self.upscalers = upscalers
        self.model_upscale = False  # a model upscaler's tiles are a pass of their own in the progress bar
        if req.enable_hr and req.hr_upscaler not in LATENT_UPSCALE_MODES:
            try:
                self.model_upscale = upscalers.entry(req.hr_upscaler).model is not None
            except UpscalerError:
                raise GenerationError(f"hr_upscaler: unknown hires upscaler {req.hr_upscaler!r}; choose one of "
                                      f"{', '.join(list(LATENT_UPSCALE_MODES) + upscalers.names())}") from None
        self.passes_per_batch = 1 + req.enable_hr + self.model_upscale
        self.hr_sampler = sampler_by_name(req.hr_sampler_name) if req.enable_hr and req.hr_sampler_name not in (
            None, "", "Use same sampler") else None
        if req.enable_hr:
            width, height = hires_size(req)
            which = "hr_resize_x/hr_resize_y" if req.hr_resize_x or req.hr_resize_y else "hr_scale"
            if not (8 <= width <= MAX_SIDE and 8 <= height <= MAX_SIDE):
                raise GenerationError(f"{which}: the hires pass would be {width}x{height}; each side must be 8 to "
                                      f"{MAX_SIDE}")
        self.hr_checkpoint = req.hr_checkpoint_name if req.enable_hr and req.hr_checkpoint_name not in (
            None, "", "Use same checkpoint") else None
        self.refiner = RefinerSwitch(req.refiner_checkpoint, req.refiner_switch_at) if (
            req.refiner_checkpoint and req.refiner_checkpoint != "None" and req.refiner_switch_at < 1) else None

    def sample_batch(self, job: Job, batch: Batch) -> BatchOutput:
        req, state = self.req, job.ctx.state
        state.begin_pass(req.steps, job_no=batch.number * self.passes_per_batch)
        c, uc = job.conds(batch.prompts, batch.negatives, model_calls(job.sampler, req.steps))
        f = job.model.latent_scale
        image_cond = inpaint_model_image_cond(job.model, (req.height // f, req.width // f), len(batch.seeds))
        latent = job.sample_from_noise(c, uc, batch, image_cond, self.refiner)
        if latent is None:  # interrupted before the first step: no pictures (never a tile of noise)
            return BatchOutput([])
        if not req.enable_hr or state.should_stop:
            return BatchOutput(job.decode(latent))
        width, height = hires_size(req)
        hires, params = self._hires_pass(job, latent, batch, width, height)
        if hires is None:  # interrupted before the hires pass's first step: the first pass's pictures, as A1111
            return BatchOutput(job.decode(latent))
        # Size stays the first pass's, with "Hires upscale"/"Hires resize" beside it, as A1111 writes it
        return BatchOutput(job.decode(hires), params)

    def _hires_pass(self, job: Job, latent, batch: Batch, width: int, height: int):
        req = self.req
        hr_sampler = self.hr_sampler or job.sampler
        steps = req.hr_second_pass_steps or req.steps
        params = {"Denoising strength": req.denoising_strength, "Hires upscale": req.hr_scale
                  if not (req.hr_resize_x or req.hr_resize_y) else None,
                  "Hires resize": f"{req.hr_resize_x}x{req.hr_resize_y}" if (req.hr_resize_x or req.hr_resize_y)
                  else None,
                  "Hires steps": req.hr_second_pass_steps or None, "Hires upscaler": req.hr_upscaler}
        pictures = None
        if req.hr_upscaler not in LATENT_UPSCALE_MODES:  # decoded by the first pass's model
            pictures = job.model.decode_latents(latent)
        if self.hr_checkpoint and not job.model.file.matches(self.hr_checkpoint):
            params["Hires checkpoint"] = job.use_hires_checkpoint(self.hr_checkpoint)
        model = job.model
        if pictures is None:
            mode, antialias = LATENT_UPSCALE_MODES[req.hr_upscaler]
            f = model.latent_scale
            latent = F.interpolate(latent, size=(height // f, width // f), mode=mode, antialias=antialias)
        else:
            pictures = self._upscale_pictures(job, pictures, (width, height), batch.number * self.passes_per_batch + 1)
            if pictures is None:
                return None, params
            latent = model.encode_images(pictures)
        prompts = [req.hr_prompt] * len(batch.prompts) if req.hr_prompt else batch.prompts
        negatives = [req.hr_negative_prompt] * len(batch.negatives) if req.hr_negative_prompt else batch.negatives
        if req.hr_prompt:
            params["Hires prompt"] = req.hr_prompt
            prompts = job.apply_networks(prompts)
        if req.hr_negative_prompt:
            params["Hires negative prompt"] = req.hr_negative_prompt
        if hr_sampler is not job.sampler:
            params["Hires sampler"] = hr_sampler.name
        scheduler = req.hr_scheduler if req.hr_scheduler not in (None, "", "Use same scheduler") else req.scheduler
        hires_schedule = job.schedule_label(scheduler, hr_sampler)
        if hires_schedule != job.schedule_label(req.scheduler, job.sampler):  # the schedule really used, as A1111
            params["Hires schedule type"] = hires_schedule
        job.ctx.state.begin_pass(steps, job_no=(batch.number + 1) * self.passes_per_batch - 1)
        c, uc = job.conds(prompts, negatives, model_calls(job.sampler, req.steps),
                          hires_steps=model_calls(hr_sampler, steps))
        image_cond = inpaint_model_image_cond(model, latent.shape, latent.shape[0])
        latent = job.sample_from_latent(latent, c, uc, batch, steps, req.denoising_strength, hr_sampler, scheduler,
                                        width, height, image_cond=image_cond)
        return latent, params


    def _upscale_pictures(self, job: Job, pictures: list[Image.Image], size: tuple[int, int], job_no: int
                          ) -> list[Image.Image] | None:
        """The first pass's pictures upscaled in image space for the hires pass (None: interrupted). A model
        upscaler's tiles are the steps of pass `job_no` in the progress bar."""
        state, opts, name = job.ctx.state, job.ctx.options, self.req.hr_upscaler
        steps = sum(self.upscalers.progress_steps(name, p.size, size, opts.ESRGAN_tile, opts.ESRGAN_tile_overlap)
                    for p in pictures)
        if steps:
            state.begin_pass(steps, job_no=job_no)
        upscaled = []
        for picture in pictures:
            try:
                upscaled.append(self.upscalers.upscale(
                    name, picture, size, tile_size=opts.ESRGAN_tile, tile_overlap=opts.ESRGAN_tile_overlap,
                    should_stop=lambda: state.should_stop, progress=lambda done, total: state.step_done()))
            except UpscaleInterruptedError:
                return None
            except UpscalerError as e:
                raise GenerationError(f"hr_upscaler: {e}") from e
        return upscaled


def process_txt2img(req: Txt2ImgRequest, ctx: ProcessingContext) -> GenerationResult:
    job = Job(req, ctx)
    mode = Txt2Img(req, ctx.upscalers)
    if req.enable_hr:
        job.check_memory(*hires_size(req))
    return job.run(mode)
