"""Files that are not usable checkpoints get a clear message naming the file; nothing runs."""
import os
import pickle
import random
import sys
import types

import pytest
import torch
from safetensors.torch import save_file

from modules.models.checkpoint_io import CheckpointError, read_state_dict
from modules.models.loading import load_model
from modules.models.model_files import ModelFile
from tests import ldm_layout as ldm


def load(path, policy, **kw):
    return load_model(ModelFile(path, path.name), policy, **kw)


class _RunsCode:
    """Unpickling this calls os.system: the classic malicious checkpoint."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_malicious_ckpt_is_refused_and_never_runs(tmp_path, cpu_policy):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.ckpt"
    sd = ldm.materialize(ldm.TINY_SD1.shapes())
    torch.save({"state_dict": sd, "payload": _RunsCode(marker)}, path)
    with pytest.raises(CheckpointError) as err:
        load(path, cpu_policy)
    msg = str(err.value)
    assert "evil.ckpt" in msg and "refused" in msg and "--disable-safe-unpickle" in msg
    assert not marker.exists()


def test_safe_unpickle_opt_out_loads_a_pickle_with_objects(tmp_path, cpu_policy):
    """--disable-safe-unpickle: the user's explicit choice for a file they trust."""
    path = tmp_path / "trusted.ckpt"
    sd = ldm.materialize(ldm.TINY_SD1.shapes())
    torch.save({"state_dict": sd, "extra": types.SimpleNamespace(note="harmless")}, path)
    with pytest.raises(CheckpointError, match="refused"):
        load(path, cpu_policy)
    assert load(path, cpu_policy, allow_unsafe_pickle=True).spec.family.id == "sd1"


def test_lightning_training_checkpoint_loads_without_lightning(tmp_path, cpu_policy, monkeypatch):
    """Original 2022 .ckpt files pickle a Lightning callback next to the weights."""
    names = ["pytorch_lightning", "pytorch_lightning.callbacks", "pytorch_lightning.callbacks.model_checkpoint"]
    mods = {n: types.ModuleType(n) for n in names}

    class ModelCheckpoint:
        def __init__(self):
            self.best_model_path = "/somewhere"

    ModelCheckpoint.__module__ = names[-1]
    ModelCheckpoint.__qualname__ = "ModelCheckpoint"
    mods[names[-1]].ModelCheckpoint = ModelCheckpoint
    for n, m in mods.items():
        monkeypatch.setitem(sys.modules, n, m)
    path = tmp_path / "sd-v1-4.ckpt"
    import numpy as np
    torch.save({"state_dict": ldm.materialize(ldm.TINY_SD1.shapes()), "global_step": np.int64(470000),
                "callbacks": {"ModelCheckpoint": ModelCheckpoint()}}, path)
    for n in names:
        monkeypatch.delitem(sys.modules, n)
    assert load(path, cpu_policy).spec.family.id == "sd1"


@pytest.mark.parametrize("name,content,expected", [
    ("empty.safetensors", b"", "empty"),
    ("notes.safetensors", b"this is not a model, it is a text file\n", "not a valid .safetensors"),
    ("garbage.ckpt", random.Random(1234).randbytes(4096), "not a readable checkpoint"),
    ("page.ckpt", b"<html><body>404 Not Found</body></html>", "not a readable checkpoint"),
    ("model.gguf", b"GGUF\x00\x00", "unsupported file type"),
])
def test_unreadable_files(tmp_path, cpu_policy, name, content, expected):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=expected) as err:
        load(path, cpu_policy)
    assert name in str(err.value)


def test_truncated_download(tmp_path, cpu_policy):
    full = ldm.write_checkpoint(tmp_path / "full.safetensors", ldm.TINY_SD1)
    data = full.read_bytes()
    cut = tmp_path / "half.safetensors"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="half.safetensors.*(corrupt|truncated)"):
        load(cut, cpu_policy)
    cut_ckpt = tmp_path / "half.ckpt"
    torch.save({"state_dict": ldm.materialize(ldm.TINY_SD1.shapes())}, tmp_path / "whole.ckpt")
    blob = (tmp_path / "whole.ckpt").read_bytes()
    cut_ckpt.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(CheckpointError, match="half.ckpt.*(corrupt|truncated)"):
        load(cut_ckpt, cpu_policy)


def test_wrong_kinds_of_model_file_are_named(tmp_path, cpu_policy):
    vae = {k.removeprefix("first_stage_model."): v for k, v in ldm.materialize(ldm.vae_shapes(ldm.TINY_VAE)).items()}
    save_file(vae, str(tmp_path / "some-vae.safetensors"))
    with pytest.raises(CheckpointError, match="this is a VAE.*models/VAE"):
        load(tmp_path / "some-vae.safetensors", cpu_policy)
    save_file({"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.zeros(4, 32)},
              str(tmp_path / "style.safetensors"))
    with pytest.raises(CheckpointError, match="this is a LoRA.*models/Lora"):
        load(tmp_path / "style.safetensors", cpu_policy)
    save_file({"foo.weight": torch.zeros(2)}, str(tmp_path / "unknown.safetensors"))
    with pytest.raises(CheckpointError, match="unknown.safetensors: not a Stable Diffusion checkpoint"):
        load(tmp_path / "unknown.safetensors", cpu_policy)


def test_weights_of_the_wrong_shape(tmp_path, cpu_policy):
    sd = ldm.materialize(ldm.TINY_SD1.shapes())
    key = "model.diffusion_model.output_blocks.0.0.out_layers.3.weight"
    sd[key] = torch.zeros(sd[key].shape[0], sd[key].shape[1], 1, 1)
    save_file(sd, str(tmp_path / "broken.safetensors"))
    with pytest.raises(CheckpointError, match="broken.safetensors.*shape"):
        load(tmp_path / "broken.safetensors", cpu_policy)


def test_broken_yaml_beside_checkpoint(tmp_path, cpu_policy):
    path = ldm.write_checkpoint(tmp_path / "m.safetensors", ldm.TINY_SD1, yaml_text="model: [unclosed\n")
    with pytest.raises(CheckpointError, match=r"m\.yaml"):
        load(path, cpu_policy)


def test_read_state_dict_rejects_non_dict_pickles(tmp_path):
    path = tmp_path / "list.pt"
    torch.save([torch.zeros(1)], path)
    with pytest.raises(CheckpointError, match="expected a dictionary"):
        read_state_dict(path)
    with open(tmp_path / "plain.pt", "wb") as f:
        pickle.dump({"a": 1}, f)
    with pytest.raises(CheckpointError):
        read_state_dict(tmp_path / "plain.pt")
