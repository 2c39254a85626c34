"""Sigma schedules: the noise levels a sampler steps through, with A1111's names and behaviour.

Every schedule gives `steps + 1` descending sigmas ending in 0. Schedules defined on the model's
1000 training timesteps map timestep <-> sigma by interpolating log-sigma, as k-diffusion does.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from scipy import stats
from torch import Tensor

# Published "Align Your Steps" 10-step schedules (Sabour et al. 2024), as A1111 ships them.
AYS_SD15 = (14.615, 6.475, 3.861, 2.697, 1.886, 1.396, 0.963, 0.652, 0.399, 0.152, 0.029)
AYS_SDXL = (14.615, 6.315, 3.771, 2.181, 1.342, 0.862, 0.555, 0.380, 0.234, 0.113, 0.029)
BETA_ALPHA = BETA_BETA = 0.6  # A1111's defaults for the Beta schedule (Lee et al. 2024)


def sigmas_from_alphas_cumprod(alphas_cumprod: Tensor) -> Tensor:
    """The model's discrete noise levels, ascending: sigma_t = sqrt((1 - a_t) / a_t)."""
    ac = alphas_cumprod.double()
    return ((1 - ac) / ac).sqrt()


class ModelSigmas:
    """A model's discrete training sigmas (ascending, one per timestep) and the timestep <-> sigma map."""

    def __init__(self, sigmas: Tensor):
        self.sigmas = sigmas.detach().double().cpu()
        self.log_sigmas = self.sigmas.log()
        self.t_max = len(self.sigmas) - 1

    @property
    def sigma_min(self) -> float:
        return float(self.sigmas[0])

    @property
    def sigma_max(self) -> float:
        return float(self.sigmas[-1])

    def sigma_to_t(self, sigma: Tensor | float) -> Tensor:
        """Fractional timestep of `sigma`, clamped to [0, t_max]."""
        log_sigma = torch.as_tensor(sigma, dtype=torch.float64).log()
        high = torch.searchsorted(self.log_sigmas, log_sigma).clamp(1, self.t_max)
        low_value, high_value = self.log_sigmas[high - 1], self.log_sigmas[high]
        w = ((log_sigma - low_value) / (high_value - low_value)).clamp(0, 1)
        return high - 1 + w

    def t_to_sigma(self, t: Tensor | float) -> Tensor:
        t = torch.as_tensor(t, dtype=torch.float64).clamp(0, self.t_max)
        low, high = t.floor().long(), t.ceil().long()
        w = t - low
        return (self.log_sigmas[low] * (1 - w) + self.log_sigmas[high] * w).exp()


@dataclass(frozen=True)
class ScheduleRequest:
    """What a schedule function gets: it returns the `steps` positive sigmas, descending."""
    steps: int
    sigma_min: float
    sigma_max: float
    rho: float
    model: ModelSigmas
    is_sdxl: bool


