"""Listing, hashing, switching checkpoints and VAEs, as a user does from the top bar."""
import argparse
import errno
import hashlib
import json
import shutil

import pytest
import torch
from safetensors.torch import save_file

from modules.cmd_args import parse_args
from modules.models import hashes as hashes_module
from modules.models.checkpoint_io import CheckpointError
from modules.models.hashes import HashCache
from modules.models.manager import ModelManager
from modules.options import Options
from modules.paths import Paths
from tests import ldm_layout as ldm


@pytest.fixture
def data_dir(tmp_path, tiny_dir):
    """A user's data folder: checkpoints in a subfolder, a VAE file, a VAE beside a checkpoint."""
    ckpts = tmp_path / "models" / "Stable-diffusion"
    shutil.copytree(tiny_dir, ckpts)
    vae_sd = ldm.materialize(ldm.vae_shapes(ldm.TINY_VAE, prefix=""), seed=99)
    (tmp_path / "models" / "VAE").mkdir(parents=True)
    save_file(vae_sd, str(tmp_path / "models" / "VAE" / "other-vae.safetensors"))
    return tmp_path


def make_manager(data_dir, cpu_policy, **opts):
    args = parse_args(["--data-dir", str(data_dir)])
    paths = Paths.from_args(args)
    options = Options(**opts)
    return ModelManager(paths, cpu_policy, options, HashCache(paths.cache_file))


