"""The UNet as a denoiser for the samplers: eps/v parameterization, CFG, AND, prompt schedules,
SDXL size conditioning, inpainting-model channels and latent masks.

Samplers work in k-diffusion's space: `x = x0 + sigma * noise`, and ask `D(x, sigma)` for the clean
latent. For an eps model `D = x - sigma * eps(x / sqrt(sigma^2 + 1), t(sigma))`; for a v model
`D = x / (sigma^2 + 1) - sigma / sqrt(sigma^2 + 1) * v(...)`. `t(sigma)` interpolates between the
1000 training noise levels in log-sigma.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch

from modules.conditioning.text import (
    MultiCondConditioning,
    ScheduledConditioning,
    TextConditioning,
    cond_at_step,
    pad_to_longest,
)
from modules.sampling.schedules import ModelSigmas, sigmas_from_alphas_cumprod


class UNetDenoiser:
    """D(x, sigma) for one loaded model; `cond` carries the context, pooled vector and image channels."""

    def __init__(self, model):
        self.model = model
        self.noise_levels = ModelSigmas(sigmas_from_alphas_cumprod(model.alphas_cumprod))
        self.sigmas = self.noise_levels.sigmas.float()  # the training noise levels, ascending
        self.v_prediction = model.spec.prediction == "v"

    def sigma_to_t(self, sigma: torch.Tensor) -> torch.Tensor:
        return self.noise_levels.sigma_to_t(sigma).float().view(sigma.shape)

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, context: torch.Tensor,
                 added: dict | None = None, image_cond: torch.Tensor | None = None,
                 control: Callable[..., dict] | None = None) -> torch.Tensor:
        """`control`: (UNet input, timesteps, context, added conditioning) -> the UNet's extra residual arguments
        (ControlNets)."""
        unet = self.model.unet
        policy = self.model.policy
        dtype = policy.unet.compute
        device = policy.device
        s = sigma.view(-1, 1, 1, 1).to(x.device, x.dtype)
        c_in = 1 / (s ** 2 + 1).sqrt()
        x_in = x * c_in
        if image_cond is not None:
            x_in = torch.cat([x_in, image_cond.to(x_in)], dim=1)
        t = self.sigma_to_t(sigma.float().cpu())
        kwargs = {}
        if added:
            kwargs["added_cond_kwargs"] = {k: v.to(device, dtype) for k, v in added.items()}
        with self.model.placement.use("unet"), torch.no_grad(), \
                torch.autocast(device.type, dtype=dtype, enabled=policy.autocast and device.type == "cuda"):
            x_in, t, context = x_in.to(device, dtype), t.to(device), context.to(device, dtype)
            if control is not None:
                kwargs.update(control(x_in[:, :4], t, context, kwargs.get("added_cond_kwargs")))
            out = unet(x_in, t, encoder_hidden_states=context, **kwargs).sample.to(x.device, torch.float32)
        if self.v_prediction:
            return x / (s ** 2 + 1) - out * s / (s ** 2 + 1).sqrt()
        return x - out * s


@dataclass
class LatentMask:
    """Inpainting with an ordinary model: keep `init_latent` where `keep` is 1, every step."""
    init_latent: torch.Tensor
    keep: torch.Tensor  # [B, 1, h, w] in latent resolution


CONTROL_MODES = ("Balanced", "My prompt is more important", "ControlNet is more important")
SOFT_INJECTION_BASE = 0.825  # "My prompt is more important": the deepest residual keeps its weight, each
# shallower one 0.825 times the next (the A1111 extension's soft injection)


@dataclass
class ControlUnit:
    """One ControlNet while sampling: the model, its hint at the generation size, how strongly and when."""
    model: torch.nn.Module  # a diffusers ControlNetModel on the device
    hint: torch.Tensor  # [1, 3, H, W] in 0..1 (pixels: 8x the latent)
    weight: float = 1.0
    start: float = 0.0  # fraction of the sampling steps where it begins to act
    end: float = 1.0  # and where it stops
    mode: str = "Balanced"  # one of CONTROL_MODES


class ControlSet:
    """The job's ControlNets for one sampling pass: each model call gets the sum of the residuals of the units
    active at that point of the schedule (`sigmas`: the pass's noise levels, first to last)."""

    def __init__(self, units: list[ControlUnit], sigmas: torch.Tensor):
        self.units = [u for u in units if u.weight != 0]
        self.sigmas = sigmas.float().cpu()

    def progress(self, sigma: float) -> float:
        """How far the pass is at `sigma`: the fraction of its steps whose noise level is above it."""
        steps = max(1, len(self.sigmas) - 1)
        done = int((self.sigmas[:-1] > sigma * (1 + 1e-5)).sum())
        return done / steps

    def for_call(self, sigma: float, uncond_rows: torch.Tensor) -> Callable[..., dict] | None:
        """The residuals for a model call at `sigma` whose batch rows `uncond_rows` (bool) are negative prompts;
        None when no unit acts there."""
        at = self.progress(sigma)
        active = [u for u in self.units if u.start <= at <= u.end]
        if not active:
            return None

        def residuals(x_in, t, context, added) -> dict:
            down_sum, mid_sum = None, None
            for unit in active:
                hint = unit.hint.to(x_in.device, x_in.dtype)
                size = (x_in.shape[-2] * 8, x_in.shape[-1] * 8)
                if tuple(hint.shape[-2:]) != size:  # the hires pass: the hint follows the picture's new size
                    hint = torch.nn.functional.interpolate(hint, size=size, mode="bilinear", align_corners=False)
                hint = hint.expand(x_in.shape[0], -1, -1, -1)
                extra = {"added_cond_kwargs": added} if added else {}
                down, mid = unit.model(x_in, t, encoder_hidden_states=context, controlnet_cond=hint,
                                       conditioning_scale=1.0, return_dict=False, **extra)
                scales = self._scales(unit, len(down) + 1)
                keep = torch.ones(x_in.shape[0], 1, 1, 1, device=x_in.device, dtype=x_in.dtype)
                if unit.mode == CONTROL_MODES[2]:  # the negative prompt's rows go without the control
                    keep[uncond_rows.to(x_in.device)] = 0
                down = [d * s * keep for d, s in zip(down, scales)]
                mid = mid * scales[-1] * keep
                down_sum = down if down_sum is None else [a + b for a, b in zip(down_sum, down)]
                mid_sum = mid if mid_sum is None else mid_sum + mid
            return {"down_block_additional_residuals": down_sum, "mid_block_additional_residual": mid_sum}
        return residuals

    @staticmethod
    def _scales(unit: ControlUnit, count: int) -> list[float]:
        if unit.mode == CONTROL_MODES[1]:
            return [unit.weight * SOFT_INJECTION_BASE ** (count - 1 - i) for i in range(count)]
        return [unit.weight] * count


class StepHooks(Protocol):
    """What extensions do at each model call (A1111's on_cfg_denoiser / on_cfg_after_cfg callbacks)."""

    def before_step(self, cfg: CFGDenoiser, x: torch.Tensor, sigma: torch.Tensor, image_cond: torch.Tensor | None
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]: ...

    def after_cfg(self, cfg: CFGDenoiser, denoised: torch.Tensor) -> torch.Tensor: ...


class CFGDenoiser:
    """Classifier-free guidance over AND-ed subprompts, with the conditioning in force at each
    model call (A1111 counts calls, so second-order samplers see schedules of twice the steps).

    Subprompts of different lengths are padded to the longest with their last token vector, as A1111 does, and so
    are the negatives among themselves."""

    def __init__(self, denoiser: UNetDenoiser, cond: MultiCondConditioning, uncond: list[list[ScheduledConditioning]],
                 cond_scale: float, *, time_ids: tuple[torch.Tensor, torch.Tensor] | None = None,
                 image_cond: torch.Tensor | None = None, mask: LatentMask | None = None,
                 refiner: Callable[[CFGDenoiser], None] | None = None, refiner_switch_at: float = 1.0,
                 step_hooks: StepHooks | None = None, controls: ControlSet | None = None):
        self.denoiser = denoiser
        self.controls = controls
        self.step_hooks = step_hooks
        self.cond = cond
        self.uncond = uncond
        self.cond_scale = cond_scale
        self.time_ids = time_ids
        self.image_cond = image_cond
        self.mask = mask
        self.step = 0
        self.refiner = refiner
        self.refiner_switch_at = refiner_switch_at

    def _maybe_switch_to_refiner(self, sigma: torch.Tensor) -> None:
        """Hand over to the refiner once the noise level is below the switch point, as A1111 does:
        the fraction done is read off the timestep of the current sigma, and the sampler carries on."""
        if self.refiner is None:
            return
        t = float(self.denoiser.sigma_to_t(sigma.max().reshape(1).float().cpu()))
        if (999 - t) / 1000 >= self.refiner_switch_at:
            switch, self.refiner = self.refiner, None
            switch(self)

    def _batch(self, conds: list[TextConditioning], time_ids: list[torch.Tensor | None]
               ) -> tuple[torch.Tensor, dict | None]:
        context = torch.cat([c.context for c in conds])
        if conds[0].pooled is None:
            return context, None
        return context, {"text_embeds": torch.cat([c.pooled for c in conds]), "time_ids": torch.cat(time_ids)}

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, **_) -> torch.Tensor:
        self._maybe_switch_to_refiner(sigma)
        saved_image_cond = self.image_cond
        if self.step_hooks is not None:
            x, sigma, self.image_cond = self.step_hooks.before_step(self, x, sigma, self.image_cond)
        try:
            denoised = self._guided(x, sigma)
        finally:
            self.image_cond = saved_image_cond
        if self.step_hooks is not None:
            denoised = self.step_hooks.after_cfg(self, denoised)
        self.step += 1
        return denoised

    def _guided(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        if self.mask is not None:
            x = self.mask.init_latent * self.mask.keep + (1 - self.mask.keep) * x
        conds, weights, owners = [], [], []
        for i, subprompts in enumerate(self.cond.batch):
            for schedule, weight in subprompts:
                conds.append(cond_at_step(schedule, self.step))
                weights.append(weight)
                owners.append(i)
        unconds = [cond_at_step(schedule, self.step) for schedule in self.uncond]
        conds, unconds = pad_to_longest(conds), pad_to_longest(unconds)
        cond_time, uncond_time = self.time_ids if self.time_ids is not None else (None, None)
        everyone = list(range(x.shape[0]))

        def run(idx: list[int], cond_list: list[TextConditioning], time_list: list, first_uncond: int):
            """The model on rows `idx`; those from `first_uncond` on have the negative prompt."""
            context, added = self._batch(cond_list, time_list)
            image_cond = None if self.image_cond is None else self.image_cond[idx]
            control = None
            if self.controls is not None:
                control = self.controls.for_call(float(sigma.max()), torch.arange(len(idx)) >= first_uncond)
            return self.denoiser(x[idx], sigma[idx], context, added, image_cond, control)

        if conds[0].context.shape[1] == unconds[0].context.shape[1]:
            out = run(owners + everyone, conds + unconds, [cond_time] * len(conds) + [uncond_time] * len(unconds),
                      len(conds))
            cond_out, uncond_out = out[: len(conds)], out[len(conds):]
        else:  # prompt and negative of different chunk counts are run apart (A1111's default; nothing is padded)
            cond_out = run(owners, conds, [cond_time] * len(conds), len(conds))
            uncond_out = run(everyone, unconds, [uncond_time] * len(unconds), 0)

        denoised = uncond_out.clone()
        for k, (owner, weight) in enumerate(zip(owners, weights)):
            denoised[owner] += (cond_out[k] - uncond_out[owner]) * (weight * self.cond_scale)
        if self.mask is not None:
            denoised = self.mask.init_latent * self.mask.keep + (1 - self.mask.keep) * denoised
        return denoised
