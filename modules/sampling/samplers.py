"""Samplers on the k-diffusion formulation, with A1111's names and options.

The model is a denoiser `model(x, sigma, **extra_args) -> denoised` for `x = x0 + sigma * noise`
(sigma: a [batch] tensor); the caller's wrapper handles eps/v parameterisation and input scaling.
The probability-flow ODE is dx/dsigma = (x - denoised) / sigma. Timestep-based samplers (DDIM, PLMS,
UniPC, LCM) are written in sigma space, which is equivalent for x = x_vp / sqrt(alpha_cumprod).

`noise_sampler(sigma, sigma_next)` is the only source of randomness (default: torch.randn_like), so
the caller can draw each image's noise from its own seed; samplers draw noise when k-diffusion does.
`callback({"i", "x", "sigma", "sigma_hat", "denoised"})` is called once per step after its first
model call, with the step's input x and Python-float sigmas; `should_stop()` is checked before each
step and ends sampling with the current x. Scalar arithmetic is done on Python floats.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
import torchsde
from numpy.polynomial import polynomial
from torch import Tensor

from modules.sampling.schedules import SCHEDULERS, karras_sigmas

Denoiser = Callable[..., Tensor]
NoiseSampler = Callable[[float, float], Tensor]
StepCallback = Callable[[dict[str, Any]], None]


class SamplerFunction(Protocol):
    def __call__(self, model: Denoiser, x: Tensor, sigmas: Tensor, *, extra_args: dict[str, Any] | None = None,
                 callback: StepCallback | None = None, noise_sampler: NoiseSampler | None = None,
                 eta: float = 1.0, s_churn: float = 0.0, s_tmin: float = 0.0, s_tmax: float = math.inf,
                 s_noise: float = 1.0, should_stop: Callable[[], bool] | None = None) -> Tensor: ...


class _Run:
    """One sampling run: the denoiser call, noise, progress reports, stopping and the shared options."""

    def __init__(self, model: Denoiser, sigmas: Tensor, extra_args: dict[str, Any] | None,
                 callback: StepCallback | None, noise_sampler: NoiseSampler | None,
                 should_stop: Callable[[], bool] | None, eta: float, s_churn: float, s_tmin: float,
                 s_tmax: float, s_noise: float):
        self.model = model
        self.sigmas: list[float] = sigmas.detach().double().cpu().tolist()
        self.extra_args = extra_args or {}
        self.callback = callback
        self.noise_sampler = noise_sampler
        self.should_stop = should_stop
        self.eta, self.s_churn, self.s_tmin, self.s_tmax, self.s_noise = eta, s_churn, s_tmin, s_tmax, s_noise

    def denoise(self, x: Tensor, sigma: float) -> Tensor:
        return self.model(x, x.new_full((x.shape[0],), sigma), **self.extra_args)

    def noise(self, x: Tensor, sigma: float, sigma_next: float) -> Tensor:
        return self.noise_sampler(sigma, sigma_next) if self.noise_sampler is not None else torch.randn_like(x)

    def stopped(self) -> bool:
        return self.should_stop is not None and self.should_stop()

    def steps(self, pairs: Iterable[tuple[float, float]] | None = None) -> Iterator[tuple[int, float, float]]:
        """(i, sigma, sigma_next) over the schedule (or the given pairs), ending early when asked to stop."""
        for i, (a, b) in enumerate(zip(self.sigmas[:-1], self.sigmas[1:]) if pairs is None else pairs):
            if self.stopped():
                return
            yield i, a, b

    def report(self, i: int, x: Tensor, sigma: float, denoised: Tensor, sigma_hat: float | None = None) -> None:
        if self.callback is not None:
            self.callback({"i": i, "x": x, "sigma": sigma, "sigma_hat": sigma if sigma_hat is None else sigma_hat,
                           "denoised": denoised})

    def churn(self, x: Tensor, i: int) -> tuple[Tensor, float]:
        """Karras et al. (2022) Algorithm 2, lines 4-6: raise sigma to sigma_hat with fresh noise.

        With churn on, noise is drawn at every step, used or not, as k-diffusion does, so a caller's
        noise stream stays aligned with A1111's.
        """
        sigma = self.sigmas[i]
        if self.s_churn <= 0:
            return x, sigma
        gamma = min(self.s_churn / (len(self.sigmas) - 1), 2 ** 0.5 - 1) if self.s_tmin <= sigma <= self.s_tmax else 0.0
        sigma_hat = sigma * (gamma + 1)
        noise = self.noise(x, sigma, sigma_hat)
        if gamma > 0:
            x = x + noise * self.s_noise * math.sqrt(sigma_hat ** 2 - sigma ** 2)
        return x, sigma_hat


def _sampler(eta_default: float = 1.0) -> Callable[[Callable[..., Tensor]], SamplerFunction]:
    """Give a sampler body `(run, x, **options) -> x` the common sampler signature."""
    def wrap(body: Callable[..., Tensor]) -> SamplerFunction:
        def sample(model: Denoiser, x: Tensor, sigmas: Tensor, *, extra_args: dict[str, Any] | None = None,
                   callback: StepCallback | None = None, noise_sampler: NoiseSampler | None = None,
                   eta: float = eta_default, s_churn: float = 0.0, s_tmin: float = 0.0, s_tmax: float = math.inf,
                   s_noise: float = 1.0, should_stop: Callable[[], bool] | None = None, **options: Any) -> Tensor:
            run = _Run(model, sigmas, extra_args, callback, noise_sampler, should_stop,
                       eta, s_churn, s_tmin, s_tmax, s_noise)
            return body(run, x, **options)
        sample.__name__, sample.__qualname__, sample.__doc__ = body.__name__, body.__qualname__, body.__doc__
        return torch.no_grad()(sample)
    return wrap


def _to_d(x: Tensor, sigma: float, denoised: Tensor) -> Tensor:
    """The ODE derivative dx/dsigma."""
    return (x - denoised) / sigma


def ancestral_step(sigma: float, sigma_next: float, eta: float = 1.0) -> tuple[float, float]:
    """(sigma_down, sigma_up): step deterministically down to sigma_down, then add sigma_up of fresh noise
    so the total is sigma_next. eta=1 is the DDPM posterior's noise; eta=0 is deterministic."""
    if not eta:
        return sigma_next, 0.0
    sigma_up = min(sigma_next, eta * math.sqrt(sigma_next ** 2 * (sigma ** 2 - sigma_next ** 2) / sigma ** 2))
    return math.sqrt(sigma_next ** 2 - sigma_up ** 2), sigma_up


