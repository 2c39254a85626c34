"""Merging the requested networks into a loaded model's weights and restoring them exactly."""

from __future__ import annotations

import hashlib
import logging
import math
import threading
import weakref
from collections import OrderedDict, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from modules.conditioning.extra_networks import LoraRequest
from modules.conditioning.lora.factors import NetworkModule, ParsedLora, compute_delta, parse_lora
from modules.conditioning.lora.files import LoraFile, list_loras
from modules.conditioning.lora.naming import ModuleRef, fused_copies, module_lookup
from modules.models.checkpoint_io import CheckpointError, read_state_dict
from modules.models.families import ModelFamily

if TYPE_CHECKING:
    from modules.models.loading import LoadedModel

log = logging.getLogger(__name__)


@dataclass
class _Report:
    """How one requested network fitted the model, for the user."""
    name: str
    parsed: ParsedLora
    skipped: set[str] = field(default_factory=set)  # kohya names that address no module of this shape

    def warnings(self, family: ModelFamily) -> list[str]:
        p, out = self.parsed, []
        if not p.modules and not p.unsupported:
            example = f" (keys such as {p.unknown_keys[0]!r})" if p.unknown_keys else ""
            return [f"LoRA '{self.name}' has no weights in the LoRA/LyCORIS layout{example}: skipped"]
        if self.skipped:
            n, total = len(self.skipped), len(p.modules)
            if p.family is not None and p.family != family:
                out.append(f"LoRA '{self.name}' is for {p.family.label}, this model is {family.label}: "
                           f"skipped {n} of {total} modules")
            else:
                out.append(f"LoRA '{self.name}': skipped {n} of {total} modules that do not fit this "
                           f"{family.label} model (e.g. {min(self.skipped)})")
        if p.unsupported:
            kinds = ", ".join(sorted(set(p.unsupported.values())))
            out.append(f"LoRA '{self.name}': skipped {_count(len(p.unsupported), 'module')} of a type that "
                       f"cannot be merged ({kinds})")
        if p.unknown_keys and (p.modules or p.unsupported):
            out.append(f"LoRA '{self.name}': ignored {_count(len(p.unknown_keys), 'key')} in an unknown layout "
                       f"(e.g. {p.unknown_keys[0]})")
        return out


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


@dataclass
class _Contribution:
    """One network module's share in a parameter's change."""
    module: NetworkModule
    multiplier: float
    shapes: dict[str, torch.Size]  # of the addressed module's parameters
    rows: tuple[int, int] | None  # where they sit inside a fused parameter; None: the whole of it
    name: str
    report: _Report


class _ModelState:
    """What the applier keeps for one loaded model."""

    def __init__(self, lookup: dict[str, ModuleRef]):
        self.lookup = lookup
        # (component, parameter name) -> its original value, on the CPU in the stored dtype;
        # exactly the parameters that currently differ from the checkpoint
        self.backups: dict[tuple[str, str], torch.Tensor] = {}
        self.fingerprint: tuple = ()  # what is merged now
        self.warnings: list[str] = []  # what merging it reported


def _components(model: LoadedModel) -> dict[str, nn.Module]:
    return {"unet": model.unet, **{f"text_encoder_{i}": te for i, te in enumerate(model.text_encoders)}}


