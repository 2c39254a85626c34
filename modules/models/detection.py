"""What a checkpoint is, from its keys and tensor shapes alone (plus an optional LDM yaml).

The family (SD1, SD2, SDXL, SDXL refiner) comes from which text encoders are present; every size
that varies between models (channels, depths, context width, layers, vocabulary) is read off the
tensor shapes, so the same code describes a full-size model and a tiny test model. Only what
weights cannot reveal (attention head counts, v-prediction) comes from family defaults, a marker
key, or the yaml.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modules.models import families
from modules.models.checkpoint_io import CheckpointError
from modules.models.families import ModelFamily, TextEncoderSpec, count_indices

UNET = "model.diffusion_model."
VAE = "first_stage_model."
Shapes = dict[str, tuple[int, ...]]


@dataclass(frozen=True)
class ModelSpec:
    family: ModelFamily
    prediction: str  # "eps" or "v"
    unet_config: dict[str, Any]
    vae_config: dict[str, Any]
    text_encoders: tuple[TextEncoderSpec, ...]
    native_size: int
    zero_terminal_snr: bool = False
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def in_channels(self) -> int:
        return self.unet_config["in_channels"]

    @property
    def is_inpainting(self) -> bool:
        return self.in_channels == 9

    @property
    def is_instruct_pix2pix(self) -> bool:
        return self.in_channels == 8

    @property
    def label(self) -> str:
        kind = " inpainting" if self.is_inpainting else " instruct-pix2pix" if self.is_instruct_pix2pix else ""
        v = " (v-prediction)" if self.prediction == "v" else ""
        return f"{self.family.label}{kind}{v}"


def _explain_unknown(path: Path, shapes: Shapes) -> CheckpointError:
    keys = list(shapes)
    if any(k.startswith(("lora_unet_", "lora_te", "lora_te1_")) for k in keys):
        return CheckpointError(path, "this is a LoRA, not a checkpoint: put it into models/Lora")
    if any(k.startswith(("encoder.down.", "decoder.up.", "first_stage_model.encoder.", "encoder.down_blocks."))
           for k in keys):
        return CheckpointError(path, "this is a VAE, not a full checkpoint: put it into models/VAE")
    if len(keys) < 10 and any("string_to_param" in k or k in ("clip_l", "clip_g", "emb_params") for k in keys):
        return CheckpointError(path, "this is a textual-inversion embedding: put it into embeddings/")
    if any(k.startswith(UNET + "joint_blocks") for k in keys):
        return CheckpointError(path, "this is a Stable Diffusion 3 model; supported are SD1.x, SD2.x and SDXL")
    if any(k.startswith(("double_blocks.", UNET + "double_blocks.")) for k in keys):
        return CheckpointError(path, "this is a FLUX model; supported are SD1.x, SD2.x and SDXL")
    if any(k.startswith("down_blocks.") for k in keys):
        return CheckpointError(path, "this is a single diffusers-format UNet; a full checkpoint in the original "
                                     "(LDM) layout is needed")
    return CheckpointError(path, f"not a Stable Diffusion checkpoint: expected keys such as "
                                 f"'{UNET}input_blocks.0.0.weight' (found {len(keys)} keys, e.g. {keys[:3]})")


def _unet_levels(shapes: Shapes) -> tuple[list[int], list[int], list[int]]:
    """Per resolution level: output channels, res-blocks, transformer depth."""
    channels, res_counts, depths = [], [], []
    cur_res, cur_depth, cur_ch = 0, 0, None
    idx = 1
    while True:
        p = f"{UNET}input_blocks.{idx}."
        if p + "0.op.weight" in shapes or p + "0.op.bias" in shapes:  # downsample closes a level
            channels.append(cur_ch)
            res_counts.append(cur_res)
            depths.append(cur_depth)
            cur_res, cur_depth = 0, 0
        elif p + "0.out_layers.3.weight" in shapes:
            cur_ch = shapes[p + "0.out_layers.3.weight"][0]
            cur_res += 1
            cur_depth = max(cur_depth, count_indices(shapes, re.escape(p + "1.transformer_blocks.") + r"(\d+)\."))
        else:
            break
        idx += 1
    channels.append(cur_ch)
    res_counts.append(cur_res)
    depths.append(cur_depth)
    return channels, res_counts, depths


def _first_transformer(shapes: Shapes) -> str | None:
    return next((k[: -len("attn2.to_k.weight")] for k in shapes
                 if k.startswith(UNET) and k.endswith("attn2.to_k.weight")), None)


def unet_config_from_shapes(path: Path, shapes: Shapes, family: ModelFamily, unet_params: dict,
                            pooled_dim: int | None) -> dict[str, Any]:
    conv_in = shapes[UNET + "input_blocks.0.0.weight"]
    channels, res_counts, depths = _unet_levels(shapes)
    if len(set(res_counts)) != 1 or None in channels:
        raise CheckpointError(path, f"UNet has an irregular block structure ({res_counts}); not a known SD layout")
    first_tf = _first_transformer(shapes)
    if first_tf is None:
        raise CheckpointError(path, "UNet has no cross-attention layers; not a text-to-image SD model")
    context_dim = shapes[first_tf + "attn2.to_k.weight"][1]
    proj_in = next(k for k in shapes if k.startswith(UNET) and k.endswith("proj_in.weight"))
    linear = len(shapes[proj_in]) == 2

    if unet_params.get("num_heads", -1) and unet_params.get("num_heads", -1) > 0:
        heads = [unet_params["num_heads"]] * len(channels)
    else:
        head_ch = unet_params.get("num_head_channels", -1)
        if head_ch is None or head_ch <= 0:
            head_ch = family.default_head_channels
        heads = [8] * len(channels) if head_ch is None else [max(1, c // head_ch) for c in channels]

    mid_depth = count_indices(shapes, re.escape(UNET + "middle_block.1.transformer_blocks.") + r"(\d+)\.")
    cfg: dict[str, Any] = {
        "sample_size": 64,
        "in_channels": conv_in[1],
        "out_channels": shapes[UNET + "out.2.weight"][0],
        "block_out_channels": channels,
        "layers_per_block": res_counts[0],
        "down_block_types": ["CrossAttnDownBlock2D" if d else "DownBlock2D" for d in depths],
        "up_block_types": ["CrossAttnUpBlock2D" if d else "UpBlock2D" for d in reversed(depths)],
        "transformer_layers_per_block": [max(d, 1) for d in depths],
        "cross_attention_dim": context_dim,
        "attention_head_dim": heads,
        "use_linear_projection": linear,
        "upcast_attention": family.upcast_attention,
        "mid_block_type": "UNetMidBlock2DCrossAttn" if mid_depth else None,
    }
    if mid_depth:
        # diffusers reads the middle block's depth from the last level's entry
        if mid_depth != depths[-1]:
            cfg["transformer_layers_per_block"][-1] = mid_depth
            if depths[-1] and depths[-1] != mid_depth:
                raise CheckpointError(path, "UNet middle block depth differs from its last level; unsupported")
    label_emb = UNET + "label_emb.0.0.weight"
    if label_emb in shapes:
        adm = shapes[label_emb][1]
        if not family.time_id_count or pooled_dim is None:
            raise CheckpointError(path, "UNet has class conditioning (label_emb) but is not SDXL: unCLIP and "
                                        "similar variants are not supported")
        time_dim, rest = divmod(adm - pooled_dim, family.time_id_count)
        if rest or time_dim <= 0:
            raise CheckpointError(path, f"SDXL size conditioning width {adm} does not fit the pooled text "
                                        f"embedding ({pooled_dim})")
        cfg.update(addition_embed_type="text_time", addition_time_embed_dim=time_dim,
                   projection_class_embeddings_input_dim=adm)
    return cfg


def vae_config_from_shapes(path: Path, shapes: Shapes, prefix: str, family: ModelFamily) -> dict[str, Any]:
    try:
        n_levels = count_indices(shapes, re.escape(prefix + "encoder.down.") + r"(\d+)\.")
        channels = [shapes[f"{prefix}encoder.down.{i}.block.0.conv1.weight"][0] for i in range(n_levels)]
        layers = count_indices(shapes, re.escape(prefix + "encoder.down.0.block.") + r"(\d+)\.")
        latent = shapes[prefix + "post_quant_conv.weight"][0]
    except KeyError as e:
        raise CheckpointError(path, f"VAE weights incomplete: missing {e}") from e
    return {
        "in_channels": 3,
        "out_channels": 3,
        "latent_channels": latent,
        "block_out_channels": channels,
        "layers_per_block": layers,
        "down_block_types": ["DownEncoderBlock2D"] * n_levels,
        "up_block_types": ["UpDecoderBlock2D"] * n_levels,
        "scaling_factor": family.vae_scaling_factor,
        "sample_size": 512,
    }


def _normalise_legacy_clip_keys(shapes: Shapes) -> Shapes:
    """Some SD1 files predate the 'text_model.' level in transformers' CLIP naming."""
    old = "cond_stage_model.transformer.embeddings."
    if any(k.startswith(old) for k in shapes):
        return {("cond_stage_model.transformer.text_model." + k[len("cond_stage_model.transformer."):]
                 if k.startswith(("cond_stage_model.transformer.embeddings.", "cond_stage_model.transformer.encoder.",
                                  "cond_stage_model.transformer.final_layer_norm.")) else k): v
                for k, v in shapes.items()}
    return shapes


