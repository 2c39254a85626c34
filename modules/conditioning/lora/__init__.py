"""LoRA and LyCORIS networks merged into a loaded model's weights, as A1111 applies them.

A network file in the kohya / LyCORIS layout holds, per target module, factors whose product is a
change of that module's weight. Keys are `<module>.<part>`: the module is `lora_unet_...` for the
UNet, `lora_te_...` for the SD1/SD2 text encoder and `lora_te1_...`/`lora_te2_...` for SDXL's two,
followed by the module's own name with '.' written as '_'. UNet names come in diffusers naming
(`down_blocks_0_attentions_0_...`, usual for SD1/SD2) or in the original LDM naming
(`input_blocks_4_1_...`, usual for SDXL); both are looked up. Supported: LoRA and LoCon
(`lora_down`/`lora_up`, optional `lora_mid`), LoHa (`hada_*`), LoKr (`lokr_*`) and full
differences (`diff`, `diff_b`).

Merging changes the weights in place, so generation runs at full speed with no extra modules.
Before a weight is changed the first time, its original is copied to system RAM in the dtype it
is stored in; every new set of networks starts again from these copies, so weights come back bit
for bit however often networks change. Deltas are computed in float32 and the sum is rounded
once to the weight's dtype. With fp8 weight storage that rounding is coarse (the merged network is
approximated to fp8 like every other weight), but restoring stays exact.
"""
from __future__ import annotations

import hashlib
import logging
import math
import threading
import weakref
from collections import OrderedDict, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from modules.models.checkpoint_io import CheckpointError, read_state_dict, shapes_of
from modules.models.detection import Family
from modules.models.model_files import preview_image

if TYPE_CHECKING:
    from modules.models.loading import LoadedModel

log = logging.getLogger(__name__)

LORA_SUFFIXES = (".safetensors", ".pt", ".ckpt")
UNET_PREFIX = "lora_unet_"
# Which of LoadedModel.text_encoders each kohya prefix addresses.
TEXT_PREFIXES: dict[Family, dict[str, int]] = {
    Family.SD1: {"lora_te_": 0},
    Family.SD2: {"lora_te_": 0},
    Family.SDXL: {"lora_te1_": 0, "lora_te2_": 1},
    Family.SDXL_REFINER: {"lora_te2_": 0},  # the refiner's one encoder is SDXL's second (OpenCLIP bigG)
}
KNOWN_PREFIXES = (UNET_PREFIX, "lora_te_", "lora_te1_", "lora_te2_")
# Module types other trainers write that cannot be merged as a plain weight change.
_UNSUPPORTED_MARKERS = {"dora_scale": "DoRA", "oft_blocks": "OFT", "oft_diag": "OFT", "a1.weight": "GLoRA",
                        "on_input": "IA3", "w_norm": "norm"}
_CONTEXT_WIDTHS = {768: Family.SD1, 1024: Family.SD2, 2048: Family.SDXL, 1280: Family.SDXL_REFINER}
_TEXT_WIDTHS = {768: Family.SD1, 1024: Family.SD2}


# ---- finding files -----------------------------------------------------------------------------

@dataclass(frozen=True)
class LoraFile:
    """A network file in the LoRA folders."""
    name: str  # file name without extension: what `<lora:NAME:0.8>` refers to
    path: Path
    relative: str  # to the folder it was found in, "/"-separated: "styles/ink.safetensors"
    metadata: Mapping[str, str] = field(default_factory=dict, compare=False)
    preview: Path | None = None
    family: Family | None = None  # the model family it was made for, when metadata or shapes tell

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


def guess_family(metadata: Mapping[str, str], shapes: Mapping[str, tuple[int, ...]]) -> Family | None:
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
            return _CONTEXT_WIDTHS.get(shape[1])
        if key.startswith("lora_te_") and "_self_attn_q_proj." in key and key.endswith(".lora_down.weight"):
            return _TEXT_WIDTHS.get(shape[1])
    return None


# ---- reading networks --------------------------------------------------------------------------

