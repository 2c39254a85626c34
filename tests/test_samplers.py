"""Samplers and schedules against a Gaussian data model whose denoiser and ODE solution are exact.

Data x0 ~ N(MU, S^2) per dimension has the denoiser D(x, sigma) = MU + S^2 / (S^2 + sigma^2) (x - MU),
and the probability-flow ODE carries x(sigma_T) to MU + (x(sigma_T) - MU) sqrt(S^2 + sigma^2) / sqrt(S^2 + sigma_T^2).
"""
from __future__ import annotations

import itertools
import math

import pytest
import torch

from modules.sampling import (
    SAMPLERS,
    SCHEDULERS,
    BrownianTreeNoiseSampler,
    SamplerInfo,
    find_sampler,
    find_scheduler,
    get_sigmas,
    sigmas_from_alphas_cumprod,
)
from modules.sampling.samplers import _lms_coefficients
from modules.sampling.schedules import AYS_SD15, AYS_SDXL

MU, S = 0.3, 0.5


def sd_model_sigmas() -> torch.Tensor:
    """SD's training sigmas: scaled-linear betas 0.00085..0.012 over 1000 steps."""
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
    return sigmas_from_alphas_cumprod(torch.cumprod(1 - betas, 0))


MODEL_SIGMAS = sd_model_sigmas()
SIGMA_MIN, SIGMA_MAX = float(MODEL_SIGMAS[0]), float(MODEL_SIGMAS[-1])


