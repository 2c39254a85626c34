"""Textual-inversion embeddings from the embeddings folder, used in prompts by file name.

Understood formats (the file name, not any name stored inside, is what the prompt uses):
  A1111 .pt         {"string_to_param": {"*": [n, dim]}, "step": ..., ...}
  older .pt         {"emb_params": [n, dim], ...}
  A1111 safetensors {"emb_params": [n, dim]}
  diffusers .bin    {"<token>": [dim] or [n, dim]}
  SDXL safetensors  {"clip_l": [n, 768], "clip_g": [n, 1280]}
Whether an embedding fits a model is decided by vector widths alone, read from the model's
text encoders, so the same rules serve full-size and tiny test models.
"""
from __future__ import annotations

import logging
import numbers
import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from modules.models.checkpoint_io import SAFETENSORS_SUFFIX, CheckpointError, load_pickle, read_state_dict
from modules.models.detection import ModelSpec
from modules.models.families import FAMILIES, family_for_text_width
from modules.models.hashes import sha256_of

log = logging.getLogger(__name__)

SUFFIXES = (".pt", ".bin", SAFETENSORS_SUFFIX)
DEFAULT = "default"  # key of the vectors of a single-encoder embedding
# Embeddings are kilobytes; a big file here is a misplaced model, not worth reading and hashing.
MAX_FILE_BYTES = 32 << 20


@dataclass(frozen=True, eq=False)
class Embedding:
    name: str
    path: Path
    vectors: dict[str, torch.Tensor]  # "default", or "clip_l" and "clip_g" for SDXL; each [n, dim] float32
    step: int | None
    checksum: str  # first 8 hex digits of the file's sha256

    @property
    def vector_count(self) -> int:
        return next(iter(self.vectors.values())).shape[0]

    @property
    def dims(self) -> dict[str, int]:
        return {key: v.shape[1] for key, v in self.vectors.items()}


def expected_vectors(spec: ModelSpec) -> dict[str, int]:
    """The vectors an embedding must have for this model: key -> width, in text-encoder order."""
    return {key: te.config["hidden_size"] for key, te in zip(spec.family.embedding_keys, spec.text_encoders)}


def family_label(embedding: Embedding) -> str:
    """Which models the embedding was made for, as the UI shows it."""
    dims = embedding.dims
    if DEFAULT not in dims:
        family = next((f for f in FAMILIES if set(f.embedding_keys) == set(dims)), None)
        return family.label if family else f"unknown ({_describe(dims)})"
    family = family_for_text_width(dims[DEFAULT])
    return family.label if family else f"unknown (dim {dims[DEFAULT]})"


def _describe(dims: Mapping[str, int]) -> str:
    if set(dims) == {DEFAULT}:
        return f"{dims[DEFAULT]}-dim vectors"
    return " + ".join(f"{key} {dim}-dim" for key, dim in dims.items()) + " vectors"


def misfit(embedding: Embedding, spec: ModelSpec) -> str | None:
    """Why the embedding cannot be used with this model, or None if it can."""
    need = expected_vectors(spec)
    have = embedding.dims
    if all(have.get(key) == dim for key, dim in need.items()):
        return None
    return f"{_describe(have)}, this {spec.family.label} model needs {_describe(need)}"


def _as_vectors(path: Path, key: str, value: object) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise CheckpointError(path, f"{key!r} is a {type(value).__name__}, not a tensor")
    if not value.is_floating_point():
        raise CheckpointError(path, f"{key!r} holds {value.dtype} values, not floats")
    t = value.detach()
    if t.ndim == 1:
        t = t.unsqueeze(0)
    if t.ndim != 2 or t.numel() == 0:
        raise CheckpointError(path, f"{key!r} has shape {tuple(value.shape)}; expected (vectors, width)")
    return t.to(torch.float32, copy=True)  # a copy: no view into a memory-mapped file stays open


def _vectors(path: Path, data: Mapping) -> dict[str, torch.Tensor]:
    if "string_to_param" in data:
        params = data["string_to_param"]
        params = getattr(params, "_parameters", params)  # early A1111 versions pickled an nn.ParameterDict
        if not isinstance(params, Mapping) or len(params) != 1:
            raise CheckpointError(path, "'string_to_param' should hold exactly one tensor")
        return {DEFAULT: _as_vectors(path, "string_to_param", next(iter(params.values())))}
    if "clip_l" in data and "clip_g" in data:
        vectors = {key: _as_vectors(path, key, data[key]) for key in ("clip_l", "clip_g")}
        counts = {v.shape[0] for v in vectors.values()}
        if len(counts) != 1:
            raise CheckpointError(path, f"clip_l and clip_g hold different numbers of vectors ({sorted(counts)})")
        return vectors
    if "emb_params" in data:
        return {DEFAULT: _as_vectors(path, "emb_params", data["emb_params"])}
    if len(data) == 1:  # diffusers: {token: tensor}
        key = next(iter(data))
        return {DEFAULT: _as_vectors(path, key, data[key])}
    keys = list(data)
    hint = " It looks like a LoRA: put it into models/Lora." if any("lora" in str(k) for k in keys) else ""
    raise CheckpointError(path, f"not a textual-inversion embedding: expected 'string_to_param', 'emb_params', "
                                f"'clip_l' + 'clip_g' or a single tensor; found {len(keys)} keys "
                                f"(e.g. {keys[:3]}).{hint}")


