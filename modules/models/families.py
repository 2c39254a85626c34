"""Everything that differs between model families, one class per family.

Other code asks the family (`model.spec.family.zero_empty_negative`, `family.layer_output(...)`)
and never compares families itself. Adding a family is one new class here plus its place in
`FAMILIES` (the order detection tries them in).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from modules.models.checkpoint_io import CheckpointError

Shapes = dict[str, tuple[int, ...]]


@dataclass(frozen=True)
class TextEncoderSpec:
    """One text encoder: where its weights live in the checkpoint and its transformers config."""
    prefix: str
    layout: str  # "hf" (OpenAI CLIP in Hugging Face naming) or "openclip"
    config: dict[str, Any]
    with_projection: bool  # SDXL's bigG encoder also yields a projected pooled embedding
    pad_token: str  # OpenAI CLIP pads with <|endoftext|>, OpenCLIP with "!"
    dropped_last_layer: bool = False  # SD2 uses the penultimate layer, so the last one is not built


def count_indices(shapes: Shapes, pattern: str) -> int:
    """Number of distinct integers matched by the single group in `pattern`."""
    rx = re.compile(pattern)
    return len({m.group(1) for k in shapes if (m := rx.match(k))})


def _text_config(hidden: int, layers: int, mlp: int, vocab: int, positions: int, act: str,
                 projection: int | None) -> dict[str, Any]:
    return {
        "hidden_size": hidden,
        "num_hidden_layers": layers,
        "intermediate_size": mlp,
        "num_attention_heads": max(1, hidden // 64),
        "vocab_size": vocab,
        "max_position_embeddings": positions,
        "hidden_act": act,
        "projection_dim": projection or hidden,
        "layer_norm_eps": 1e-5,
        "bos_token_id": 49406,
        "eos_token_id": 49407,
        "pad_token_id": 49407,
    }


def hf_clip_spec(shapes: Shapes, prefix: str) -> TextEncoderSpec:
    """OpenAI CLIP stored in transformers' naming (SD1, SDXL's CLIP-L)."""
    p = prefix + "text_model."
    tok = shapes[p + "embeddings.token_embedding.weight"]
    layers = count_indices(shapes, re.escape(p + "encoder.layers.") + r"(\d+)\.")
    mlp = shapes[p + "encoder.layers.0.mlp.fc1.weight"][0]
    positions = shapes[p + "embeddings.position_embedding.weight"][0]
    return TextEncoderSpec(prefix, "hf", _text_config(tok[1], layers, mlp, tok[0], positions, "quick_gelu", None),
                           with_projection=False, pad_token="<|endoftext|>")


def open_clip_spec(shapes: Shapes, prefix: str, drop_last: bool, with_projection: bool) -> TextEncoderSpec:
    """OpenCLIP stored in its own naming (SD2's ViT-H, SDXL's bigG)."""
    tok = shapes[prefix + "token_embedding.weight"]
    layers = count_indices(shapes, re.escape(prefix + "transformer.resblocks.") + r"(\d+)\.")
    mlp = shapes[prefix + "transformer.resblocks.0.mlp.c_fc.weight"][0]
    positions = shapes[prefix + "positional_embedding"][0]
    proj = shapes.get(prefix + "text_projection")
    cfg = _text_config(tok[1], layers - (1 if drop_last else 0), mlp, tok[0], positions, "gelu",
                       proj[1] if proj else None)
    return TextEncoderSpec(prefix, "openclip", cfg, with_projection=with_projection, pad_token="!",
                           dropped_last_layer=drop_last)


class ModelFamily:
    """Defaults shared by the SD families; each subclass states what is its own."""
    id: str
    label: str
    marker_prefix: str  # a key prefix only this family's checkpoints have
    is_xl = False  # --medvram-sdxl, fp8 "Enable for SDXL" and the SDXL Align-Your-Steps table apply
    vae_scaling_factor = 0.18215
    native_size = 512
    upcast_attention = False
    default_head_channels: int | None = 64  # None: 8 heads at every level (SD1)
    lora_text_prefixes: dict[str, int] = {}  # kohya prefix -> index into the model's text encoders
    embedding_keys: tuple[str, ...] = ("default",)  # which vectors of an embedding feed each text encoder
    context_width = 768  # UNet cross-attention width of the released models (tells LoRAs apart)
    zero_empty_negative = False  # an empty negative prompt is zeros, not the encoded ""
    time_id_count = 0  # SDXL's size/crop conditioning values per image; 0 = none
    probe_prediction = False  # without a yaml, tell eps from v models by a test step

    def text_encoders(self, shapes: Shapes) -> tuple[TextEncoderSpec, ...]:
        raise NotImplementedError

    def native_size_for(self, prediction: str) -> int:
        return self.native_size

    def layer_output(self, out, index: int, clip_skip: int, clip_l_skip: bool, final_norm) -> torch.Tensor:
        """The hidden states of text encoder `index` that condition the UNet (the clip-skip rule);
        `final_norm` is that encoder's final layer norm."""
        return out.hidden_states[-2]

    def time_ids(self, width: int, height: int, is_negative: bool, aesthetic: tuple[float, float],
                 crop: tuple[int, int] = (0, 0)) -> torch.Tensor | None:
        return None

    def __repr__(self) -> str:
        return f"Family.{self.id.upper()}"


