"""ControlNet files: tiny random-weight ControlNets in each real key layout load as diffusers' ControlNetModel and
answer exactly as diffusers' model built from the same weights; full-size layouts (shapes only) give the published
configs; the family is told from the shapes and a wrong one is refused; other models and broken or malicious files
are refused with a message that says what they are; the folders are listed as the A1111 extension lists them."""
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from modules.models import controlnet as cn
from modules.models import detection as model_detection
from modules.models.checkpoint_io import CheckpointError
from modules.models.devices import ComponentPrecision, make_policy
from modules.models.families import Family
from modules.models.merge import legacy_hash
from tests import controlnet_fixtures as cf
from tests import ldm_layout as ldm

HF_CONFIGS = Path(__file__).parent / "data" / "hf-configs"
TINY_SDXL_UNET = {"projection_class_embeddings_input_dim": 320, "addition_time_embed_dim": 32}
FAMILIES = {"sd1": Family.SD1, "sd2": Family.SD2, "sdxl": Family.SDXL}
# lllyasviel/control_v11p_sd15_canny's diffusers config.json: the values that describe the model's structure.
SD15_CANNY_CONFIG = {
    "attention_head_dim": 8, "block_out_channels": [320, 640, 1280, 1280],
    "conditioning_embedding_out_channels": [16, 32, 96, 256], "cross_attention_dim": 768,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "in_channels": 4, "layers_per_block": 2, "use_linear_projection": False, "upcast_attention": False,
    "projection_class_embeddings_input_dim": None, "class_embed_type": None,
}


def outputs(model, inputs) -> list[torch.Tensor]:
    with torch.no_grad():
        down, mid = model(**inputs, return_dict=False)
    return [*down, mid]


def assert_same_outputs(model, reference, family: str):
    """The residuals of one forward pass agree (to float rounding: the file's tensors sit at other memory alignments,
    which changes the order of CPU sums); a weight in a wrong place changes them by about their size."""
    inputs = cf.controlnet_inputs(family)
    got, want = outputs(model, inputs), outputs(reference, inputs)
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert w.abs().mean() > 0.1  # the reference has an effect to compare
        torch.testing.assert_close(g.float(), w, rtol=1e-4, atol=1e-4)


CASES = [("sd1", "ldm", "control_v11p_sd15_tiny.pth"),
         ("sd1", "ldm-prefixed", "control_sd15_tiny.safetensors"),
         ("sd1", "diffusers", "control_v11p_sd15_tiny_diffusers.safetensors"),
         ("sd2", "ldm", "controlnet_sd21_tiny.ckpt"),
         ("sd2", "diffusers", "controlnet-sd21-tiny/diffusion_pytorch_model.safetensors"),
         ("sdxl", "ldm-prefixed", "controlnet_xl_tiny.safetensors"),
         ("sdxl", "diffusers", "controlnet-sdxl-tiny/diffusion_pytorch_model.safetensors")]