def _log_ratio(sigma: float, sigma_next: float) -> float:
    """h = lambda_next - lambda with lambda = -log(sigma)."""
    return math.log(sigma / sigma_next)


# --- Karras et al. (2022) and ancestral samplers ---------------------------------------------------

@_sampler()
def sample_euler(run: _Run, x: Tensor) -> Tensor:
    """Karras et al. (2022) Algorithm 2 with Euler steps."""
    for i, sigma, sigma_next in run.steps():
        x, sigma_hat = run.churn(x, i)
        denoised = run.denoise(x, sigma_hat)
        run.report(i, x, sigma, denoised, sigma_hat)
        x = x + _to_d(x, sigma_hat, denoised) * (sigma_next - sigma_hat)
    return x


@_sampler()
def sample_heun(run: _Run, x: Tensor) -> Tensor:
    """Karras et al. (2022) Algorithm 2: Heun steps, Euler for the last step to sigma 0."""
    for i, sigma, sigma_next in run.steps():
        x, sigma_hat = run.churn(x, i)
        denoised = run.denoise(x, sigma_hat)
        run.report(i, x, sigma, denoised, sigma_hat)
        d = _to_d(x, sigma_hat, denoised)
        dt = sigma_next - sigma_hat
        if sigma_next == 0:
            x = x + d * dt
        else:
            x_2 = x + d * dt
            d_2 = _to_d(x_2, sigma_next, run.denoise(x_2, sigma_next))
            x = x + (d + d_2) / 2 * dt
    return x


@_sampler()
def sample_dpm_2(run: _Run, x: Tensor) -> Tensor:
    """Midpoint steps with the midpoint at the geometric mean of the sigmas (inspired by DPM-Solver-2)."""
    for i, sigma, sigma_next in run.steps():
        x, sigma_hat = run.churn(x, i)
        denoised = run.denoise(x, sigma_hat)
        run.report(i, x, sigma, denoised, sigma_hat)
        d = _to_d(x, sigma_hat, denoised)
        if sigma_next == 0:
            x = x + d * (sigma_next - sigma_hat)
        else:
            sigma_mid = math.sqrt(sigma_hat * sigma_next)
            x_2 = x + d * (sigma_mid - sigma_hat)
            x = x + _to_d(x_2, sigma_mid, run.denoise(x_2, sigma_mid)) * (sigma_next - sigma_hat)
    return x


def _euler_ancestral(run: _Run, x: Tensor) -> Tensor:
    for i, sigma, sigma_next in run.steps():
        denoised = run.denoise(x, sigma)
        run.report(i, x, sigma, denoised)
        sigma_down, sigma_up = ancestral_step(sigma, sigma_next, run.eta)
        x = x + _to_d(x, sigma, denoised) * (sigma_down - sigma)
        if sigma_next > 0:
            x = x + run.noise(x, sigma, sigma_next) * run.s_noise * sigma_up
    return x


@_sampler()
def sample_euler_ancestral(run: _Run, x: Tensor) -> Tensor:
    """Ancestral sampling with Euler steps."""
    return _euler_ancestral(run, x)


@_sampler(eta_default=0.0)
def sample_ddim(run: _Run, x: Tensor) -> Tensor:
    """DDIM (Song et al. 2021) in sigma space.

    With x = x_vp / sqrt(alpha_cumprod), DDIM's update is `denoised + sigma_down * eps + sigma_up * z`
    and its sigma_t(eta) maps exactly onto the ancestral split: DDIM is an Euler ancestral step with
    DDIM's eta (default 0: deterministic, the same as Euler).
    """
    return _euler_ancestral(run, x)


