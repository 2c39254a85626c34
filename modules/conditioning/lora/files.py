"""Network files in the LoRA folders: listing, metadata, and the family each was made for."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from modules.models.checkpoint_io import CheckpointError, read_state_dict, shapes_of
from modules.models.families import Family, ModelFamily, family_for_context_width, family_for_text_width
from modules.models.model_files import preview_image

log = logging.getLogger(__name__)


LORA_SUFFIXES = (".safetensors", ".pt", ".ckpt")
UNET_PREFIX = "lora_unet_"
KNOWN_PREFIXES = (UNET_PREFIX, "lora_te_", "lora_te1_", "lora_te2_")


@dataclass(frozen=True)
class LoraFile:
    """A network file in the LoRA folders."""
    name: str  # file name without extension: what `<lora:NAME:0.8>` refers to
    path: Path
    relative: str  # to the folder it was found in, "/"-separated: "styles/ink.safetensors"
    metadata: Mapping[str, str] = field(default_factory=dict, compare=False)
    preview: Path | None = None
    family: ModelFamily | None = None  # the model family it was made for, when metadata or shapes tell

    @property
    def alias(self) -> str | None:
        """The output name kohya's trainer recorded; A1111 accepts it in prompts too."""
        return self.metadata.get("ss_output_name") or None


def list_loras(folders: Iterable[Path]) -> list[LoraFile]:
    """Network files under `folders` (recursively), each file once, in folder then path order."""
    found, seen = [], set()
    for folder in folders:
        if not folder.is_dir():
            continue
        for path in sorted(folder.rglob("*")):
            if path.suffix.lower() not in LORA_SUFFIXES or not path.is_file():
                continue
            real = path.resolve()
            if real not in seen:
                seen.add(real)
                found.append(_describe(path, path.relative_to(folder).as_posix()))
    return found


def _describe(path: Path, relative: str) -> LoraFile:
    """Metadata and family come from a .safetensors header (no tensor is read); pickles are not
    opened while listing."""
    metadata: dict[str, str] = {}
    family = None
    if path.suffix.lower() == ".safetensors":
        try:
            header = read_state_dict(path)
            metadata = dict(getattr(header, "metadata", {}))
            family = guess_family(metadata, shapes_of(header))
        except CheckpointError as e:
            log.warning("LoRA %s", e)  # listed anyway; applying it reports the problem to the user
    return LoraFile(path.stem, path, relative, metadata, preview_image(path), family)


def guess_family(metadata: Mapping[str, str], shapes: Mapping[str, tuple[int, ...]]) -> ModelFamily | None:
    """The family a network was trained for: from kohya / ModelSpec metadata, else from its key
    names and the widths its cross-attention or text-encoder factors take in."""
    arch = metadata.get("modelspec.architecture", "")
    version = metadata.get("ss_base_model_version", "")
    if arch.startswith("stable-diffusion-xl") and "refiner" in arch:
        return Family.SDXL_REFINER
    if arch.startswith("stable-diffusion-xl") or version.startswith("sdxl"):
        return Family.SDXL
    if arch.startswith("stable-diffusion-v2") or version.startswith("sd_v2") or metadata.get("ss_v2") == "True":
        return Family.SD2
    if arch.startswith("stable-diffusion-v1") or version.startswith("sd_v1"):
        return Family.SD1
    if arch or version:
        return None  # made for another architecture (SD3, FLUX, ...)
    if any(k.startswith(("lora_te1_", "lora_te2_")) for k in shapes):
        return Family.SDXL
    for key, shape in shapes.items():
        if len(shape) < 2:
            continue
        if key.startswith(UNET_PREFIX) and "_attn2_to_k." in key and key.endswith((".lora_down.weight", ".hada_w1_b")):
            return family_for_context_width(shape[1])
        if key.startswith("lora_te_") and "_self_attn_q_proj." in key and key.endswith(".lora_down.weight"):
            return family_for_text_width(shape[1])
    return None
