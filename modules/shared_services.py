"""Which running program A1111's compatibility modules (`shared`, `sd_models`, `processing`...) speak for: bound once
at start-up, and, while a script job runs on a thread, that job's context (its settings with override_settings)."""
from __future__ import annotations

import threading

_services = None  # modules.generation.services.Services, once bound
_job = threading.local()
_extensions: tuple = ()  # modules.extensions.Extension: every one found at start
_active: frozenset[str] = frozenset()  # the names of those loaded


def bind(services) -> None:
    global _services
    _services = services


def set_extensions(found, active_names) -> None:
    """The extensions found at start and which of them are loaded (A1111's `modules.extensions.extensions`)."""
    global _extensions, _active
    _extensions, _active = tuple(found), frozenset(active_names)


def extensions() -> tuple:
    return _extensions


def is_active(name: str) -> bool:
    return name in _active


def bound() -> bool:
    return _services is not None


def services():
    if _services is None:
        raise RuntimeError("the extension modules are not bound to the running program yet (modules.shared.bind)")
    return _services


class job_context:  # noqa: N801 - used as a function: `with job_context(ctx)`
    """While a script job runs on this thread, `shared.opts` and `shared.state` are the job's."""

    def __init__(self, ctx):
        self.ctx = ctx

    def __enter__(self):
        self.saved = getattr(_job, "ctx", None)
        _job.ctx = self.ctx
        return self.ctx

    def __exit__(self, *exc):
        _job.ctx = self.saved


def in_script_job() -> bool:
    """Whether a script job runs on this thread (it holds the worker's turn)."""
    return getattr(_job, "ctx", None) is not None


def current_context():
    """The running script job's context, else the program's (None before `bind`)."""
    ctx = getattr(_job, "ctx", None)
    if ctx is not None:
        return ctx
    return _services.context if _services is not None else None
