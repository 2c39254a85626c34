"""Checkpoint Merger: each method's arithmetic, fp16, VAE baking, metadata, pruning, refusals, and the tab."""
import errno
import hashlib
import json
import shutil
import threading
from dataclasses import replace

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from modules.cmd_args import parse_args
from modules.models import merge
from modules.models.checkpoint_io import read_state_dict
from modules.models.hashes import HashCache
from modules.models.manager import ModelManager
from modules.models.merge import MergeError, MergeRequest, merge_checkpoints
from modules.options import Options
from modules.paths import Paths
from tests import ldm_layout as ldm

UNET_KEY = "model.diffusion_model.input_blocks.1.0.in_layers.2.weight"
VAE_KEY = "first_stage_model.decoder.conv_in.weight"
TEXT_KEY = "cond_stage_model.transformer.text_model.encoder.layers.0.mlp.fc1.weight"
IN_CONV = "model.diffusion_model.input_blocks.0.0.weight"


@pytest.fixture(scope="module")
def sources(tmp_path_factory, tiny_dir):
    """Checkpoints to merge: three SD1 (one fp16, one with a yaml, one with EMA weights), SDXL, an SD1
    inpainting .ckpt, and a VAE."""
    root = tmp_path_factory.mktemp("merge_sources")
    ldm.write_checkpoint(root / "sd1-a.safetensors", ldm.TINY_SD1, seed=21, yaml_text="model: {}\n",
                         metadata={"ss_note": "from A", "modelspec.title": "A"})
    ldm.write_checkpoint(root / "sd1-b.safetensors", ldm.TINY_SD1, seed=22, dtype=torch.float16,
                         metadata={"ss_note": "from B"})
    ldm.write_checkpoint(root / "sd1-c.safetensors", ldm.TINY_SD1, seed=23)
    shutil.copy(tiny_dir / "tiny-sdxl.safetensors", root)
    shutil.copy(tiny_dir / "tiny-sd1-inpainting.ckpt", root)
    with_ema = ldm.materialize(ldm.TINY_SD1.shapes(), seed=24)
    with_ema.update({"model_ema." + k[len("model."):].replace(".", ""): v.clone()
                     for k, v in list(with_ema.items()) if k.startswith("model.diffusion_model.")})
    with_ema["model_ema.decay"] = torch.tensor(0.9999)
    save_file(with_ema, str(root / "sd1-ema.safetensors"))
    vae = root / "vae.safetensors"
    save_file(ldm.materialize(ldm.vae_shapes(ldm.TINY_VAE, prefix=""), seed=99), str(vae))
    return root


@pytest.fixture
def manager(tmp_path, sources, cpu_policy):
    ckpts = tmp_path / "models" / "Stable-diffusion"
    ckpts.mkdir(parents=True)
    for p in sources.glob("*"):
        if p.name != "vae.safetensors":
            shutil.copy(p, ckpts)
    (tmp_path / "models" / "VAE").mkdir()
    shutil.copy(sources / "vae.safetensors", tmp_path / "models" / "VAE")
    paths = Paths.from_args(parse_args(["--data-dir", str(tmp_path)]))
    return ModelManager(paths, cpu_policy, Options(), HashCache(paths.cache_file))


def tensors(path) -> dict[str, torch.Tensor]:
    return dict(read_state_dict(path).items())


def ckpt(manager, name):
    return tensors(manager.paths.checkpoint_dirs[0] / name)


def folder_files(manager) -> set[str]:
    return {p.name for p in manager.paths.checkpoint_dirs[0].iterdir()}


