"""LoRA / LyCORIS files in the real kohya key layout merge into tiny models as a user would see it:
outputs change, several networks add up, and removing them gives back the checkpoint bit for bit."""
from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch.nn import functional

from modules.conditioning.lora import (
    LoraApplier,
    LoraRequest,
    guess_family,
    ldm_unet_module_map,
    list_loras,
    module_lookup,
)
from modules.conditioning.lora import applier as lora_module
from modules.models.devices import make_policy
from modules.models.families import Family
from modules.models.loading import load_model
from modules.models.model_files import ModelFile
from tests import ldm_layout as ldm
from tests import lora_fixtures as lf
from tests.test_model_loading import encode, unet_step

TO_Q = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"
PROJ_IN = "down_blocks.1.attentions.0.proj_in"  # a 1x1 conv in SD1
CONV3 = "down_blocks.0.resnets.0.conv1"
SHORTCUT = "up_blocks.0.resnets.0.conv_shortcut"  # 1x1 conv
FF_OUT = "up_blocks.1.attentions.0.transformer_blocks.0.ff.net.2"  # linear with bias
TE_Q = "encoder.layers.1.self_attn.q_proj"  # transformers 5 CLIPTextModel: no text_model level


def kohya(prefix: str, name: str) -> str:
    return prefix + lf.flat(name)