def decode(model, seed=0):
    z = torch.randn(1, 4, 4, 4, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return model.vae.decode(z).sample


def test_lists_checkpoints_with_a1111_titles_and_hashes_once(data_dir, cpu_policy, monkeypatch):
    calls = []
    real = hashes_module.sha256_of
    monkeypatch.setattr(hashes_module, "sha256_of", lambda p: calls.append(p) or real(p))

    m = make_manager(data_dir, cpu_policy)
    names = [c.name for c in m.checkpoints]
    assert "sd2/tiny-sd2-v.safetensors" in names and "tiny-sd1.safetensors" in names
    assert "tiny-sd1.safetensors" in m.checkpoint_titles()  # not hashed until first used
    model = m.load("tiny-sd1.safetensors")
    digest = hashlib.sha256((data_dir / "models/Stable-diffusion/tiny-sd1.safetensors").read_bytes()).hexdigest()
    assert model.file.title == f"tiny-sd1.safetensors [{digest[:10]}]"
    assert model.file.title in m.checkpoint_titles()
    assert len(calls) == 1

    again = make_manager(data_dir, cpu_policy)  # a restart: the hash comes from cache.json
    assert f"tiny-sd1.safetensors [{digest[:10]}]" in again.checkpoint_titles()
    again.load(digest[:10])  # any A1111 way of naming it works, here the short hash
    assert len(calls) == 1


def test_failed_switch_keeps_the_previous_model_usable(data_dir, cpu_policy):
    ckpts = data_dir / "models" / "Stable-diffusion"
    (ckpts / "broken.safetensors").write_bytes(b"\0" * 100)
    m = make_manager(data_dir, cpu_policy)
    first = m.load("tiny-sd1")
    before = decode(first)
    with pytest.raises(CheckpointError, match="broken.safetensors"):
        m.load("broken.safetensors")
    assert m.current is first
    assert torch.equal(decode(m.current), before)
    with pytest.raises(CheckpointError, match="no such checkpoint.*available"):
        m.load("does-not-exist")


def test_checkpoint_cache_keeps_the_last_n(data_dir, cpu_policy):
    m = make_manager(data_dir, cpu_policy, sd_checkpoints_limit=2)
    a = m.load("tiny-sd1")
    b = m.load("tiny-sdxl")
    assert m.load("tiny-sd1") is a  # from RAM, not re-read
    assert m.load("tiny-sdxl") is b
    m.options.sd_checkpoints_limit = 1
    m.load("tiny-sd2-v")
    assert m.load("tiny-sdxl") is not b  # evicted, so loaded again


def test_vae_switch_does_not_reload_the_checkpoint(data_dir, cpu_policy):
    m = make_manager(data_dir, cpu_policy)
    model = m.load("tiny-sd1")
    unet = model.unet
    own = decode(model)
    assert "other-vae.safetensors" in m.vae_choices()

    m.set_vae("other-vae.safetensors")
    assert m.current.unet is unet
    swapped = decode(m.current)
    assert not torch.allclose(own, swapped)

    m.set_vae("None")
    assert torch.equal(decode(m.current), own)  # the checkpoint's own VAE, exactly restored
    assert m.options.sd_vae == "None"


def test_automatic_vae_prefers_the_file_beside_the_checkpoint(data_dir, cpu_policy):
    ckpts = data_dir / "models" / "Stable-diffusion"
    shutil.copy(data_dir / "models/VAE/other-vae.safetensors", ckpts / "tiny-sd1.vae.safetensors")
    m = make_manager(data_dir, cpu_policy)
    model = m.load("tiny-sd1")
    assert model.vae_file is not None and model.vae_file.name == "tiny-sd1.vae.safetensors"
    assert "tiny-sd1.vae.safetensors" not in [c.name for c in m.checkpoints]  # a VAE is not a checkpoint
    other = m.load("tiny-sdxl")
    assert other.vae_file is None


def test_vae_that_does_not_fit_is_refused_and_current_stays(data_dir, cpu_policy):
    bad = ldm.materialize(ldm.vae_shapes(ldm.VAELayout(ch=64, ch_mult=(1, 2), num_res_blocks=1), prefix=""))
    save_file(bad, str(data_dir / "models/VAE/wrong-size.safetensors"))
    m = make_manager(data_dir, cpu_policy)
    model = m.load("tiny-sd1")
    own = decode(model)
    m.refresh()
    with pytest.raises(CheckpointError, match="wrong-size.safetensors.*does not fit"):
        m.set_vae("wrong-size.safetensors")
    assert torch.equal(decode(model), own)


def test_ckpt_flag_and_extra_checkpoint_dir(tmp_path, tiny_dir, cpu_policy):
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(tiny_dir, elsewhere)
    single = tmp_path / "single.safetensors"
    shutil.copy(tiny_dir / "tiny-sd1.safetensors", single)
    args = parse_args(["--data-dir", str(tmp_path / "data"), "--ckpt-dir", str(elsewhere), "--ckpt", str(single)])
    paths = Paths.from_args(args)
    m = ModelManager(paths, cpu_policy, Options(), HashCache(paths.cache_file))
    names = [c.name for c in m.checkpoints]
    assert "single.safetensors" in names and "tiny-sdxl.safetensors" in names


def test_settings_persist_in_config_json(data_dir, cpu_policy):
    m = make_manager(data_dir, cpu_policy)
    m.load("tiny-sd1")
    m.set_vae("other-vae.safetensors")
    m.options.save(m.paths.config_file)
    restored = Options.load(m.paths.config_file)
    assert restored.sd_vae == "other-vae.safetensors"
    assert restored.sd_model_checkpoint.startswith("tiny-sd1.safetensors [")


def test_options_file_with_bad_values_falls_back_to_defaults(tmp_path):
    f = tmp_path / "config.json"
    f.write_text('{"sd_checkpoints_limit": "three", "sd_vae": "x.pt", "unknown_key": 1}')
    o = Options.load(f)
    assert o.sd_checkpoints_limit == 1 and o.sd_vae == "x.pt"
    o.save(f)
    assert "unknown_key" in f.read_text()  # other tools' keys survive
    f.write_text("{not json")
    assert Options.load(f) == Options()


def test_unknown_flag_is_a_clear_error(capsys):
    with pytest.raises(SystemExit):
        parse_args(["--no-such-flag"])
    assert "unrecognized arguments: --no-such-flag" in capsys.readouterr().err
    assert isinstance(parse_args([]), argparse.Namespace)


def test_a_path_outside_the_scan_is_no_checkpoint_and_is_never_opened(data_dir, cpu_policy, tiny_dir, tmp_path_factory,
                                                                      monkeypatch):
    """A client (API options, override_settings, the page's dropdown) may name any file on the server: only
    files the folder scan found may be chosen, and an unknown name gives the same answer whether it exists."""
    outside = tmp_path_factory.mktemp("elsewhere") / "secret.safetensors"
    shutil.copy(tiny_dir / "tiny-sd1.safetensors", outside)
    manager = make_manager(data_dir, cpu_policy)
    opened = []
    monkeypatch.setattr(hashes_module, "sha256_of", lambda path, *_args, **_kwargs: opened.append(path) or "0" * 64)
    answers = []
    for query in (str(outside), str(outside.with_name("missing.safetensors")), "../../etc/passwd.ckpt", 123):
        with pytest.raises(CheckpointError) as err:
            manager.load(query)
        answers.append(str(err.value).split(":", 1)[1])
        assert "no such checkpoint" in str(err.value)
    assert len(set(answers)) == 1  # the same words for an existing and a missing file
    assert opened == [] and manager.current is None
    assert str(outside) not in (manager.paths.cache_file.read_text() if manager.paths.cache_file.exists() else "")
    manager.load(str(data_dir / "models" / "Stable-diffusion" / "tiny-sd1.safetensors"))  # a listed file, by path
    assert manager.current.file.name == "tiny-sd1.safetensors"


@pytest.mark.parametrize("content", ["[]", "123", "null", '{"hashes": []}', '{"hashes": 5}', "{truncated"])
def test_a_corrupt_hash_cache_is_kept_aside_and_the_cache_starts_empty(tmp_path, caplog, content):
    cache_file = tmp_path / "cache.json"
    cache_file.write_text(content)
    model = tmp_path / "m.safetensors"
    model.write_bytes(b"weights")
    cache = HashCache(cache_file)
    assert cache.cached(model) is None
    assert cache.sha256(model) == hashlib.sha256(b"weights").hexdigest()
    bad = list(tmp_path.glob("cache.json.bad-*"))
    assert len(bad) == 1 and bad[0].read_text() == content and bad[0].name in caplog.text
    assert HashCache(cache_file).cached(model) == hashlib.sha256(b"weights").hexdigest()


def test_hash_cache_skips_bad_entries_and_keeps_other_sections(tmp_path):
    cache_file = tmp_path / "cache.json"
    model = tmp_path / "m.safetensors"
    model.write_bytes(b"weights")
    cache_file.write_text(json.dumps({"hashes": {str(model.resolve()): 1, "x": {"sha256": None}},
                                      "safetensors-metadata": {"kept": 1}}))
    cache = HashCache(cache_file)
    assert cache.cached(model) is None
    cache.sha256(model)
    data = json.loads(cache_file.read_text())
    assert data["safetensors-metadata"] == {"kept": 1} and list(data["hashes"]) == [str(model.resolve())]


def test_a_full_disk_costs_the_hash_cache_nothing_but_a_warning(tmp_path, monkeypatch, caplog):
    def full(*_args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("modules.user_files.os.replace", full)
    model = tmp_path / "m.safetensors"
    model.write_bytes(b"weights")
    assert HashCache(tmp_path / "cache.json").sha256(model) == hashlib.sha256(b"weights").hexdigest()
    assert "disk full" in caplog.text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]
