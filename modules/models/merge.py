"""Checkpoint Merger: two or three checkpoints of the scan combined into a new one, as A1111's merger does.

Methods (M is the multiplier):
  "No interpolation"  A alone (convert the format, bake in a VAE, prune, save as fp16)
  "Weighted sum"      A * (1 - M) + B * M
  "Add difference"    A + (B - C) * M

As in A1111 only weights whose key contains "model" are combined (UNet, VAE, text encoders); other keys
(alphas_cumprod, markers) come from A. A weight of A that B lacks stays A's; in "Add difference" a weight of
B that C lacks adds nothing. An inpainting (9 input channels) or instruct-pix2pix (8) A may be merged with a
normal B: the first 4 input channels are merged and the rest stay A's. Each weight is computed in float32
and stored in the precision of its inputs (float16 with "Save as float16").

Memory: nothing is read whole. Safetensors inputs are read tensor by tensor (and reopened every GiB, so the
mapped pages read so far leave the process); a safetensors result is written as it is computed (the header
is known beforehand from the inputs' headers), so the peak is a few tensors (SDXL: the largest is about
0.25 GB in float32). A .ckpt result is one pickle, written by torch.save from memory: it holds the result
(one model at the output precision) while writing. Pickled (.ckpt) inputs are read through the safe loader,
memory-mapped when they are zip files. benchmarks/merge_memory.py, two full-size SDXL fp16 files (6.9 GB
each), Weighted sum, 2 cores: safetensors out peak RSS 2.9 GB (0.5 GB of it imports), anon 1.5 GB, 3 min;
ckpt out peak RSS 10.4 GB, anon 7.5 GB.

The result is written to a temporary file beside its final name and renamed when complete, so a failure
(disk full, a bad tensor) leaves no partial checkpoint; the model list is rescanned at once.
"""
from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import shutil
import struct
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import regex  # the regex module: a time limit per match, as the pattern comes from the client
import torch

from modules import user_files
from modules.models import detection
from modules.models.checkpoint_io import CheckpointError, LazySafetensors, read_state_dict, shapes_of
from modules.models.model_files import ModelFile
from modules.paths import REPO_ROOT

log = logging.getLogger(__name__)

NO_INTERPOLATION = "No interpolation"
WEIGHTED_SUM = "Weighted sum"
ADD_DIFFERENCE = "Add difference"
INTERP_METHODS = (NO_INTERPOLATION, WEIGHTED_SUM, ADD_DIFFERENCE)  # A1111's order
CHECKPOINT_FORMATS = ("ckpt", "safetensors")
CONFIG_SOURCES = ("A, B or C", "B", "C", "Don't")  # A1111's "Copy config from"; the request holds the index
VAE_NONE = "None"

# Not merged, as in A1111 (an integer buffer some SD1 files carry).
SKIP_ON_MERGE = {"cond_stage_model.transformer.text_model.embeddings.position_ids"}
# Pruning drops the EMA copy of the UNet and training-only state; A1111's loader never reads them.
PRUNED_PREFIXES = ("model_ema.", "loss.", "first_stage_model.loss.", "optimizer.", "lr_scheduler.")
# Keys a VAE file may hold that are not VAE weights (A1111's load_vae_dict drops them).
VAE_IGNORED = ("loss", "model_ema.")

_MAX_NAME = 200
# A safetensors input is memory-mapped; the pages read stay in the process's RSS (as page cache the kernel may
# drop) until the mapping closes. Reopening the file after this many bytes keeps that part of RSS small.
_REMAP_BYTES = 1 << 30
_ST_DTYPES = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
    torch.bool: "BOOL", torch.float8_e4m3fn: "F8_E4M3", torch.float8_e5m2: "F8_E5M2",
}
_TORCH_DTYPES = {v: k for k, v in _ST_DTYPES.items()}

Progress = Callable[[float, str], None]


class MergeError(Exception):
    """A merge that cannot be done; the message says why in the user's terms."""


@dataclass(frozen=True)
class MergeRequest:
    """The merger tab's fields, named as A1111's run_modelmerger arguments (plus `prune`)."""
    primary_model_name: str
    secondary_model_name: str = ""
    tertiary_model_name: str = ""
    interp_method: str = WEIGHTED_SUM
    multiplier: float = 0.3
    save_as_half: bool = False
    custom_name: str = ""
    checkpoint_format: str = "safetensors"
    config_source: int = 0  # index into CONFIG_SOURCES
    bake_in_vae: str = VAE_NONE
    discard_weights: str = ""  # a regular expression; matching weights are left out
    prune: bool = False
    save_metadata: bool = True
    add_merge_recipe: bool = True
    copy_metadata_fields: bool = True
    metadata_json: str = "{}"