@_sampler()
def sample_dpm_2_ancestral(run: _Run, x: Tensor) -> Tensor:
    """Ancestral sampling with DPM2's midpoint steps."""
    for i, sigma, sigma_next in run.steps():
        denoised = run.denoise(x, sigma)
        run.report(i, x, sigma, denoised)
        sigma_down, sigma_up = ancestral_step(sigma, sigma_next, run.eta)
        d = _to_d(x, sigma, denoised)
        if sigma_down == 0:
            x = x + d * (sigma_down - sigma)
        else:
            sigma_mid = math.sqrt(sigma * sigma_down)
            x_2 = x + d * (sigma_mid - sigma)
            x = x + _to_d(x_2, sigma_mid, run.denoise(x_2, sigma_mid)) * (sigma_down - sigma)
            x = x + run.noise(x, sigma, sigma_next) * run.s_noise * sigma_up
    return x


def _lms_coefficients(sigmas: Sequence[float], i: int, order: int) -> list[float]:
    """Integrals over [sigma_i, sigma_i+1] of the Lagrange basis on sigma_i, sigma_i-1, ... (exact: polynomials)."""
    nodes = [sigmas[i - j] for j in range(order)]
    coefficients = []
    for j, node in enumerate(nodes):
        others = nodes[:j] + nodes[j + 1:]
        basis = polynomial.polyfromroots(others) / math.prod(node - other for other in others)
        antiderivative = polynomial.polyint(basis)
        coefficients.append(float(polynomial.polyval(sigmas[i + 1], antiderivative)
                                  - polynomial.polyval(sigmas[i], antiderivative)))
    return coefficients


@_sampler()
def sample_lms(run: _Run, x: Tensor, *, order: int = 4) -> Tensor:
    """Linear multistep on dx/dsigma with up to `order` past derivatives."""
    ds: list[Tensor] = []  # newest first
    for i, sigma, _sigma_next in run.steps():
        denoised = run.denoise(x, sigma)
        run.report(i, x, sigma, denoised)
        ds = [_to_d(x, sigma, denoised), *ds][:order]
        for coefficient, d in zip(_lms_coefficients(run.sigmas, i, len(ds)), ds):
            x = x + coefficient * d
    return x


# --- DPM-Solver++ family (Lu et al. 2022), lambda = -log(sigma) ------------------------------------

@_sampler()
def sample_dpmpp_2s_ancestral(run: _Run, x: Tensor) -> Tensor:
    """Ancestral sampling with DPM-Solver++(2S) steps (midpoint in lambda)."""
    for i, sigma, sigma_next in run.steps():
        denoised = run.denoise(x, sigma)
        run.report(i, x, sigma, denoised)
        sigma_down, sigma_up = ancestral_step(sigma, sigma_next, run.eta)
        if sigma_down == 0:
            x = x + _to_d(x, sigma, denoised) * (sigma_down - sigma)
        else:
            sigma_s = math.sqrt(sigma * sigma_down)
            x_2 = denoised + sigma_s / sigma * (x - denoised)
            denoised_2 = run.denoise(x_2, sigma_s)
            x = denoised_2 + sigma_down / sigma * (x - denoised_2)
        if sigma_next > 0:
            x = x + run.noise(x, sigma, sigma_next) * run.s_noise * sigma_up
    return x


@_sampler()
def sample_dpmpp_sde(run: _Run, x: Tensor, *, r: float = 0.5) -> Tensor:
    """DPM-Solver++ (stochastic): two first-order ancestral substeps sharing a second-order estimate."""
    for i, sigma, sigma_next in run.steps():
        denoised = run.denoise(x, sigma)
        run.report(i, x, sigma, denoised)
        if sigma_next == 0:
            x = x + _to_d(x, sigma, denoised) * (sigma_next - sigma)
            continue
        sigma_s = sigma * math.exp(-r * _log_ratio(sigma, sigma_next))
        sigma_down, sigma_up = ancestral_step(sigma, sigma_s, run.eta)
        x_2 = denoised + sigma_down / sigma * (x - denoised)
        x_2 = x_2 + run.noise(x, sigma, sigma_s) * run.s_noise * sigma_up
        denoised_2 = run.denoise(x_2, sigma_s)

        fac = 1 / (2 * r)
        denoised_d = (1 - fac) * denoised + fac * denoised_2
        sigma_down, sigma_up = ancestral_step(sigma, sigma_next, run.eta)
        x = denoised_d + sigma_down / sigma * (x - denoised_d)
        x = x + run.noise(x, sigma, sigma_next) * run.s_noise * sigma_up
    return x


@_sampler()
def sample_dpmpp_2m(run: _Run, x: Tensor) -> Tensor:
    """DPM-Solver++(2M): second-order multistep in data prediction."""
    old_denoised: Tensor | None = None
    h_last = 0.0
    for i, sigma, sigma_next in run.steps():
        denoised = run.denoise(x, sigma)
        run.report(i, x, sigma, denoised)
        if sigma_next == 0:
            x = denoised
        else:
            h = _log_ratio(sigma, sigma_next)
            denoised_d = denoised
            if old_denoised is not None:
                k = 1 / (2 * (h_last / h))
                denoised_d = (1 + k) * denoised - k * old_denoised
            x = sigma_next / sigma * x - math.expm1(-h) * denoised_d
            h_last = h
        old_denoised = denoised
    return x