def detect_family(path: Path, shapes: Shapes) -> ModelFamily:
    if UNET + "input_blocks.0.0.weight" not in shapes:
        raise _explain_unknown(path, shapes)
    family = families.detect_family(shapes)
    if family is None:
        raise CheckpointError(path, "the checkpoint has a UNet but no text encoder (cond_stage_model / conditioner "
                                    "keys missing); a complete SD checkpoint is needed")
    return family


def _yaml_params(yaml_config: Any) -> tuple[dict, dict]:
    """(model.params, model.params.unet_config.params) of an LDM/SGM yaml, as plain dicts."""
    if yaml_config is None:
        return {}, {}
    from omegaconf import OmegaConf

    cfg = OmegaConf.to_container(yaml_config, resolve=True) if not isinstance(yaml_config, dict) else yaml_config
    params = (cfg.get("model") or {}).get("params") or {}
    unet = (params.get("unet_config") or params.get("network_config") or {}).get("params") or {}
    return params, unet


def detect(path: Path | str, shapes: Shapes, yaml_config: Any = None) -> ModelSpec:
    """Describe the model in `shapes` (key -> tensor shape); raise CheckpointError if it is not one we load."""
    path = Path(path)
    shapes = _normalise_legacy_clip_keys(shapes)
    family = detect_family(path, shapes)
    model_params, unet_params = _yaml_params(yaml_config)
    notes = []

    texts = families.describe_text_encoders(path, family, shapes)

    pooled = texts[-1].config["projection_dim"] if texts[-1].with_projection else None
    try:
        unet_cfg = unet_config_from_shapes(path, shapes, family, unet_params, pooled)
    except KeyError as e:
        raise CheckpointError(path, f"UNet weights incomplete: missing {e}") from e
    if not any(k.startswith(VAE) for k in shapes):
        raise CheckpointError(path, "the checkpoint has no VAE (first_stage_model) weights")
    vae_cfg = vae_config_from_shapes(path, shapes, VAE, family)
    for t in texts:
        if not family.is_xl and t.config["hidden_size"] != unet_cfg["cross_attention_dim"]:
            raise CheckpointError(path, f"text encoder width {t.config['hidden_size']} does not match the UNet's "
                                        f"cross-attention width {unet_cfg['cross_attention_dim']}")

    prediction = "eps"
    if model_params.get("parameterization") == "v":
        prediction = "v"
        notes.append("v-prediction from yaml")
    elif "v_pred" in shapes:
        prediction = "v"
        notes.append("v-prediction from the v_pred marker key")
    native = family.native_size_for(prediction)
    unet_cfg["sample_size"] = native // 8
    return ModelSpec(family=family, prediction=prediction, unet_config=unet_cfg, vae_config=vae_cfg,
                     text_encoders=texts, native_size=native, zero_terminal_snr="ztsnr" in shapes,
                     notes=tuple(notes))
