"""Reading weight files (.safetensors, .ckpt/.pt/.bin) into state dicts, safely.

`.safetensors` files are opened lazily: the header gives every key and shape without reading
the tensors, which are fetched one at a time when the loader asks for them. Pickled files are
loaded with `torch.load(weights_only=True)`; a pickle that would construct arbitrary objects
is refused unless the user explicitly opted out with --disable-safe-unpickle.
"""
from __future__ import annotations

import pickle
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path

import torch

PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
SAFETENSORS_SUFFIX = ".safetensors"


class CheckpointError(Exception):
    """A weight file that cannot be used; the message names the file and says why."""

    def __init__(self, path: Path | str, reason: str):
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{self.path.name}: {reason}")


class LazySafetensors(Mapping):
    """Read-only mapping over a .safetensors file; tensors load on access."""

    def __init__(self, path: Path):
        from safetensors import safe_open

        self.path = path
        try:
            self._file = safe_open(str(path), framework="pt", device="cpu")
            self._keys = list(self._file.keys())
            self._key_set = set(self._keys)
            self.metadata = self._file.metadata() or {}
        except Exception as e:  # safetensors raises its own error types for bad headers
            raise CheckpointError(path, f"not a valid .safetensors file (corrupt or truncated download?): {e}") from e

    def __getitem__(self, key: str) -> torch.Tensor:
        if key not in self._key_set:
            raise KeyError(key)
        try:
            return self._file.get_tensor(key)
        except Exception as e:
            raise CheckpointError(self.path, f"tensor {key!r} cannot be read (file damaged?): {e}") from e

    def __contains__(self, key: object) -> bool:
        return key in self._key_set

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def shape(self, key: str) -> tuple[int, ...]:
        return tuple(self._file.get_slice(key).get_shape())


class _PickledStandIn:
    """Harmless replacement for classes that old training checkpoints pickled next to the
    weights (Lightning callbacks). It accepts any state and does nothing with it."""

    def __setstate__(self, state):
        pass


# Classes commonly found in pickled SD checkpoints that carry no code to run. Anything else
# makes the weights-only unpickler refuse the file.
_STAND_INS = [
    (_PickledStandIn, "pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint"),
    (_PickledStandIn, "lightning.pytorch.callbacks.model_checkpoint.ModelCheckpoint"),
]


def _numpy_safe_globals() -> list:
    import numpy as np

    allowed = [np.dtype]
    core = getattr(np, "_core", None) or np.core
    allowed.append((core.multiarray.scalar, "numpy.core.multiarray.scalar"))
    allowed.append((core.multiarray.scalar, "numpy._core.multiarray.scalar"))
    allowed += [type(np.dtype(t)) for t in ("float64", "float32", "int64", "int32")]
    return allowed


def load_pickle(path: Path, allow_unsafe: bool) -> object:
    try:
        if allow_unsafe:
            return torch.load(path, map_location="cpu", weights_only=False)
        with torch.serialization.safe_globals(_STAND_INS + _numpy_safe_globals()):
            return torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except pickle.UnpicklingError as e:
        text = str(e)
        blocked = next((line.strip() for line in text.splitlines() if "GLOBAL" in line), None)
        if blocked:
            raise CheckpointError(
                path,
                "refused to load: this pickle file contains Python objects other than weights, which "
                f"could run code on your computer ({blocked}). Prefer a .safetensors version of it; if "
                "you trust the file's source, start with --disable-safe-unpickle.") from e
        detail = next((line.strip() for line in reversed(text.splitlines()) if line.startswith("Unsupported")),
                      type(e).__name__)
        raise CheckpointError(path, f"not a readable checkpoint (corrupt or truncated?): {detail}") from e
    except MemoryError:
        raise
    except Exception as e:  # unpickling arbitrary bytes fails in many ways (IndexError, KeyError, EOFError...)
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(path, f"not a readable checkpoint (corrupt or truncated?): {first}") from e


def _unwrap_state_dict(path: Path, obj: object, wrappers: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """Training checkpoints nest the weights under a wrapper key ('state_dict' for LDM, sometimes twice; BasicSR's
    'params_ema' and others for upscalers): the first of `wrappers` found, up to three levels deep."""
    for _ in range(3):
        inner = next((obj[k] for k in wrappers if isinstance(obj, Mapping) and isinstance(obj.get(k), Mapping)),
                     None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, Mapping):
        raise CheckpointError(path, f"expected a dictionary of weights, found {type(obj).__name__}")
    tensors = {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointError(path, "contains no weights")
    return tensors


def read_state_dict(path: Path | str, allow_unsafe_pickle: bool = False,
                    wrappers: tuple[str, ...] = ("state_dict",)) -> Mapping[str, torch.Tensor]:
    """Open a weight file. Safetensors stay lazy; pickles are read whole (memory-mapped when possible), the
    weights taken out of the first of `wrappers` that holds them."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(path, "file not found")
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(path, "the file is empty (0 bytes): the download or copy did not finish")
    suffix = path.suffix.lower()
    if suffix == SAFETENSORS_SUFFIX:
        sd = LazySafetensors(path)
        if len(sd) == 0:
            raise CheckpointError(path, "contains no weights")
        return sd
    if suffix in PICKLE_SUFFIXES:
        return _unwrap_state_dict(path, load_pickle(path, allow_unsafe_pickle), wrappers)
    raise CheckpointError(path, f"unsupported file type {suffix!r}; expected .safetensors or .ckpt")


def shapes_of(sd: Mapping[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    """Every key's shape, without reading tensor data for lazy files."""
    if isinstance(sd, LazySafetensors):
        return {k: sd.shape(k) for k in sd}
    return {k: tuple(v.shape) for k, v in sd.items()}