def test_weighted_sum_is_a_times_one_minus_m_plus_b_times_m_with_the_recipe_in_the_metadata(manager):
    result = merge_checkpoints(manager, MergeRequest("sd1-a.safetensors", "sd1-b.safetensors", multiplier=0.25))
    assert result.path.name == "0.75(sd1-a) + 0.25(sd1-b).safetensors"
    assert result.file is not None and result.file.title in manager.checkpoint_titles()  # listed, with its hash
    out, a, b = tensors(result.path), ckpt(manager, "sd1-a.safetensors"), ckpt(manager, "sd1-b.safetensors")
    assert set(out) == set(a)
    for key in (UNET_KEY, VAE_KEY, TEXT_KEY):
        assert out[key].dtype == torch.float32  # fp32 A with fp16 B: the wider type
        expected = 0.75 * a[key] + 0.25 * b[key].float()
        assert torch.equal(out[key], expected), key
    assert torch.equal(out["alphas_cumprod"], a["alphas_cumprod"])  # not a "model" key: A's

    with safe_open(str(result.path), "pt") as f:
        meta = f.metadata()
    assert meta["format"] == "pt" and meta["ss_note"] == "from B" and meta["modelspec.title"] == "A"
    recipe = json.loads(meta["sd_merge_recipe"])
    digest = {n: hashlib.sha256((manager.paths.checkpoint_dirs[0] / n).read_bytes()).hexdigest()
              for n in ("sd1-a.safetensors", "sd1-b.safetensors")}
    assert recipe["type"] == "webui" and recipe["interp_method"] == "Weighted sum" and recipe["multiplier"] == 0.25
    assert recipe["primary_model_hash"] == digest["sd1-a.safetensors"]
    assert recipe["secondary_model_hash"] == digest["sd1-b.safetensors"] and recipe["tertiary_model_hash"] is None
    assert recipe["is_inpainting"] is False and recipe["bake_in_vae"] == "None"
    models = json.loads(meta["sd_merge_models"])
    assert models[digest["sd1-a.safetensors"]]["name"] == "sd1-a.safetensors"
    assert models[digest["sd1-b.safetensors"]]["sd_merge_recipe"] is None
    assert len(models[digest["sd1-b.safetensors"]]["legacy_hash"]) == 8

    again = merge_checkpoints(manager, MergeRequest(result.file.title, "sd1-c.safetensors", custom_name="second"))
    with safe_open(str(again.path), "pt") as f:
        models = json.loads(f.metadata()["sd_merge_models"])
    parent = models[hashlib.sha256(result.path.read_bytes()).hexdigest()]
    assert parent["sd_merge_recipe"]["multiplier"] == 0.25  # a merge of a merge keeps its ancestry
    assert digest["sd1-a.safetensors"] in models


def test_add_difference_is_a_plus_b_minus_c_times_m(manager):
    result = merge_checkpoints(manager, MergeRequest("sd1-a", "sd1-b", "sd1-c", interp_method="Add difference",
                                                     multiplier=0.6))
    assert result.path.name == "sd1-a + 0.6(sd1-b - sd1-c).safetensors"
    out = tensors(result.path)
    a, b, c = (ckpt(manager, f"sd1-{x}.safetensors") for x in "abc")
    for key in (UNET_KEY, VAE_KEY, TEXT_KEY):
        assert torch.equal(out[key], a[key] + 0.6 * (b[key].float() - c[key])), key


def test_add_difference_without_a_tertiary_model_is_refused(manager):
    with pytest.raises(MergeError, match=r"requires a tertiary model"):
        merge_checkpoints(manager, MergeRequest("sd1-a", "sd1-b", interp_method="Add difference"))
    with pytest.raises(MergeError, match=r"requires a secondary model"):
        merge_checkpoints(manager, MergeRequest("sd1-a", interp_method="Weighted sum"))