class SD1(ModelFamily):
    id, label = "sd1", "SD1.x"
    marker_prefix = "cond_stage_model.transformer."
    default_head_channels = None
    lora_text_prefixes = {"lora_te_": 0}

    def text_encoders(self, shapes):
        return (hf_clip_spec(shapes, "cond_stage_model.transformer."),)

    def layer_output(self, out, index, clip_skip, clip_l_skip, final_norm):
        skip = max(1, clip_skip)
        return out.last_hidden_state if skip <= 1 else final_norm(out.hidden_states[-skip])


class SD2(ModelFamily):
    id, label = "sd2", "SD2.x"
    marker_prefix = "cond_stage_model.model."
    upcast_attention = True
    lora_text_prefixes = {"lora_te_": 0}
    context_width = 1024
    probe_prediction = True

    def text_encoders(self, shapes):
        return (open_clip_spec(shapes, "cond_stage_model.model.", drop_last=True, with_projection=False),)

    def native_size_for(self, prediction):
        return 768 if prediction == "v" else 512

    def layer_output(self, out, index, clip_skip, clip_l_skip, final_norm):
        return out.last_hidden_state  # the penultimate layer with the final norm, as built (clip skip is ignored)


class SDXL(ModelFamily):
    id, label = "sdxl", "SDXL"
    marker_prefix = "conditioner.embedders.1.model."
    is_xl = True
    vae_scaling_factor = 0.13025
    native_size = 1024
    lora_text_prefixes = {"lora_te1_": 0, "lora_te2_": 1}
    embedding_keys = ("clip_l", "clip_g")
    context_width = 2048
    zero_empty_negative = True
    time_id_count = 6

    def text_encoders(self, shapes):
        return (hf_clip_spec(shapes, "conditioner.embedders.0.transformer."),
                open_clip_spec(shapes, "conditioner.embedders.1.model.", drop_last=False, with_projection=True))

    def layer_output(self, out, index, clip_skip, clip_l_skip, final_norm):
        if clip_l_skip and self.embedding_keys[index] == "clip_l":  # the option applies to CLIP-L only
            return out.hidden_states[-max(1, clip_skip)]
        return out.hidden_states[-2]

    def time_ids(self, width, height, is_negative, aesthetic, crop=(0, 0)):
        """(original h, w, crop top, left, target h, w)."""
        return torch.tensor([[height, width, crop[0], crop[1], height, width]], dtype=torch.float32)


class SDXLRefiner(SDXL):
    id, label = "sdxl_refiner", "SDXL refiner"
    marker_prefix = "conditioner.embedders.0.model."
    lora_text_prefixes = {"lora_te2_": 0}  # its one encoder is SDXL's second (OpenCLIP bigG)
    embedding_keys = ("clip_g",)
    context_width = 1280
    time_id_count = 5

    def text_encoders(self, shapes):
        return (open_clip_spec(shapes, "conditioner.embedders.0.model.", drop_last=False, with_projection=True),)

    def time_ids(self, width, height, is_negative, aesthetic, crop=(0, 0)):
        """(original h, w, crop top, left, aesthetic score): the low score for the negative."""
        return torch.tensor([[height, width, crop[0], crop[1], aesthetic[1] if is_negative else aesthetic[0]]],
                            dtype=torch.float32)


class Family:
    """The known families by name: `Family.SDXL`."""
    SD1 = SD1()
    SD2 = SD2()
    SDXL = SDXL()
    SDXL_REFINER = SDXLRefiner()


# In the order detection tries them: SDXL's second encoder before the refiner's first.
FAMILIES: tuple[ModelFamily, ...] = (Family.SDXL, Family.SDXL_REFINER, Family.SD2, Family.SD1)


def family_for_context_width(width: int) -> ModelFamily | None:
    """The family whose UNet cross-attends to text of this width (LoRAs trained for it have it)."""
    return next((f for f in FAMILIES if f.context_width == width), None)


def family_for_text_width(width: int) -> ModelFamily | None:
    """The single-encoder family whose text encoder has this width (SD1: 768, SD2: 1024)."""
    family = family_for_context_width(width)
    return None if family is None or family.is_xl else family


def detect_family(shapes: Shapes) -> ModelFamily | None:
    return next((f for f in FAMILIES if any(k.startswith(f.marker_prefix) for k in shapes)), None)


def describe_text_encoders(path: Path, family: ModelFamily, shapes: Shapes) -> tuple[TextEncoderSpec, ...]:
    try:
        return family.text_encoders(shapes)
    except KeyError as e:
        raise CheckpointError(path, f"{family.label} text encoder weights incomplete: missing {e}") from e
