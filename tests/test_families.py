"""The family rules in models/families.py: each family states its own facts, and detection finds them."""
from types import SimpleNamespace

import pytest
import torch

from modules.models.families import FAMILIES, Family, detect_family, family_for_context_width, family_for_text_width
from tests import ldm_layout as ldm

LAYERS = [torch.full((1, 1), float(i)) for i in range(6)]  # hidden state i is filled with i


def encoder_output():
    return SimpleNamespace(hidden_states=LAYERS, last_hidden_state=torch.full((1, 1), 99.0))


def layer_index(family, index, clip_skip, clip_l_skip) -> float:
    out = family.layer_output(encoder_output(), index, clip_skip, clip_l_skip, final_norm=lambda x: x + 100)
    return float(out[0, 0])


@pytest.mark.parametrize("layout, family", [(ldm.TINY_SD1, Family.SD1), (ldm.TINY_SD2, Family.SD2),
                                            (ldm.TINY_SDXL, Family.SDXL), (ldm.TINY_SDXL_REFINER, Family.SDXL_REFINER)])
def test_detection_finds_each_family_by_its_keys(layout, family):
    assert detect_family(layout.shapes()) is family
    specs = family.text_encoders(layout.shapes())
    assert len(specs) == len(layout.text) == len(family.embedding_keys)


def test_clip_skip_rules():
    assert layer_index(Family.SD1, 0, 1, False) == 99  # last layer
    assert layer_index(Family.SD1, 0, 2, False) == 104  # penultimate layer (4), then the final norm (+100)
    assert layer_index(Family.SD2, 0, 3, False) == 99  # built without its last layer; clip skip is ignored
    assert layer_index(Family.SDXL, 0, 3, False) == 4  # penultimate layer of both encoders by default
    assert layer_index(Family.SDXL, 0, 3, True) == 3  # the option applies clip skip to CLIP-L...
    assert layer_index(Family.SDXL, 1, 3, True) == 4  # ...and never to OpenCLIP bigG
    assert layer_index(Family.SDXL_REFINER, 0, 3, True) == 4  # the refiner's one encoder is bigG


def test_size_conditioning():
    assert Family.SD1.time_ids(64, 32, False, (6.0, 2.5)) is None
    assert Family.SDXL.time_ids(64, 32, True, (6.0, 2.5)).tolist() == [[32, 64, 0, 0, 32, 64]]
    refiner = Family.SDXL_REFINER
    assert refiner.time_ids(64, 32, False, (6.0, 2.5)).tolist() == [[32, 64, 0, 0, 6.0]]
    assert refiner.time_ids(64, 32, True, (6.0, 2.5)).tolist() == [[32, 64, 0, 0, 2.5]]
    assert [f.time_id_count for f in FAMILIES] == [6, 5, 0, 0]


def test_widths_name_the_family():
    assert [family_for_context_width(w) for w in (768, 1024, 2048, 1280, 999)] == \
        [Family.SD1, Family.SD2, Family.SDXL, Family.SDXL_REFINER, None]
    assert family_for_text_width(2048) is None and family_for_text_width(1024) is Family.SD2


def test_facts_differ_where_the_models_do():
    assert Family.SD2.native_size_for("v") == 768 and Family.SD2.native_size_for("eps") == 512
    assert Family.SDXL.native_size_for("eps") == 1024
    assert [f.zero_empty_negative for f in (Family.SD1, Family.SD2, Family.SDXL, Family.SDXL_REFINER)] == \
        [False, False, True, True]
    assert Family.SDXL.vae_scaling_factor == 0.13025 and Family.SD1.vae_scaling_factor == 0.18215
    assert Family.SDXL_REFINER.lora_text_prefixes == {"lora_te2_": 0}