def test_no_interpolation_converts_to_fp16_ckpt_and_bakes_in_a_vae(manager):
    result = merge_checkpoints(manager, MergeRequest("sd1-a", interp_method="No interpolation", save_as_half=True,
                                                     checkpoint_format="ckpt", bake_in_vae="vae.safetensors"))
    assert result.path.name == "sd1-a.ckpt"
    out, a = tensors(result.path), ckpt(manager, "sd1-a.safetensors")
    vae = tensors(manager.paths.vae_dirs[-1] / "vae.safetensors")
    assert out[UNET_KEY].dtype == torch.float16 and torch.equal(out[UNET_KEY], a[UNET_KEY].half())
    assert torch.equal(out[VAE_KEY], vae["decoder.conv_in.weight"].half())
    assert not torch.equal(out[VAE_KEY], a[VAE_KEY].half())
    assert out["alphas_cumprod"].dtype == torch.float32  # schedule buffers keep their precision
    raw = torch.load(result.path, weights_only=True)
    assert isinstance(raw, dict) and UNET_KEY in raw  # a flat dict, as A1111 writes it
    assert result.path.with_suffix(".yaml").read_text() == "model: {}\n"  # config copied from A


def test_the_merged_checkpoint_loads_and_generates(make_services, sources, tmp_path):
    from modules.generation import Txt2ImgRequest, process_txt2img
    from modules.generation.progress import GenerationState

    folder = tmp_path / "ckpts"
    folder.mkdir()
    for name in ("sd1-a.safetensors", "sd1-b.safetensors"):
        shutil.copy(sources / name, folder)
    services = make_services(Options(randn_source="CPU"), "--ckpt-dir", str(folder))
    result = merge_checkpoints(services.models, MergeRequest("sd1-a", "sd1-b", multiplier=0.5, save_as_half=True,
                                                             custom_name="half-half"))
    assert result.path == folder / "half-half.safetensors"  # --ckpt-dir is where merges go, as in A1111
    model = services.models.load(result.file.title)
    assert model.spec.family.id == "sd1"
    ctx = replace(services.context, outputs_dir=tmp_path / "outputs", state=GenerationState(console=False))
    res = process_txt2img(Txt2ImgRequest(prompt="a red circle", width=32, height=32, steps=2, seed=1), ctx)
    assert res.images[0].size == (32, 32)
    assert "Model: half-half" in res.infotexts[0]


def test_checkpoints_of_different_families_are_refused_and_nothing_is_written(manager):
    before = folder_files(manager)
    with pytest.raises(MergeError, match=r"SD ?1.* SDXL|SDXL.* SD ?1") as e:
        merge_checkpoints(manager, MergeRequest("sd1-a", "tiny-sdxl"))
    assert "same family" in str(e.value)
    with pytest.raises(MergeError, match="same family"):
        merge_checkpoints(manager, MergeRequest("sd1-a", "sd1-b", "tiny-sdxl", interp_method="Add difference"))
    assert folder_files(manager) == before


def test_same_family_with_other_shapes_is_refused(manager):
    bigger = replace(ldm.TINY_SD1, unet=replace(ldm.TINY_SD1.unet, model_channels=64))
    ldm.write_checkpoint(manager.paths.checkpoint_dirs[0] / "wide.safetensors", bigger, seed=5)
    manager.refresh()
    with pytest.raises(MergeError, match="different shapes"):
        merge_checkpoints(manager, MergeRequest("sd1-a", "wide"))


def test_unknown_names_paths_and_path_like_custom_names_are_refused(manager, sources):
    before = folder_files(manager)
    for name in ("nope.safetensors", str(sources / "sd1-c.safetensors"), "../sd1-a.safetensors", ""):
        with pytest.raises(MergeError):
            merge_checkpoints(manager, MergeRequest(name, "sd1-b"))
    for custom in ("../evil", "sub/evil", "a\\b", ".hidden"):
        with pytest.raises(MergeError, match="plain file name"):
            merge_checkpoints(manager, MergeRequest("sd1-a", "sd1-b", custom_name=custom))
    with pytest.raises(MergeError, match="unknown VAE"):
        merge_checkpoints(manager, MergeRequest("sd1-a", interp_method="No interpolation", bake_in_vae="../x.pt"))
    with pytest.raises(MergeError, match="not valid JSON"):
        merge_checkpoints(manager, MergeRequest("sd1-a", "sd1-b", metadata_json="{oops"))
    with pytest.raises(MergeError, match="regular expression"):
        merge_checkpoints(manager, MergeRequest("sd1-a", "sd1-b", discard_weights="(unclosed"))
    assert folder_files(manager) == before


