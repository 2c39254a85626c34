"""ControlNet model files: finding them, telling what they are from keys and shapes, loading them as diffusers'
`ControlNetModel`.

Layouts read: lllyasviel's original one (`input_hint_block`, `zero_convs`, ...; with the `control_model.` prefix
as in the fp16 "pruned" files and the ControlNet 1.0 files that hold a whole SD model, or without it as in the
1.1 `.pth` files) and diffusers' (`controlnet_cond_embedding`, `controlnet_down_blocks`, ...), as a single file
or as `diffusion_pytorch_model.safetensors` with its `config.json` in a Hugging Face folder. Everything that
varies (channels, depths, context width, hint channels, SDXL's size embedding) is read off the shapes, so tiny
test models and full-size ones take one path; what shapes cannot tell (attention heads) follows the family, as
for checkpoints. Files go through `checkpoint_io`'s safe readers. T2I-Adapters, Control-LoRAs, IP-Adapters and
the other models the A1111 extension keeps in the same folder are recognised and refused by name.
"""
from __future__ import annotations

import contextlib
import gc
import json
import logging
import re
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from modules.models import families
from modules.models.checkpoint_io import CheckpointError, LazySafetensors, read_state_dict
from modules.models.devices import ComponentPrecision, DevicePolicy
from modules.models.families import Family, ModelFamily, count_indices
from modules.models.loading import assign_weights
from modules.models.memory import home_device
from modules.models.merge import legacy_hash

log = logging.getLogger(__name__)

SUFFIXES = (".safetensors", ".pth", ".pt", ".ckpt")  # the A1111 extension's list
PREFIX = "control_model."
DIFFUSERS_FILE_STEM = "diffusion_pytorch_model"  # a Hugging Face folder's weights: named after the folder
# Where pickles nest the weights: training checkpoints under state_dict; IP-Adapters' .pth files under ip_adapter
# (beside image_proj), unwrapped so that they are recognised and named.
PICKLE_WRAPPERS = ("state_dict", "ip_adapter")
SDXL_TIME_EMBED_DIM = 256  # width of each of SDXL's six size/crop values in its added embedding
# Settings of diffusers' config.json that shapes cannot tell; the rest of a config.json is ignored.
CONFIG_ONLY_KEYS = ("attention_head_dim", "num_attention_heads", "upcast_attention", "global_pool_conditions",
                    "controlnet_conditioning_channel_order", "addition_time_embed_dim", "flip_sin_to_cos",
                    "freq_shift", "norm_eps", "norm_num_groups", "mid_block_scale_factor")
Shapes = dict[str, tuple[int, ...]]


class ControlNetError(CheckpointError):
    """A ControlNet file that cannot be used, or one that does not fit the loaded checkpoint."""


# Models that share the ControlNet folder in the A1111 extension, by a key (or key part) only they have.
_OTHER_MODELS = (
    (lambda k: k == "lora_controlnet", "a Control-LoRA (Stability AI's low-rank ControlNet)"),
    (lambda k: k.startswith(("adapter.body.", "body.0.", "style_embedding")), "a T2I-Adapter"),
    (lambda k: "lllite" in k, "a ControlNet-LLLite (kohya)"),
    (lambda k: k.startswith(("image_proj.", "ip_adapter.")) or "to_k_ip" in k, "an IP-Adapter"),
    (lambda k: k.startswith(("task_embedding", "control_add_embedding.", "transformer_layes.", "spatial_ch_projs.")),
     "a ControlNet union model (several control types in one file)"),
    (lambda k: "motion_modules" in k, "a SparseCtrl model (AnimateDiff)"),
    (lambda k: k == "difference", "a 'difference' ControlNet (its weights are the change from a base model)"),
)


@dataclass(frozen=True)
class ControlNetFile:
    """One file of the ControlNet folders. `name` is what the A1111 extension shows (the file stem; a Hugging Face
    folder's name for its weights file), `title` adds A1111's old 8-digit hash: "control_v11p_sd15_canny [d14c016b]"
    as in the extension's model list and infotexts."""
    path: Path
    name: str
    shorthash: str

    @property
    def title(self) -> str:
        return f"{self.name} [{self.shorthash}]"

    @classmethod
    def from_path(cls, path: Path | str) -> ControlNetFile:
        path = Path(path)
        return cls(path, display_name(path), legacy_hash(path))

    def matches(self, query: str) -> bool:
        """A unit names its model by title, or by name alone (any case), or by "name [another hash]" as an
        infotext from another computer does."""
        q = query.strip()
        name = q.rsplit(" [", 1)[0] if q.endswith("]") else q
        return q == self.title or name.lower() == self.name.lower()


