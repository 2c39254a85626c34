"""A1111's `modules.sd_samplers`: the sampler list by A1111's names (X/Y/Z plot and extensions read it)."""
from __future__ import annotations

from collections import namedtuple

from modules.sampling.samplers import SAMPLERS, find_sampler

SamplerData = namedtuple("SamplerData", ["name", "constructor", "aliases", "options"])

all_samplers = [SamplerData(s.name, s.function, list(s.aliases), {"scheduler": s.default_scheduler} if
                            s.default_scheduler else {}) for s in SAMPLERS]
all_samplers_map = {s.name: s for s in all_samplers}
samplers = all_samplers
samplers_for_img2img = all_samplers
samplers_map = {alias.lower(): s.name for s in all_samplers for alias in [s.name, *s.aliases]}


def find_sampler_config(name: str) -> SamplerData | None:
    """A sampler by name or alias; None when unknown."""
    try:
        return all_samplers_map[find_sampler(name).name]
    except ValueError:
        return None


def visible_sampler_names() -> list[str]:
    return [s.name for s in all_samplers]


def set_samplers() -> None:
    """A1111 rebuilds its lists after settings hide samplers; ours are fixed."""