def _dpmpp_2m_sde(run: _Run, x: Tensor, solver_type: str) -> Tensor:
    old_denoised: Tensor | None = None
    h_last = 0.0
    for i, sigma, sigma_next in run.steps():
        denoised = run.denoise(x, sigma)
        run.report(i, x, sigma, denoised)
        if sigma_next == 0:
            x = denoised
        else:
            h = _log_ratio(sigma, sigma_next)
            eta_h = run.eta * h
            phi_1 = -math.expm1(-h - eta_h)
            x = sigma_next / sigma * math.exp(-eta_h) * x + phi_1 * denoised
            if old_denoised is not None:
                r = h_last / h
                if solver_type == "heun":
                    x = x + (phi_1 / (-h - eta_h) + 1) / r * (denoised - old_denoised)
                else:
                    x = x + 0.5 * phi_1 / r * (denoised - old_denoised)
            if run.eta:
                noise_scale = sigma_next * math.sqrt(-math.expm1(-2 * eta_h)) * run.s_noise
                x = x + run.noise(x, sigma, sigma_next) * noise_scale
            h_last = h
        old_denoised = denoised
    return x


@_sampler()
def sample_dpmpp_2m_sde(run: _Run, x: Tensor) -> Tensor:
    """DPM-Solver++(2M) SDE, midpoint correction."""
    return _dpmpp_2m_sde(run, x, "midpoint")


@_sampler()
def sample_dpmpp_2m_sde_heun(run: _Run, x: Tensor) -> Tensor:
    """DPM-Solver++(2M) SDE, Heun-type correction."""
    return _dpmpp_2m_sde(run, x, "heun")


@_sampler()
def sample_dpmpp_3m_sde(run: _Run, x: Tensor) -> Tensor:
    """DPM-Solver++(3M) SDE: third-order multistep with the SDE's exponential noise terms."""
    history: list[tuple[Tensor, float]] = []  # (denoised, h) of earlier steps, newest first
    for i, sigma, sigma_next in run.steps():
        denoised = run.denoise(x, sigma)
        run.report(i, x, sigma, denoised)
        if sigma_next == 0:
            x = denoised
            continue
        h = _log_ratio(sigma, sigma_next)
        h_eta = h * (run.eta + 1)
        x = math.exp(-h_eta) * x - math.expm1(-h_eta) * denoised
        phi_2 = math.expm1(-h_eta) / h_eta + 1
        if len(history) >= 2:
            (denoised_1, h_1), (denoised_2, h_2) = history[:2]
            r0, r1 = h_1 / h, h_2 / h
            d1_0 = (denoised - denoised_1) / r0
            d1_1 = (denoised_1 - denoised_2) / r1
            d1 = d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1)
            d2 = (d1_0 - d1_1) / (r0 + r1)
            phi_3 = phi_2 / h_eta - 0.5
            x = x + phi_2 * d1 - phi_3 * d2
        elif history:
            denoised_1, h_1 = history[0]
            x = x + phi_2 * (denoised - denoised_1) / (h_1 / h)
        if run.eta:
            noise_scale = sigma_next * math.sqrt(-math.expm1(-2 * h * run.eta)) * run.s_noise
            x = x + run.noise(x, sigma, sigma_next) * noise_scale
        history = [(denoised, h), *history][:2]
    return x


# --- DPM-Solver (Lu et al. 2022), noise prediction, t = -log(sigma) --------------------------------

def _sigma(t: float) -> float:
    return math.exp(-t)


def _t(sigma: float) -> float:
    return -math.log(sigma) if sigma > 0 else math.inf


class _DPMSolver:
    """Single-step DPM-Solver-1/2/3 updates; `cache` holds this step's noise predictions by name, so the
    adaptive sampler's lower-order estimate reuses the higher-order one's evaluations."""

    def __init__(self, run: _Run):
        self.run = run

    def eps(self, cache: dict[str, Tensor], key: str, x: Tensor, t: float) -> Tensor:
        if key not in cache:
            sigma = _sigma(t)
            cache[key] = (x - self.run.denoise(x, sigma)) / sigma
        return cache[key]

    def step_1(self, x: Tensor, t: float, t_next: float, cache: dict[str, Tensor]) -> Tensor:
        return x - _sigma(t_next) * math.expm1(t_next - t) * self.eps(cache, "eps", x, t)

    def step_2(self, x: Tensor, t: float, t_next: float, cache: dict[str, Tensor], r1: float = 0.5) -> Tensor:
        h = t_next - t
        eps = self.eps(cache, "eps", x, t)
        s1 = t + r1 * h
        u1 = x - _sigma(s1) * math.expm1(r1 * h) * eps
        eps_r1 = self.eps(cache, "eps_r1", u1, s1)
        return x - _sigma(t_next) * math.expm1(h) * (eps + (eps_r1 - eps) / (2 * r1))

    def step_3(self, x: Tensor, t: float, t_next: float, cache: dict[str, Tensor],
               r1: float = 1 / 3, r2: float = 2 / 3) -> Tensor:
        h = t_next - t
        eps = self.eps(cache, "eps", x, t)
        s1, s2 = t + r1 * h, t + r2 * h
        u1 = x - _sigma(s1) * math.expm1(r1 * h) * eps
        eps_r1 = self.eps(cache, "eps_r1", u1, s1)
        u2 = (x - _sigma(s2) * math.expm1(r2 * h) * eps
              - _sigma(s2) * (r2 / r1) * (math.expm1(r2 * h) / (r2 * h) - 1) * (eps_r1 - eps))
        eps_r2 = self.eps(cache, "eps_r2", u2, s2)
        return x - _sigma(t_next) * math.expm1(h) * eps - _sigma(t_next) / r2 * (math.expm1(h) / h - 1) * (eps_r2 - eps)

    def step(self, order: int, x: Tensor, t: float, t_next: float, cache: dict[str, Tensor]) -> Tensor:
        if order == 1:
            return self.step_1(x, t, t_next, cache)
        if order == 2:
            return self.step_2(x, t, t_next, cache)
        return self.step_3(x, t, t_next, cache)

    def ancestral(self, t: float, t_next: float, t_end: float) -> tuple[float, float]:
        """(t to step to deterministically, sigma of noise to add) for an ancestral step from t to t_next."""
        if not self.run.eta:
            return t_next, 0.0
        sigma_down, _ = ancestral_step(_sigma(t), _sigma(t_next), self.run.eta)
        t_down = min(t_end, _t(sigma_down))
        return t_down, math.sqrt(max(_sigma(t_next) ** 2 - _sigma(t_down) ** 2, 0.0))