@pytest.mark.parametrize("family,layout,name", CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_each_layout_loads_and_answers_as_diffusers_model_with_the_same_weights(tmp_path, family, layout, name):
    path = cf.write_tiny_controlnet(tmp_path / name, layout, family, seed=5)
    loaded = cn.load_controlnet(path, "cpu", base_unet_config=TINY_SDXL_UNET)  # used by SDXL files without config
    assert (loaded.spec.layout, loaded.family) == (layout, FAMILIES[family])
    assert loaded.spec.hint_channels == 3 and loaded.spec.hint_scale == 8
    assert not loaded.model.training and loaded.dtype == torch.float32
    assert_same_outputs(loaded.model, cf.reference_controlnet(family, 5), family)


def test_an_sdxl_file_without_config_takes_the_size_embedding_width_from_the_checkpoint(tmp_path):
    path = cf.write_tiny_controlnet(tmp_path / "diffusers_xl_tiny.safetensors", "diffusers", "sdxl", seed=6)
    with pytest.raises(cn.ControlNetError, match="size embedding.*config.json"):
        cn.load_controlnet(path, "cpu")  # 320 in all: too narrow for SDXL's 6 x 256, and nothing else says
    unet_config = model_detection.detect("tiny-sdxl.safetensors", ldm.TINY_SDXL.shapes()).unet_config
    loaded = cn.load_controlnet(path, "cpu", base_unet_config=unet_config)
    assert loaded.model.config.addition_time_embed_dim == cf.TINY_SDXL_TIME_EMBED_DIM
    assert_same_outputs(loaded.model, cf.reference_controlnet("sdxl", 6), "sdxl")


def test_fp16_pruned_files_load_in_the_precision_asked(tmp_path):
    path = cf.write_tiny_controlnet(tmp_path / "control_v11p_sd15_tiny_fp16.safetensors", "ldm-prefixed", "sd1",
                                    dtype=torch.float16, seed=7)
    reference = cf.reference_controlnet("sd1", 7, dtype=torch.float16)  # the half weights, in float32
    as_float = cn.load_controlnet(path, "cpu")
    assert {p.dtype for p in as_float.model.parameters()} == {torch.float32}
    assert_same_outputs(as_float.model, reference, "sd1")
    as_bf16 = cn.load_controlnet(path, make_policy(torch.device("cpu"), precision="bf16"))
    assert as_bf16.dtype == torch.bfloat16 and {p.dtype for p in as_bf16.model.parameters()} == {torch.bfloat16}


def test_fp8_storage_casts_each_layer_as_it_runs(tmp_path):
    path = cf.write_tiny_controlnet(tmp_path / "control_tiny.safetensors", "ldm", "sd1", seed=8)
    policy = make_policy(torch.device("cpu"))
    fp8 = policy.for_model(is_sdxl=False, fp8_unet=True)
    loaded = cn.load_controlnet(path, fp8)
    assert loaded.model.conv_in.weight.dtype == torch.float8_e4m3fn
    reference = cf.reference_controlnet("sd1", 8)
    inputs = cf.controlnet_inputs("sd1")
    got, want = outputs(loaded.model, inputs), outputs(reference, inputs)
    assert got[-1].dtype == torch.float32
    # fp8 keeps about two significant digits per weight: close to the reference, far from a different model's
    other = outputs(cf.reference_controlnet("sd1", 9), inputs)
    assert (got[-1] - want[-1]).abs().mean() < 0.3 * (other[-1] - want[-1]).abs().mean()


def test_the_shuffle_model_pools_its_output_as_the_extension_does(tmp_path):
    plain = cf.write_tiny_controlnet(tmp_path / "control_v11p_sd15_tiny.safetensors", "ldm", "sd1", seed=1)
    shuffle = cf.write_tiny_controlnet(tmp_path / "control_v11e_sd15_shuffle.safetensors", "ldm", "sd1", seed=1)
    assert not cn.load_controlnet(plain).model.config.global_pool_conditions
    loaded = cn.load_controlnet(shuffle)
    assert loaded.model.config.global_pool_conditions
    down = outputs(loaded.model, cf.controlnet_inputs("sd1"))[0]
    assert down.shape[-2:] == (1, 1)  # one value per channel, broadcast over the picture by the UNet


def _ref(model: str) -> dict:
    return json.loads((HF_CONFIGS / model / "unet" / "config.json").read_text())


FULL_SIZE = [("stable-diffusion-v1-5", ldm.SD15, "ldm-prefixed", Family.SD1),
             ("stable-diffusion-2-1", ldm.SD21, "ldm", Family.SD2),
             ("stable-diffusion-xl-base-1.0", ldm.SDXL, "diffusers", Family.SDXL)]


@pytest.mark.parametrize("model,layout,file_layout,family", FULL_SIZE, ids=["sd15", "sd21", "sdxl"])
def test_full_size_controlnets_get_their_unets_published_config_and_every_weight_a_place(model, layout, file_layout,
                                                                                       family):
    """Shapes only (meta device): the ControlNet copies its UNet's encoder, so it shares the published UNet config."""
    shapes = cf.ldm_controlnet_shapes(layout.unet)
    if file_layout == "diffusers":
        shapes = cf.to_diffusers(shapes, layout.unet)
    elif file_layout == "ldm-prefixed":
        shapes = {"control_model." + k: v for k, v in shapes.items()}
    spec = cn.detect_controlnet(shapes, f"{model}.safetensors")
    assert spec.family == family and spec.layout == file_layout
    config, want = spec.model_config(), _ref(model)
    n = len(want["block_out_channels"])
    for key in ("block_out_channels", "layers_per_block", "down_block_types", "cross_attention_dim", "in_channels",
                "addition_embed_type", "addition_time_embed_dim", "projection_class_embeddings_input_dim"):
        assert config.get(key) == want.get(key), key
    assert config["use_linear_projection"] == want.get("use_linear_projection", False)
    heads = want["attention_head_dim"]
    assert config["attention_head_dim"] == (heads if isinstance(heads, list) else [heads] * n)
    depths = want.get("transformer_layers_per_block", 1)
    assert config["transformer_layers_per_block"] == (depths if isinstance(depths, list) else [depths] * n)
    if model == "stable-diffusion-v1-5":
        for key, value in SD15_CANNY_CONFIG.items():
            got = config.get(key)
            assert (got[0] if key == "attention_head_dim" and len(set(got)) == 1 else got) == value, key

    weights = {k: torch.empty(v, dtype=torch.float16, device="meta") for k, v in shapes.items()}
    built = cn.build_controlnet(Path(f"{model}.safetensors"), spec, weights,
                                ComponentPrecision(torch.float16, torch.float16))
    assert sum(p.numel() for p in built.parameters()) == sum(int(np.prod(s)) for s in shapes.values())


SDXL_VARIANTS = {  # the released "mid" and "small" SDXL ControlNets: attention at the last level only, or none
    "sdxl-mid": ldm.UNetLayout(channel_mult=(1, 2, 4), transformer_depth=(0, 0, 1), middle_depth=1, context_dim=2048,
                               linear_proj=True, adm_in_channels=2816),
    "sdxl-small": ldm.UNetLayout(channel_mult=(1, 2, 4), transformer_depth=(0, 0, 0), middle_depth=0,
                                 context_dim=2048, linear_proj=True, adm_in_channels=2816),
}


@pytest.mark.parametrize("variant", SDXL_VARIANTS)
def test_sdxl_controlnets_with_less_attention_find_a_place_for_every_weight(variant):
    shapes = cf.to_diffusers(cf.ldm_controlnet_shapes(SDXL_VARIANTS[variant]), SDXL_VARIANTS[variant])
    spec = cn.detect_controlnet(shapes, f"diffusers_xl_canny_{variant}.safetensors")
    assert spec.family == Family.SDXL and spec.model_config()["addition_time_embed_dim"] == 256
    weights = {k: torch.empty(v, dtype=torch.float16, device="meta") for k, v in shapes.items()}
    built = cn.build_controlnet(Path("x.safetensors"), spec, weights, ComponentPrecision(torch.float16, torch.float16))
    assert sum(p.numel() for p in built.parameters()) == sum(int(np.prod(s)) for s in shapes.values())


def test_each_family_is_told_from_the_shapes_and_a_wrong_one_is_refused(tmp_path):
    for family, expected in FAMILIES.items():
        spec = cn.detect_controlnet(cf.ldm_controlnet_shapes(cf.FAMILY_LAYOUTS[family].unet))
        assert spec.family == expected
        cn.check_family(spec, expected)
    path = cf.write_tiny_controlnet(tmp_path / "controlnet_xl_tiny.safetensors", "ldm", "sdxl")
    loaded = cn.load_controlnet(path, base_unet_config=TINY_SDXL_UNET)
    with pytest.raises(cn.ControlNetError) as refused:
        cn.check_family(loaded, Family.SD1)
    assert str(refused.value) == ("controlnet_xl_tiny.safetensors: an SDXL ControlNet cannot guide the loaded SD1.x "
                                  "checkpoint; choose a ControlNet made for SD1.x")
    with pytest.raises(cn.ControlNetError, match="SD1.x ControlNet cannot guide the loaded SDXL"):
        cn.check_family(cn.detect_controlnet(cf.ldm_controlnet_shapes(ldm.SD15.unet)), Family.SDXL)
    with pytest.raises(cn.ControlNetError, match="SD2.x ControlNet cannot guide the loaded SD1.x"):
        cn.check_family(cn.detect_controlnet(cf.ldm_controlnet_shapes(ldm.TINY_SD2.unet)), Family.SD1)


@pytest.mark.parametrize("family", ["sd1", "sdxl"])
def test_tiny_controlnets_fit_the_tiny_checkpoints_unets(family):
    """The lead runs these with the tiny checkpoints: the residuals have the shapes that UNet takes."""
    from diffusers import UNet2DConditionModel

    spec = model_detection.detect("tiny.safetensors", cf.FAMILY_LAYOUTS[family].shapes())
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**spec.unet_config).eval()
    controlnet = cf.reference_controlnet(family, 2)
    inputs = cf.controlnet_inputs(family)
    residuals = outputs(controlnet, inputs)
    extra = {"added_cond_kwargs": inputs["added_cond_kwargs"]} if "added_cond_kwargs" in inputs else {}
    with torch.no_grad():
        plain = unet(inputs["sample"], inputs["timestep"], inputs["encoder_hidden_states"], **extra).sample
        guided = unet(inputs["sample"], inputs["timestep"], inputs["encoder_hidden_states"],
                      down_block_additional_residuals=residuals[:-1], mid_block_additional_residual=residuals[-1],
                      **extra).sample
    assert guided.shape == plain.shape and (guided - plain).abs().mean() > 1e-3