@dataclass
class MergeResult:
    path: Path
    file: ModelFile | None  # the new checkpoint as the rescanned list shows it
    is_inpainting: bool = False
    is_instruct_pix2pix: bool = False
    config_from: Path | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def message(self) -> str:
        lines = [f"Checkpoint saved to {self.path}"]
        if self.config_from is not None:
            lines.append(f"Config copied from {self.config_from.name}")
        return "\n".join(lines + self.notes)


# ---- inputs -------------------------------------------------------------------------------------------

class _Source:
    """One input checkpoint: its keys, shapes and dtypes from the header, tensors read one at a time."""

    def __init__(self, role: str, file: ModelFile, allow_unsafe_pickle: bool):
        self.role = role
        self.file = file
        self.sd = read_state_dict(file.path, allow_unsafe_pickle)
        self.shapes = shapes_of(self.sd)
        self.metadata: dict[str, str] = dict(getattr(self.sd, "metadata", None) or {})
        self._slices = None
        self._mapped = 0
        if isinstance(self.sd, LazySafetensors):
            from safetensors import safe_open
            self._slices = safe_open(str(file.path), framework="pt", device="cpu")

    def dtype(self, key: str) -> torch.dtype:
        if self._slices is None:
            return self.sd[key].dtype
        name = self._slices.get_slice(key).get_dtype()
        if name not in _TORCH_DTYPES:
            raise MergeError(f"{self.file.name}: weight {key} has the unsupported type {name}")
        return _TORCH_DTYPES[name]

    def __getitem__(self, key: str) -> torch.Tensor:
        t = self.sd[key]
        if self._slices is not None:
            self._mapped += t.nbytes
            if self._mapped > _REMAP_BYTES:  # let go of the pages read so far (see _REMAP_BYTES)
                self.sd = read_state_dict(self.file.path)
                self._mapped = 0
        return t

    def __contains__(self, key: str) -> bool:
        return key in self.shapes

    def describe(self) -> str:
        return f"{self.role} ({self.file.name})"


_LEGACY_CLIP = "cond_stage_model.transformer."
_CLIP = _LEGACY_CLIP + "text_model."


def _counterpart(key: str, source: _Source) -> str | None:
    """`key` as `source` names it: the same, or SD1's older CLIP naming without 'text_model.' (either way)."""
    if key in source:
        return key
    if key.startswith(_CLIP):
        other = _LEGACY_CLIP + key[len(_CLIP):]
    elif key.startswith(_LEGACY_CLIP):
        other = _CLIP + key[len(_LEGACY_CLIP):]
    else:
        return None
    return other if other in source else None


def legacy_hash(path: Path) -> str:
    """A1111's old 8-digit model hash (64 KiB at offset 1 MiB)."""
    try:
        with open(path, "rb") as f:
            f.seek(0x100000)
            return hashlib.sha256(f.read(0x10000)).hexdigest()[:8]
    except OSError:
        return "NOFILE"


def _parsed(metadata: Mapping[str, str]) -> dict:
    """Metadata as A1111 shows it: string values that hold a JSON object are parsed."""
    out = {}
    for k, v in metadata.items():
        if isinstance(v, str) and v[:1] == "{":
            try:
                v = json.loads(v)
            except ValueError:
                pass
        out[k] = v
    return out


# ---- what to write ------------------------------------------------------------------------------------

@dataclass
class _Entry:
    key: str
    shape: tuple[int, ...]
    dtype: torch.dtype
    kind: str  # "copy" (A's), "merge", "channels" (first 4 input channels merged), "vae"
    b_key: str | None = None
    c_key: str | None = None


def _half(dtype: torch.dtype, enable: bool) -> torch.dtype:
    return torch.float16 if enable and dtype == torch.float32 else dtype


def _promote(*dtypes: torch.dtype) -> torch.dtype:
    out = dtypes[0]
    for d in dtypes[1:]:
        try:
            out = torch.promote_types(out, d)
        except RuntimeError:  # float8 types do not promote
            out = torch.float32
    return out


