"""A1111's `modules.sd_schedulers`: the schedule types by label."""
from __future__ import annotations

from collections import namedtuple

from modules.sampling.schedules import SCHEDULERS

Scheduler = namedtuple("Scheduler", ["name", "label", "function"])

schedulers = [Scheduler(s.name, s.label, getattr(s, "function", None)) for s in SCHEDULERS]
schedulers_map = {**{s.name: s for s in schedulers}, **{s.label: s for s in schedulers}}