def _shapes_file(path: Path, shapes: dict) -> Path:
    from safetensors.torch import save_file
    save_file({k: torch.zeros(v) for k, v in shapes.items()}, str(path))
    return path


OTHER_MODELS = [
    ("t2iadapter_canny_sd15v2.safetensors", {"adapter.conv_in.weight": (320, 192, 3, 3),
                                            "adapter.body.0.resnets.0.block1.weight": (320, 320, 3, 3)},
     "a T2I-Adapter, not a ControlNet; this kind of model is not supported yet"),
    ("t2iadapter_sketch_sd14v1.pth", {"conv_in.weight": (320, 64, 3, 3), "body.0.block1.weight": (320, 320, 3, 3)},
     "a T2I-Adapter"),
    ("control-lora-canny-rank128.safetensors", {"lora_controlnet": (1,), "input_blocks.1.0.in_layers.2.up": (4, 2)},
     "a Control-LoRA"),
    ("ip-adapter_sd15.safetensors", {"image_proj.proj.weight": (3072, 1024), "ip_adapter.1.to_k_ip.weight": (4, 4)},
     "an IP-Adapter"),
    ("controlnet-union-sdxl.safetensors", {"controlnet_cond_embedding.conv_in.weight": (16, 3, 3, 3),
                                           "task_embedding": (8, 320)}, "a ControlNet union model"),
    ("kohya_controllllite_xl_canny.safetensors", {"lllite_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q"
                                                  ".down.weight": (4, 4)}, "a ControlNet-LLLite"),
    ("v1-5-pruned.safetensors", {"model.diffusion_model.input_blocks.0.0.weight": (320, 4, 3, 3)},
     "not a ControlNet: a Stable Diffusion checkpoint: put it into models/Stable-diffusion"),
    ("detail_lora.safetensors", {"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": (4, 320)},
     "not a ControlNet: a LoRA"),
    ("random.safetensors", {"some.weight": (3, 3)}, "not a ControlNet: expected keys such as"),
]