@dataclass
class NetworkModule:
    """One target module's factors in a network file."""
    kind: str  # "lora" (incl. LoCon), "loha", "lokr" or "full"
    weights: dict[str, torch.Tensor]  # by key suffix: "lora_down.weight", "hada_w1_a", "diff", ...
    alpha: float | None = None

    @property
    def numel(self) -> int:
        """Size of the weight change the factors make, to check against a target cheaply."""
        w = {k: tuple(v.shape) for k, v in self.weights.items()}
        if self.kind == "lora":
            down, kernel = w["lora_down.weight"], w.get("lora_mid.weight", (0, 0))[2:]
            return w["lora_up.weight"][0] * math.prod(down[1:]) * math.prod(kernel)
        if self.kind == "loha":
            if "hada_t1" in w:
                return w["hada_w1_a"][1] * w["hada_w1_b"][1] * math.prod(w["hada_t1"][2:])
            return w["hada_w1_a"][0] * w["hada_w1_b"][1]
        if self.kind == "lokr":
            return _lokr_part_numel(w, "1") * _lokr_part_numel(w, "2")
        return math.prod(w["diff"])


def _lokr_part_numel(w: Mapping[str, tuple[int, ...]], i: str) -> int:
    if f"lokr_w{i}" in w:
        return math.prod(w[f"lokr_w{i}"])
    a, b = w[f"lokr_w{i}_a"], w[f"lokr_w{i}_b"]
    if f"lokr_t{i}" in w:
        return a[1] * b[1] * math.prod(w[f"lokr_t{i}"][2:])
    return a[0] * b[1]


@dataclass
class ParsedLora:
    modules: dict[str, NetworkModule]  # by kohya module name: "lora_unet_down_blocks_0_..._to_q"
    unsupported: dict[str, str]  # kohya module name -> its type, for modules that cannot be merged
    unknown_keys: list[str]  # keys outside the kohya / LyCORIS naming
    family: Family | None


def _kind(parts: Mapping[str, torch.Tensor]) -> str | None:
    if any(marker in parts for marker in _UNSUPPORTED_MARKERS):
        return None
    if "lora_down.weight" in parts and "lora_up.weight" in parts:
        return "lora"
    if {"hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b"} <= parts.keys() and ("hada_t1" in parts) == (
            "hada_t2" in parts):
        return "loha"
    if all(f"lokr_w{i}" in parts or {f"lokr_w{i}_a", f"lokr_w{i}_b"} <= parts.keys() for i in "12"):
        return "lokr"
    if "diff" in parts:
        return "full"
    return None


def parse_lora(state_dict: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None) -> ParsedLora:
    """Group a network file's tensors by target module. Only keys in the kohya naming are read, so
    a checkpoint dropped into the LoRA folder by mistake costs no more than its key list."""
    groups: dict[str, dict[str, torch.Tensor]] = defaultdict(dict)
    unknown = []
    for key in state_dict:
        module, sep, part = key.partition(".")
        if sep and module.startswith(KNOWN_PREFIXES):
            groups[module][part] = state_dict[key]
        else:
            unknown.append(key)
    modules, unsupported = {}, {}
    for name, parts in groups.items():
        alpha = parts.pop("alpha", None)
        kind = _kind(parts)
        if kind is None:
            unsupported[name] = next((v for k, v in _UNSUPPORTED_MARKERS.items() if k in parts), "unknown")
        else:
            modules[name] = NetworkModule(kind, parts, float(alpha) if alpha is not None else None)
    shapes = {f"{name}.{part}": tuple(t.shape) for name, parts in groups.items() for part, t in parts.items()}
    return ParsedLora(modules, unsupported, unknown, guess_family(metadata or {}, shapes))


def _tucker(core: torch.Tensor, out_factor: torch.Tensor, in_factor: torch.Tensor) -> torch.Tensor:
    """Rebuild (out, in, *kernel) from a Tucker core (r1, r2, *kernel), out_factor (r1, out) and
    in_factor (r2, in): the form LoCon's `lora_mid`, LoHa's `hada_t*` and LoKr's `lokr_t2` take."""
    return torch.einsum("ab...,ao,bi->oi...", core, out_factor, in_factor)


