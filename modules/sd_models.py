"""A1111's `modules.sd_models`, as extensions use it: the checkpoint list, the loaded model and switching."""
from __future__ import annotations

from pathlib import Path

from modules import shared_services


class CheckpointInfo:
    """A checkpoint file as A1111 describes it (title "name [shorthash]", model_name, filename...)."""

    def __init__(self, file):
        self.file = file
        self.filename = str(file.path)
        self.name = file.name
        self.name_for_extra = Path(file.name).stem
        self.model_name = file.model_name
        self.hash = file.shorthash[:8] if file.shorthash else None
        self.sha256 = file.sha256
        self.shorthash = file.shorthash
        self.title = file.title
        self.short_title = f"{self.name_for_extra} [{self.shorthash}]" if self.shorthash else self.name_for_extra
        self.ids = [self.model_name, self.name, self.name_for_extra, self.title, self.short_title]
        self.metadata = {}

    def calculate_shorthash(self) -> str | None:
        return self.shorthash


class ModelView:
    """The loaded model with the attributes extensions check on A1111's (`is_sdxl`, `sd_checkpoint_info`...); every
    other attribute is our LoadedModel's."""

    def __init__(self, model):
        object.__setattr__(self, "_model", model)

    def __getattr__(self, name: str):
        return getattr(self._model, name)

    @property
    def is_sdxl(self) -> bool:
        return self._model.spec.family.is_xl

    @property
    def is_sdxl_inpaint(self) -> bool:
        return self.is_sdxl and self._model.spec.is_inpainting

    @property
    def is_sd1(self) -> bool:
        return self._model.spec.family.id == "sd1"

    @property
    def is_sd2(self) -> bool:
        return self._model.spec.family.id == "sd2"

    @property
    def is_sd3(self) -> bool:
        return False

    @property
    def sd_checkpoint_info(self) -> CheckpointInfo:
        return CheckpointInfo(self._model.file)

    @property
    def sd_model_checkpoint(self) -> str:
        return str(self._model.file.path)

    @property
    def sd_model_hash(self) -> str | None:
        return self._model.file.shorthash


def current_model() -> ModelView | None:
    model = shared_services.services().models.current
    return ModelView(model) if model is not None else None


def checkpoint_tiles(use_short: bool = False) -> list[str]:
    files = shared_services.services().models.checkpoints
    return [CheckpointInfo(f).short_title if use_short else f.title for f in files]


def __getattr__(name: str):
    if name == "checkpoints_list":  # title -> CheckpointInfo, as A1111's dict
        return {f.title: CheckpointInfo(f) for f in shared_services.services().models.checkpoints}
    if name == "checkpoint_aliases":
        return {alias: info for info in __getattr__("checkpoints_list").values() for alias in info.ids}
    raise AttributeError(f"module 'modules.sd_models' has no attribute {name!r}")


def get_closet_checkpoint_match(search_string: str) -> CheckpointInfo | None:
    """A checkpoint by any of its names (A1111's spelling of the function)."""
    try:
        return CheckpointInfo(shared_services.services().models.find_checkpoint(search_string))
    except Exception:  # noqa: BLE001 - "not found" in whatever form the manager says it
        return None


def select_checkpoint() -> CheckpointInfo | None:
    model = shared_services.services().models.current
    return CheckpointInfo(model.file) if model is not None else None


def reload_model_weights(sd_model=None, info: CheckpointInfo | None = None, forced_reload: bool = False):
    """Load the checkpoint `info` names (or the one chosen in the settings) and make it the current one."""
    services = shared_services.services()
    target = info.title if info is not None else services.options.sd_model_checkpoint
    if target:
        if shared_services.in_script_job():  # a script's job holds the worker's turn already
            services.models.load(target)
        else:  # from an extension's page event or route: not in the middle of someone's job
            services.worker.with_lock(lambda: services.models.load(target))
    return current_model()


def list_models() -> None:
    shared_services.services().models.refresh()