@pytest.mark.parametrize("name,shapes,message", OTHER_MODELS, ids=[m[0] for m in OTHER_MODELS])
def test_other_models_are_refused_by_name(tmp_path, name, shapes, message):
    if name.endswith(".pth"):
        torch.save({k: torch.zeros(v) for k, v in shapes.items()}, tmp_path / name)
        path = tmp_path / name
    else:
        path = _shapes_file(tmp_path / name, shapes)
    with pytest.raises(cn.ControlNetError) as refused:
        cn.load_controlnet(path)
    assert str(refused.value).startswith(f"{name}: {message}")
    assert isinstance(refused.value, CheckpointError)  # code that reports checkpoint errors reports these


def test_a_pickled_ip_adapter_is_named(tmp_path):
    nested = {"image_proj": {"proj.weight": torch.zeros(4, 4)}, "ip_adapter": {"1.to_k_ip.weight": torch.zeros(4, 4)}}
    torch.save(nested, tmp_path / "ip-adapter_sd15.pth")
    with pytest.raises(cn.ControlNetError, match=r"^ip-adapter_sd15\.pth: an IP-Adapter, not a ControlNet"):
        cn.load_controlnet(tmp_path / "ip-adapter_sd15.pth")


def test_an_incomplete_file_says_what_is_missing(tmp_path):
    weights = cf.tiny_weights("sd1", 0)
    del weights["zero_convs.2.0.weight"]
    torch.save(weights, tmp_path / "cut.pth")
    with pytest.raises(cn.ControlNetError) as refused:
        cn.load_controlnet(tmp_path / "cut.pth")
    assert str(refused.value) == ("cut.pth: ControlNet weights incomplete: 1 missing, "
                                  "e.g. ['controlnet_down_blocks.2.weight']")