def compute_delta(module: NetworkModule, device: torch.device) -> dict[str, torch.Tensor]:
    """The change a module's factors make at multiplier 1, by parameter name ("weight", and "bias"
    for full diffs), in float32 on `device`. Shapes are the factors' natural ones; the caller
    reshapes to the target (1x1 conv <-> linear, flattened conv kernels)."""
    w = {k: v.to(device=device, dtype=torch.float32) for k, v in module.weights.items()}
    rank: int | None = None
    bias = None
    if module.kind == "lora":
        up, down = w["lora_up.weight"].flatten(1), w["lora_down.weight"]
        rank = down.shape[0]
        if "lora_mid.weight" in w:
            delta = _tucker(w["lora_mid.weight"], up.T, down.flatten(1))
        else:
            delta = up @ down.flatten(1)
    elif module.kind == "loha":
        rank = w["hada_w1_b"].shape[0]
        if "hada_t1" in w:
            delta = (_tucker(w["hada_t1"], w["hada_w1_a"], w["hada_w1_b"])
                     * _tucker(w["hada_t2"], w["hada_w2_a"], w["hada_w2_b"]))
        else:
            delta = (w["hada_w1_a"] @ w["hada_w1_b"]) * (w["hada_w2_a"] @ w["hada_w2_b"])
    elif module.kind == "lokr":
        w1 = w["lokr_w1"] if "lokr_w1" in w else w["lokr_w1_a"] @ w["lokr_w1_b"]
        if "lokr_w2" in w:
            w2 = w["lokr_w2"]
        elif "lokr_t2" in w:
            w2 = _tucker(w["lokr_t2"], w["lokr_w2_a"], w["lokr_w2_b"])
        else:
            w2 = w["lokr_w2_a"] @ w["lokr_w2_b"]
        rank = next((w[k].shape[0] for k in ("lokr_w1_b", "lokr_w2_b") if k in w), None)
        delta = torch.kron(w1.reshape(*w1.shape, *[1] * (w2.dim() - w1.dim())), w2.contiguous())
    else:
        delta, bias = w["diff"], w.get("diff_b")
    # trainers treat a missing or zero alpha as alpha = rank; full matrices are never scaled
    if rank and module.alpha:
        delta = delta * (module.alpha / rank)
    return {"weight": delta} if bias is None else {"weight": delta, "bias": bias}


# ---- naming ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ModuleRef:
    component: str  # "unet", "text_encoder_0", "text_encoder_1" (as in Placement)
    name: str  # module name within that component


def _flat(name: str) -> str:
    return name.replace(".", "_")


def _owns_weight(module: nn.Module) -> bool:
    return any(name == "weight" for name, _ in module.named_parameters(recurse=False))


def _ldm_unet_modules(unet: nn.Module) -> list[str]:
    """Names the UNet's modules have in the original LDM layout, from its block structure. The
    resnet part names are all offered; the converter decides which exist."""
    names = ["time_embed.0", "time_embed.2", "input_blocks.0.0", "out.0", "out.2"]
    if getattr(unet, "add_embedding", None) is not None or getattr(unet, "class_embedding", None) is not None:
        names += ["label_emb.0.0", "label_emb.0.2"]

    def resnet(prefix: str) -> None:
        names.extend(f"{prefix}.{part}" for part in
                     ("in_layers.0", "in_layers.2", "emb_layers.1", "out_layers.0", "out_layers.3", "skip_connection"))

    def transformer(prefix: str, block: nn.Module) -> None:
        names.extend(f"{prefix}.{n}" for n, m in block.named_modules() if n and _owns_weight(m))

    idx = 1
    for down in unet.down_blocks:
        attentions = getattr(down, "attentions", None) or []
        for j in range(len(down.resnets)):
            resnet(f"input_blocks.{idx}.0")
            if j < len(attentions):
                transformer(f"input_blocks.{idx}.1", attentions[j])
            idx += 1
        if down.downsamplers:
            names.append(f"input_blocks.{idx}.0.op")
            idx += 1
    if unet.mid_block is not None:
        for k in range(len(unet.mid_block.resnets)):
            resnet(f"middle_block.{2 * k}")
        for k, attention in enumerate(getattr(unet.mid_block, "attentions", None) or []):
            transformer(f"middle_block.{2 * k + 1}", attention)
    idx = 0
    for up in unet.up_blocks:
        attentions = getattr(up, "attentions", None) or []
        for j in range(len(up.resnets)):
            resnet(f"output_blocks.{idx}.0")
            if attentions:
                transformer(f"output_blocks.{idx}.1", attentions[j])
            if up.upsamplers and j == len(up.resnets) - 1:
                names.append(f"output_blocks.{idx}.{2 if attentions else 1}.conv")
            idx += 1
    return names