class LoraApplier:
    """Finds networks in the LoRA folders and merges the requested ones into loaded models.

    One instance serves all loaded models; what it changed in each is kept per model (keyed by its
    UNet, and dropped with it), so models kept in RAM each keep their own merged set.
    """

    def __init__(self, folders: Sequence[Path], *, allow_unsafe_pickle: bool = False, cache_size: int = 4):
        self.folders = list(folders)
        self.allow_unsafe_pickle = allow_unsafe_pickle
        self.cache_size = cache_size
        self._lock = threading.RLock()
        self._files: list[LoraFile] = []
        self._parsed: OrderedDict[tuple[Path, tuple[int, int]], ParsedLora] = OrderedDict()
        self._hashes: dict[tuple[Path, tuple[int, int]], str] = {}
        self._states: weakref.WeakKeyDictionary[nn.Module, _ModelState] = weakref.WeakKeyDictionary()
        self.refresh()

    # ---- listing ----
    def refresh(self) -> list[LoraFile]:
        """Rescan the folders (the 🔄 button)."""
        with self._lock:
            self._files = list_loras(self.folders)
            return list(self._files)

    @property
    def loras(self) -> list[LoraFile]:
        return list(self._files)

    def find(self, name: str) -> LoraFile | None:
        """By file name without extension, else by relative path without extension, else by alias."""
        for matches in (lambda f: f.name == name, lambda f: f.relative.rsplit(".", 1)[0] == name,
                        lambda f: f.alias == name):
            found = next((f for f in self._files if matches(f)), None)
            if found is not None:
                return found
        return None

    def short_hash(self, name: str) -> str | None:
        """A1111's 'Lora hashes' infotext value: the first 12 hex digits of the SHA-256 of the file's
        tensor data (for .safetensors, the part after the header, which metadata edits leave alone)."""
        file = self.find(name)
        if file is None:
            return None
        try:
            key = (file.path, _stamp(file.path))
            if key not in self._hashes:
                self._hashes[key] = _data_sha256(file.path)
        except OSError:
            return None
        return self._hashes[key][:12]

    # ---- applying ----
    def signature(self, model: LoadedModel) -> tuple:
        """What is merged into `model` now (hashable; () for nothing), e.g. for caching conditioning."""
        state = self._states.get(model.unet)
        return state.fingerprint if state is not None else ()

    def apply(self, model: LoadedModel, requests: Sequence[LoraRequest]) -> list[str]:
        """Make `model` carry exactly the requested networks (none: its original weights).

        Returns warnings for the user; a missing, broken or unfitting network never raises. The same
        set again (same files unchanged, same multipliers) costs a few stat calls."""
        with self._lock:
            warnings, chosen = self._resolve(requests)
            state = self._states.get(model.unet)
            if state is None:
                state = _ModelState(module_lookup(model.family, model.unet, model.text_encoders))
                self._states[model.unet] = state
            fingerprint = tuple((str(f.path), stamp, r.te_multiplier, r.unet_multiplier) for r, f, stamp in chosen)
            if fingerprint != state.fingerprint:
                try:
                    state.warnings = self._merge(model, state, chosen)
                    state.fingerprint = fingerprint
                except Exception as e:  # no half-merged model and no failed generation: run without LoRAs
                    log.exception("merging LoRAs failed")
                    self._restore(_components(model), state, keep=set())
                    state.fingerprint, state.warnings = (), [f"LoRAs not applied: {type(e).__name__}: {e}"]
            return warnings + state.warnings

    def _resolve(self, requests: Sequence[LoraRequest]
                 ) -> tuple[list[str], list[tuple[LoraRequest, LoraFile, tuple[int, int]]]]:
        warnings, chosen, rescanned = [], [], False
        for request in requests:
            file = self.find(request.name)
            if file is None and not rescanned:  # the user may just have dropped the file in
                self.refresh()
                rescanned = True
                file = self.find(request.name)
            if file is None:
                folders = ", ".join(str(f) for f in self.folders)
                warnings.append(f"LoRA '{request.name}' not found (looked in {folders})")
                continue
            if request.te_multiplier == 0 and request.unet_multiplier == 0:
                continue
            try:
                chosen.append((request, file, _stamp(file.path)))
            except OSError as e:
                warnings.append(f"LoRA '{request.name}' cannot be read: {e.strerror or e}")
        return warnings, chosen

    def _load(self, file: LoraFile, stamp: tuple[int, int]) -> ParsedLora:
        """Parsed files stay in a small LRU cache, keyed by path and modification stamp."""
        key = (file.path, stamp)
        parsed = self._parsed.get(key)
        if parsed is None:
            state_dict = read_state_dict(file.path, self.allow_unsafe_pickle)
            parsed = parse_lora(state_dict, getattr(state_dict, "metadata", None))
            self._parsed[key] = parsed
            while len(self._parsed) > self.cache_size:
                self._parsed.popitem(last=False)
        self._parsed.move_to_end(key)
        return parsed

    def _merge(self, model: LoadedModel, state: _ModelState,
               chosen: list[tuple[LoraRequest, LoraFile, tuple[int, int]]]) -> list[str]:
        roots = _components(model)
        warnings: list[str] = []
        reports: list[_Report] = []
        # contributions per parameter owner, so each parameter is computed and written once
        jobs: dict[tuple[str, str], list[_Contribution]] = defaultdict(list)
        for request, file, stamp in chosen:
            try:
                parsed = self._load(file, stamp)
            except (CheckpointError, ValueError, RuntimeError) as e:
                warnings.append(f"LoRA '{request.name}' cannot be read: {e}")
                continue
            report = _Report(request.name, parsed)
            reports.append(report)
            for kohya_name, net in parsed.modules.items():
                ref = state.lookup.get(kohya_name)
                target = roots[ref.component].get_submodule(ref.name) if ref is not None else None
                if target is None or net.numel != target.weight.numel():
                    report.skipped.add(kohya_name)
                    continue
                multiplier = request.unet_multiplier if ref.component == "unet" else request.te_multiplier
                if multiplier == 0:
                    continue
                shapes = {n: p.shape for n, p in target.named_parameters(recurse=False)}
                for owner, rows in [(ref.name, None), *fused_copies(roots[ref.component], ref.name)]:
                    jobs[(ref.component, owner)].append(
                        _Contribution(net, multiplier, shapes, rows, kohya_name, report))

        written: set[tuple[str, str]] = set()
        with torch.no_grad():
            for (component, owner), contributions in jobs.items():
                params = dict(roots[component].get_submodule(owner).named_parameters(recurse=False))
                for pname, total in _sum_contributions(params, contributions).items():
                    key = (component, f"{owner}.{pname}")
                    self._write(state, key, params[pname], total)
                    written.add(key)
            self._restore(roots, state, keep=written)
        return warnings + [w for r in reports for w in r.warnings(model.family)]

    @staticmethod
    def _write(state: _ModelState, key: tuple[str, str], param: torch.Tensor, delta: torch.Tensor) -> None:
        """param = original + delta, rounded once to the parameter's dtype. In-place, so offloading
        hooks that keep their own reference to the tensor see the change."""
        original = state.backups.get(key)
        if original is None:
            original = state.backups[key] = param.detach().to("cpu", copy=True)
        merged = original.to(device=param.device, dtype=torch.float32) + delta
        param.copy_(merged.to(param.dtype))

    @staticmethod
    def _restore(roots: dict[str, nn.Module], state: _ModelState, keep: set[tuple[str, str]]) -> None:
        """Put back the originals of all changed parameters not in `keep`, and forget their copies."""
        with torch.no_grad():
            for key in [k for k in state.backups if k not in keep]:
                component, name = key
                roots[component].get_parameter(name).copy_(state.backups.pop(key))


def _sum_contributions(params: dict[str, nn.Parameter], contributions: list[_Contribution]
                       ) -> dict[str, torch.Tensor]:
    """Float32 change of each parameter of one module, summed over all contributing networks."""
    device = next(iter(params.values())).device
    totals: dict[str, torch.Tensor] = {}
    for c in contributions:
        try:
            deltas = compute_delta(c.module, device)
        except torch.OutOfMemoryError:
            raise
        except RuntimeError:  # factors that do not multiply out: a damaged or foreign file
            c.report.skipped.add(c.name)
            continue
        for pname, delta in deltas.items():
            shape = c.shapes.get(pname)
            if pname not in params or shape is None or delta.numel() != math.prod(shape):
                c.report.skipped.add(c.name)
                continue
            total = totals.get(pname)
            if total is None:
                total = totals[pname] = torch.zeros(params[pname].shape, dtype=torch.float32, device=device)
            region = total if c.rows is None else total[c.rows[0]:c.rows[1]]
            region += delta.reshape(shape) * c.multiplier
    return totals


def _stamp(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_mtime_ns, st.st_size


def _data_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        if path.suffix.lower() == ".safetensors":
            header_len = int.from_bytes(f.read(8), "little")
            f.seek(8 + header_len)
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()
