"""kohya module names to the modules of a loaded model, in diffusers and original LDM naming."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch import nn

from modules.conditioning.lora.files import UNET_PREFIX
from modules.models.families import ModelFamily


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
    from diffusers.loaders.single_file_utils import (
        LDM_UNET_KEY,
        convert_ldm_unet_checkpoint,
    )

    marked = {f"{LDM_UNET_KEY}{name}.{p}": name for name in _ldm_unet_modules(unet) for p in ("weight", "bias")}
    moved = convert_ldm_unet_checkpoint(marked, dict(unet.config))
    modules = dict(unet.named_modules())
    return {ldm: key.removesuffix(".weight") for key, ldm in moved.items()
            if key.endswith(".weight") and key.removesuffix(".weight") in modules}


def module_lookup(family: ModelFamily, unet: nn.Module, text_encoders: Sequence[nn.Module]) -> dict[str, ModuleRef]:
    """Every kohya module name that addresses a module of this model, in both UNet namings."""
    lookup = {UNET_PREFIX + _flat(name): ModuleRef("unet", name)
              for name, module in unet.named_modules() if _owns_weight(module)}
    lookup.update({UNET_PREFIX + _flat(ldm): ModuleRef("unet", name)
                   for ldm, name in ldm_unet_module_map(unet).items()})
    for prefix, index in family.lora_text_prefixes.items():
        if index >= len(text_encoders):
            continue
        encoder = text_encoders[index]
        # transformers 5 dropped CLIPTextModel's own "text_model." level; kohya names keep it
        level = "" if hasattr(encoder, "text_model") else "text_model."
        lookup.update({prefix + _flat(level + name): ModuleRef(f"text_encoder_{index}", name)
                       for name, module in encoder.named_modules() if _owns_weight(module)})
    return lookup


def fused_copies(root: nn.Module, name: str) -> list[tuple[str, tuple[int, int]]]:
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