def ldm_unet_module_map(unet: nn.Module) -> dict[str, str]:
    """LDM module name -> diffusers module name, as the checkpoint loader placed the weights.

    Derived from the same converter the loader used (diffusers' convert_ldm_unet_checkpoint): it
    only moves values between keys, so each weight slot is given its own LDM name as its value
    and read back from wherever it landed."""
    from diffusers.loaders.single_file_utils import LDM_UNET_KEY, convert_ldm_unet_checkpoint

    marked = {f"{LDM_UNET_KEY}{name}.{p}": name for name in _ldm_unet_modules(unet) for p in ("weight", "bias")}
    moved = convert_ldm_unet_checkpoint(marked, dict(unet.config))
    modules = dict(unet.named_modules())
    return {ldm: key.removesuffix(".weight") for key, ldm in moved.items()
            if key.endswith(".weight") and key.removesuffix(".weight") in modules}


def module_lookup(family: Family, unet: nn.Module, text_encoders: Sequence[nn.Module]) -> dict[str, ModuleRef]:
    """Every kohya module name that addresses a module of this model, in both UNet namings."""
    lookup = {UNET_PREFIX + _flat(name): ModuleRef("unet", name)
              for name, module in unet.named_modules() if _owns_weight(module)}
    lookup.update({UNET_PREFIX + _flat(ldm): ModuleRef("unet", name)
                   for ldm, name in ldm_unet_module_map(unet).items()})
    for prefix, index in TEXT_PREFIXES[family].items():
        if index >= len(text_encoders):
            continue
        encoder = text_encoders[index]
        # transformers 5 dropped CLIPTextModel's own "text_model." level; kohya names keep it
        level = "" if hasattr(encoder, "text_model") else "text_model."
        lookup.update({prefix + _flat(level + name): ModuleRef(f"text_encoder_{index}", name)
                       for name, module in encoder.named_modules() if _owns_weight(module)})
    return lookup


def _fused_copies(root: nn.Module, name: str) -> list[tuple[str, tuple[int, int]]]:
    """Other places a projection's weight lives: (module name, (first row, end row)). After
    diffusers' fuse_qkv_projections an attention computes with `to_qkv` (self-attention) or
    `to_kv` (cross-attention), which stack the separate projections' rows."""
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name)
    if not getattr(parent, "fused_projections", False):
        return []
    for fused, parts in (("to_qkv", ("to_q", "to_k", "to_v")), ("to_kv", ("to_k", "to_v"))):
        if getattr(parent, fused, None) is None or child not in parts:
            continue
        sizes = [getattr(parent, p).weight.shape[0] for p in parts]
        start = sum(sizes[: parts.index(child)])
        return [(f"{parent_name}.{fused}", (start, start + sizes[parts.index(child)]))]
    return []


# ---- applying ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class LoraRequest:
    """One `<lora:name:te:unet>` of a prompt."""
    name: str
    te_multiplier: float = 1.0
    unet_multiplier: float = 1.0


@dataclass
class _Report:
    """How one requested network fitted the model, for the user."""
    name: str
    parsed: ParsedLora
    skipped: set[str] = field(default_factory=set)  # kohya names that address no module of this shape

    def warnings(self, family: Family) -> list[str]:
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
                for owner, rows in [(ref.name, None), *_fused_copies(roots[ref.component], ref.name)]:
                    jobs[(ref.component, owner)].append(_Contribution(net, multiplier, shapes, rows, kohya_name, report))

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