def load_embedding(path: Path, allow_unsafe_pickle: bool = False) -> Embedding:
    """Read one embedding file; raise CheckpointError saying why it is unusable."""
    if not path.is_file():
        raise CheckpointError(path, "file not found")
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(path, "the file is empty (0 bytes): the download or copy did not finish")
    if size > MAX_FILE_BYTES:
        raise CheckpointError(path, f"{size / 2**20:.0f} MB is far too large for an embedding; checkpoints belong "
                                    f"in models/Stable-diffusion, LoRAs in models/Lora")
    if path.suffix.lower() == SAFETENSORS_SUFFIX:
        data: object = read_state_dict(path)
    else:
        # nn.ParameterDict rebuilds from tensors and plain containers only, so it is as safe as they are
        with torch.serialization.safe_globals([torch.nn.ParameterDict]):
            data = load_pickle(path, allow_unsafe_pickle)
    if not isinstance(data, Mapping):
        raise CheckpointError(path, f"expected a dictionary, found {type(data).__name__}")
    step = data.get("step")
    return Embedding(
        name=path.stem,
        path=path,
        vectors=_vectors(path, data),
        step=int(step) if isinstance(step, numbers.Integral) else None,
        checksum=sha256_of(path)[:8],
    )


class EmbeddingDatabase:
    """All embeddings under the folders (recursively; the user's folder first, then the built-in one). `reload`
    is cheap when nothing changed, so it can run before every generation; only new or modified files are read
    again."""

    def __init__(self, folders: Path | str | Sequence[Path], allow_unsafe_pickle: bool = False):
        self.folders = [Path(folders)] if isinstance(folders, Path | str) else [Path(f) for f in folders]
        self.folder = self.folders[0]  # the user's: where new embeddings go
        self.allow_unsafe_pickle = allow_unsafe_pickle
        self.all: dict[str, Embedding] = {}
        self.errors: dict[str, str] = {}  # file path relative to the folder -> why it is not used
        self._files: dict[Path, tuple[tuple[int, int], Embedding | str]] = {}  # path -> (stamp, result)
        self._lock = threading.Lock()
        self.reload()

    def _walk(self) -> Iterator[Path]:
        """Embedding files in a stable order: a folder's files (by name) before its subfolders.
        Linked folders are followed, each real folder once."""
        seen: set[str] = set()
        for folder in self.folders:
            if os.path.realpath(folder) in seen:
                continue
            for root, dirs, files in os.walk(folder, followlinks=True):
                seen.add(os.path.realpath(root))
                dirs[:] = sorted((d for d in dirs if os.path.realpath(os.path.join(root, d)) not in seen),
                                 key=str.lower)
                for name in sorted(files, key=str.lower):
                    if name.lower().endswith(SUFFIXES):
                        yield Path(root) / name

    def _relative(self, path: Path) -> str:
        """The file's name relative to the folder it was found in."""
        folder = next((f for f in self.folders if path.is_relative_to(f)), path.parent)
        return path.relative_to(folder).as_posix()

    def _stamps(self) -> dict[Path, tuple[int, int]]:
        stamps = {}
        for path in self._walk():
            try:
                st = path.stat()
            except OSError:  # vanished meanwhile, or a dangling link
                continue
            stamps[path] = (st.st_mtime_ns, st.st_size)
        return stamps

    def _load(self, path: Path) -> Embedding | str:
        try:
            return load_embedding(path, self.allow_unsafe_pickle)
        except (CheckpointError, OSError) as e:
            reason = e.reason if isinstance(e, CheckpointError) else str(e)
            log.warning("embedding %s not loaded: %s", path, reason)
            return reason

    def reload(self) -> bool:
        """Pick up added, changed and removed files; False (and no file read) if there were none."""
        with self._lock:
            stamps = self._stamps()
            if stamps == {path: stamp for path, (stamp, _) in self._files.items()}:
                return False
            files: dict[Path, tuple[tuple[int, int], Embedding | str]] = {}
            found: dict[str, Embedding] = {}
            errors: dict[str, str] = {}
            for path, stamp in stamps.items():
                old = self._files.get(path)
                result = old[1] if old and old[0] == stamp else self._load(path)
                files[path] = (stamp, result)
                rel = self._relative(path)
                if isinstance(result, str):
                    errors[rel] = result
                elif result.name in found:
                    first = self._relative(found[result.name].path)
                    errors[rel] = f"the name {result.name!r} is already used by {first}; rename this file to use it"
                else:
                    found[result.name] = result
            self._files, self.all, self.errors = files, found, errors
            return True

    def for_model(self, spec: ModelSpec) -> tuple[dict[str, Embedding], dict[str, str]]:
        """(usable embeddings by name, reasons the others are skipped by name) for this model."""
        usable: dict[str, Embedding] = {}
        skipped: dict[str, str] = {}
        for name, embedding in self.all.items():
            reason = misfit(embedding, spec)
            if reason is None:
                usable[name] = embedding
            else:
                skipped[name] = reason
        return usable, skipped
