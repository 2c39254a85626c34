"""Initial and per-step noise from seeds, with A1111's semantics.

Each image of a batch has its own generator seeded with its own seed, so image k of a batch is
the same as its seed generated alone. The first draw is the starting noise (optionally mixed with
a variation seed's noise by spherical interpolation, or taken at another resolution and pasted in
the middle: "resize seed from"); later draws feed ancestral and SDE samplers, from generators
re-seeded with seed + ENSD when an eta noise seed delta is set. Source "CPU" draws on the CPU so
results do not depend on the graphics card; "GPU" draws on the compute device.
"""
from __future__ import annotations

import torch

CPU = torch.device("cpu")

RNG_SOURCES = ("GPU", "CPU")


def _generator_device(source: str, device: torch.device) -> torch.device:
    return torch.device("cpu") if source == "CPU" or device.type in ("cpu", "mps") else device


def create_generator(seed: int, source: str, device: torch.device) -> torch.Generator:
    return torch.Generator(_generator_device(source, device)).manual_seed(int(seed))


def randn(seed: int, shape: tuple[int, ...], source: str, device: torch.device,
          generator: torch.Generator | None = None) -> torch.Tensor:
    gen = generator or create_generator(seed, source, device)
    return torch.randn(shape, generator=gen, device=gen.device).to(device)


def slerp(val: float, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation as A1111 does it (norms taken along dim 1 of a [C, H, W] noise)."""
    low_norm = low / torch.norm(low, dim=1, keepdim=True)
    high_norm = high / torch.norm(high, dim=1, keepdim=True)
    dot = (low_norm * high_norm).sum(1)
    if dot.mean() > 0.9995:
        return low * val + high * (1 - val)
    omega = torch.acos(dot)
    so = torch.sin(omega)
    return (torch.sin((1.0 - val) * omega) / so).unsqueeze(1) * low + (torch.sin(val * omega) / so).unsqueeze(1) * high


class ImageRNG:
    """Noise for one batch: `next()` first gives the starting noise, then per-step noise."""

    def __init__(self, shape: tuple[int, int, int], seeds: list[int], *, subseeds: list[int] | None = None,
                 subseed_strength: float = 0.0, seed_resize_from_h: int = 0, seed_resize_from_w: int = 0,
                 source: str = "GPU", device: torch.device = CPU, eta_noise_seed_delta: int = 0,
                 latent_scale: int = 8):
        if source not in RNG_SOURCES:
            raise ValueError(f"unknown RNG source {source!r}; choose one of {', '.join(RNG_SOURCES)}")
        self.shape = tuple(shape)
        self.seeds = list(seeds)
        self.subseeds = subseeds
        self.subseed_strength = subseed_strength
        self.resize_from = (seed_resize_from_h, seed_resize_from_w)
        self.source = source
        self.device = device
        self.ensd = eta_noise_seed_delta
        self.latent_scale = latent_scale
        self.generators = [create_generator(s, source, device) for s in self.seeds]
        self._first_done = False

    def _first(self) -> torch.Tensor:
        h, w = self.resize_from
        f = self.latent_scale
        noise_shape = self.shape if h <= 0 or w <= 0 else (self.shape[0], int(h) // f, int(w) // f)
        xs = []
        for i, (seed, gen) in enumerate(zip(self.seeds, self.generators)):
            subnoise = None
            if self.subseeds is not None and self.subseed_strength != 0:
                subseed = 0 if i >= len(self.subseeds) else self.subseeds[i]
                subnoise = randn(subseed, noise_shape, self.source, self.device)
            if noise_shape != self.shape:
                noise = randn(seed, noise_shape, self.source, self.device)
            else:
                noise = randn(seed, self.shape, self.source, self.device, generator=gen)
            if subnoise is not None:
                noise = slerp(self.subseed_strength, noise, subnoise)
            if noise_shape != self.shape:
                # the noise of the other resolution, centred in noise of this one
                x = randn(seed, self.shape, self.source, self.device, generator=gen)
                dx = (self.shape[2] - noise_shape[2]) // 2
                dy = (self.shape[1] - noise_shape[1]) // 2
                w_, h_ = noise_shape[2] if dx >= 0 else noise_shape[2] + 2 * dx, \
                    noise_shape[1] if dy >= 0 else noise_shape[1] + 2 * dy
                tx, ty = max(-dx, 0), max(-dy, 0)
                dx, dy = max(dx, 0), max(dy, 0)
                x[:, dy:dy + h_, dx:dx + w_] = noise[:, ty:ty + h_, tx:tx + w_]
                noise = x
            xs.append(noise)
        if self.ensd:
            self.generators = [create_generator(s + self.ensd, self.source, self.device) for s in self.seeds]
        return torch.stack(xs).to(self.device)

    def next(self) -> torch.Tensor:
        if not self._first_done:
            self._first_done = True
            return self._first()
        xs = [torch.randn(self.shape, generator=g, device=g.device) for g in self.generators]
        return torch.stack(xs).to(self.device)