def _positive_range(sigmas: Sequence[float]) -> tuple[float, float]:
    return min(s for s in sigmas if s > 0), max(sigmas)


@_sampler()
def sample_dpm_fast(run: _Run, x: Tensor) -> Tensor:
    """DPM-Solver-fast: len(sigmas) - 1 model evaluations in third-order steps, uniform in t = -log(sigma).

    Only the schedule's end points are used; as in k-diffusion, sampling ends at the smallest positive
    sigma (no final denoising step).
    """
    solver = _DPMSolver(run)
    sigma_min, sigma_max = _positive_range(run.sigmas)
    t_start, t_end = _t(sigma_max), _t(sigma_min)
    nfe = len(run.sigmas) - 1
    m = nfe // 3 + 1
    orders = [3] * (m - 2) + [2, 1] if nfe % 3 == 0 else [3] * (m - 1) + [nfe % 3]
    ts = np.linspace(t_start, t_end, m + 1).tolist()
    for i, t, t_next in run.steps(zip(ts[:-1], ts[1:])):
        cache: dict[str, Tensor] = {}
        t_down, noise_sigma = solver.ancestral(t, t_next, t_end)
        eps = solver.eps(cache, "eps", x, t)
        run.report(i, x, _sigma(t), x - _sigma(t) * eps)
        x = solver.step(orders[i], x, t, t_down, cache)
        if noise_sigma:
            x = x + run.noise(x, _sigma(t), _sigma(t_next)) * run.s_noise * noise_sigma
    return x


class _PIDStepSizeController:
    """PID step-size control on the inverse error (Söderlind 2003), as in "Gotta Go Fast"
    (Jolicoeur-Martineau et al. 2021); the factor is softened by 1 + atan(f - 1)."""

    def __init__(self, h: float, pcoeff: float, icoeff: float, dcoeff: float, order: float, accept_safety: float):
        self.h = h
        self.exponents = ((pcoeff + icoeff + dcoeff) / order, -(pcoeff + 2 * dcoeff) / order, dcoeff / order)
        self.accept_safety = accept_safety
        self.inv_errors: list[float] = []

    def propose_step(self, error: float) -> bool:
        """Scale h by the controller's factor; True when the step that gave `error` is accepted."""
        inv_error = 1 / (error + 1e-8)
        if not self.inv_errors:
            self.inv_errors = [inv_error] * 3
        self.inv_errors[0] = inv_error
        factor = math.prod(e ** b for e, b in zip(self.inv_errors, self.exponents))
        factor = 1 + math.atan(factor - 1)
        accept = factor >= self.accept_safety
        if accept:
            self.inv_errors = [inv_error, inv_error, self.inv_errors[1]]
        self.h *= factor
        return accept


@_sampler()
def sample_dpm_adaptive(run: _Run, x: Tensor, *, order: int = 3, rtol: float = 0.05, atol: float = 0.0078,
                        h_init: float = 0.05, pcoeff: float = 0.0, icoeff: float = 1.0, dcoeff: float = 0.0,
                        accept_safety: float = 0.81) -> Tensor:
    """DPM-Solver-12 / -23 with adaptive step size (Lu et al. 2022) between the schedule's end points.

    The step count ignores the schedule; the error norm is over the whole batch (as k-diffusion), so a
    batch item's result depends on its batch. Ends at the smallest positive sigma, like DPM fast.
    """
    if order not in (2, 3):
        raise ValueError("order must be 2 or 3")
    solver = _DPMSolver(run)
    sigma_min, sigma_max = _positive_range(run.sigmas)
    t, t_end = _t(sigma_max), _t(sigma_min)
    pid = _PIDStepSizeController(abs(h_init), pcoeff, icoeff, dcoeff, 1.5 if run.eta else order, accept_safety)
    x_prev = x
    i = 0
    while t < t_end - 1e-5 and not run.stopped():
        cache: dict[str, Tensor] = {}
        t_next = min(t_end, t + pid.h)
        t_down, noise_sigma = solver.ancestral(t, t_next, t_end)
        eps = solver.eps(cache, "eps", x, t)
        run.report(i, x, _sigma(t), x - _sigma(t) * eps)
        if order == 2:
            x_low = solver.step_1(x, t, t_down, cache)
            x_high = solver.step_2(x, t, t_down, cache)
        else:
            x_low = solver.step_2(x, t, t_down, cache, r1=1 / 3)
            x_high = solver.step_3(x, t, t_down, cache)
        delta = (rtol * torch.maximum(x_low.abs(), x_prev.abs())).clamp(min=atol)
        error = float(torch.linalg.vector_norm((x_low - x_high) / delta)) / math.sqrt(x.numel())
        if pid.propose_step(error):
            x_prev = x_low
            x = x_high
            if noise_sigma:
                x = x + run.noise(x, _sigma(t), _sigma(t_next)) * run.s_noise * noise_sigma
            t = t_next
        i += 1
    return x


