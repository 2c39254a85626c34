"""One generation at a time, for the web UI and the HTTP API alike.

Requests run on a background thread; callers wait for the result, or poll progress snapshots
while they wait (to stream previews), and can interrupt or skip.
"""
from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from PIL import Image

from modules.conditioning.text import PromptTokenizer, prompt_token_count
from modules.generation import (
    GenerationResult,
    Img2ImgRequest,
    ProcessingContext,
    Txt2ImgRequest,
    process_img2img,
    process_txt2img,
)
from modules.generation.extras import ExtrasRequest, Postprocess, run_extras
from modules.generation.progress import ProgressSnapshot

# Carries out a request in the worker's turn instead of txt2img/img2img: (request, context) -> result.
Runner = Callable[[Txt2ImgRequest | Img2ImgRequest, ProcessingContext], GenerationResult]


@dataclass(frozen=True)
class Queued:
    """The job waits: `ahead` jobs (the running one included) go first."""
    ahead: int


class GenerationWorker:
    def __init__(self, ctx: ProcessingContext):
        self.ctx = ctx
        self._turns = threading.Condition()  # first come, first served: tickets drawn in order, served in order
        self._next_ticket = 0
        self._serving = 0
        self._counter: tuple[tuple, PromptTokenizer] | None = None  # reused while model and embeddings stay
        self._holder = threading.local()  # whether this thread has its turn (a script's job runs inside its own)

    def run(self, req: Txt2ImgRequest | Img2ImgRequest, option_overrides: dict | None = None,
            models: dict[str, str] | None = None, restore_models: bool = True,
            on_ticket: Callable[[int], None] | None = None, runner: Runner | None = None) -> GenerationResult:
        """Carry out a request after the jobs before it. `option_overrides` (the API's override_settings) apply to
        a copy of the options made when this job's turn comes, so it sees every settings change made before it;
        `models` may name a `sd_model_checkpoint` and `sd_vae` to use, put back afterwards when `restore_models`.
        `runner` carries the request out instead of txt2img/img2img (a script: it may run several jobs)."""
        req.validate()  # a bad request is refused at once, not after the jobs ahead of it (Job checks again)
        with self._turn(on_ticket):
            ctx = self.ctx
            if option_overrides:
                ctx = replace(ctx, options=replace(ctx.options, **option_overrides))
            manager = self.ctx.models
            before = (manager.options.sd_model_checkpoint, manager.options.sd_vae)
            try:
                if models and models.get("sd_model_checkpoint"):
                    manager.load(models["sd_model_checkpoint"])
                if models and models.get("sd_vae"):
                    manager.set_vae(models["sd_vae"])
                if runner is not None:
                    return runner(req, ctx)
                if isinstance(req, Img2ImgRequest):
                    return process_img2img(req, ctx)
                return process_txt2img(req, ctx)
            finally:
                if models and restore_models:
                    if before[1] != manager.options.sd_vae:
                        manager.set_vae(before[1])
                    if before[0] and before[0] != manager.options.sd_model_checkpoint:
                        manager.load(before[0])

    def run_extras(self, pictures: list[Image.Image], req: ExtrasRequest, into: Path | None = None,
                   postprocess: Postprocess | None = None) -> tuple[list[Image.Image], list[str], list[Path]]:
        """Extras after the jobs before it (a model upscaler shares the device), with progress and interrupt;
        `postprocess`: the extensions' Extras scripts."""
        req.validate()
        with self._turn():
            state = self.ctx.state
            state.begin(len(pictures), text="extras")
            try:
                return run_extras(pictures, req, self.ctx.outputs_dir, self.ctx.options, into,
                                  self.ctx.upscalers, state, self.ctx.face_restorers, postprocess)
            finally:
                state.end()

    @contextmanager
    def _turn(self, on_ticket: Callable[[int], None] | None = None):
        """Wait until the jobs that came earlier are done; `on_ticket` learns this job's place in line. A thread
        that has its turn already (a script generating from inside its job) goes on at once."""
        if getattr(self._holder, "turn", False):
            if on_ticket is not None:
                on_ticket(self._serving)
            yield
            return
        with self._turns:
            ticket = self._next_ticket
            self._next_ticket += 1
            if on_ticket is not None:
                on_ticket(ticket)
            while self._serving != ticket:
                self._turns.wait()
        self._holder.turn = True
        try:
            yield
        finally:
            self._holder.turn = False
            with self._turns:
                self._serving += 1
                self._turns.notify_all()

    def ahead_of(self, ticket: int) -> int:
        """How many jobs run or wait before the job holding `ticket` (0: it is running)."""
        return max(0, ticket - self._serving)

    @property
    def waiting(self) -> int:
        """How many jobs are waiting for the one running now to finish."""
        return max(0, self._next_ticket - self._serving - 1)

    def run_streaming(self, req: Txt2ImgRequest | Img2ImgRequest, poll_seconds: float = 0.5,
                      option_overrides: dict | None = None, models: dict[str, str] | None = None,
                      runner: Runner | None = None) -> Iterator[Queued | ProgressSnapshot | GenerationResult]:
        """Yield Queued while other jobs go first, progress snapshots while the job runs, then its result
        (errors are re-raised). `option_overrides`, `models` and `runner` as in `run` (the page's "Override
        settings", its scripts)."""
        box: dict = {}
        ticket_known = threading.Event()

        def on_ticket(ticket: int) -> None:
            box["ticket"] = ticket
            ticket_known.set()

        def target():
            try:
                box["result"] = self.run(req, option_overrides=option_overrides, models=models, on_ticket=on_ticket,
                                         runner=runner)
            except BaseException as e:  # handed to the caller's thread
                box["error"] = e
                ticket_known.set()

        thread = threading.Thread(target=target, daemon=True)
        thread.start()
        ticket_known.wait()
        while thread.is_alive():
            thread.join(poll_seconds)
            if thread.is_alive():
                ahead = self.ahead_of(box["ticket"]) if "ticket" in box else 0
                yield Queued(ahead) if ahead else self.ctx.state.snapshot()
        if "error" in box:
            raise box["error"]
        yield box["result"]

    def interrupt(self) -> None:
        self.ctx.state.interrupt()

    def skip(self) -> None:
        self.ctx.state.skip()

    def progress(self) -> ProgressSnapshot:
        return self.ctx.state.snapshot()

    def token_count(self, prompt: str, steps: int, is_negative: bool = False) -> tuple[int, int]:
        """For the counters beside the prompt boxes: (tokens, limit)."""
        model = self.ctx.models.current
        if model is None:
            return 0, 75
        embeddings = {}
        if self.ctx.embeddings is not None:
            embeddings, _ = self.ctx.embeddings.for_model(model.spec)
        key = (id(model), tuple(sorted((name, id(e)) for name, e in embeddings.items())))
        if self._counter is None or self._counter[0] != key:  # called on every keystroke: build it once
            self._counter = (key, PromptTokenizer(model.tokenizers[0], embeddings))
        return prompt_token_count(self._counter[1], prompt, steps, is_negative)

    def with_lock(self, fn: Callable[[], object]) -> object:
        """Run something that must not overlap a generation (switching checkpoints, changing settings)."""
        with self._turn():
            return fn()