def test_a_backtracking_discard_pattern_does_not_hold_the_worker(manager):
    """With Python's re this pattern backtracks for ever on a 75-character weight name (doubling per character),
    blocking every user's generation; the merge must finish."""
    finished = threading.Event()

    def merge():
        merge_checkpoints(manager, MergeRequest("sd1-a", "sd1-b", custom_name="backtrack",
                                                discard_weights=r"^([a-z_.0-9]|[a-z_.0-9])*X"))
        finished.set()

    threading.Thread(target=merge, daemon=True).start()
    assert finished.wait(120), "the merge is still matching the pattern"


def test_an_existing_file_is_never_overwritten(manager):
    with pytest.raises(MergeError, match="already exists.*one of the models"):
        merge_checkpoints(manager, MergeRequest("sd1-a", interp_method="No interpolation"))
    merge_checkpoints(manager, MergeRequest("sd1-a", "sd1-b", custom_name="mine.safetensors"))
    with pytest.raises(MergeError, match="already exists"):
        merge_checkpoints(manager, MergeRequest("sd1-a", "sd1-c", custom_name="mine"))


def test_prune_drops_ema_weights_and_discard_drops_matching_names(manager):
    result = merge_checkpoints(manager, MergeRequest("sd1-ema", interp_method="No interpolation", prune=True,
                                                     custom_name="pruned"))
    out, source = tensors(result.path), ckpt(manager, "sd1-ema.safetensors")
    assert any(k.startswith("model_ema.") for k in source)
    assert not any(k.startswith("model_ema.") for k in out)
    assert set(out) == {k for k in source if not k.startswith("model_ema.")}
    kept = merge_checkpoints(manager, MergeRequest("sd1-ema", interp_method="No interpolation", custom_name="kept",
                                                   discard_weights=r"^first_stage_model\.encoder\."))
    out = tensors(kept.path)
    assert "model_ema.decay" in out and not any(k.startswith("first_stage_model.encoder.") for k in out)


def test_inpainting_a_with_normal_b_merges_the_first_four_input_channels(manager):
    result = merge_checkpoints(manager, MergeRequest("tiny-sd1-inpainting", "sd1-b", "sd1-c", multiplier=1.0,
                                                     interp_method="Add difference"))
    assert result.is_inpainting and result.path.name.endswith(".inpainting.safetensors")
    out, a = tensors(result.path), ckpt(manager, "tiny-sd1-inpainting.ckpt")
    b, c = ckpt(manager, "sd1-b.safetensors"), ckpt(manager, "sd1-c.safetensors")
    assert out[IN_CONV].shape[1] == 9
    assert torch.equal(out[IN_CONV][:, :4], a[IN_CONV][:, :4] + 1.0 * (b[IN_CONV].float() - c[IN_CONV]))
    assert torch.equal(out[IN_CONV][:, 4:], a[IN_CONV][:, 4:])
    with pytest.raises(MergeError, match="A must be the inpainting model"):
        merge_checkpoints(manager, MergeRequest("sd1-b", "tiny-sd1-inpainting"))
    with pytest.raises(MergeError, match="B and C must be the same kind"):
        merge_checkpoints(manager, MergeRequest("sd1-a", "tiny-sd1-inpainting", "sd1-c",
                                                interp_method="Add difference"))