# --- Timestep-based samplers in sigma space ---------------------------------------------------------

_ADAMS_BASHFORTH = {1: (3 / 2, -1 / 2), 2: (23 / 12, -16 / 12, 5 / 12), 3: (55 / 24, -59 / 24, 37 / 24, -9 / 24)}


@_sampler()
def sample_plms(run: _Run, x: Tensor) -> Tensor:
    """PLMS (Liu et al. 2022): DDIM steps with eps from Adams-Bashforth over past eps (fixed coefficients,
    up to 4th order); the first step uses the pseudo improved Euler (Heun) estimate."""
    past_eps: list[Tensor] = []  # newest first
    for i, sigma, sigma_next in run.steps():
        denoised = run.denoise(x, sigma)
        run.report(i, x, sigma, denoised)
        eps = _to_d(x, sigma, denoised)
        if past_eps:
            weights = _ADAMS_BASHFORTH[len(past_eps)]
            eps_step = sum((w * e for w, e in zip(weights[1:], past_eps)), weights[0] * eps)
        elif sigma_next > 0:
            x_euler = x + eps * (sigma_next - sigma)
            eps_step = (eps + _to_d(x_euler, sigma_next, run.denoise(x_euler, sigma_next))) / 2
        else:
            eps_step = eps
        x = x + eps_step * (sigma_next - sigma)
        past_eps = [eps, *past_eps][:3]
    return x


def _unipc_step(run: _Run, x: Tensor, lambdas: list[float], models: list[Tensor], sigma: float,
                sigma_next: float, order: int, correct: bool) -> tuple[Tensor, Tensor | None]:
    """One UniPC step (Zhao et al. 2023), data prediction, B(h) = e^h - 1 ("bh2"), alpha = 1.

    Predictor UniP-`order` from the last `order` model outputs; with `correct`, the model is evaluated at
    the prediction and the UniC corrector applied. Returns (x_next, model output at x_next or None).
    """
    lambda_s, m0 = lambdas[-1], models[-1]
    h = _log_ratio(sigma, sigma_next)
    rks = [(lambdas[-(k + 1)] - lambda_s) / h for k in range(1, order)]
    d1s = [(models[-(k + 1)] - m0) / rk for k, rk in zip(range(1, order), rks)]
    rks.append(1.0)

    hh = -h
    h_phi_1 = math.expm1(hh)
    b_h = math.expm1(hh)
    rows, b = [], []
    h_phi_k, factorial = h_phi_1 / hh - 1, 1
    for k in range(1, order + 1):
        rows.append([rk ** (k - 1) for rk in rks])
        b.append(h_phi_k * factorial / b_h)
        factorial *= k + 1
        h_phi_k = h_phi_k / hh - 1 / factorial
    r_matrix, b_vector = np.array(rows), np.array(b)

    x_base = sigma_next / sigma * x - h_phi_1 * m0
    x_next = x_base
    if d1s:
        rhos_p = [0.5] if order == 2 else np.linalg.solve(r_matrix[:-1, :-1], b_vector[:-1]).tolist()
        x_next = x_base - b_h * sum(rho * d for rho, d in zip(rhos_p, d1s))
    if not correct:
        return x_next, None

    model_next = run.denoise(x_next, sigma_next)
    rhos_c = [0.5] if order == 1 else np.linalg.solve(r_matrix, b_vector).tolist()
    correction = sum((rho * d for rho, d in zip(rhos_c[:-1], d1s)), rhos_c[-1] * (model_next - m0))
    return x_base - b_h * correction, model_next


@_sampler()
def sample_unipc(run: _Run, x: Tensor, *, order: int = 3) -> Tensor:
    """UniPC multistep (bh2, predictor-corrector), warming up from order 1 and lowering the order for
    the final steps; the last step to sigma 0 returns the denoised prediction."""
    n = len(run.sigmas) - 1
    lambdas: list[float] = []
    models: list[Tensor] = []
    denoised: Tensor | None = None
    for i, sigma, sigma_next in run.steps():
        if denoised is None:
            denoised = run.denoise(x, sigma)
        run.report(i, x, sigma, denoised)
        lambdas, models = [*lambdas, -math.log(sigma)][-order:], [*models, denoised][-order:]
        if sigma_next == 0:
            x = denoised
            continue
        step_order = min(order, i + 1, n - i)
        x, denoised = _unipc_step(run, x, lambdas, models, sigma, sigma_next, step_order, correct=i < n - 1)
    return x


