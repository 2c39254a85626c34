"""Everything a generation needs, built by one function that webui.py, tests, tools and benchmarks all call.

There is one options object: the model manager, the job context, the worker, the API and the UI all
read this one; a per-job override is a copy handed to that job.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from modules.conditioning.embeddings import EmbeddingDatabase
from modules.conditioning.lora import LoraApplier
from modules.conditioning.styles import StyleDatabase
from modules.generation.job import ProcessingContext
from modules.generation.progress import GenerationState
from modules.generation.worker import GenerationWorker
from modules.models.checkpoint_io import CheckpointError
from modules.models.devices import DevicePolicy
from modules.models.hashes import HashCache
from modules.models.manager import ModelManager
from modules.options import Options
from modules.paths import DEMO_CHECKPOINT, Paths
from modules.postprocessing.face_restoration import FaceRestorers
from modules.postprocessing.upscalers import Upscalers

log = logging.getLogger(__name__)


@dataclass
class Services:
    paths: Paths
    options: Options
    models: ModelManager
    context: ProcessingContext
    worker: GenerationWorker

    def save_settings(self) -> None:
        self.options.save(self.paths.config_file)

    def load_initial_checkpoint(self, requested: str | None = None) -> None:
        """`requested` (--ckpt), else the checkpoint chosen last time, else the built-in demo model, else the
        first one found; failures are logged and the next candidate is tried."""
        manager = self.models
        candidates = [requested] if requested else []
        if self.options.sd_model_checkpoint:
            candidates.append(self.options.sd_model_checkpoint)
        candidates += [c.title for c in sorted(manager.checkpoints, key=lambda c: c.path != DEMO_CHECKPOINT)]
        for query in candidates:
            try:
                manager.load(query)
                return
            except CheckpointError as e:
                log.error("%s", e)
        if not manager.checkpoints:
            log.warning("no checkpoints found in %s", ", ".join(map(str, self.paths.checkpoint_dirs)))


def build_services(paths: Paths, policy: DevicePolicy, options: Options | None = None, *,
                   allow_unsafe_pickle: bool = False, styles_file: Path | None = None,
                   console_progress: bool = True) -> Services:
    """The model manager, the job context and the worker over one options object (config.json's when
    `options` is None)."""
    options = options if options is not None else Options.load(paths.config_file)
    manager = ModelManager(paths, policy, options, HashCache(paths.cache_file), allow_unsafe_pickle=allow_unsafe_pickle)
    context = ProcessingContext(
        models=manager, options=options, outputs_dir=paths.outputs_dir, state=GenerationState(console=console_progress),
        embeddings=EmbeddingDatabase(paths.embeddings_dirs, allow_unsafe_pickle=allow_unsafe_pickle),
        loras=LoraApplier(list(paths.lora_dirs), allow_unsafe_pickle=allow_unsafe_pickle),
        styles=StyleDatabase(styles_file or paths.data_dir / "styles.csv"),
        upscalers=Upscalers(paths.upscaler_dirs, policy.device, half=policy.unet.compute != torch.float32,
                            allow_unsafe_pickle=allow_unsafe_pickle, realesrgan_folders=paths.realesrgan_dirs),
        face_restorers=FaceRestorers(paths.gfpgan_dir, paths.codeformer_dir, device=policy.device,
                                     allow_unsafe_pickle=allow_unsafe_pickle))
    return Services(paths, options, manager, context, GenerationWorker(context))
