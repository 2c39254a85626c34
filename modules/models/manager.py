"""The checkpoints a user can pick, the ones loaded now, and switching between them.

A failed load (corrupt file, unknown model, refused pickle) leaves the current model loaded and
usable. Recently used checkpoints stay in RAM up to `Options.sd_checkpoints_limit`.
"""
from __future__ import annotations

import gc
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import torch

from modules.models.checkpoint_io import CheckpointError
from modules.models.devices import DevicePolicy
from modules.models.hashes import HashCache
from modules.models.loading import LoadedModel, load_model, swap_vae
from modules.models.model_files import (
    VAE_AUTOMATIC,
    VAE_NONE,
    ModelFile,
    automatic_vae_for,
    list_checkpoints,
    list_vaes,
)
from modules.options import Options
from modules.paths import Paths

log = logging.getLogger(__name__)


class ModelManager:
    def __init__(self, paths: Paths, policy: DevicePolicy, options: Options, hashes: HashCache,
                 allow_unsafe_pickle: bool = False):
        self.paths = paths
        self.policy = policy
        self.options = options
        self.hashes = hashes
        self.allow_unsafe_pickle = allow_unsafe_pickle
        self._lock = threading.RLock()
        self._loaded: OrderedDict[Path, LoadedModel] = OrderedDict()  # least recently used first
        self._checkpoints: list[ModelFile] = []
        self._vaes: list[ModelFile] = []
        self._unloaded = False  # unload() freed the chosen checkpoint: ensure_selected loads it again
        # called with each checkpoint loaded from disk (extensions' on_model_loaded); a failing one is logged
        self.on_loaded: list[Callable[[LoadedModel], None]] = []
        self.refresh()

    # ---- listing -------------------------------------------------------------------------
    def refresh(self) -> None:
        """Rescan the model folders (the 🔄 button)."""
        with self._lock:
            self._checkpoints = list_checkpoints(list(self.paths.checkpoint_dirs),
                                                 list(self.paths.checkpoint_files), self.hashes)
            self._vaes = list_vaes(list(self.paths.vae_dirs), list(self.paths.checkpoint_dirs))

    @property
    def checkpoints(self) -> list[ModelFile]:
        return list(self._checkpoints)

    @property
    def vaes(self) -> list[ModelFile]:
        return list(self._vaes)

    def checkpoint_titles(self) -> list[str]:
        return [c.title for c in self._checkpoints]

    def vae_choices(self) -> list[str]:
        return [VAE_AUTOMATIC, VAE_NONE] + [v.name for v in self._vaes]

    def find_checkpoint(self, query: str) -> ModelFile:
        """A checkpoint of the folder scan (or --ckpt) by title, name, hash or its listed path. Nothing else is
        ever opened: a client may name any path, and even whether such a file exists is not told."""
        for c in self._checkpoints:
            if c.matches(str(query)):
                return c
        available = ", ".join(c.title for c in self._checkpoints) or "none"
        raise CheckpointError(str(query), f"no such checkpoint in {', '.join(map(str, self.paths.checkpoint_dirs))} "
                                     f"(available: {available})")

    def _resolve_vae(self, choice: str, checkpoint: ModelFile) -> ModelFile | None:
        if choice == VAE_NONE:
            return None
        if choice in ("", VAE_AUTOMATIC):
            return automatic_vae_for(checkpoint.path, self._vaes)
        for v in self._vaes:
            if v.name == choice or Path(v.name).name == choice:
                return v
        raise CheckpointError(choice, f"no such VAE (available: {', '.join(v.name for v in self._vaes) or 'none'})")

    # ---- loading -------------------------------------------------------------------------
    @property
    def current(self) -> LoadedModel | None:
        with self._lock:
            return next(reversed(self._loaded.values()), None)

    def load(self, query: str | ModelFile, remember: bool = True) -> LoadedModel:
        """Make a checkpoint current, from the cache or from disk; on failure nothing changes.

        `remember=False` (the refiner during a job) leaves the user's chosen checkpoint as it is."""
        with self._lock:
            file = query if isinstance(query, ModelFile) else self.find_checkpoint(query)
            cached = self._loaded.get(file.path)
            if cached is not None:
                self._loaded.move_to_end(file.path)
                self._apply_vae_choice(cached)
                if remember:
                    self._remember(cached.file)
                return cached
            file = self._hashed(file)
            vae = self._resolve_vae(self.options.sd_vae, file)
            leaving = list(self._loaded.values())[: max(0, len(self._loaded) + 1 - self._limit)]
            for old in leaving:  # free VRAM for the newcomer; they stay in RAM until it has loaded
                old.placement.park()
            try:
                model = load_model(file, self.policy, allow_unsafe_pickle=self.allow_unsafe_pickle,
                                   fp8_unet=self.options.fp8_storage, vae_file=vae)
            except BaseException:
                for old in leaving:
                    old.placement.unpark()
                raise
            self._loaded[file.path] = model
            self._evict(keep=self._limit)
            if remember:
                self._remember(file)
            for listener in list(self.on_loaded):
                try:
                    listener(model)
                except Exception:  # someone else's code: the model is loaded all the same
                    log.exception("a model-loaded listener failed")
            return model

    def _remember(self, file: ModelFile) -> None:
        """The user's checkpoint, and its hash for A1111 clients that read `sd_checkpoint_hash`."""
        self.options.sd_model_checkpoint = file.title
        self.options.sd_checkpoint_hash = file.sha256 or ""

    def ensure_selected(self) -> LoadedModel | None:
        """The checkpoint the user chose, loaded again if a job switched away from it (refiner) or it was
        unloaded."""
        with self._lock:
            chosen = self.options.sd_model_checkpoint
            current = self.current
            if chosen and (current is not None and not current.file.matches(chosen)
                           or current is None and self._unloaded):
                return self.load(chosen)
            return current

    def unload(self) -> None:
        """Free every loaded checkpoint (A1111's unload-checkpoint); the chosen one stays chosen and loads again
        when next needed."""
        with self._lock:
            self._unloaded = bool(self._loaded) or self._unloaded
            self._evict(keep=0)

    @property
    def _limit(self) -> int:
        return max(1, self.options.sd_checkpoints_limit)

    def _hashed(self, file: ModelFile) -> ModelFile:
        """Hash on first load (cached afterwards) and show the hash in the list from then on."""
        if file.sha256:
            return file
        hashed = file.with_hash(self.hashes.sha256(file.path))
        self._checkpoints = [hashed if c.path == file.path else c for c in self._checkpoints]
        return hashed

    def _evict(self, keep: int) -> None:
        while len(self._loaded) > keep:
            path, old = self._loaded.popitem(last=False)
            log.info("unloading %s", old.file.name)
            del old
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    # ---- VAE -----------------------------------------------------------------------------
    def set_vae(self, choice: str) -> LoadedModel | None:
        """Switch the current model's VAE without reloading the checkpoint; remembered as a setting."""
        with self._lock:
            model = self.current
            if model is not None:
                swap_vae(model, self._resolve_vae(choice, model.file), self.allow_unsafe_pickle)
            elif choice not in self.vae_choices() and not any(Path(v.name).name == choice for v in self._vaes):
                raise CheckpointError(str(choice), f"no such VAE (available: {', '.join(self.vae_choices())})")
            self.options.sd_vae = choice
            return model

    def _apply_vae_choice(self, model: LoadedModel) -> None:
        swap_vae(model, self._resolve_vae(self.options.sd_vae, model.file), self.allow_unsafe_pickle)