@_sampler()
def sample_lcm(run: _Run, x: Tensor) -> Tensor:
    """Latent Consistency Model sampling: jump to the denoised estimate, then re-noise to sigma_next."""
    for i, sigma, sigma_next in run.steps():
        denoised = run.denoise(x, sigma)
        run.report(i, x, sigma, denoised)
        x = denoised
        if sigma_next > 0:
            x = x + sigma_next * run.noise(x, sigma, sigma_next)
    return x


# --- Restart (Xu et al. 2023) -----------------------------------------------------------------------

def _restart_plan(sigmas: list[float]) -> list[tuple[float, float]]:
    """The (sigma, sigma_next) Heun steps of A1111's automatic Restart schedule.

    Under 20 steps: the schedule as given. Otherwise a Karras main schedule over the same range with
    fewer steps, and at the step nearest sigma 0.1 a restart: jump back up to the sigma nearest 2 and
    descend again in `restart_steps` Karras steps, `restart_times` times; the total stays `steps`.
    """
    steps = len(sigmas) - 1
    if steps < 20:
        return list(zip(sigmas[:-1], sigmas[1:]))
    restart_steps, restart_times = (steps // 4, 2) if steps >= 36 else (9, 1)
    main = karras_sigmas(steps - restart_steps * restart_times, sigmas[-2], sigmas[0]).tolist() + [0.0]
    restart_at = min(range(len(main)), key=lambda k: abs(main[k] - 0.1))
    restart_top = min(range(len(main)), key=lambda k: abs(main[k] - 2.0))
    plan = []
    for i in range(len(main) - 1):
        plan.append((main[i], main[i + 1]))
        if i + 1 == restart_at and restart_top < restart_at:
            ladder = karras_sigmas(restart_steps + 1, main[restart_at], main[restart_top]).tolist()
            plan += list(zip(ladder[:-1], ladder[1:])) * restart_times
    return plan


@_sampler()
def sample_restart(run: _Run, x: Tensor) -> Tensor:
    """Restart sampling: Heun steps; before a step that starts above the last sigma reached, add
    fresh noise to bring x up to that sigma."""
    last_sigma: float | None = None
    for i, sigma, sigma_next in run.steps(_restart_plan(run.sigmas)):
        if last_sigma is not None and last_sigma < sigma:
            x = x + run.noise(x, last_sigma, sigma) * run.s_noise * math.sqrt(sigma ** 2 - last_sigma ** 2)
        denoised = run.denoise(x, sigma)
        run.report(i, x, sigma, denoised)
        d = _to_d(x, sigma, denoised)
        dt = sigma_next - sigma
        if sigma_next == 0:
            x = x + d * dt
        else:
            x_2 = x + d * dt
            x = x + (d + _to_d(x_2, sigma_next, run.denoise(x_2, sigma_next))) / 2 * dt
        last_sigma = sigma_next
    return x


# --- Noise --------------------------------------------------------------------------------------------

class BrownianTreeNoiseSampler:
    """Brownian-motion noise for the SDE samplers, one torchsde Brownian tree per batch item seeded by that
    item's seed, so an image's noise does not depend on its batch (as A1111 builds it).

    Returns (W(t_next) - W(t)) / sqrt(|t_next - t|) with t = transform(sigma); k-diffusion's and
    A1111's transform is the identity. Pass sigma_min/max = the schedule's smallest positive and
    largest sigma, as A1111 does, to get its noise.
    """

    TOL = 1e-6  # torchsde's default, as k-diffusion uses it: the trees round times to 6 digits

    def __init__(self, x: Tensor, sigma_min: float | Tensor, sigma_max: float | Tensor, seeds: Sequence[int],
                 transform: Callable[[float], float] = lambda sigma: sigma):
        if len(seeds) != x.shape[0]:
            raise ValueError(f"{len(seeds)} seeds for a batch of {x.shape[0]}")
        self.transform = transform
        t0, t1 = transform(float(sigma_min)), transform(float(sigma_max))
        self.sign = 1 if t0 < t1 else -1
        low, high = min(t0, t1), max(t0, t1)
        # Queries are clamped to the rounded ends as torchsde would, without its warning at every step.
        self.bounds = (round(low, 6), round(high, 6))
        w0 = torch.zeros_like(x[0])
        self.trees = [torchsde.BrownianTree(low, w0, high, entropy=seed, tol=self.TOL) for seed in seeds]

    def __call__(self, sigma: float | Tensor, sigma_next: float | Tensor) -> Tensor:
        t0, t1 = (min(max(self.transform(float(s)), self.bounds[0]), self.bounds[1]) for s in (sigma, sigma_next))
        sign = self.sign * (1 if t0 < t1 else -1)
        low, high = min(t0, t1), max(t0, t1)
        return torch.stack([tree(low, high) for tree in self.trees]) * sign / math.sqrt(high - low)


# --- Registry -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SamplerInfo:
    """A sampler as A1111 lists it. `second_order`: two model calls per step; `uses_ensd`: A1111 applies
    the eta noise seed delta; `brownian_noise`: the caller should pass a BrownianTreeNoiseSampler."""
    name: str
    aliases: tuple[str, ...]
    function: SamplerFunction
    default_scheduler: str | None = None
    second_order: bool = False
    uses_ensd: bool = False
    brownian_noise: bool = False
    discard_next_to_last_sigma: bool = False
    eta_default: float = 1.0
    # which parameters it takes, so the infotext names them when they differ from the defaults (A1111: "Eta" /
    # "Eta DDIM", and the "Sigma churn/tmin/tmax/noise" of Euler, Heun and DPM2)
    takes_eta: bool = False
    takes_churn: bool = False

    def schedule_kwargs(self, always_discard_next_to_last_sigma: bool = False) -> dict:
        """What `schedules.get_sigmas` needs to know of this sampler (and of the option that forces the discard)."""
        return {"default_scheduler": self.default_scheduler,
                "discard_next_to_last_sigma": self.discard_next_to_last_sigma or always_discard_next_to_last_sigma}


SAMPLERS: tuple[SamplerInfo, ...] = (
    SamplerInfo("DPM++ 2M", ("k_dpmpp_2m", "dpmpp_2m"), sample_dpmpp_2m, default_scheduler="karras"),
    SamplerInfo("DPM++ SDE", ("k_dpmpp_sde", "dpmpp_sde"), sample_dpmpp_sde, default_scheduler="karras",
                second_order=True, brownian_noise=True, takes_eta=True),
    SamplerInfo("DPM++ 2M SDE", ("k_dpmpp_2m_sde", "dpmpp_2m_sde"), sample_dpmpp_2m_sde,
                default_scheduler="exponential", brownian_noise=True, takes_eta=True),
    SamplerInfo("DPM++ 2M SDE Heun", ("k_dpmpp_2m_sde_heun", "dpmpp_2m_sde_heun"), sample_dpmpp_2m_sde_heun,
                default_scheduler="exponential", brownian_noise=True, takes_eta=True),
    SamplerInfo("DPM++ 2S a", ("k_dpmpp_2s_a", "dpmpp_2s_ancestral"), sample_dpmpp_2s_ancestral,
                default_scheduler="karras", second_order=True, uses_ensd=True, takes_eta=True),
    SamplerInfo("DPM++ 3M SDE", ("k_dpmpp_3m_sde", "dpmpp_3m_sde"), sample_dpmpp_3m_sde,
                default_scheduler="exponential", discard_next_to_last_sigma=True, brownian_noise=True,
                takes_eta=True),
    SamplerInfo("Euler a", ("k_euler_a", "k_euler_ancestral", "euler_ancestral"), sample_euler_ancestral,
                uses_ensd=True, takes_eta=True),
    SamplerInfo("Euler", ("k_euler", "euler"), sample_euler, takes_churn=True),
    SamplerInfo("LMS", ("k_lms", "lms"), sample_lms),
    SamplerInfo("Heun", ("k_heun", "heun"), sample_heun, second_order=True, takes_churn=True),
    SamplerInfo("DPM2", ("k_dpm_2", "dpm_2"), sample_dpm_2, default_scheduler="karras",
                discard_next_to_last_sigma=True, second_order=True, takes_churn=True),
    SamplerInfo("DPM2 a", ("k_dpm_2_a", "dpm_2_ancestral"), sample_dpm_2_ancestral, default_scheduler="karras",
                discard_next_to_last_sigma=True, second_order=True, uses_ensd=True, takes_eta=True),
    SamplerInfo("DPM fast", ("k_dpm_fast", "dpm_fast"), sample_dpm_fast, uses_ensd=True, takes_eta=True),
    SamplerInfo("DPM adaptive", ("k_dpm_ad", "dpm_adaptive"), sample_dpm_adaptive, uses_ensd=True,
                takes_eta=True),
    SamplerInfo("Restart", ("restart",), sample_restart, default_scheduler="karras", second_order=True),
    SamplerInfo("DDIM", ("ddim",), sample_ddim, default_scheduler="ddim", eta_default=0.0, takes_eta=True),
    SamplerInfo("PLMS", ("plms",), sample_plms, default_scheduler="ddim"),
    SamplerInfo("UniPC", ("unipc", "uni_pc_bh2"), sample_unipc),
    SamplerInfo("LCM", ("k_lcm", "lcm"), sample_lcm),
)

_BY_NAME = {key.lower(): s for s in SAMPLERS for key in (s.name, *s.aliases)}


def find_sampler(name: str) -> SamplerInfo:
    """A sampler by A1111 label or alias, case-insensitive."""
    try:
        return _BY_NAME[name.strip().lower()]
    except KeyError:
        raise ValueError(f"Unknown sampler {name!r}; valid: {', '.join(s.name for s in SAMPLERS)}") from None


def sampler_and_scheduler(name: str, scheduler: str | None) -> tuple[str, str]:
    """A1111's reading of a sampler name: its label or an alias, or an older client's "DPM++ 2M Karras" (sampler and
    schedule type in one, split when no scheduler is given). An unknown name is kept for the job to refuse."""
    scheduler = scheduler or "Automatic"
    try:
        return find_sampler(name).name, scheduler
    except ValueError:
        pass
    if scheduler == "Automatic":
        for s in SCHEDULERS:
            for suffix in {s.label, s.name, *s.aliases}:
                if name.endswith(" " + suffix):
                    try:
                        return find_sampler(name[: -len(suffix) - 1]).name, s.label
                    except ValueError:
                        pass
    return name, scheduler