def display_name(path: Path) -> str:
    stem = path.name[: -len(path.suffix)]
    if stem.startswith(DIFFUSERS_FILE_STEM):  # ".../controlnet-canny-sdxl-1.0/diffusion_pytorch_model.fp16"
        return path.parent.name + stem[len(DIFFUSERS_FILE_STEM):]
    return stem


def list_controlnets(folders: Iterable[Path]) -> list[ControlNetFile]:
    """The model files in `folders` and their subfolders, each folder sorted by name; a title already listed from an
    earlier folder is not listed again (the extension's order: models/ControlNet first)."""
    out: list[ControlNetFile] = []
    seen_paths: set[Path] = set()
    seen_titles: set[str] = set()
    for folder in folders:
        folder = Path(folder)
        if not folder.is_dir():
            continue
        for path in sorted(folder.rglob("*"), key=lambda p: str(p).lower()):
            if path.suffix.lower() not in SUFFIXES or not path.is_file() or path.resolve() in seen_paths:
                continue
            seen_paths.add(path.resolve())
            file = ControlNetFile.from_path(path)
            if file.name != "None" and file.title not in seen_titles:  # "None" is the dropdown's "no model"
                seen_titles.add(file.title)
                out.append(file)
    return out


def find_controlnet(files: Iterable[ControlNetFile], query: str) -> ControlNetFile | None:
    files = list(files)
    return next((f for f in files if f.title == query.strip()), None) or next(
        (f for f in files if f.matches(query)), None)