def _mergeable(key: str, dtype: torch.dtype) -> bool:
    return "model" in key and key not in SKIP_ON_MERGE and dtype.is_floating_point


def _channel_case(a: tuple[int, ...], b: tuple[int, ...]) -> bool:
    """Shapes that differ only in the input channels (dim 1): inpainting / instruct-pix2pix first conv."""
    return len(a) == len(b) >= 2 and a != b and a[:1] + a[2:] == b[:1] + b[2:]



DISCARD_MATCH_SECONDS = 0.05  # per weight name: a pattern that backtracks for ever is refused, not run


def _discarded(pattern, key: str) -> bool:
    """Whether "Discard weights with matching name" drops `key`. A pattern that takes too long on one name
    (catastrophic backtracking) would hold the worker for good: refused with a message instead."""
    try:
        return pattern.search(key, timeout=DISCARD_MATCH_SECONDS) is not None
    except TimeoutError as e:
        raise MergeError("Discard weights with matching name: the pattern takes too long to match; "
                         "use a simpler one") from e


class _Plan:
    def __init__(self, req: MergeRequest, a: _Source, b: _Source | None, c: _Source | None,
                 vae: dict[str, torch.Tensor] | None):
        self.entries: list[_Entry] = []
        self.is_inpainting = False
        self.is_instruct_pix2pix = False
        self.kept_from_a = 0  # weights B lacks
        self.dropped = 0
        discard = regex.compile(req.discard_weights) if req.discard_weights else None
        mismatched: list[str] = []
        half = req.save_as_half
        for key, shape in a.shapes.items():
            if (req.prune and key.startswith(PRUNED_PREFIXES)) or (discard and _discarded(discard, key)):
                self.dropped += 1
                continue
            a_dtype = a.dtype(key)
            entry = _Entry(key, shape, _half(a_dtype, half and "model" in key), "copy")
            b_key = _counterpart(key, b) if b is not None else None
            if b is not None and _mergeable(key, a_dtype):
                if b_key is None:
                    self.kept_from_a += 1
                else:
                    entry = self._merge_entry(key, shape, a_dtype, b, b_key, c, half, mismatched)
            if vae is not None and key.startswith(detection.VAE) and key[len(detection.VAE):] in vae:
                v = vae[key[len(detection.VAE):]]
                if tuple(v.shape) != shape:
                    raise MergeError(f"the VAE to bake in does not fit: {key} is {list(v.shape)} in the VAE, "
                                     f"{list(shape)} in the checkpoint")
                vae_dtype = a_dtype if a_dtype.is_floating_point else v.dtype
                entry = _Entry(key, shape, _half(vae_dtype, half), "vae")
            self.entries.append(entry)
        if mismatched:
            shown = "; ".join(mismatched[:3]) + (f" (and {len(mismatched) - 3} more)" if len(mismatched) > 3 else "")
            raise MergeError(f"the checkpoints' weights have different shapes, so they are not the same kind of "
                             f"model: {shown}")
        if vae is not None and not any(e.kind == "vae" for e in self.entries):
            raise MergeError("the VAE to bake in has no weights that fit this checkpoint (a VAE in the original "
                             "layout, keys such as 'decoder.conv_in.weight', is needed)")

    def _merge_entry(self, key, shape, a_dtype, b: _Source, b_key, c: _Source | None, half, mismatched) -> _Entry:
        b_shape = b.shapes[b_key]
        dtypes = [a_dtype, b.dtype(b_key)]
        c_key = _counterpart(b_key, c) if c is not None else None
        if c_key is not None:
            if c.shapes[c_key] != b_shape:
                raise MergeError(f"B and C must be the same kind of model for Add difference: {key} is "
                                 f"{list(b_shape)} in B, {list(c.shapes[c_key])} in C "
                                 f"(inpainting and normal models differ in input channels)")
            dtypes.append(c.dtype(c_key))
        if shape == b_shape:
            return _Entry(key, shape, _half(_promote(*dtypes), half), "merge", b_key, c_key)
        if _channel_case(shape, b_shape):
            ca, cb = shape[1], b_shape[1]
            if ca == 4 and cb == 9:
                raise MergeError("When merging an inpainting model with a normal one, A must be the inpainting "
                                 "model.")
            if ca == 4 and cb == 8:
                raise MergeError("When merging an instruct-pix2pix model with a normal one, A must be the "
                                 "instruct-pix2pix model.")
            if cb == 4 and ca in (8, 9):
                self.is_instruct_pix2pix |= ca == 8
                self.is_inpainting |= ca == 9
                return _Entry(key, shape, _half(a_dtype, half), "channels", b_key, c_key)
        mismatched.append(f"{key}: {list(shape)} in A, {list(b_shape)} in B")
        return _Entry(key, shape, a_dtype, "copy")

    @property
    def nbytes(self) -> int:
        total = 0
        for e in self.entries:
            n = 1
            for d in e.shape:
                n *= d
            total += n * e.dtype.itemsize
        return total


