"""Progress of the job being generated, shared between the worker and whoever watches it.

The worker updates steps and previews; the UI/API read a snapshot and may ask to interrupt (stop,
keep what is done) or skip (abandon the current image batch, go on with the next).
"""
from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass

from PIL import Image


@dataclass(frozen=True)
class ProgressSnapshot:
    active: bool
    job_no: int  # current batch (0-based) of job_count
    job_count: int
    step: int  # sampling step within the current pass
    steps: int
    progress: float  # 0..1 over the whole job
    eta_seconds: float | None
    preview: Image.Image | None
    preview_id: int
    text: str


class GenerationState:
    def __init__(self, console: bool = True):
        self._lock = threading.Lock()
        self.console = console
        self.interrupted = False
        self.skipped = False
        self._active = False
        self._job_no = 0
        self._job_count = 0
        self._step = 0
        self._steps = 0
        self._started = 0.0
        self._preview: Image.Image | None = None
        self._preview_id = 0
        self._text = ""
        # jobs begun and not ended: a script's jobs run inside the job that started the script, and may run others
        # in theirs; for each inner one, (the outer job's batches done before it began, its own batches)
        self._depth = 0
        self._base = 0
        self._inner: list[tuple[int, int]] = []

    # ---- worker side ------------------------------------------------------------------------
    def begin(self, job_count: int, text: str = "") -> None:
        """A job starts: `job_count` batches (passes) to do. Inside another job (a script generating several
        times, as X/Y/Z plot does) its batches continue the outer count and an interrupt stays in force."""
        with self._lock:
            self._depth += 1
            if self._depth > 1:
                self._inner.append((self._base, max(1, job_count)))
                self._base = self._job_no
                self._job_count = max(self._job_count, self._base + max(1, job_count))
                self._step = self._steps = 0
                return
            self._base = 0
            self._inner.clear()
            self.interrupted = self.skipped = False
            self._active = True
            self._job_no, self._job_count = 0, max(1, job_count)
            self._step = self._steps = 0
            self._started = time.time()
            self._preview = None
            self._text = text

    def begin_pass(self, steps: int, job_no: int | None = None) -> None:
        with self._lock:
            if job_no is not None:
                self._job_no = self._base + job_no
            self._step, self._steps = 0, max(1, steps)
            self.skipped = False

    def step_done(self, preview: Image.Image | None = None) -> None:
        with self._lock:
            self._step += 1
            if preview is not None:
                self._preview = preview
                self._preview_id += 1
        if self.console:
            self._print_bar()

    def set_job_count(self, job_count: int) -> None:
        """A script says how many batches its whole run makes (A1111's `state.job_count = n`)."""
        with self._lock:
            self._job_count = max(1, job_count)

    def next_job(self) -> None:
        """One batch of a script's run done (A1111's `state.nextjob()`)."""
        with self._lock:
            self._job_no += 1
            self._step = 0

    @property
    def job_no(self) -> int:
        return self._job_no

    @property
    def job_count(self) -> int:
        return self._job_count

    @property
    def step(self) -> tuple[int, int]:
        """(steps done, steps) of the current pass."""
        return self._step, self._steps

    @property
    def text(self) -> str:
        return self._text

    def set_text(self, text: str) -> None:
        with self._lock:
            self._text = text

    def end(self) -> None:
        with self._lock:
            self._depth = max(0, self._depth - 1)
            if self._depth > 0 and self._inner:  # an inner job ended: its batches count as done for the outer one
                outer_base, count = self._inner.pop()
                self._job_no = max(self._job_no, self._base + count)
                self._base = outer_base
                return
            self._active = False
        if self.console:
            sys.stderr.write("\n")

    @property
    def should_stop(self) -> bool:
        return self.interrupted or self.skipped

    # ---- watcher side -----------------------------------------------------------------------
    def interrupt(self) -> None:
        self.interrupted = True

    def skip(self) -> None:
        self.skipped = True

    def snapshot(self) -> ProgressSnapshot:
        with self._lock:
            fraction = 0.0
            if self._active and self._job_count:
                fraction = (self._job_no + (self._step / self._steps if self._steps else 0)) / self._job_count
                fraction = min(fraction, 1.0)
            elapsed = time.time() - self._started
            eta = elapsed / fraction - elapsed if fraction > 0.01 else None
            return ProgressSnapshot(self._active, self._job_no, self._job_count, self._step, self._steps,
                                    fraction, eta, self._preview, self._preview_id, self._text)

    def _print_bar(self) -> None:
        s = self.snapshot()
        width = 30
        filled = int(width * s.progress)
        eta = f", ETA {s.eta_seconds:.0f}s" if s.eta_seconds is not None else ""
        sys.stderr.write(f"\r{s.progress * 100:3.0f}%|{'█' * filled}{' ' * (width - filled)}| "
                         f"step {s.step}/{s.steps}, batch {s.job_no + 1}/{s.job_count}{eta}   ")
        sys.stderr.flush()