def _sigma_view(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    assert sigma.shape == (x.shape[0],)
    return sigma.view(-1, *[1] * (x.ndim - 1))


def gaussian_denoiser(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    return MU + S ** 2 / (S ** 2 + _sigma_view(x, sigma) ** 2) * (x - MU)


def consistency_model(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """What an LCM model learns: the ODE's endpoint from (x, sigma), a sample rather than a mean."""
    return MU + S / torch.sqrt(S ** 2 + _sigma_view(x, sigma) ** 2) * (x - MU)


def ode_solution(x_start: torch.Tensor, sigma_start: float, sigma_end: float) -> torch.Tensor:
    return MU + (x_start - MU) * math.sqrt(S ** 2 + sigma_end ** 2) / math.sqrt(S ** 2 + sigma_start ** 2)


class PerItemNoise:
    """Noise drawn per batch item from that item's own generator, as the caller derives it from each seed."""

    def __init__(self, seeds: list[int], shape: tuple[int, ...]):
        self.generators = [torch.Generator().manual_seed(seed) for seed in seeds]
        self.shape = shape

    def __call__(self, _sigma: float, _sigma_next: float) -> torch.Tensor:
        return torch.stack([torch.randn(self.shape, generator=g, dtype=torch.float64) for g in self.generators])


def noise_for(info: SamplerInfo, x: torch.Tensor, sigmas: torch.Tensor, seeds: list[int]):
    if info.brownian_noise:
        return BrownianTreeNoiseSampler(x, sigmas[sigmas > 0].min(), sigmas.max(), seeds)
    return PerItemNoise(seeds, tuple(x.shape[1:]))


# --- 1. Deterministic samplers converge to the exact ODE solution --------------------------------------

DETERMINISTIC = ["Euler", "Heun", "LMS", "DPM2", "DPM++ 2M", "DDIM", "PLMS", "UniPC", "DPM fast"]
ENDS_AT_SIGMA_MIN = {"DPM fast", "DPM adaptive"}  # as in k-diffusion: no final denoising step


def ode_error(name: str, steps: int, **options) -> float:
    """Relative RMS error against the exact solution, on a Karras schedule down to sigma 0.002."""
    sigmas = get_sigmas("karras", steps, MODEL_SIGMAS, sigma_min=0.002).double()
    x_start = torch.randn(8, 64, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * sigmas[0]
    out = find_sampler(name).function(gaussian_denoiser, x_start, sigmas, eta=0.0, **options)
    sigma_end = float(sigmas[-2]) if name in ENDS_AT_SIGMA_MIN else 0.0
    exact = ode_solution(x_start, float(sigmas[0]), sigma_end)
    return float((out - exact).pow(2).mean().sqrt() / (exact - MU).pow(2).mean().sqrt())


@pytest.fixture(scope="module")
def euler_errors() -> dict[int, float]:
    return {steps: ode_error("Euler", steps) for steps in (10, 40)}


@pytest.mark.parametrize("name", DETERMINISTIC)
def test_deterministic_sampler_converges(name, euler_errors):
    err_10, err_40 = ode_error(name, 10), ode_error(name, 40)
    print(f"{name}: relative error {err_10:.2e} at 10 steps, {err_40:.2e} at 40")
    if name in ("Euler", "DDIM"):  # first order: error ~ 1/steps
        assert err_40 < err_10 / 3.5 and err_40 < 0.06
    else:  # second order or higher, and better than Euler at equal steps
        assert err_40 < err_10 / 10 and err_40 < 0.01
        assert err_10 < euler_errors[10] and err_40 < euler_errors[40] / 5


def test_dpm_adaptive_meets_its_tolerance(euler_errors):
    default = ode_error("DPM adaptive", 10)
    tight = ode_error("DPM adaptive", 10, rtol=0.0005, atol=0.00005)
    print(f"DPM adaptive: relative error {default:.2e} (rtol 0.05), {tight:.2e} (rtol 0.0005)")
    assert default < 0.05 and default < euler_errors[40]
    assert tight < default / 10


def test_ddim_without_eta_is_euler():
    sigmas = get_sigmas("ddim", 12, MODEL_SIGMAS)
    x = torch.randn(2, 16, generator=torch.Generator().manual_seed(3)) * sigmas[0]
    ddim = find_sampler("DDIM")
    assert ddim.eta_default == 0.0
    euler = find_sampler("Euler").function(gaussian_denoiser, x, sigmas)
    assert torch.equal(ddim.function(gaussian_denoiser, x, sigmas), euler)


@pytest.mark.parametrize("sde, ode", [("DPM++ 2M SDE", "DPM++ 2M"), ("DPM++ SDE", "DPM++ 2S a")])
def test_sde_sampler_without_noise_is_its_ode_solver(sde, ode):
    sigmas = get_sigmas("karras", 12, MODEL_SIGMAS).double()
    x = torch.randn(2, 16, generator=torch.Generator().manual_seed(4), dtype=torch.float64) * sigmas[0]
    a = find_sampler(sde).function(gaussian_denoiser, x, sigmas, eta=0.0)
    b = find_sampler(ode).function(gaussian_denoiser, x, sigmas, eta=0.0)
    torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


def test_lms_coefficients_are_adams_bashforth_on_even_steps():
    sigmas = [10.0, 9.0, 8.0, 7.0, 6.0]
    expected = [-55 / 24, 59 / 24, -37 / 24, 9 / 24]  # step -1: coefficients of d_i, d_i-1, ...
    assert _lms_coefficients(sigmas, 3, 4) == pytest.approx(expected, rel=1e-12)
    assert _lms_coefficients(sigmas, 0, 1) == pytest.approx([-1.0])


# --- 2. Stochastic samplers sample the data distribution -----------------------------------------------

STOCHASTIC = [  # (sampler, options, steps, std tolerance): first-order ones get more steps and slack
    ("Euler a", {}, 300, 0.05),
    ("DDIM", {"eta": 1.0}, 300, 0.05),
    ("Euler", {"s_churn": 10.0}, 300, 0.05),
    ("Heun", {"s_churn": 40.0}, 50, 0.03),
    ("DPM2 a", {}, 50, 0.03),
    ("DPM++ 2S a", {}, 50, 0.03),
    ("DPM++ SDE", {}, 50, 0.03),
    ("DPM++ 2M SDE", {}, 50, 0.03),
    ("DPM++ 2M SDE Heun", {}, 50, 0.03),
    ("DPM++ 3M SDE", {}, 50, 0.03),
    ("DPM fast", {"eta": 1.0}, 50, 0.03),
    ("DPM adaptive", {"eta": 1.0}, 50, 0.03),
    ("Restart", {}, 50, 0.03),
    ("LCM", {}, 50, 0.03),
]


@pytest.mark.parametrize("name, options, steps, tolerance", STOCHASTIC, ids=[f"{c[0]}{c[1] or ''}" for c in STOCHASTIC])
def test_stochastic_sampler_matches_data_distribution(name, options, steps, tolerance):
    info = find_sampler(name)
    sigmas = get_sigmas("karras", steps, MODEL_SIGMAS, **info.schedule_kwargs()).double()
    generator = torch.Generator().manual_seed(1)
    x = MU + math.sqrt(S ** 2 + float(sigmas[0]) ** 2) * torch.randn(2, 16384, generator=generator, dtype=torch.float64)
    model = consistency_model if name == "LCM" else gaussian_denoiser
    out = info.function(model, x, sigmas, noise_sampler=noise_for(info, x, sigmas, [11, 12]), **options)
    mean_error, std_ratio = float(out.mean()) - MU, float(out.std()) / S
    print(f"{name} {options}: mean {mean_error:+.4f}, std/s {std_ratio:.4f}")
    assert abs(mean_error) < 0.01
    assert abs(std_ratio - 1) < tolerance


# --- 3. Every sampler runs on every schedule ------------------------------------------------------------

TESTED_SCHEDULES = ["Automatic", "Karras", "Exponential", "Uniform", "SGM Uniform", "Align Your Steps", "Beta",
                    "KL Optimal", "Simple", "Normal", "DDIM", "Polyexponential"]


@pytest.mark.parametrize("info", SAMPLERS, ids=[s.name for s in SAMPLERS])
def test_sampler_runs_on_every_schedule(info):
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(5))
    for scheduler in TESTED_SCHEDULES:
        sigmas = get_sigmas(scheduler, 8, MODEL_SIGMAS, **info.schedule_kwargs())
        out = info.function(gaussian_denoiser, x * sigmas[0], sigmas, eta=info.eta_default)
        assert out.shape == x.shape and torch.isfinite(out).all(), scheduler


@pytest.mark.parametrize("steps", [1, 2, 10, 30])
@pytest.mark.parametrize("scheduler", [s.label for s in SCHEDULERS])
def test_schedule_shape(scheduler, steps):
    sigmas = get_sigmas(scheduler, steps, MODEL_SIGMAS)
    assert sigmas.shape == (steps + 1,) and sigmas.dtype == torch.float32
    assert sigmas[-1] == 0 and (sigmas[:-1] > sigmas[1:]).all()
    assert sigmas[0] <= SIGMA_MAX * 1.0001
    if steps >= 10:  # DDIM starts at timestep 1 + (steps - 1) * (1000 // steps), like A1111's
        assert sigmas[0] > SIGMA_MAX / 2


def test_karras_formula_on_sd_range():
    assert (SIGMA_MIN, SIGMA_MAX) == pytest.approx((0.0292, 14.6146), abs=1e-4)
    n, rho = 10, 7.0
    expected = [(SIGMA_MAX ** (1 / rho) + k / (n - 1) * (SIGMA_MIN ** (1 / rho) - SIGMA_MAX ** (1 / rho))) ** rho
                for k in range(n)] + [0.0]
    assert get_sigmas("Karras", n, MODEL_SIGMAS).tolist() == pytest.approx(expected, rel=1e-6)
    assert get_sigmas("karras", n, MODEL_SIGMAS, rho=3.0)[4] != pytest.approx(expected[4], rel=1e-3)
    overridden = get_sigmas("karras", n, MODEL_SIGMAS, sigma_min=0.1, sigma_max=10.0)
    assert overridden[0] == pytest.approx(10.0) and overridden[-2] == pytest.approx(0.1)


def test_uniform_is_the_models_discretisation():
    sigmas = get_sigmas("uniform", 4, MODEL_SIGMAS)
    expected = MODEL_SIGMAS[[999, 666, 333, 0]].tolist() + [0.0]
    assert sigmas.tolist() == pytest.approx(expected, rel=1e-6)


def test_ddim_schedule_uses_ddim_timesteps():
    sigmas = get_sigmas("ddim", 20, MODEL_SIGMAS)
    assert sigmas[:-1].tolist() == pytest.approx(MODEL_SIGMAS[list(range(951, 0, -50))].tolist(), rel=1e-6)


def test_align_your_steps_lists():
    assert get_sigmas("Align Your Steps", 11, MODEL_SIGMAS).tolist() == pytest.approx([*AYS_SD15, 0.0], rel=1e-6)
    sdxl = get_sigmas("Align Your Steps", 11, MODEL_SIGMAS, is_sdxl=True)
    assert sdxl.tolist() == pytest.approx([*AYS_SDXL, 0.0], rel=1e-6)
    interpolated = get_sigmas("Align Your Steps", 21, MODEL_SIGMAS)
    assert interpolated[0:-1:2].tolist() == pytest.approx(AYS_SD15, rel=1e-5)  # the published points stay on the grid


def test_automatic_and_discarded_sigma():
    assert torch.equal(get_sigmas("Automatic", 10, MODEL_SIGMAS, **find_sampler("Euler").schedule_kwargs()),
                       get_sigmas("Uniform", 10, MODEL_SIGMAS))
    assert torch.equal(get_sigmas("automatic", 10, MODEL_SIGMAS, **find_sampler("DPM++ 2M").schedule_kwargs()),
                       get_sigmas("karras", 10, MODEL_SIGMAS))
    dpm2 = get_sigmas("Automatic", 10, MODEL_SIGMAS, **find_sampler("DPM2").schedule_kwargs())
    karras_11 = get_sigmas("karras", 11, MODEL_SIGMAS)
    assert len(dpm2) == 11 and torch.equal(dpm2, torch.cat([karras_11[:-2], karras_11[-1:]]))


def test_names_are_case_insensitive():
    assert find_scheduler("sgm uniform") is find_scheduler("SGM_UNIFORM") is find_scheduler("SGMUniform")
    assert find_sampler("euler A") is find_sampler("k_euler_a") is find_sampler("euler_ancestral")
    assert find_sampler("dpm++ 2m").default_scheduler == "karras"


def test_sampler_list_matches_a1111():
    assert [s.name for s in SAMPLERS] == [
        "DPM++ 2M", "DPM++ SDE", "DPM++ 2M SDE", "DPM++ 2M SDE Heun", "DPM++ 2S a", "DPM++ 3M SDE", "Euler a",
        "Euler", "LMS", "Heun", "DPM2", "DPM2 a", "DPM fast", "DPM adaptive", "Restart", "DDIM", "PLMS", "UniPC", "LCM"]
    assert [s.label for s in SCHEDULERS] == [
        "Automatic", "Uniform", "Karras", "Exponential", "Polyexponential", "SGM Uniform", "KL Optimal",
        "Align Your Steps", "Simple", "Normal", "DDIM", "Beta"]


# --- 4. Determinism and per-item noise ------------------------------------------------------------------

@pytest.mark.parametrize("info", SAMPLERS, ids=[s.name for s in SAMPLERS])
def test_same_seeds_same_result_and_batch_independence(info):
    steps = 30 if info.name == "Restart" else 8  # Restart only restarts from 20 steps
    sigmas = get_sigmas("Automatic", steps, MODEL_SIGMAS, **info.schedule_kwargs()).double()
    start = {seed: torch.randn(3, 8, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
             for seed in (21, 22)}

    def run(seeds: list[int]) -> torch.Tensor:
        x = torch.stack([start[seed] for seed in seeds]) * sigmas[0]
        return info.function(gaussian_denoiser, x, sigmas, eta=1.0, noise_sampler=noise_for(info, x, sigmas, seeds))

    pair = run([21, 22])
    assert torch.equal(pair, run([21, 22]))
    if info.name != "DPM adaptive":  # its step size follows an error norm over the whole batch, as in k-diffusion
        torch.testing.assert_close(pair[1], run([22])[0], rtol=1e-12, atol=1e-12)


def test_brownian_noise_is_per_item_and_unit_variance():
    x = torch.zeros(2, 4096)
    a = BrownianTreeNoiseSampler(x, 0.03, 14.6, seeds=[1, 2])
    b = BrownianTreeNoiseSampler(x[:1], 0.03, 14.6, seeds=[2])
    noise = a(5.0, 4.0)
    assert torch.equal(noise[1], b(5.0, 4.0)[0])
    assert torch.equal(noise, BrownianTreeNoiseSampler(x, 0.03, 14.6, seeds=[1, 2])(5.0, 4.0))
    assert float(noise.std()) == pytest.approx(1.0, abs=0.05)
    # Increments of one path: W(3)-W(5) is the sum of W(4)-W(5) and W(3)-W(4).
    whole = a(5.0, 3.0) * math.sqrt(2.0)
    torch.testing.assert_close(whole, a(5.0, 4.0) + a(4.0, 3.0), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError):
        BrownianTreeNoiseSampler(x, 0.03, 14.6, seeds=[1])


# --- 5. Progress callback and interruption ------------------------------------------------------------

@pytest.mark.parametrize("info", SAMPLERS, ids=[s.name for s in SAMPLERS])
def test_callback_each_step_and_stop(info):
    steps = 10
    sigmas = get_sigmas("Automatic", steps, MODEL_SIGMAS, **info.schedule_kwargs())
    x = torch.randn(2, 16, generator=torch.Generator().manual_seed(6)) * sigmas[0]

    calls: list[dict] = []
    info.function(gaussian_denoiser, x, sigmas, callback=calls.append)
    assert [c["i"] for c in calls] == list(range(len(calls)))
    assert set(calls[0]) == {"i", "x", "sigma", "sigma_hat", "denoised"}
    if info.name not in ("DPM fast", "DPM adaptive"):  # their step counts are their own
        assert len(calls) == steps

    calls.clear()
    model_calls = 0

    def counting_model(x, sigma):
        nonlocal model_calls
        model_calls += 1
        return gaussian_denoiser(x, sigma)

    out = info.function(counting_model, x, sigmas, callback=calls.append, should_stop=lambda: len(calls) >= 3)
    assert len(calls) == 3 and out.shape == x.shape and torch.isfinite(out).all()
    assert model_calls <= 3 * (3 if info.name in ("DPM fast", "DPM adaptive") else 2)


def test_restart_keeps_the_step_count():
    for steps in (20, 30, 40):
        sigmas = get_sigmas("karras", steps, MODEL_SIGMAS)
        calls: list[dict] = []
        x = torch.randn(1, 4) * sigmas[0]
        find_sampler("Restart").function(gaussian_denoiser, x, sigmas, callback=calls.append)
        assert len(calls) == steps
        assert any(b["sigma"] > a["sigma"] for a, b in itertools.pairwise(calls))  # it went back up


# --- 6. Unknown names -------------------------------------------------------------------------------------

def test_unknown_names_list_valid_ones():
    with pytest.raises(ValueError, match=r"Euler a.*DPM\+\+ 2M|DPM\+\+ 2M.*Euler a"):
        find_sampler("Euler b")
    with pytest.raises(ValueError, match="Karras.*Align Your Steps"):
        get_sigmas("karas", 10, MODEL_SIGMAS)
    with pytest.raises(ValueError):
        get_sigmas("karras", 0, MODEL_SIGMAS)