def test_random_bytes_are_refused_and_the_next_file_loads(tmp_path):
    rng = np.random.default_rng(0)
    cache = cn.ControlNetCache()
    for name in ("junk.pth", "junk.safetensors", "junk.ckpt"):
        (tmp_path / name).write_bytes(rng.integers(0, 256, 5000, dtype=np.uint8).tobytes())
        with pytest.raises(cn.ControlNetError, match=f"^{name}: not a (readable checkpoint|valid .safetensors)"):
            cache.get(tmp_path / name)
    (tmp_path / "empty.safetensors").write_bytes(b"")
    with pytest.raises(cn.ControlNetError, match="empty"):
        cache.get(tmp_path / "empty.safetensors")
    good = cf.write_tiny_controlnet(tmp_path / "good.safetensors", "ldm", "sd1")
    assert cache.get(good).family == Family.SD1 and cache.loaded == [good]


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_malicious_pickle_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    weights = {"control_model." + k: v for k, v in cf.tiny_weights("sd1", 0).items()}
    torch.save({**weights, "payload": _RunsCode(marker)}, tmp_path / "control_evil.pth")
    with pytest.raises(cn.ControlNetError) as refused:
        cn.load_controlnet(tmp_path / "control_evil.pth")
    message = str(refused.value)
    assert message.startswith("control_evil.pth: refused to load") and "--disable-safe-unpickle" in message
    assert not marker.exists()


def test_listing_finds_the_model_files_as_the_extension_names_them(tmp_path):
    first, second = tmp_path / "models" / "ControlNet", tmp_path / "extensions" / "sd-webui-controlnet" / "models"
    cf.write_tiny_controlnet(first / "control_v11p_sd15_canny.safetensors", "ldm-prefixed", "sd1")
    cf.write_tiny_controlnet(first / "sd15" / "Control_Depth.pth", "ldm", "sd1", seed=1)
    cf.write_tiny_controlnet(first / "controlnet-sdxl-tiny" / "diffusion_pytorch_model.safetensors", "diffusers",
                             "sdxl")
    (first / "control_v11p_sd15_canny.yaml").write_text("model: {}\n")
    (first / "readme.txt").write_text("put models here")
    (first / "None.pth").write_bytes(b"x")
    cf.write_tiny_controlnet(second / "control_v11p_sd15_canny.safetensors", "ldm-prefixed", "sd1")  # same file
    cf.write_tiny_controlnet(second / "old_scribble.ckpt", "ldm", "sd1", seed=2)
    found = cn.list_controlnets([first, second, tmp_path / "missing"])
    assert [f.name for f in found] == ["control_v11p_sd15_canny", "controlnet-sdxl-tiny", "Control_Depth",
                                       "old_scribble"]
    canny = found[0]
    assert canny.path.parent == first and canny.title == f"control_v11p_sd15_canny [{legacy_hash(canny.path)}]"
    assert len(canny.shorthash) == 8
    assert cn.find_controlnet(found, canny.title) == canny
    assert cn.find_controlnet(found, "control_depth") == found[2]
    assert cn.find_controlnet(found, "old_scribble [0123abcd]") == found[3]  # an infotext from another computer
    assert cn.find_controlnet(found, "control_v11p_sd15_lineart") is None
    xl = cn.load_controlnet(found[1])  # config.json beside it says the size embedding's width
    assert xl.family == Family.SDXL and xl.file.title.startswith("controlnet-sdxl-tiny [")


def test_the_cache_keeps_the_last_two_and_reloads_a_changed_file(tmp_path):
    paths = [cf.write_tiny_controlnet(tmp_path / f"c{i}.safetensors", "ldm", "sd1", seed=i) for i in range(3)]
    cache = cn.ControlNetCache(size=2)
    first = cache.get(paths[0])
    assert cache.get(paths[0]) is first
    cache.get(paths[1])
    assert cache.get(paths[0]) is first  # used last: stays when a third comes
    cache.get(paths[2])
    assert cache.loaded == [paths[0], paths[2]]
    assert cache.get(paths[0], "cpu", torch.bfloat16).dtype == torch.bfloat16  # another precision: loaded again
    assert cache.loaded == [paths[2], paths[0]]
    cf.write_tiny_controlnet(paths[2], "ldm", "sd1", seed=9)
    os.utime(paths[2], ns=(1, 1))
    changed = cache.get(paths[2])
    assert_same_outputs(changed.model, cf.reference_controlnet("sd1", 9), "sd1")
    cache.release()
    assert cache.loaded == []

