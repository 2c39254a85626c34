"""Full-size SD1.5, SD2.1, SDXL layouts (shapes only, on the meta device): detection must yield the
published diffusers configs, and every weight must find its place in the built modules."""
import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from modules.models import detection as model_detection
from modules.models.devices import ComponentPrecision
from modules.models.families import Family
from modules.models.loading import build_text_encoder, build_unet, build_vae
from tests import ldm_layout as ldm

REF = Path(__file__).parent / "data" / "hf-configs"
V_YAML = OmegaConf.create({"model": {"params": {"parameterization": "v"}}})

CASES = [
    ("stable-diffusion-v1-5", ldm.SD15, None, Family.SD1, "eps"),
    ("stable-diffusion-inpainting", ldm.inpainting(ldm.SD15), None, Family.SD1, "eps"),
    ("stable-diffusion-2-1", ldm.SD21, V_YAML, Family.SD2, "v"),
    ("stable-diffusion-2-inpainting", ldm.inpainting(ldm.SD21), None, Family.SD2, "eps"),
    ("stable-diffusion-xl-base-1.0", ldm.SDXL, None, Family.SDXL, "eps"),
    ("stable-diffusion-xl-refiner-1.0", ldm.SDXL_REFINER, None, Family.SDXL_REFINER, "eps"),
    ("stable-diffusion-xl-1.0-inpainting-0.1", ldm.inpainting(ldm.SDXL), None, Family.SDXL, "eps"),
]


def ref(model: str, part: str) -> dict:
    return json.loads((REF / model / part / "config.json").read_text())


def per_level(value, n):
    return list(value) if isinstance(value, (list, tuple)) else [value] * n


@pytest.mark.parametrize("model,layout,yaml,family,prediction", CASES, ids=[c[0] for c in CASES])
def test_full_size_detection_matches_published_configs(model, layout, yaml, family, prediction):
    shapes = layout.shapes()
    spec = model_detection.detect(f"{model}.safetensors", shapes, yaml)
    assert spec.family == family
    assert spec.prediction == prediction

    u, want = spec.unet_config, ref(model, "unet")
    n = len(want["block_out_channels"])
    for key in ("block_out_channels", "layers_per_block", "down_block_types", "up_block_types", "in_channels",
                "out_channels", "cross_attention_dim", "sample_size"):
        assert (list(u[key]) if isinstance(u[key], list) else u[key]) == want[key], key
    assert per_level(u["attention_head_dim"], n) == per_level(want["attention_head_dim"], n)
    assert u["use_linear_projection"] == want.get("use_linear_projection", False)
    attn_levels = [i for i, t in enumerate(want["down_block_types"]) if t.startswith("CrossAttn")]
    want_depth = per_level(want.get("transformer_layers_per_block", 1), n)
    assert [u["transformer_layers_per_block"][i] for i in attn_levels] == [want_depth[i] for i in attn_levels]
    for key in ("addition_embed_type", "addition_time_embed_dim", "projection_class_embeddings_input_dim"):
        assert u.get(key) == want.get(key), key

    v, want_v = spec.vae_config, ref(model, "vae")
    for key in ("block_out_channels", "latent_channels", "layers_per_block"):
        assert v[key] == want_v[key], key
    assert v["scaling_factor"] == pytest.approx(want_v.get("scaling_factor", 0.18215))

    parts = [p for p in ("text_encoder", "text_encoder_2") if (REF / model / p).is_dir()]
    assert len(spec.text_encoders) == len(parts)
    for te, part in zip(spec.text_encoders, parts, strict=True):
        want_t = ref(model, part)
        for key in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "hidden_act",
                    "vocab_size", "max_position_embeddings"):
            assert te.config[key] == want_t[key], (part, key)
        assert te.with_projection == (want_t["architectures"][0] == "CLIPTextModelWithProjection")
        if te.with_projection:
            assert te.config["projection_dim"] == want_t["projection_dim"]


@pytest.mark.parametrize("layout", [ldm.SD15, ldm.SD21, ldm.SDXL, ldm.SDXL_REFINER],
                         ids=["sd15", "sd21", "sdxl", "refiner"])
def test_every_full_size_weight_finds_its_module(layout):
    """Build the real diffusers/transformers modules on the meta device and assign all weights."""
    sd = ldm.materialize(layout.shapes(), device="meta", dtype=torch.float16)
    spec = model_detection.detect("full.safetensors", {k: tuple(v.shape) for k, v in sd.items()})
    half = ComponentPrecision(torch.float16, torch.float16)
    unet = build_unet(Path("full.safetensors"), sd, spec, half)
    assert sum(p.numel() for p in unet.parameters()) == sum(
        v.numel() for k, v in sd.items() if k.startswith("model.diffusion_model."))
    vae = build_vae(Path("full.safetensors"), {k: v for k, v in sd.items() if k.startswith("first_stage_model.")},
                    spec.vae_config, torch.float16)
    assert sum(p.numel() for p in vae.parameters()) == 83653863
    for te in spec.text_encoders:
        model = build_text_encoder(Path("full.safetensors"), sd, te, torch.float16)
        assert model.config.num_hidden_layers == te.config["num_hidden_layers"]