@pytest.fixture(scope="session")
def lora_root(tiny_dir, cpu_policy, tmp_path_factory) -> Path:
    """models/Lora and models/LyCORIS as a user fills them."""
    root = tmp_path_factory.mktemp("loras")
    lora_dir, lyco_dir = root / "Lora", root / "LyCORIS"
    unet = load(tiny_dir / "tiny-sd1.safetensors", cpu_policy).unet
    sd1 = lf.sd1_targets(unet)
    conv = lf.diffusers_unet_targets(unet, lf.CONV_DIFFUSERS)
    attention = lf.diffusers_unet_targets(unet)
    lf.write(lora_dir / "sd1_style.safetensors", lf.lora(sd1, seed=1),
             {"ss_base_model_version": "sd_v1", "ss_output_name": "style_alias"})
    (lora_dir / "sd1_style.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    lf.write(lora_dir / "sub" / "sd1_detail.safetensors", lf.lora(sd1, rank=2, alpha=0.5, seed=2))
    lf.write(lora_dir / "sd1_pickled.pt", lf.lora(sd1, seed=3))
    lf.write(lora_dir / "sd1_locon.safetensors", lf.lora({**sd1, **conv}, seed=4),
             {"ss_base_model_version": "sd_v1"})
    lf.write(lora_dir / "sd1_locon_cp.safetensors", lf.lora(conv, seed=5, mid=True))
    lf.write(lyco_dir / "sd1_loha.safetensors", lf.loha({**attention, **conv}, seed=6, tucker=True))
    lf.write(lyco_dir / "sd1_lokr.safetensors", lf.lokr({**attention, **conv}, seed=7, tucker=True))
    lf.write(lyco_dir / "sd1_full.safetensors",
             lf.full_diff({kohya("lora_unet_", FF_OUT): tuple(unet.get_submodule(FF_OUT).weight.shape)},
                          {kohya("lora_unet_", FF_OUT): unet.get_submodule(FF_OUT).bias.shape[0]}, seed=8))
    lf.write(lora_dir / "xl_style.safetensors", lf.lora(lf.sdxl_targets(), seed=9))
    dora = lf.lora({kohya("lora_unet_", TO_Q): (32, 32)}, seed=10)
    dora[kohya("lora_unet_", TO_Q) + ".dora_scale"] = torch.ones(32, 1)
    lf.write(lora_dir / "sd1_dora.safetensors", {**lf.lora(sd1, seed=11), **dora})
    lf.write(lora_dir / "not_a_lora.safetensors", {"unet.down_blocks.0.lora_A.weight": torch.zeros(2, 2)})
    (lora_dir / "broken.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    (lora_dir / "notes.txt").write_text("not a network")
    return root


@pytest.fixture
def applier(lora_root) -> LoraApplier:
    return LoraApplier([lora_root / "Lora", lora_root / "LyCORIS"])


def load(path, policy, **kw):
    return load_model(ModelFile(path, path.name), policy, **kw)


@pytest.fixture
def sd1(tiny_dir, cpu_policy):
    return load(tiny_dir / "tiny-sd1.safetensors", cpu_policy)


def factors(lora_root: Path, file: str) -> dict[str, torch.Tensor]:
    path = next(p for p in lora_root.rglob(file))
    return {k: v.float() for k, v in load_file(str(path)).items()}


def lora_delta(f: dict[str, torch.Tensor], name: str) -> torch.Tensor:
    """alpha/rank * up @ down, from the file's tensors."""
    up, down = f[f"{name}.lora_up.weight"], f[f"{name}.lora_down.weight"]
    return f[f"{name}.alpha"] / down.shape[0] * (up.flatten(1) @ down.flatten(1))


def snapshot(model) -> dict[str, torch.Tensor]:
    modules = {"unet": model.unet, **{f"te{i}": m for i, m in enumerate(model.text_encoders)}}
    return {f"{c}.{n}": p.detach().clone() for c, m in modules.items() for n, p in m.named_parameters()}


def changed(model, before: dict[str, torch.Tensor]) -> set[str]:
    return {k for k, v in snapshot(model).items() if not torch.equal(v, before[k])}


def run(model, prompt="a red circle"):
    with torch.no_grad():
        ctx, pooled = encode(model, prompt)
        return ctx, unet_step(model, ctx, pooled)


def relative_change(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


# ---- finding files --------------------------------------------------------------------------

def test_lists_files_in_both_folders_with_metadata_and_preview(lora_root):
    files = {f.name: f for f in list_loras([lora_root / "Lora", lora_root / "LyCORIS"])}
    assert {"sd1_style", "sd1_detail", "sd1_pickled", "sd1_loha", "sd1_lokr", "xl_style", "broken"} <= set(files)
    assert "notes" not in files
    style = files["sd1_style"]
    assert style.relative == "sd1_style.safetensors"
    assert style.preview == lora_root / "Lora" / "sd1_style.png"
    assert style.metadata["ss_output_name"] == "style_alias" and style.alias == "style_alias"
    assert style.family == Family.SD1  # from ss_base_model_version
    assert files["sd1_detail"].relative == "sub/sd1_detail.safetensors" and files["sd1_detail"].preview is None
    assert files["xl_style"].family == Family.SDXL  # from its lora_te1_/lora_te2_ keys
    assert files["sd1_loha"].path.parent.name == "LyCORIS"
    assert files["broken"].family is None and files["broken"].metadata == {}


def test_family_guess_from_metadata_and_full_size_widths():
    assert guess_family({"modelspec.architecture": "stable-diffusion-xl-v1-base/lora"}, {}) == Family.SDXL
    assert guess_family({"ss_base_model_version": "sd_v2"}, {}) == Family.SD2
    assert guess_family({"modelspec.architecture": "flux-1-dev/lora"}, {}) is None
    attn2 = "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k.lora_down.weight"
    assert guess_family({}, {attn2: (8, 768)}) == Family.SD1
    assert guess_family({}, {attn2: (8, 1024)}) == Family.SD2
    assert guess_family({}, {"lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k.lora_down.weight":
                             (8, 2048)}) == Family.SDXL
    assert guess_family({}, {"lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight":
                             (8, 1024)}) == Family.SD2


def test_found_by_name_relative_path_or_alias(applier):
    assert applier.find("sd1_style").name == "sd1_style"
    assert applier.find("sub/sd1_detail").name == "sd1_detail"
    assert applier.find("style_alias").name == "sd1_style"
    assert applier.find("nope") is None


# ---- merging --------------------------------------------------------------------------------

def test_lora_changes_outputs_visibly_and_removal_restores_them_bitwise(applier, sd1):
    ctx0, eps0 = run(sd1)
    weights0 = snapshot(sd1)
    assert applier.apply(sd1, [LoraRequest("sd1_style", 1.0, 1.0)]) == []
    ctx1, eps1 = run(sd1)
    assert relative_change(ctx1, ctx0) > 0.01 and relative_change(eps1, eps0) > 0.01
    assert applier.apply(sd1, []) == []
    ctx2, eps2 = run(sd1)
    assert torch.equal(ctx2, ctx0) and torch.equal(eps2, eps0)
    assert changed(sd1, weights0) == set()


def test_weight_change_is_alpha_over_rank_times_up_down(applier, sd1, lora_root):
    f = factors(lora_root, "sd1_style.safetensors")
    before = {n: sd1.unet.get_submodule(n).weight.clone() for n in (TO_Q, PROJ_IN)}
    te_before = sd1.text_encoders[0].get_submodule(TE_Q).weight.clone()
    applier.apply(sd1, [LoraRequest("sd1_style", 0.3, 0.7)])
    for name in (TO_Q, PROJ_IN):
        weight = sd1.unet.get_submodule(name).weight
        expected = 0.7 * lora_delta(f, kohya("lora_unet_", name)).reshape(weight.shape)
        torch.testing.assert_close(weight - before[name], expected, atol=1e-5, rtol=1e-4)
    te_name = kohya("lora_te_", "text_model." + TE_Q)
    torch.testing.assert_close(sd1.text_encoders[0].get_submodule(TE_Q).weight - te_before,
                               0.3 * lora_delta(f, te_name), atol=1e-5, rtol=1e-4)


def test_multiplier_zero_changes_nothing_and_te_only_leaves_unet_alone(applier, sd1):
    weights0 = snapshot(sd1)
    assert applier.apply(sd1, [LoraRequest("sd1_style", 0.0, 0.0)]) == []
    assert changed(sd1, weights0) == set()
    applier.apply(sd1, [LoraRequest("sd1_style", 1.0, 0.0)])
    touched = changed(sd1, weights0)
    assert touched and all(k.startswith("te0.") for k in touched)
    applier.apply(sd1, [LoraRequest("sd1_style", 0.0, 1.0)])
    touched = changed(sd1, weights0)
    assert touched and all(k.startswith("unet.") for k in touched)


def test_several_loras_add_up(applier, sd1, lora_root):
    a, b = factors(lora_root, "sd1_style.safetensors"), factors(lora_root, "sd1_detail.safetensors")
    before = sd1.unet.get_submodule(TO_Q).weight.clone()
    applier.apply(sd1, [LoraRequest("sd1_style", 0.8, 0.8), LoraRequest("sd1_detail", -0.5, -0.5)])
    name = kohya("lora_unet_", TO_Q)
    expected = 0.8 * lora_delta(a, name) - 0.5 * lora_delta(b, name)
    torch.testing.assert_close(sd1.unet.get_submodule(TO_Q).weight - before, expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_twenty_changes_of_networks_leave_no_drift(applier, tiny_dir, precision):
    policy = make_policy(torch.device("cpu"), precision="bf16" if precision == "bf16" else "autocast")
    model = load(tiny_dir / "tiny-sd1.safetensors", policy)
    assert (model.unet.get_submodule(TO_Q).weight.dtype == torch.bfloat16) == (precision == "bf16")
    weights0 = snapshot(model)
    sets = [[LoraRequest("sd1_style", 1.0, 1.0)], [],
            [LoraRequest("sd1_style", 0.5, 1.5), LoraRequest("sd1_locon", 1.0, 1.0)],
            [LoraRequest("sd1_locon", 0.7, 0.7)], [LoraRequest("sd1_loha", 1.0, 1.0)]]
    merged_once = []  # each set merged into the untouched model
    for requests in sets:
        applier.apply(model, [])
        applier.apply(model, requests)
        merged_once.append(snapshot(model))
        assert bool(changed(model, weights0)) == bool(requests)
    for i in range(20):  # each switch starts from the originals, whatever was merged before
        applier.apply(model, sets[i % len(sets)])
        assert changed(model, merged_once[i % len(sets)]) == set()
    applier.apply(model, [])
    assert changed(model, weights0) == set()


def test_same_set_again_costs_nothing(applier, sd1, lora_root, monkeypatch):
    computed, reads = [], []
    compute, read = lora_module.compute_delta, lora_module.read_state_dict
    monkeypatch.setattr(lora_module, "compute_delta", lambda *a: computed.append(1) or compute(*a))
    monkeypatch.setattr(lora_module, "read_state_dict", lambda *a: reads.append(1) or read(*a))
    request = [LoraRequest("sd1_style", 1.0, 1.0)]
    applier.apply(sd1, request)
    first = len(computed)
    assert first > 0 and len(reads) == 1
    sig = applier.signature(sd1)
    for _ in range(3):
        applier.apply(sd1, request)
    assert len(computed) == first and applier.signature(sd1) == sig
    applier.apply(sd1, [LoraRequest("sd1_style", 0.5, 0.5)])  # another multiplier: merged again,
    assert len(computed) == 2 * first and len(reads) == 1  # from the parsed file in memory
    applier.apply(sd1, [])
    assert applier.signature(sd1) == ()
    path = lora_root / "Lora" / "sd1_style.safetensors"
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # the file was replaced
    applier.apply(sd1, request)
    assert len(reads) == 2


def test_failure_midway_leaves_the_original_model_and_a_warning(applier, sd1, monkeypatch):
    weights0 = snapshot(sd1)
    compute, calls = lora_module.compute_delta, []

    def out_of_memory_at_the_tenth(*args):
        calls.append(1)
        if len(calls) == 10:
            raise torch.OutOfMemoryError("CUDA out of memory")
        return compute(*args)

    monkeypatch.setattr(lora_module, "compute_delta", out_of_memory_at_the_tenth)
    [warning] = applier.apply(sd1, [LoraRequest("sd1_style", 1, 1)])
    assert warning == "LoRAs not applied: OutOfMemoryError: CUDA out of memory"
    assert changed(sd1, weights0) == set() and applier.signature(sd1) == ()
    assert applier.apply(sd1, [LoraRequest("sd1_style", 1, 1)]) == []  # tried again next time
    assert changed(sd1, weights0)


def test_missing_broken_and_foreign_files_warn_and_the_rest_applies(applier, sd1):
    weights0 = snapshot(sd1)
    warnings = applier.apply(sd1, [LoraRequest("nope", 1, 1), LoraRequest("broken", 1, 1),
                                   LoraRequest("not_a_lora", 1, 1), LoraRequest("sd1_dora", 1, 1),
                                   LoraRequest("sd1_style", 1, 1)])
    text = "\n".join(warnings)
    assert "LoRA 'nope' not found" in text
    assert "LoRA 'broken' cannot be read" in text and "broken.safetensors" in text
    assert "LoRA 'not_a_lora' has no weights in the LoRA/LyCORIS layout" in text
    assert "LoRA 'sd1_dora': skipped 1 module of a type that cannot be merged (DoRA)" in text
    assert len(warnings) == 4
    assert changed(sd1, weights0)
    # the same request again returns the same warnings without redoing anything
    assert applier.apply(sd1, [LoraRequest("nope", 1, 1), LoraRequest("broken", 1, 1),
                               LoraRequest("not_a_lora", 1, 1), LoraRequest("sd1_dora", 1, 1),
                               LoraRequest("sd1_style", 1, 1)]) == warnings


def test_new_file_is_found_without_a_manual_refresh(applier, sd1, lora_root):
    assert "not found" in applier.apply(sd1, [LoraRequest("late", 1, 1)])[0]
    late = lora_root / "Lora" / "late.safetensors"
    lf.write(late, lf.lora(lf.sd1_targets(sd1.unet), seed=12))
    try:
        assert applier.apply(sd1, [LoraRequest("late", 1, 1)]) == []
    finally:
        late.unlink()


def test_pickled_lora_applies(applier, sd1):
    weights0 = snapshot(sd1)
    assert applier.apply(sd1, [LoraRequest("sd1_pickled", 1, 1)]) == []
    assert changed(sd1, weights0)


def test_lora_for_another_family_warns(applier, sd1, tiny_dir, cpu_policy):
    weights0 = snapshot(sd1)
    n_xl = len(lf.sdxl_targets())
    [warning] = applier.apply(sd1, [LoraRequest("xl_style", 1, 1)])
    assert warning == f"LoRA 'xl_style' is for SDXL, this model is SD1.x: skipped {n_xl} of {n_xl} modules"
    assert changed(sd1, weights0) == set()

    sdxl = load(tiny_dir / "tiny-sdxl.safetensors", cpu_policy)
    [warning] = applier.apply(sdxl, [LoraRequest("sd1_style", 1, 1)])
    assert warning.startswith("LoRA 'sd1_style' is for SD1.x, this model is SDXL: skipped ")

    sd2 = load(tiny_dir / "sd2" / "tiny-sd2-v.safetensors", cpu_policy)
    [warning] = applier.apply(sd2, [LoraRequest("sd1_style", 1, 1)])
    assert warning.startswith("LoRA 'sd1_style' is for SD1.x, this model is SD2.x: skipped ")


def test_sdxl_lora_with_ldm_names_applies_to_unet_and_both_text_encoders(applier, tiny_dir, cpu_policy):
    sdxl = load(tiny_dir / "tiny-sdxl.safetensors", cpu_policy)
    ctx0, eps0 = run(sdxl)
    weights0 = snapshot(sdxl)
    assert applier.apply(sdxl, [LoraRequest("xl_style", 1, 1)]) == []
    touched = changed(sdxl, weights0)
    assert {k.split(".")[0] for k in touched} == {"unet", "te0", "te1"}
    # every module of the file changed: weights only, and none twice
    assert len(touched) == len(lf.sdxl_targets())
    ctx1, eps1 = run(sdxl)
    assert relative_change(ctx1, ctx0) > 0.01 and relative_change(eps1, eps0) > 0.01
    applier.apply(sdxl, [])
    ctx2, eps2 = run(sdxl)
    assert torch.equal(ctx2, ctx0) and torch.equal(eps2, eps0)


# ---- network types --------------------------------------------------------------------------

def test_locon_conv_change_equals_running_its_factors(applier, sd1, lora_root):
    """Merged 3x3 conv minus original == up(down(x)) (or up(mid(down(x))) for LoCon's Tucker form)."""
    x = torch.randn(1, 32, 8, 8, generator=torch.Generator().manual_seed(0))
    conv = sd1.unet.get_submodule(CONV3)
    name = kohya("lora_unet_", CONV3)
    with torch.no_grad():
        base = conv(x)
        for file, mult in (("sd1_locon", 0.6), ("sd1_locon_cp", -1.2)):
            f = factors(lora_root, f"{file}.safetensors")
            assert applier.apply(sd1, [LoraRequest(file, mult, mult)]) == []
            has_mid = f"{name}.lora_mid.weight" in f
            h = functional.conv2d(x, f[f"{name}.lora_down.weight"], padding=0 if has_mid else 1)
            if has_mid:
                h = functional.conv2d(h, f[f"{name}.lora_mid.weight"], padding=1)
            expected = mult * f[f"{name}.alpha"] / f[f"{name}.lora_down.weight"].shape[0] * functional.conv2d(
                h, f[f"{name}.lora_up.weight"])
            torch.testing.assert_close(conv(x) - base, expected, atol=1e-4, rtol=1e-3)


def test_loha_change_is_hadamard_product(applier, sd1, lora_root):
    f = factors(lora_root, "sd1_loha.safetensors")
    before = {n: sd1.unet.get_submodule(n).weight.clone() for n in (TO_Q, CONV3, SHORTCUT)}
    assert applier.apply(sd1, [LoraRequest("sd1_loha", 1, 1)]) == []
    for n in (TO_Q, SHORTCUT):  # plain form: (w1a @ w1b) * (w2a @ w2b), flattened kernels
        k = kohya("lora_unet_", n)
        w = sd1.unet.get_submodule(n).weight
        expected = (f[k + ".hada_w1_a"] @ f[k + ".hada_w1_b"]) * (f[k + ".hada_w2_a"] @ f[k + ".hada_w2_b"])
        expected = expected * f[k + ".alpha"] / f[k + ".hada_w1_b"].shape[0]
        torch.testing.assert_close(w - before[n], expected.reshape(w.shape), atol=1e-5, rtol=1e-4)
    k = kohya("lora_unet_", CONV3)  # Tucker form, per kernel tap: w_a^T @ t[:, :, i, j] @ w_b
    w = sd1.unet.get_submodule(CONV3).weight
    expected = torch.zeros_like(w)
    for i in range(3):
        for j in range(3):
            w1 = f[k + ".hada_w1_a"].T @ f[k + ".hada_t1"][:, :, i, j] @ f[k + ".hada_w1_b"]
            w2 = f[k + ".hada_w2_a"].T @ f[k + ".hada_t2"][:, :, i, j] @ f[k + ".hada_w2_b"]
            expected[:, :, i, j] = w1 * w2 * f[k + ".alpha"] / f[k + ".hada_w1_b"].shape[0]
    torch.testing.assert_close(w - before[CONV3], expected, atol=1e-5, rtol=1e-4)


def test_lokr_change_is_kronecker_product(applier, sd1, lora_root):
    f = factors(lora_root, "sd1_lokr.safetensors")
    before = {n: sd1.unet.get_submodule(n).weight.clone() for n in (TO_Q, SHORTCUT, CONV3)}
    assert applier.apply(sd1, [LoraRequest("sd1_lokr", 2.0, 2.0)]) == []
    for n in (TO_Q, SHORTCUT, CONV3):
        k = kohya("lora_unet_", n)
        w = sd1.unet.get_submodule(n).weight
        w1 = f[k + ".lokr_w1"]
        scale = 2.0 * f[k + ".alpha"] / f[k + ".lokr_w2_b"].shape[0]
        if k + ".lokr_t2" in f:  # per kernel tap, like LoHa's Tucker form
            w2 = torch.stack([torch.stack([f[k + ".lokr_w2_a"].T @ f[k + ".lokr_t2"][:, :, i, j] @ f[k + ".lokr_w2_b"]
                                           for j in range(3)], -1) for i in range(3)], -2)
        else:
            w2 = (f[k + ".lokr_w2_a"] @ f[k + ".lokr_w2_b"]).reshape(w.shape[0] // 4, w.shape[1] // 4, *w.shape[2:])
        # block (i, j) of the change is w1[i, j] * w2
        blocks = (w - before[n]).reshape(4, w.shape[0] // 4, 4, w.shape[1] // 4, *w.shape[2:])
        for i in range(4):
            for j in range(4):
                torch.testing.assert_close(blocks[i, :, j], scale * w1[i, j] * w2, atol=1e-4, rtol=1e-3)


def test_full_diff_changes_weight_and_bias(applier, sd1, lora_root):
    f = factors(lora_root, "sd1_full.safetensors")
    module = sd1.unet.get_submodule(FF_OUT)
    w0, b0 = module.weight.clone(), module.bias.clone()
    assert applier.apply(sd1, [LoraRequest("sd1_full", 0.5, 0.5)]) == []
    k = kohya("lora_unet_", FF_OUT)
    torch.testing.assert_close(module.weight - w0, 0.5 * f[k + ".diff"], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(module.bias - b0, 0.5 * f[k + ".diff_b"], atol=1e-6, rtol=1e-5)
    applier.apply(sd1, [])
    assert torch.equal(module.weight, w0) and torch.equal(module.bias, b0)


# ---- storage and layouts --------------------------------------------------------------------

def test_fp8_unet_merges_approximately_and_restores_exactly(applier, tiny_dir, cpu_policy, lora_root):
    model = load(tiny_dir / "tiny-sd1.safetensors", cpu_policy, fp8_unet="Enable")
    to_q = model.unet.get_submodule(TO_Q)
    assert to_q.weight.dtype == torch.float8_e4m3fn
    ctx, eps0 = run(model)
    weights0 = snapshot(model)
    applier.apply(model, [LoraRequest("sd1_style", 1, 1)])
    assert to_q.weight.dtype == torch.float8_e4m3fn
    got = to_q.weight.float() - weights0[f"unet.{TO_Q}.weight"].float()
    want = lora_delta(factors(lora_root, "sd1_style.safetensors"), kohya("lora_unet_", TO_Q))
    assert functional.cosine_similarity(got.flatten(), want.flatten(), dim=0) > 0.9  # e4m3 keeps 3 mantissa bits
    _, eps1 = run(model)
    assert relative_change(eps1, eps0) > 0.01
    applier.apply(model, [])
    assert changed(model, weights0) == set()
    _, eps2 = run(model)
    assert torch.equal(eps2, eps0)


def test_fused_attention_projections_get_the_change_too(applier, tiny_dir, cpu_policy):
    plain = load(tiny_dir / "tiny-sd1.safetensors", cpu_policy)
    fused = load(tiny_dir / "tiny-sd1.safetensors", cpu_policy)
    fused.unet.fuse_qkv_projections()
    qkv = fused.unet.get_submodule(TO_Q.removesuffix(".to_q") + ".to_qkv")
    qkv0 = qkv.weight.clone()
    ctx, _ = run(plain)
    for model in (plain, fused):
        applier.apply(model, [LoraRequest("sd1_style", 1, 1)])
    with torch.no_grad():
        torch.testing.assert_close(unet_step(fused, ctx, None), unet_step(plain, ctx, None), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(qkv.weight[:32], fused.unet.get_submodule(TO_Q).weight)
    applier.apply(fused, [])
    assert torch.equal(qkv.weight, qkv0)


def test_models_keep_their_own_merged_state(applier, tiny_dir, cpu_policy):
    a, b = load(tiny_dir / "tiny-sd1.safetensors", cpu_policy), load(tiny_dir / "tiny-sd1.safetensors", cpu_policy)
    weights0 = snapshot(b)
    applier.apply(a, [LoraRequest("sd1_style", 1, 1)])
    assert applier.signature(b) == () and changed(b, weights0) == set()
    applier.apply(b, [LoraRequest("sd1_style", 1, 1)])
    assert applier.signature(a) == applier.signature(b) != ()


def test_short_hash_is_a1111_addnet_hash(applier, lora_root):
    import hashlib
    data = (lora_root / "Lora" / "sd1_style.safetensors").read_bytes()
    header = int.from_bytes(data[:8], "little")
    assert applier.short_hash("sd1_style") == hashlib.sha256(data[8 + header:]).hexdigest()[:12]
    assert applier.short_hash("nope") is None


def test_ldm_names_map_exactly_onto_the_tiny_models(tiny_dir, cpu_policy):
    for path, layout in (("tiny-sd1.safetensors", ldm.TINY_SD1), ("tiny-sdxl.safetensors", ldm.TINY_SDXL)):
        unet = load(tiny_dir / path, cpu_policy).unet
        mapping = ldm_unet_module_map(unet)
        ldm_names = {k.removesuffix(".weight") for k in ldm.unet_shapes(layout.unet, prefix="")
                     if k.endswith(".weight")}
        assert set(mapping) == ldm_names
        assert set(mapping.values()) == {n for n, m in unet.named_modules()
                                               if any(p == "weight" for p, _ in m.named_parameters(recurse=False))}


FULL_SIZE = [
    (ldm.SD15, 192, {"lora_te_": ldm.SD15.text[0]}),
    (ldm.SD21, 192, {"lora_te_": replace(ldm.SD21.text[0], layers=23)}),  # SD2 uses 23 of 24 layers
    (ldm.SDXL, 722, {"lora_te1_": ldm.SDXL.text[0], "lora_te2_": ldm.SDXL.text[1]}),
]


@pytest.mark.parametrize("layout,n_attention,texts", FULL_SIZE, ids=["sd15", "sd21", "sdxl"])
def test_full_size_kohya_names_all_address_a_module_of_their_shape(layout, n_attention, texts):
    """Shapes only: the modules of full-size models are built on the meta device."""
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from modules.models.detection import detect

    spec = detect("full.safetensors", layout.shapes())
    with torch.device("meta"):
        unet = UNet2DConditionModel(**spec.unet_config)
        encoders = [(CLIPTextModelWithProjection if te.with_projection else CLIPTextModel)(CLIPTextConfig(**te.config))
                    for te in spec.text_encoders]
    lookup = module_lookup(spec.family, unet, encoders)
    roots = {"unet": unet, **{f"text_encoder_{i}": e for i, e in enumerate(encoders)}}

    attention = lf.ldm_unet_targets(layout.unet)
    assert len(attention) == n_attention  # what a kohya LoRA for this model holds
    diffusers_names = lf.diffusers_unet_targets(unet)
    assert len(diffusers_names) == n_attention
    expected = {**attention, **diffusers_names, **lf.ldm_unet_targets(layout.unet, lf.CONV_LDM),
                **lf.diffusers_unet_targets(unet, lf.CONV_DIFFUSERS)}
    for prefix, text in texts.items():
        expected.update(lf.text_targets(text, prefix))
    for name, shape in expected.items():
        ref = lookup[name]
        assert tuple(roots[ref.component].get_submodule(ref.name).weight.shape) == shape, name
    if layout is ldm.SD15:  # names as they appear in published SD1.5 LoRAs
        for name in ("lora_unet_down_blocks_0_attentions_0_proj_in",
                     "lora_unet_mid_block_attentions_0_transformer_blocks_0_attn2_to_out_0",
                     "lora_unet_up_blocks_3_attentions_2_transformer_blocks_0_ff_net_0_proj",
                     "lora_unet_down_blocks_0_downsamplers_0_conv", "lora_unet_up_blocks_3_resnets_2_conv_shortcut",
                     "lora_te_text_model_encoder_layers_11_mlp_fc2"):
            assert name in lookup, name
    if layout is ldm.SDXL:
        assert lookup["lora_unet_input_blocks_4_1_transformer_blocks_1_attn2_to_k"] == lookup[
            "lora_unet_down_blocks_1_attentions_0_transformer_blocks_1_attn2_to_k"]
        assert lookup["lora_unet_output_blocks_2_2_conv"].name == "up_blocks.0.upsamplers.0.conv"
        assert lookup["lora_unet_middle_block_1_transformer_blocks_9_ff_net_2"].name == (
            "mid_block.attentions.0.transformer_blocks.9.ff.net.2")
