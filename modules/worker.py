"""One generation at a time, for the web UI and the HTTP API alike.

Requests run on a background thread; callers wait for the result, or poll progress snapshots
while they wait (to stream previews), and can interrupt or skip.
"""
from __future__ import annotations

import threading
from contextlib import contextmanager
from collections.abc import Callable, Iterator

from modules.processing import (GenerationResult, Img2ImgRequest, ProcessingContext, Txt2ImgRequest,
                                process_img2img, process_txt2img)
from modules.progress import ProgressSnapshot
from modules.text_conditioning import PromptTokenizer, prompt_token_count


class GenerationWorker:
    def __init__(self, ctx: ProcessingContext):
        self.ctx = ctx
        self._lock = threading.Lock()  # the running job; others wait their turn
        self._waiting = 0  # jobs waiting for the lock (for "queued" displays)
        self._count_lock = threading.Lock()
        self._counter: tuple[tuple, PromptTokenizer] | None = None  # reused while model and embeddings stay

    def run(self, req: Txt2ImgRequest, ctx: ProcessingContext | None = None, models: dict[str, str] | None = None,
            restore_models: bool = True) -> GenerationResult:
        """Carry out a request after the jobs before it. `ctx` replaces the shared context for this job (the API's
        override_settings); `models` may name a `sd_model_checkpoint` and `sd_vae` to use, put back afterwards
        when `restore_models`."""
        ctx = ctx or self.ctx
        with self._turn():
            manager = self.ctx.models
            before = (manager.options.sd_model_checkpoint, manager.options.sd_vae)
            try:
                if models and models.get("sd_model_checkpoint"):
                    manager.load(models["sd_model_checkpoint"])
                if models and models.get("sd_vae"):
                    manager.set_vae(models["sd_vae"])
                if isinstance(req, Img2ImgRequest):
                    return process_img2img(req, ctx)
                return process_txt2img(req, ctx)
            finally:
                if models and restore_models:
                    if before[1] != manager.options.sd_vae:
                        manager.set_vae(before[1])
                    if before[0] and before[0] != manager.options.sd_model_checkpoint:
                        manager.load(before[0])

    @contextmanager
    def _turn(self):
        with self._count_lock:
            self._waiting += 1
        try:
            self._lock.acquire()
        finally:
            with self._count_lock:
                self._waiting -= 1
        try:
            yield
        finally:
            self._lock.release()

    @property
    def waiting(self) -> int:
        """How many jobs are waiting for the one running now to finish."""
        return self._waiting

    def run_streaming(self, req: Txt2ImgRequest, poll_seconds: float = 0.5
                      ) -> Iterator[ProgressSnapshot | GenerationResult]:
        """Yield progress snapshots while the job runs, then its result (errors are re-raised)."""
        box: dict = {}

        def target():
            try:
                box["result"] = self.run(req)
            except BaseException as e:  # handed to the caller's thread
                box["error"] = e

        thread = threading.Thread(target=target, daemon=True)
        thread.start()
        while thread.is_alive():
            thread.join(poll_seconds)
            if thread.is_alive():
                yield self.ctx.state.snapshot()
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
        """Run something that must not overlap a generation (switching checkpoints)."""
        with self._turn():
            return fn()