def test_instruct_pix2pix_a_with_normal_b(manager):
    pix2pix = replace(ldm.TINY_SD1, unet=replace(ldm.TINY_SD1.unet, in_channels=8))
    ldm.write_checkpoint(manager.paths.checkpoint_dirs[0] / "ip2p.safetensors", pix2pix, seed=8)
    manager.refresh()
    result = merge_checkpoints(manager, MergeRequest("ip2p", "sd1-c", multiplier=0.5))
    assert result.is_instruct_pix2pix and result.path.name.endswith(".instruct-pix2pix.safetensors")
    out, a, b = tensors(result.path), ckpt(manager, "ip2p.safetensors"), ckpt(manager, "sd1-c.safetensors")
    assert torch.equal(out[IN_CONV][:, :4], 0.5 * a[IN_CONV][:, :4] + 0.5 * b[IN_CONV])
    assert torch.equal(out[IN_CONV][:, 4:], a[IN_CONV][:, 4:])
    with pytest.raises(MergeError, match="A must be the instruct-pix2pix model"):
        merge_checkpoints(manager, MergeRequest("sd1-c", "ip2p"))


def test_a_full_disk_leaves_no_partial_file(manager, monkeypatch):
    before = folder_files(manager)
    calls = []
    real = merge._tensor_bytes

    def fail_later(t):
        calls.append(1)
        if len(calls) > 20:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(t)

    monkeypatch.setattr(merge, "_tensor_bytes", fail_later)
    with pytest.raises(MergeError, match="disk full.*nothing was saved"):
        merge_checkpoints(manager, MergeRequest("sd1-a", "sd1-b", custom_name="full"))
    assert folder_files(manager) == before
    assert not any("full" in t for t in manager.checkpoint_titles())

    monkeypatch.setattr(merge.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(1, 1, 10))
    with pytest.raises(MergeError, match=r"disk full: the merged checkpoint needs"):
        merge_checkpoints(manager, MergeRequest("sd1-a", "sd1-b", custom_name="full"))
    assert folder_files(manager) == before


def test_read_metadata_shows_the_checkpoints_metadata(manager):
    files = [manager.find_checkpoint(n) for n in ("sd1-a", "sd1-b")]
    text = merge.read_metadata([(f, merge.safetensors_metadata(f)) for f in files])
    assert json.loads(text) == {"ss_note": "from B", "modelspec.title": "A"}


@pytest.mark.server
@pytest.mark.slow
def test_merging_from_the_page_lists_the_new_checkpoint(tmp_path, tiny_dir, sources):
    from tests.helpers import serving_checkpoints
    from tests.test_client_files import PageClient

    ckpts = tmp_path / "models" / "Stable-diffusion"
    ckpts.mkdir(parents=True)
    shutil.copy(sources / "sd1-b.safetensors", ckpts)
    with serving_checkpoints(tmp_path, tiny_dir) as server:
        page = PageClient(server.url)
        assert page.elem("modelmerger_interp_method")["props"]["value"] == "Weighted sum"
        answer = page.run("modelmerger_merge", "click", values={
            "modelmerger_primary_model_name": "tiny-sd1.safetensors",
            "modelmerger_secondary_model_name": "sd1-b.safetensors",
            "modelmerger_custom_name": "from-the-page"})
        assert answer["success"], answer
        *pickers, top, message = answer["output"]["data"]
        assert "Checkpoint saved to" in message and "from-the-page.safetensors" in message
        titles = [c[0] for c in top["choices"]]
        [new] = [t for t in titles if t.startswith("from-the-page.safetensors [")]
        assert [c[0] for c in pickers[0]["choices"]] == titles
        assert (ckpts / "from-the-page.safetensors").is_file()

        answer = page.run("modelmerger_merge", "click", values={
            "modelmerger_primary_model_name": "tiny-sd1.safetensors",
            "modelmerger_secondary_model_name": "sd1-b.safetensors",
            "modelmerger_custom_name": "../outside"})
        assert "plain file name" in answer["output"]["data"][-1]
        assert not (tmp_path / "models" / "outside.safetensors").exists()
        refreshed = page.run("refresh_sd_model_checkpoint", "click")
        assert new in [c[0] for c in refreshed["output"]["data"][0]["choices"]]
