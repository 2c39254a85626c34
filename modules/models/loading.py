"""Building runnable models from checkpoint files.

A checkpoint in the original LDM/SGM layout is read (lazily for safetensors), described by
`detection.detect`, and turned into diffusers' `UNet2DConditionModel` / `AutoencoderKL` and
transformers' CLIP text models. Modules are created on the meta device and the file's tensors are
assigned to them directly, so loading costs no random initialisation and no second copy of the
weights when the file already has the target precision.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from modules.models import detection as model_detection
from modules.models.checkpoint_io import CheckpointError, read_state_dict, shapes_of
from modules.models.detection import UNET, VAE, ModelSpec
from modules.models.devices import ComponentPrecision, DevicePolicy
from modules.models.families import ModelFamily, TextEncoderSpec
from modules.models.memory import Placement
from modules.models.model_files import ModelFile
from modules.paths import REPO_ROOT

log = logging.getLogger(__name__)

TOKENIZER_DIR = REPO_ROOT / "configs" / "tokenizer"


@dataclass
class LoadedModel:
    """A checkpoint made runnable: its components, what it is, and where its weights live."""
    file: ModelFile
    spec: ModelSpec
    policy: DevicePolicy
    unet: nn.Module
    vae: nn.Module
    text_encoders: list[nn.Module]
    tokenizers: list
    alphas_cumprod: torch.Tensor
    placement: Placement
    load_seconds: float = 0.0
    vae_file: ModelFile | None = None  # None: the checkpoint's own VAE
    own_vae_state: dict[str, torch.Tensor] | None = field(default=None, repr=False)
    latent_rgb: torch.Tensor | None = field(default=None, repr=False)  # live-preview colour map, per VAE

    @property
    def family(self) -> ModelFamily:
        return self.spec.family

    @property
    def latent_scale(self) -> int:
        """Image pixels per latent pixel: 8 for SD's VAE (one halving per extra VAE level)."""
        return 2 ** (len(self.spec.vae_config["block_out_channels"]) - 1)

    def decode_latents(self, latent: torch.Tensor) -> list[Image.Image]:
        """Latents (as sampled, unscaled) to pictures, with this model's VAE and its scale. One picture at a
        time, as A1111 does: the decode is the memory peak, and a batch would multiply it."""
        with self.placement.use("vae") as vae, torch.no_grad():
            dtype = self.policy.vae.compute
            scaled = (latent / vae.config.scaling_factor).to(self.policy.device, dtype)
            x = torch.cat([vae.decode(one[None]).sample.float().cpu() for one in scaled])
        x = ((x + 1) / 2).clamp(0, 1)
        arr = (x.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
        return [Image.fromarray(a) for a in arr]

    def encode_images(self, pictures: list[Image.Image]) -> torch.Tensor:
        """Pictures (all the same size) to scaled latents: the mean of the VAE's latent distribution."""
        arr = np.stack([np.asarray(im.convert("RGB"), dtype=np.float32) / 127.5 - 1 for im in pictures])
        x = torch.from_numpy(arr).permute(0, 3, 1, 2)
        with self.placement.use("vae") as vae, torch.no_grad():
            dist = vae.encode(x.to(self.policy.device, self.policy.vae.compute)).latent_dist
            return (dist.mean * vae.config.scaling_factor).float().cpu()

    def describe(self) -> str:
        vae = self.vae_file.name if self.vae_file else "from checkpoint"
        return (f"{self.file.title}: {self.spec.label}, native {self.spec.native_size}px, "
                f"VAE {vae}; {self.policy.describe()}; loaded in {self.load_seconds:.1f}s")


def read_yaml_beside(path: Path):
    """The LDM config `name.yaml` next to `name.safetensors`, if the user put one there."""
    yaml_path = path.with_suffix(".yaml")
    if not yaml_path.is_file():
        return None
    from omegaconf import OmegaConf
    try:
        return OmegaConf.load(yaml_path)
    except Exception as e:
        raise CheckpointError(yaml_path, f"the config beside the checkpoint cannot be read: {e}") from e


def _fill_meta_buffers(module: nn.Module) -> None:
    """Non-persistent buffers are not in checkpoints; after a meta-device build, recreate them."""
    for mod_name, mod in module.named_modules():
        for name, buf in list(mod.named_buffers(recurse=False)):
            if not buf.is_meta:
                continue
            if name == "position_ids":
                value = torch.arange(buf.shape[-1], dtype=buf.dtype).expand(buf.shape).clone()
                mod.register_buffer(name, value, persistent=False)
            else:
                raise RuntimeError(f"buffer {mod_name}.{name} was not loaded")


def assign_weights(path: Path, module: nn.Module, weights: dict[str, torch.Tensor], dtype: torch.dtype,
                   what: str) -> None:
    """Put converted `weights` into a meta-built `module`, cast to `dtype`; every weight must fit.

    `weights` is consumed: each source tensor is dropped once its cast copy exists, so peak memory
    stays near the size of the finished module even when casting fp16 files to fp32.
    """
    expected = module.state_dict()
    if not any(k in expected for k in weights):
        # transformers 5 dropped the 'text_model.' level from CLIPTextModel's own names
        weights = {k.removeprefix("text_model."): weights.pop(k) for k in list(weights)}
    missing = [k for k in expected if k not in weights]
    if missing:
        raise CheckpointError(path, f"{what} weights incomplete: {len(missing)} missing, e.g. {missing[:3]}")
    converted = {}
    for k, ref in expected.items():
        t = weights.pop(k)
        if tuple(t.shape) != tuple(ref.shape):
            raise CheckpointError(path, f"{what} weight {k} has shape {tuple(t.shape)}, expected "
                                        f"{tuple(ref.shape)}")
        converted[k] = t.to(dtype) if t.is_floating_point() else t
    module.load_state_dict(converted, strict=True, assign=True)
    _fill_meta_buffers(module)
    module.eval().requires_grad_(False)


def _component(sd: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k: sd[k] for k in sd if k.startswith(prefix)}


def _apply_precision(module: nn.Module, precision: ComponentPrecision) -> None:
    """Store weights in `precision.storage` and cast each layer to the compute dtype as it runs."""
    if precision.casts_per_layer:
        module.enable_layerwise_casting(storage_dtype=precision.storage, compute_dtype=precision.compute)


def build_unet(path: Path, sd: Mapping[str, torch.Tensor], spec: ModelSpec, precision: ComponentPrecision,
               attention: str = "sdp"):
    from diffusers import UNet2DConditionModel
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

    with torch.device("meta"):
        unet = UNet2DConditionModel(**spec.unet_config)
    assign_weights(path, unet, convert_ldm_unet_checkpoint(_component(sd, UNET), dict(unet.config)),
                   precision.compute, "UNet")
    _apply_precision(unet, precision)
    if attention == "xformers":
        unet.enable_xformers_memory_efficient_attention()
    return unet


def build_vae(path: Path, ldm_weights: Mapping[str, torch.Tensor], config: dict, dtype: torch.dtype):
    """An AutoencoderKL from LDM-layout weights (with or without the first_stage_model. prefix)."""
    from diffusers import AutoencoderKL

    with torch.device("meta"):
        vae = AutoencoderKL(**config)
    assign_weights(path, vae, convert_vae_weights(ldm_weights, dict(vae.config)), dtype, "VAE")
    return vae


def convert_vae_weights(weights: Mapping[str, torch.Tensor], config: dict) -> dict[str, torch.Tensor]:
    """LDM (prefixed or bare) or diffusers-layout VAE weights -> diffusers names."""
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    if any(k.startswith("encoder.down_blocks.") for k in weights):
        return dict(weights)  # already diffusers layout
    if not any(k.startswith(VAE) for k in weights):
        weights = {VAE + k: v for k, v in weights.items()}
    return convert_ldm_vae_checkpoint(weights, config)


def _openclip_weights(sd: Mapping[str, torch.Tensor], te: TextEncoderSpec, model: nn.Module) -> dict:
    from diffusers.loaders.single_file_utils import convert_open_clip_checkpoint

    weights = _component(sd, te.prefix)
    if te.dropped_last_layer:
        last = te.config["num_hidden_layers"]
        weights = {k: v for k, v in weights.items() if not k.startswith(f"{te.prefix}transformer.resblocks.{last}.")}
    return convert_open_clip_checkpoint(model, weights, prefix=te.prefix)


def _hf_clip_weights(sd: Mapping[str, torch.Tensor], te: TextEncoderSpec) -> dict:
    weights = {}
    for k in sd:
        if not k.startswith(te.prefix):
            continue
        name = k[len(te.prefix):]
        if not name.startswith("text_model."):  # files from before transformers added that level
            name = "text_model." + name
        weights[name] = sd[k]
    return weights


def build_text_encoder(path: Path, sd: Mapping[str, torch.Tensor], te: TextEncoderSpec, dtype: torch.dtype):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    cls = CLIPTextModelWithProjection if te.with_projection else CLIPTextModel
    with torch.device("meta"):
        model = cls(CLIPTextConfig(**te.config))
    weights = _openclip_weights(sd, te, model) if te.layout == "openclip" else _hf_clip_weights(sd, te)
    expected = model.state_dict()
    # keys the model has no use for: position ids saved by old transformers, SD2's unused projection
    weights = {k: v for k, v in weights.items() if k.removeprefix("text_model.") in expected or k in expected}
    assign_weights(path, model, weights, dtype, f"text encoder ({te.prefix})")
    return model


def load_tokenizer(te: TextEncoderSpec):
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(str(TOKENIZER_DIR), local_files_only=True, pad_token=te.pad_token)


def rescale_zero_terminal_snr(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """For models trained with zero terminal SNR (Lin et al. 2024): shift and scale sqrt(alpha_bar) so the
    last step is pure noise, keeping a tiny final alpha_bar (A1111's value) so the largest sigma stays finite."""
    s = alphas_cumprod.double().sqrt()
    first, last = s[0].clone(), s[-1].clone()
    s = (s - last) * first / (first - last)
    out = s ** 2
    out[-1] = 4.8973451890853435e-08
    return out.float()


def default_alphas_cumprod() -> torch.Tensor:
    """The 'scaled linear' beta schedule all SD1/SD2/SDXL models were trained with."""
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
    return torch.cumprod(1.0 - betas, dim=0).to(torch.float32)


def predicts_v(unet: nn.Module, placement: Placement, dtype: torch.dtype) -> bool:
    """Whether an SD2 UNet was trained for v-prediction (768 models) rather than eps (512 models);
    the weights' shapes are the same. At the last timestep the input is almost pure noise: an
    eps model answers with about that noise, a v model with about minus the clean image, which is
    unrelated to it."""
    cfg = unet.config
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(1, cfg.in_channels, 8, 8, generator=g)
    context = torch.zeros(1, 77, cfg.cross_attention_dim)
    with placement.use("unet"), torch.no_grad():
        device = placement.policy.device
        out = unet(noise.to(device, dtype), torch.tensor([999], device=device),
                   encoder_hidden_states=context.to(device, dtype)).sample.float().cpu()
    latent = noise[:, : out.shape[1]]
    return torch.nn.functional.cosine_similarity(out.flatten(), latent.flatten(), dim=0).item() < 0.5


def resolution_from_metadata(metadata: dict[str, str]) -> int | None:
    """The training size a checkpoint declares (ModelSpec's `modelspec.resolution`, e.g. "1024x1024")."""
    text = metadata.get("modelspec.resolution", "")
    w, _, h = text.lower().partition("x")
    try:
        size = int(w) if not h else min(int(w), int(h))
    except ValueError:
        return None
    return size if 64 <= size <= 8192 and size % 8 == 0 else None


def load_model(file: ModelFile, policy: DevicePolicy, *, allow_unsafe_pickle: bool = False,
               fp8_unet: str = "Disable", vae_file: ModelFile | None = None) -> LoadedModel:
    """Read, detect and build a checkpoint. Raises CheckpointError with a message for the user."""
    started = time.perf_counter()
    path = file.path
    yaml_config = read_yaml_beside(path)
    sd = read_state_dict(path, allow_unsafe_pickle)
    spec = model_detection.detect(path, shapes_of(sd), yaml_config)
    resolution = resolution_from_metadata(getattr(sd, "metadata", None) or {})
    if resolution:
        spec = replace(spec, native_size=resolution, notes=spec.notes + (f"native size {resolution} from metadata",))
    is_xl = spec.family.is_xl
    policy = policy.for_model(is_sdxl=is_xl, fp8_unet=fp8_unet == "Enable" or (fp8_unet == "Enable for SDXL" and is_xl))
    try:
        text_encoders = [build_text_encoder(path, sd, te, policy.text_encoder.compute) for te in spec.text_encoders]
        vae = build_vae(path, _component(sd, VAE), spec.vae_config, policy.vae.compute)
        unet = build_unet(path, sd, spec, policy.unet, policy.attention)
    except CheckpointError:
        raise
    except (RuntimeError, KeyError, ValueError, TypeError) as e:
        raise CheckpointError(path, f"weights do not fit the detected {spec.label} model: {e}") from e
    alphas = sd["alphas_cumprod"].float() if "alphas_cumprod" in sd else default_alphas_cumprod()
    if spec.zero_terminal_snr:
        alphas = rescale_zero_terminal_snr(alphas)
    del sd
    components = {"unet": unet, "vae": vae, **{f"text_encoder_{i}": m for i, m in enumerate(text_encoders)}}
    model = LoadedModel(file=file, spec=spec, policy=policy, unet=unet, vae=vae, text_encoders=text_encoders,
                        tokenizers=[load_tokenizer(te) for te in spec.text_encoders], alphas_cumprod=alphas,
                        placement=Placement(policy, components))
    if spec.family.probe_prediction and yaml_config is None and spec.prediction == "eps":
        if predicts_v(unet, model.placement, policy.unet.compute):
            model.spec = replace(spec, prediction="v", native_size=spec.family.native_size_for("v"),
                                 notes=spec.notes + ("v-prediction detected by a test step (no yaml)",))
    if vae_file is not None:
        swap_vae(model, vae_file)
    model.load_seconds = time.perf_counter() - started
    log.info("loaded %s", model.describe())
    return model


def swap_vae(model: LoadedModel, vae_file: ModelFile | None, allow_unsafe_pickle: bool = False) -> None:
    """Replace the VAE weights in place (None restores the checkpoint's own); the UNet and text
    encoders are untouched. On failure the current VAE stays."""
    if (vae_file.path if vae_file else None) == (model.vae_file.path if model.vae_file else None):
        return
    device = next(model.vae.parameters()).device
    dtype = model.policy.vae.compute
    if vae_file is None:
        state = model.own_vae_state
    else:
        weights = read_state_dict(vae_file.path, allow_unsafe_pickle)
        try:
            state = convert_vae_weights(weights, dict(model.vae.config))
        except (KeyError, RuntimeError) as e:
            raise CheckpointError(vae_file.path, f"not a VAE in a known layout: {e}") from e
        expected = model.vae.state_dict()
        missing = [k for k in expected if k not in state]
        wrong = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
        if missing or wrong:
            raise CheckpointError(vae_file.path, f"does not fit this model's VAE ({len(missing)} weights missing, "
                                                 f"{len(wrong)} of other shapes, e.g. {(missing + wrong)[:2]})")
        if model.own_vae_state is None:
            model.own_vae_state = {k: v.detach().to("cpu", copy=True) for k, v in expected.items()}
    model.vae.load_state_dict({k: v.to(device=device, dtype=dtype) for k, v in state.items()
                               if k in model.vae.state_dict()}, strict=True)
    model.vae_file = vae_file
    model.latent_rgb = None
    log.info("VAE for %s: %s", model.file.name, vae_file.name if vae_file else "from checkpoint")
