"""One generation at a time, for the web UI and the HTTP API alike.

Requests run on a background thread; callers wait for the result, or poll progress snapshots
while they wait (to stream previews), and can interrupt or skip.
"""
from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

from modules.processing import (GenerationResult, Img2ImgRequest, ProcessingContext, Txt2ImgRequest,
                                process_img2img, process_txt2img)
from modules.progress import ProgressSnapshot
from modules.text_conditioning import PromptTokenizer, prompt_token_count


class GenerationWorker:
    def __init__(self, ctx: ProcessingContext):
        self.ctx = ctx
        self._lock = threading.Lock()  # the running job; others wait their turn
        self._counter: tuple[tuple, PromptTokenizer] | None = None  # reused while model and embeddings stay

    def run(self, req: Txt2ImgRequest) -> GenerationResult:
        with self._lock:
            if isinstance(req, Img2ImgRequest):
                return process_img2img(req, self.ctx)
            return process_txt2img(req, self.ctx)

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
        with self._lock:
            return fn()
