"""Samplers and sigma schedules (k-diffusion formulation) with A1111's names."""
from modules.sampling.samplers import (
    SAMPLERS,
    BrownianTreeNoiseSampler,
    NoiseSampler,
    SamplerFunction,
    SamplerInfo,
    find_sampler,
)
from modules.sampling.schedules import (
    SCHEDULERS,
    ModelSigmas,
    Scheduler,
    find_scheduler,
    get_sigmas,
    sigmas_from_alphas_cumprod,
)

__all__ = [
    "SAMPLERS", "SCHEDULERS", "BrownianTreeNoiseSampler", "ModelSigmas", "NoiseSampler", "SamplerFunction",
    "SamplerInfo", "Scheduler", "find_sampler", "find_scheduler", "get_sigmas", "sigmas_from_alphas_cumprod",
]