def _compute(e: _Entry, req: MergeRequest, a: _Source, b: _Source | None, c: _Source | None,
             vae: dict[str, torch.Tensor] | None) -> torch.Tensor:
    if e.kind == "vae":
        return vae[e.key[len(detection.VAE):]].to(e.dtype)
    t = a[e.key]
    if e.kind == "copy":
        return t.to(e.dtype)
    m = float(req.multiplier)
    work = torch.float64 if t.dtype == torch.float64 else torch.float32
    other = b[e.b_key].to(work)
    if req.interp_method == ADD_DIFFERENCE:
        other = other - c[e.c_key].to(work) if e.c_key is not None else torch.zeros_like(other)
    if e.kind == "channels":
        out = t.to(work)
        out[:, 0:4] = _combine(req.interp_method, out[:, 0:4], other, m)
        return out.to(e.dtype)
    return _combine(req.interp_method, t.to(work), other, m).to(e.dtype)


def _combine(method: str, a: torch.Tensor, other: torch.Tensor, m: float) -> torch.Tensor:
    if method == WEIGHTED_SUM:
        return (1 - m) * a + m * other
    return a + m * other  # Add difference: `other` is B - C


# ---- writing ------------------------------------------------------------------------------------------

def _tensor_bytes(t: torch.Tensor) -> memoryview:
    flat = t.detach().contiguous().reshape(-1)
    return memoryview(flat.view(torch.uint8).numpy())


def _write_safetensors(f, plan: _Plan, produce: Callable[[_Entry], torch.Tensor],
                       metadata: dict[str, str] | None, tick: Callable[[int], None]) -> None:
    """The safetensors format written in one pass: the header first (every shape and dtype is known), then
    each tensor's bytes as it is computed."""
    header: dict[str, object] = {}
    if metadata:
        header["__metadata__"] = metadata
    offset = 0
    sizes = []
    for e in plan.entries:
        n = e.dtype.itemsize
        for d in e.shape:
            n *= d
        header[e.key] = {"dtype": _ST_DTYPES[e.dtype], "shape": list(e.shape), "data_offsets": [offset, offset + n]}
        sizes.append(n)
        offset += n
    raw = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    raw += b" " * (-len(raw) % 8)
    f.write(struct.pack("<Q", len(raw)))
    f.write(raw)
    for i, (e, n) in enumerate(zip(plan.entries, sizes)):
        t = produce(e)
        if tuple(t.shape) != e.shape or t.dtype != e.dtype:  # a planning bug must never write a broken file
            raise MergeError(f"internal error: {e.key} came out {t.dtype} {list(t.shape)}, planned "
                             f"{e.dtype} {list(e.shape)}")
        data = _tensor_bytes(t)
        assert len(data) == n
        f.write(data)
        del t, data
        tick(i)


def _write_ckpt(f, plan: _Plan, produce: Callable[[_Entry], torch.Tensor], tick: Callable[[int], None]) -> None:
    result = {}
    for i, e in enumerate(plan.entries):
        result[e.key] = produce(e)
        tick(i)
    torch.save(result, f)  # a flat dict of tensors, as A1111 saves it


def _is_disk_full(e: BaseException) -> bool:
    return isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT)


# ---- the merge ----------------------------------------------------------------------------------------

def output_folder(checkpoint_dirs: tuple[Path, ...]) -> Path:
    """Where merged checkpoints go: --ckpt-dir if given, else the data folder's models/Stable-diffusion
    (A1111: `cmd_opts.ckpt_dir or model_path`)."""
    builtin = REPO_ROOT / "models" / "Stable-diffusion"
    custom = [d for d in checkpoint_dirs[1:] if d != builtin]
    return custom[0] if custom else checkpoint_dirs[0]