def karras_sigmas(n: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> Tensor:
    """Karras et al. (2022), eq. 5: n sigmas evenly spaced in sigma^(1/rho), from sigma_max to sigma_min."""
    ramp = torch.linspace(0, 1, n, dtype=torch.float64)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return (hi + ramp * (lo - hi)) ** rho


def _uniform(r: ScheduleRequest) -> Tensor:
    return r.model.t_to_sigma(torch.linspace(r.model.t_max, 0, r.steps, dtype=torch.float64))


def _karras(r: ScheduleRequest) -> Tensor:
    return karras_sigmas(r.steps, r.sigma_min, r.sigma_max, r.rho)


def _exponential(r: ScheduleRequest) -> Tensor:
    return torch.linspace(math.log(r.sigma_max), math.log(r.sigma_min), r.steps, dtype=torch.float64).exp()


def _polyexponential(r: ScheduleRequest) -> Tensor:
    ramp = torch.linspace(1, 0, r.steps, dtype=torch.float64) ** r.rho
    return (ramp * (math.log(r.sigma_max) - math.log(r.sigma_min)) + math.log(r.sigma_min)).exp()


def _sgm_uniform(r: ScheduleRequest) -> Tensor:
    start, end = r.model.sigma_to_t(r.sigma_max), r.model.sigma_to_t(r.sigma_min)
    return r.model.t_to_sigma(torch.linspace(float(start), float(end), r.steps + 1, dtype=torch.float64)[:-1])


def _kl_optimal(r: ScheduleRequest) -> Tensor:
    """Sigmas evenly spaced in arctan(sigma) (Sabour et al. 2024), ending at sigma_min before the final 0."""
    w = torch.linspace(0, 1, r.steps, dtype=torch.float64)
    return torch.tan((1 - w) * math.atan(r.sigma_max) + w * math.atan(r.sigma_min))


def _align_your_steps(r: ScheduleRequest) -> Tensor:
    """The published list, log-linearly interpolated to `steps` points."""
    reference = np.array(AYS_SDXL if r.is_sdxl else AYS_SD15)
    if r.steps == len(reference):
        return torch.from_numpy(reference)
    positions = np.linspace(0, 1, len(reference))
    log_sigmas = np.interp(np.linspace(0, 1, r.steps), positions, np.log(reference))
    return torch.from_numpy(np.exp(log_sigmas))


def _simple(r: ScheduleRequest) -> Tensor:
    """Every (1000 / steps)-th model sigma, from the top."""
    stride = len(r.model.sigmas) / r.steps
    return r.model.sigmas[[r.model.t_max - int(k * stride) for k in range(r.steps)]]


def _normal(r: ScheduleRequest) -> Tensor:
    start, end = r.model.sigma_to_t(r.sigma_max), r.model.sigma_to_t(r.sigma_min)
    return r.model.t_to_sigma(torch.linspace(float(start), float(end), r.steps, dtype=torch.float64))


def _ddim(r: ScheduleRequest) -> Tensor:
    """DDIM's "uniform" discretisation: timesteps 1, 1 + c, 1 + 2c, ... with c = 1000 // steps."""
    stride = max(len(r.model.sigmas) // r.steps, 1)
    timesteps = [min(1 + k * stride, r.model.t_max) for k in reversed(range(r.steps))]
    return r.model.sigmas[timesteps]


def _beta(r: ScheduleRequest) -> Tensor:
    """Beta-distribution quantiles between sigma_min and sigma_max, linear in sigma as A1111 does."""
    quantiles = stats.beta.ppf(1 - np.linspace(0, 1, r.steps), BETA_ALPHA, BETA_BETA)
    return torch.from_numpy(r.sigma_min + quantiles * (r.sigma_max - r.sigma_min))


@dataclass(frozen=True)
class Scheduler:
    name: str
    label: str
    function: Callable[[ScheduleRequest], Tensor] | None  # None: Automatic
    default_rho: float = 1.0  # only Karras and Polyexponential use rho
    aliases: tuple[str, ...] = ()


SCHEDULERS: tuple[Scheduler, ...] = (
    Scheduler("automatic", "Automatic", None),
    Scheduler("uniform", "Uniform", _uniform),
    Scheduler("karras", "Karras", _karras, default_rho=7.0),
    Scheduler("exponential", "Exponential", _exponential),
    Scheduler("polyexponential", "Polyexponential", _polyexponential, default_rho=1.0),
    Scheduler("sgm_uniform", "SGM Uniform", _sgm_uniform, aliases=("SGMUniform",)),
    Scheduler("kl_optimal", "KL Optimal", _kl_optimal),
    Scheduler("align_your_steps", "Align Your Steps", _align_your_steps),
    Scheduler("simple", "Simple", _simple),
    Scheduler("normal", "Normal", _normal),
    Scheduler("ddim", "DDIM", _ddim),
    Scheduler("beta", "Beta", _beta),
)

_BY_NAME = {key.lower(): s for s in SCHEDULERS for key in (s.name, s.label, *s.aliases)}


def find_scheduler(name: str) -> Scheduler:
    """A scheduler by A1111 label or name, case-insensitive."""
    try:
        return _BY_NAME[name.strip().lower()]
    except KeyError:
        valid = ", ".join(f"{s.label} ({s.name})" for s in SCHEDULERS)
        raise ValueError(f"Unknown scheduler {name!r}; valid: {valid}") from None


def get_sigmas(scheduler: str, steps: int, model_sigmas: Tensor, *, default_scheduler: str | None = None,
               discard_next_to_last_sigma: bool = False, is_sdxl: bool = False, sigma_min: float | None = None,
               sigma_max: float | None = None, rho: float | None = None) -> Tensor:
    """`steps + 1` descending sigmas (float32, CPU) ending in 0.

    `model_sigmas` are the model's training sigmas, ascending. "Automatic" takes `default_scheduler`
    (the sampler's own), else Uniform. sigma_min / sigma_max / rho of None or 0 mean the defaults
    (the model's range; the scheduler's rho). With `discard_next_to_last_sigma` the schedule is made
    for steps + 1 and its next-to-last sigma dropped, so `steps` steps remain, as in A1111.
    """
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    chosen = find_scheduler(scheduler)
    if chosen.function is None:
        chosen = find_scheduler(default_scheduler or "uniform")
    assert chosen.function is not None
    discard = discard_next_to_last_sigma
    model = ModelSigmas(model_sigmas)
    request = ScheduleRequest(steps=steps + discard, sigma_min=sigma_min or model.sigma_min,
                              sigma_max=sigma_max or model.sigma_max, rho=rho or chosen.default_rho,
                              model=model, is_sdxl=is_sdxl)
    sigmas = torch.cat([chosen.function(request).double(), torch.zeros(1, dtype=torch.float64)]).float()
    if discard:
        sigmas = torch.cat([sigmas[:-2], sigmas[-1:]])
    return sigmas