@dataclass(frozen=True)
class ControlNetSpec:
    """What a ControlNet file holds. `config` is ControlNetModel's; for SDXL models `addition_time_embed_dim` may be
    missing there (no config.json): `model_config` completes it."""
    layout: str  # "ldm" (lllyasviel's names), "ldm-prefixed" (the same under control_model.), "diffusers"
    family: ModelFamily
    config: dict[str, Any]
    hint_channels: int  # channels of the control image (3: RGB)
    hint_scale: int  # control image pixels per latent pixel (8)
    context_width: int

    @property
    def label(self) -> str:
        return f"{self.family.label} ControlNet"

    def model_config(self, base_unet_config: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The config to build with. SDXL's size-embedding width is not in the weights: from config.json, else from
        the checkpoint's UNet it will guide (it was trained from one like it), else SDXL's."""
        config = dict(self.config)
        if config.get("addition_embed_type") != "text_time" or config.get("addition_time_embed_dim"):
            return config
        width = config["projection_class_embeddings_input_dim"]
        base = base_unet_config or {}
        if base.get("projection_class_embeddings_input_dim") == width and base.get("addition_time_embed_dim"):
            config["addition_time_embed_dim"] = base["addition_time_embed_dim"]
        elif width > 6 * SDXL_TIME_EMBED_DIM:
            config["addition_time_embed_dim"] = SDXL_TIME_EMBED_DIM
        else:
            raise ValueError(f"cannot tell the width of the size embedding ({width} in all); put the model's "
                             "diffusers config.json beside it")
        return config


def _explain_not_controlnet(path: Path, keys: list[str]) -> ControlNetError:
    if any(k.startswith("model.diffusion_model.") for k in keys):
        reason = "a Stable Diffusion checkpoint: put it into models/Stable-diffusion"
    elif any(k.startswith(("lora_unet_", "lora_te_", "lora_te1_")) for k in keys):
        reason = "a LoRA: put it into models/Lora"
    elif any(k.startswith(("encoder.down.", "decoder.up.", "encoder.down_blocks.")) for k in keys):
        reason = "a VAE: put it into models/VAE"
    else:
        reason = (f"expected keys such as '{PREFIX}input_hint_block.0.weight' or diffusers' "
                  f"'controlnet_cond_embedding.conv_in.weight' (found {len(keys)} keys, e.g. {keys[:3]})")
    return ControlNetError(path, f"not a ControlNet: {reason}")


def _layout(path: Path, shapes: Shapes) -> str:
    keys = list(shapes)
    for is_key, what in _OTHER_MODELS:
        if any(is_key(k) for k in keys):
            raise ControlNetError(path, f"{what}, not a ControlNet; this kind of model is not supported yet")
    if "controlnet_cond_embedding.conv_in.weight" in shapes:
        return "diffusers"
    if "input_hint_block.0.weight" in shapes:
        return "ldm"
    if PREFIX + "input_hint_block.0.weight" in shapes:
        return "ldm-prefixed"
    raise _explain_not_controlnet(path, keys)


def _resblocks_per_level(ldm: Mapping[str, Any]) -> int:
    """Residual blocks before the first downsampling in the original layout."""
    count = 0
    while f"input_blocks.{count + 1}.0.out_layers.3.weight" in ldm:
        count += 1
    return count


def _hint_block_names(ldm: Mapping[str, Any]) -> dict[str, str]:
    """diffusers name -> original name in the conditioning embedding: convolutions at every other index, the first
    taking the control image, the last the zero convolution (14 in the released models)."""
    indices = sorted({int(m.group(1)) for k in ldm if (m := re.match(r"input_hint_block\.(\d+)\.weight$", k))})
    names = {}
    for i, index in enumerate(indices):
        target = "conv_in" if i == 0 else "conv_out" if i == len(indices) - 1 else f"blocks.{i - 1}"
        for part in ("weight", "bias"):
            names[f"controlnet_cond_embedding.{target}.{part}"] = f"input_hint_block.{index}.{part}"
    return names


def to_diffusers_names(path: Path, weights: Mapping[str, Any], layout: str) -> dict[str, Any]:
    """Original-layout weights (or shapes) under diffusers' names: diffusers' own conversion, with the control image
    embedding mapped by position and SDXL's size embedding (`label_emb`), which that conversion leaves out."""
    if layout == "diffusers":
        return dict(weights.items())
    from diffusers.loaders.single_file_utils import convert_controlnet_checkpoint

    if layout == "ldm-prefixed":
        ldm = {k[len(PREFIX):]: weights[k] for k in weights if k.startswith(PREFIX)}
    else:
        ldm = dict(weights.items())
    if "time_embed.0.weight" not in ldm:
        raise ControlNetError(path, "ControlNet weights incomplete: missing 'time_embed.0.weight'")
    converted = convert_controlnet_checkpoint(ldm, {"layers_per_block": _resblocks_per_level(ldm)})
    converted = {k: v for k, v in converted.items() if not k.startswith("controlnet_cond_embedding.")}
    extra = _hint_block_names(ldm)
    for new, old in (("linear_1", "0.0"), ("linear_2", "0.2")):
        for part in ("weight", "bias"):
            extra[f"add_embedding.{new}.{part}"] = f"label_emb.{old}.{part}"
    converted.update({new: ldm[old] for new, old in extra.items() if old in ldm})
    missing = sorted(k for k, v in converted.items() if v is None)
    if missing:
        raise ControlNetError(path, f"ControlNet weights incomplete: {len(missing)} missing, e.g. {missing[:3]}")
    return converted


def _family(shapes: Shapes, context_width: int, linear: bool) -> ModelFamily:
    """SDXL ControlNets have the size embedding; the context width tells the released families apart, and the
    projection kind (SD2 and SDXL linear, SD1 convolution) tiny test models of unknown widths."""
    known = families.family_for_context_width(context_width)
    if "add_embedding.linear_1.weight" in shapes:
        return known if known is not None and known.is_xl else Family.SDXL
    if known is not None and not known.is_xl:
        return known
    return Family.SD2 if linear else Family.SD1


def _config_from_shapes(path: Path, d: Shapes, config: Mapping[str, Any]) -> tuple[dict[str, Any], ModelFamily]:
    levels = count_indices(d, r"down_blocks\.(\d+)\.")
    channels = [d[f"down_blocks.{i}.resnets.0.conv1.weight"][0] for i in range(levels)]
    attention = [f"down_blocks.{i}.attentions.0.proj_in.weight" in d for i in range(levels)]
    depths = [count_indices(d, rf"down_blocks\.{i}\.attentions\.0\.transformer_blocks\.(\d+)\.") for i in range(levels)]
    mid_attention = "mid_block.attentions.0.proj_in.weight" in d
    mid_depth = count_indices(d, r"mid_block\.attentions\.0\.transformer_blocks\.(\d+)\.")
    to_k = next((k for k in d if k.endswith("attn2.to_k.weight")), None)
    proj_in = next((k for k in d if k.endswith("proj_in.weight")), None)
    linear = proj_in is not None and len(d[proj_in]) == 2
    context = d[to_k][1] if to_k else None
    family = _family(d, context or 0, linear)
    context = context or family.context_width  # a model without cross-attention (SDXL "small")
    if proj_in is None:
        linear = family.id != Family.SD1.id

    head_channels = family.default_head_channels
    heads = [8] * levels if head_channels is None else [max(1, c // head_channels) for c in channels]
    hint = d["controlnet_cond_embedding.conv_in.weight"]
    hint_blocks = count_indices(d, r"controlnet_cond_embedding\.blocks\.(\d+)\.weight")
    hint_widths = [hint[0]] + [d[f"controlnet_cond_embedding.blocks.{2 * i + 1}.weight"][0]
                               for i in range(hint_blocks // 2)]
    # per level (levels without attention ignore it); diffusers reads the middle block's from the last level's entry
    layers = [depth if has_attention else 1 for depth, has_attention in zip(depths, attention, strict=True)]
    if mid_attention and not attention[-1]:
        layers[-1] = mid_depth
    elif mid_attention and mid_depth != depths[-1]:
        raise ControlNetError(path, "the middle block's depth differs from the last level's; not a known layout")
    cfg: dict[str, Any] = {
        "in_channels": d["conv_in.weight"][1],
        "conditioning_channels": hint[1],
        "block_out_channels": channels,
        "layers_per_block": count_indices(d, r"down_blocks\.0\.resnets\.(\d+)\."),
        "down_block_types": ["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attention],
        "mid_block_type": "UNetMidBlock2DCrossAttn" if mid_attention else "UNetMidBlock2D",
        "transformer_layers_per_block": layers,
        "cross_attention_dim": context,
        "attention_head_dim": heads,
        "use_linear_projection": linear,
        "upcast_attention": family.upcast_attention,
        "conditioning_embedding_out_channels": hint_widths,
    }
    if "add_embedding.linear_1.weight" in d:
        cfg.update(addition_embed_type="text_time",
                   projection_class_embeddings_input_dim=d["add_embedding.linear_1.weight"][1])
    cfg.update({k: config[k] for k in CONFIG_ONLY_KEYS if config.get(k) is not None})
    return cfg, family


def _shapes(weights: Mapping[str, Any]) -> Shapes:
    if isinstance(weights, LazySafetensors):
        return {k: weights.shape(k) for k in weights}
    return {k: tuple(v.shape) if isinstance(v, torch.Tensor) else tuple(v) for k, v in weights.items()}


def detect_controlnet(weights: Mapping[str, Any], path: Path | str = "ControlNet",
                      config: Mapping[str, Any] | None = None) -> ControlNetSpec:
    """Describe the ControlNet in `weights` (key -> tensor or shape). `config`: settings the file's config.json (or
    its name) gives. Raises ControlNetError for anything that is not a ControlNet we load, saying what it is."""
    path = Path(path)
    shapes = _shapes(weights)
    if not shapes:
        raise ControlNetError(path, "contains no weights")
    layout = _layout(path, shapes)
    d = to_diffusers_names(path, shapes, layout)
    try:
        cfg, family = _config_from_shapes(path, d, config or {})
    except KeyError as e:
        raise ControlNetError(path, f"ControlNet weights incomplete: missing {e}") from e
    hint_scale = 2 ** (len(cfg["conditioning_embedding_out_channels"]) - 1)
    return ControlNetSpec(layout=layout, family=family, config=cfg, hint_channels=cfg["conditioning_channels"],
                          hint_scale=hint_scale, context_width=cfg["cross_attention_dim"])


def check_family(controlnet: LoadedControlNet | ControlNetSpec, model_family: ModelFamily,
                 path: Path | str | None = None) -> None:
    """Refuse a ControlNet made for another family than the loaded checkpoint's."""
    spec = controlnet.spec if isinstance(controlnet, LoadedControlNet) else controlnet
    if path is None:
        path = controlnet.file.path if isinstance(controlnet, LoadedControlNet) else "ControlNet"
    if spec.family.id != model_family.id:
        raise ControlNetError(path, f"an {spec.family.label} ControlNet cannot guide the loaded {model_family.label} "
                                    f"checkpoint; choose a ControlNet made for {model_family.label}")


def settings_beside(path: Path) -> dict[str, Any]:
    """What the files around a ControlNet say that its weights cannot: a Hugging Face folder's config.json, the
    extension's `name.yaml` (global average pooling), or "shuffle" in the name (the extension's rule for the
    SD1.5 shuffle model, which pools its output)."""
    settings: dict[str, Any] = {}
    config_json = path.with_name("config.json")
    if path.name.startswith(DIFFUSERS_FILE_STEM) and config_json.is_file():
        try:
            loaded = json.loads(config_json.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise ControlNetError(config_json, f"the config beside the ControlNet cannot be read: {e}") from e
        if isinstance(loaded, dict):
            settings.update(loaded)
    yaml_path = path.with_suffix(".yaml")
    if yaml_path.is_file():
        from omegaconf import OmegaConf
        try:
            yaml = OmegaConf.to_container(OmegaConf.load(yaml_path))
            pooling = yaml["model"]["params"]["control_stage_config"]["params"].get("global_average_pooling")
        except Exception:  # an unrelated or malformed yaml says nothing about pooling
            pooling = None
        if pooling is not None:
            settings["global_pool_conditions"] = bool(pooling)
    if "global_pool_conditions" not in settings and "shuffle" in display_name(path).lower():
        settings["global_pool_conditions"] = True
    return settings


@dataclass(eq=False)
class LoadedControlNet:
    """A ControlNet ready to run: `model` is a diffusers ControlNetModel in eval mode. It rests on `rest_device`
    (system RAM in medvram/lowvram) and computes on `device`; `in_use()` brings it there for a sampling pass."""
    file: ControlNetFile
    spec: ControlNetSpec
    model: nn.Module
    device: torch.device
    rest_device: torch.device
    dtype: torch.dtype
    _lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    @property
    def family(self) -> ModelFamily:
        return self.spec.family

    @contextlib.contextmanager
    def in_use(self) -> Iterator[nn.Module]:
        with self._lock:
            moved = self.device != self.rest_device
            if moved:
                self.model.to(self.device)
            try:
                yield self.model
            finally:
                if moved:
                    self.model.to(self.rest_device)


def _placement(policy_or_device: DevicePolicy | torch.device | str,
               dtype: torch.dtype | None) -> tuple[torch.device, torch.device, ComponentPrecision]:
    """(compute device, resting device, precision): a policy's UNet precision (fp8 storage included) and memory
    mode, or a plain device in float32."""
    if isinstance(policy_or_device, DevicePolicy):
        precision = policy_or_device.unet
        if dtype is not None:
            precision = ComponentPrecision(compute=dtype, storage=dtype)
        return policy_or_device.device, home_device(policy_or_device), precision
    device = torch.device(policy_or_device)
    dtype = dtype or torch.float32
    return device, device, ComponentPrecision(compute=dtype, storage=dtype)


def build_controlnet(path: Path, spec: ControlNetSpec, weights: Mapping[str, Any], precision: ComponentPrecision,
                     base_unet_config: Mapping[str, Any] | None = None) -> nn.Module:
    """ControlNetModel built on the meta device and given the file's weights (any layout)."""
    from diffusers import ControlNetModel

    try:
        config = spec.model_config(base_unet_config)
    except ValueError as e:
        raise ControlNetError(path, str(e)) from e
    with torch.device("meta"):
        model = ControlNetModel(**config)
    converted = to_diffusers_names(path, weights, spec.layout)
    expected = model.state_dict()
    unused = sorted(k for k in converted if k not in expected)
    if unused:
        raise ControlNetError(path, f"{len(unused)} weights have no place in the detected {spec.label}, "
                                    f"e.g. {unused[:3]}")
    assign_weights(path, model, converted, precision.compute, "ControlNet")
    if precision.casts_per_layer:
        model.enable_layerwise_casting(storage_dtype=precision.storage, compute_dtype=precision.compute)
    return model


def load_controlnet(file: ControlNetFile | Path | str, policy_or_device: DevicePolicy | torch.device | str = "cpu",
                    dtype: torch.dtype | None = None, *, allow_unsafe_pickle: bool = False,
                    base_unet_config: Mapping[str, Any] | None = None,
                    family: ModelFamily | None = None) -> LoadedControlNet:
    """Read, detect and build a ControlNet (`family`: the loaded checkpoint's, refused before building when it is
    another). With a policy (pass the loaded model's, `LoadedModel.policy`) it takes the
    UNet's precision and memory mode; `dtype` overrides the compute precision. `base_unet_config`: the loaded
    checkpoint's UNet config (`LoadedModel.spec.unet_config`), for SDXL files that do not say their size-embedding
    width. Raises ControlNetError with a message for the user."""
    if not isinstance(file, ControlNetFile):
        file = ControlNetFile.from_path(file)
    path = file.path
    device, rest, precision = _placement(policy_or_device, dtype)
    try:
        weights = read_state_dict(path, allow_unsafe_pickle, wrappers=PICKLE_WRAPPERS)
        spec = detect_controlnet(weights, path, settings_beside(path))
        if family is not None:
            check_family(spec, family, path)
        model = build_controlnet(path, spec, weights, precision, base_unet_config)
    except ControlNetError:
        raise
    except CheckpointError as e:
        raise ControlNetError(e.path, e.reason) from e
    except (RuntimeError, KeyError, ValueError, TypeError) as e:
        raise ControlNetError(path, f"weights do not fit a ControlNet: {e}") from e
    del weights
    model.to(rest)
    log.info("loaded ControlNet %s: %s, %s", file.title, spec.label, precision.compute)
    return LoadedControlNet(file=file, spec=spec, model=model, device=device, rest_device=rest,
                            dtype=precision.compute)


class ControlNetCache:
    """The last `size` ControlNets loaded (several units may use different ones). A file is loaded again when it
    changed on disk or is asked for with another precision or device."""

    def __init__(self, size: int = 2, allow_unsafe_pickle: bool = False):
        self.size = size
        self.allow_unsafe_pickle = allow_unsafe_pickle
        self._loaded: OrderedDict[tuple, LoadedControlNet] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def loaded(self) -> list[Path]:
        return [c.file.path for c in self._loaded.values()]

    def get(self, file: ControlNetFile | Path | str, policy_or_device: DevicePolicy | torch.device | str = "cpu",
            dtype: torch.dtype | None = None, base_unet_config: Mapping[str, Any] | None = None,
            family: ModelFamily | None = None) -> LoadedControlNet:
        if not isinstance(file, ControlNetFile):
            file = ControlNetFile.from_path(file)
        try:
            stat = file.path.stat()
        except OSError as e:
            raise ControlNetError(file.path, "file not found") from e
        base = base_unet_config or {}
        key = (file.path.resolve(), stat.st_size, stat.st_mtime_ns, policy_or_device, dtype,
               base.get("projection_class_embeddings_input_dim"), base.get("addition_time_embed_dim"))
        with self._lock:
            if key in self._loaded:
                self._loaded.move_to_end(key)
                return self._loaded[key]
            dropped = [k for k in self._loaded if k[0] == key[0]]  # the same file, changed or wanted otherwise
            for k in dropped:
                del self._loaded[k]
            while len(self._loaded) >= self.size:
                dropped.append(self._loaded.popitem(last=False)[0])
            if dropped:
                self._collect()
            loaded = load_controlnet(file, policy_or_device, dtype, allow_unsafe_pickle=self.allow_unsafe_pickle,
                                     base_unet_config=base_unet_config, family=family)
            self._loaded[key] = loaded
            return loaded

    def release(self) -> None:
        with self._lock:
            if self._loaded:
                self._loaded.clear()
                self._collect()

    @staticmethod
    def _collect() -> None:
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