def check_custom_name(name: str, checkpoint_format: str) -> str:
    """The custom name as a plain file name (without extension); path-like names are refused."""
    name = (name or "").strip()
    for suffix in ("." + checkpoint_format, ".safetensors", ".ckpt"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    if not name:
        return ""
    if "/" in name or "\\" in name or name.startswith(".") or any(ord(ch) < 32 for ch in name):
        raise MergeError(f"Custom Name {name!r} must be a plain file name: no folders, no '/' or '\\', not "
                         f"starting with '.'")
    if len(name) > _MAX_NAME:
        raise MergeError(f"Custom Name is too long ({len(name)} characters, at most {_MAX_NAME})")
    return name


def _default_name(req: MergeRequest, a: ModelFile, b: ModelFile | None, c: ModelFile | None) -> str:
    m = float(req.multiplier)
    if req.interp_method == WEIGHTED_SUM:
        return f"{round(1 - m, 2)}({a.model_name}) + {round(m, 2)}({b.model_name})"
    if req.interp_method == ADD_DIFFERENCE:
        return f"{a.model_name} + {round(m, 2)}({b.model_name} - {c.model_name})"
    return a.model_name


def _user_metadata(text: str) -> dict[str, str]:
    text = (text or "").strip() or "{}"
    try:
        data = json.loads(text)
    except ValueError as e:
        raise MergeError(f"Metadata in JSON format is not valid JSON: {e}") from e
    if not isinstance(data, dict):
        raise MergeError("Metadata in JSON format must be a JSON object ({...})")
    return {str(k): v if isinstance(v, str) else json.dumps(v, ensure_ascii=False) for k, v in data.items()}


def read_metadata(sources: list[tuple[ModelFile, Mapping[str, str]]]) -> str:
    """A1111's "Read metadata from selected checkpoints": their metadata together, as indented JSON."""
    merged: dict = {}
    for _, metadata in sources:
        merged.update(_parsed(metadata))
    return json.dumps(merged, indent=4, ensure_ascii=False)


def safetensors_metadata(file: ModelFile) -> dict[str, str]:
    """A checkpoint's safetensors metadata (header only); {} for other formats or unreadable files."""
    if file.path.suffix.lower() != ".safetensors":
        return {}
    try:
        return dict(LazySafetensors(file.path).metadata)
    except CheckpointError:
        return {}


def _recipe(req: MergeRequest, sources: list[_Source], plan: _Plan, sha256: Callable[[Path], str]
            ) -> tuple[str, str]:
    hashes = [sha256(s.file.path) for s in sources]
    by_role = dict(zip([s.role for s in sources], hashes))
    recipe = {
        "type": "webui",
        "primary_model_hash": by_role.get("A"),
        "secondary_model_hash": by_role.get("B"),
        "tertiary_model_hash": by_role.get("C"),
        "interp_method": req.interp_method,
        "multiplier": req.multiplier,
        "save_as_half": req.save_as_half,
        "custom_name": req.custom_name,
        "config_source": req.config_source,
        "bake_in_vae": req.bake_in_vae,
        "discard_weights": req.discard_weights,
        "is_inpainting": plan.is_inpainting,
        "is_instruct_pix2pix": plan.is_instruct_pix2pix,
        "prune": req.prune,
    }
    models: dict = {}
    for s, digest in zip(sources, hashes):
        parsed = _parsed(s.metadata)
        models[digest] = {"name": s.file.name, "legacy_hash": legacy_hash(s.file.path),
                          "sd_merge_recipe": parsed.get("sd_merge_recipe")}
        parent = parsed.get("sd_merge_models")
        if isinstance(parent, dict):
            models.update(parent)
    return json.dumps(recipe), json.dumps(models)


def _config_source(req: MergeRequest, sources: dict[str, _Source]) -> Path | None:
    def beside(role):
        s = sources.get(role)
        p = s.file.path.with_suffix(".yaml") if s else None
        return p if p is not None and p.is_file() else None

    if req.config_source == 0:
        return beside("A") or beside("B") or beside("C")
    return {1: beside("B"), 2: beside("C")}.get(req.config_source)


def _load_vae(vae: ModelFile, allow_unsafe_pickle: bool) -> dict[str, torch.Tensor]:
    sd = read_state_dict(vae.path, allow_unsafe_pickle)
    out = {k: sd[k] for k in sd if not k.startswith(VAE_IGNORED)}
    if any(k.startswith(detection.VAE) for k in out):  # a VAE saved with the checkpoint's prefix
        out = {k[len(detection.VAE):]: v for k, v in out.items() if k.startswith(detection.VAE)}
    return out


def validate(req: MergeRequest) -> None:
    """What can be checked before any file is opened."""
    if req.interp_method not in INTERP_METHODS:
        raise MergeError(f"unknown interpolation method {req.interp_method!r} (one of {', '.join(INTERP_METHODS)})")
    if req.checkpoint_format not in CHECKPOINT_FORMATS:
        raise MergeError(f"unknown checkpoint format {req.checkpoint_format!r} (ckpt or safetensors)")
    if not isinstance(req.config_source, int) or not 0 <= req.config_source < len(CONFIG_SOURCES):
        raise MergeError(f"Copy config from: unknown choice {req.config_source!r}")
    try:
        m = float(req.multiplier)
    except (TypeError, ValueError) as e:
        raise MergeError(f"Multiplier must be a number, not {req.multiplier!r}") from e
    if m != m or abs(m) > 1e6:
        raise MergeError(f"Multiplier {req.multiplier!r} is not a usable number")
    if not (req.primary_model_name or "").strip():
        raise MergeError("Failed: Merging requires a primary model.")
    if req.interp_method != NO_INTERPOLATION and not (req.secondary_model_name or "").strip():
        raise MergeError("Failed: Merging requires a secondary model.")
    if req.interp_method == ADD_DIFFERENCE and not (req.tertiary_model_name or "").strip():
        raise MergeError(f"Failed: Interpolation method ({req.interp_method}) requires a tertiary model.")
    if req.discard_weights:
        if len(req.discard_weights) > 500:
            raise MergeError("Discard weights with matching name: the pattern is too long")
        try:
            regex.compile(req.discard_weights)
        except regex.error as e:
            raise MergeError(f"Discard weights with matching name: not a valid regular expression ({e})") from e
    check_custom_name(req.custom_name, req.checkpoint_format)
    if req.checkpoint_format == "safetensors" and req.save_metadata:
        _user_metadata(req.metadata_json)


def merge_checkpoints(manager, req: MergeRequest, progress: Progress | None = None) -> MergeResult:
    """Merge checkpoints of `manager`'s list into its output folder and rescan the list.

    Checkpoints and the VAE are named as the lists show them (title, name or hash); nothing else is opened."""
    report = progress or (lambda fraction, text: None)
    validate(req)
    method = req.interp_method
    roles = [("A", req.primary_model_name)]
    if method != NO_INTERPOLATION:
        roles.append(("B", req.secondary_model_name))
    if method == ADD_DIFFERENCE:
        roles.append(("C", req.tertiary_model_name))
    files: dict[str, ModelFile] = {}
    for role, name in roles:
        if os.path.isabs(name.strip()) or "\\" in name or ".." in Path(name).parts:
            raise MergeError(f"{role}: name a checkpoint from the list, not a path ({name!r})")
        try:
            files[role] = manager.find_checkpoint(name.strip())
        except CheckpointError as e:
            raise MergeError(f"unknown checkpoint {name!r} for {role}: pick one from the list (🔄 rescans the "
                             f"folders)") from e
    vae_file = None
    if req.bake_in_vae and req.bake_in_vae != VAE_NONE:
        vae_file = next((v for v in manager.vaes if req.bake_in_vae in (v.name, Path(v.name).name)), None)
        if vae_file is None:
            raise MergeError(f"unknown VAE {req.bake_in_vae!r} (available: "
                             f"{', '.join(v.name for v in manager.vaes) or 'none'})")

    out_dir = output_folder(tuple(manager.paths.checkpoint_dirs))
    sources: dict[str, _Source] = {}
    report(0.0, "Reading checkpoint headers")
    try:
        for role, file in files.items():
            sources[role] = _Source(role, file, manager.allow_unsafe_pickle)
        families = {}
        for role, s in sources.items():
            families[role] = detection.detect_family(s.file.path, s.shapes)
    except CheckpointError as e:
        raise MergeError(str(e)) from e
    a, b, c = sources["A"], sources.get("B"), sources.get("C")
    for role, fam in families.items():
        if fam.id != families["A"].id:
            raise MergeError(f"{a.describe()} is {families['A'].label} but {sources[role].describe()} is "
                             f"{fam.label}: only checkpoints of the same family can be merged")
    vae = None
    if vae_file is not None:
        report(0.0, f"Reading VAE {vae_file.name}")
        try:
            vae = _load_vae(vae_file, manager.allow_unsafe_pickle)
        except CheckpointError as e:
            raise MergeError(str(e)) from e

    plan = _Plan(req, a, b, c, vae)
    if not plan.entries:
        raise MergeError("nothing left to save: Discard weights with matching name removed every weight")
    name = check_custom_name(req.custom_name, req.checkpoint_format) or _default_name(
        req, files["A"], files.get("B"), files.get("C"))
    name += ".inpainting" if plan.is_inpainting else ""
    name += ".instruct-pix2pix" if plan.is_instruct_pix2pix else ""
    target = out_dir / f"{name}.{req.checkpoint_format}"
    if target.exists():
        why = " (it is one of the models being merged)" if any(
            target.resolve() == f.path.resolve() for f in files.values()) else ""
        raise MergeError(f"{target} already exists{why}: choose another Custom Name or remove the old file")
    out_dir.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(out_dir).free
    if plan.nbytes > free:
        raise MergeError(f"disk full: the merged checkpoint needs {plan.nbytes / 2**30:.2f} GB in {out_dir}, "
                         f"only {free / 2**30:.2f} GB are free")

    metadata = None
    if req.checkpoint_format == "safetensors" and req.save_metadata:
        metadata = {}
        if req.copy_metadata_fields:
            for s in sources.values():
                metadata.update(s.metadata)
        metadata.update(_user_metadata(req.metadata_json))
        metadata["format"] = "pt"
        if req.add_merge_recipe:
            report(0.0, "Hashing the models for the merge recipe")
            metadata["sd_merge_recipe"], metadata["sd_merge_models"] = _recipe(
                req, list(sources.values()), plan, manager.hashes.sha256)
    config_from = _config_source(req, sources)

    total = len(plan.entries)
    step_text = {NO_INTERPOLATION: "Copying A", WEIGHTED_SUM: "Merging A and B",
                 ADD_DIFFERENCE: "Merging A, B and C"}[method]

    def tick(i: int) -> None:
        if i % 16 == 0 or i == total - 1:
            report((i + 1) / total, f"{step_text}: {i + 1}/{total} weights")

    def produce(e: _Entry) -> torch.Tensor:
        try:
            return _compute(e, req, a, b, c, vae)
        except CheckpointError as err:
            raise MergeError(str(err)) from err

    user_files.remove_leftover_temp_files(target)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=out_dir)
    tmp = Path(tmp_name)
    yaml_target = target.with_suffix(".yaml")
    wrote_yaml = False
    try:
        with os.fdopen(fd, "wb") as f:
            if req.checkpoint_format == "safetensors":
                _write_safetensors(f, plan, produce, metadata, tick)
            else:
                _write_ckpt(f, plan, produce, tick)
            report(1.0, "Saving")
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, user_files.NEW_FILE_MODE)
        if config_from is not None:
            user_files.write_atomically(yaml_target, config_from.read_bytes())
            wrote_yaml = True
        os.replace(tmp, target)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if wrote_yaml:
            yaml_target.unlink(missing_ok=True)
        if _is_disk_full(e):
            raise MergeError(f"disk full: {target.name} could not be written to {out_dir}; nothing was saved. "
                             f"Free some space (the result needs {plan.nbytes / 2**30:.2f} GB) and try again"
                             ) from e
        if isinstance(e, OSError):
            raise MergeError(f"{target} could not be written: {e}; nothing was saved") from e
        raise

    log.info("checkpoint merged: %s (%s)", target, json.dumps({k: v for k, v in asdict(req).items()
                                                               if k != "metadata_json"}))
    manager.refresh()
    created = next((m for m in manager.checkpoints if m.path.resolve() == target.resolve()), None)
    if created is not None and not created.sha256:  # shown with its hash at once, as A1111 does
        manager.hashes.sha256(created.path)
        manager.refresh()
        created = next((m for m in manager.checkpoints if m.path.resolve() == target.resolve()), created)
    result = MergeResult(target, created, plan.is_inpainting, plan.is_instruct_pix2pix, config_from)
    if plan.kept_from_a:
        result.notes.append(f"{plan.kept_from_a} weights of A are not in B and were kept from A")
    if plan.dropped:
        result.notes.append(f"{plan.dropped} weights left out (prune / discard)")
    return result
