"""Textual-inversion embeddings: file formats, which models they fit, rescanning, broken and unsafe files."""
import hashlib
import os

import pytest
import torch
from safetensors.torch import save_file

from modules.conditioning import embeddings as ti
from modules.conditioning.embeddings import DEFAULT, EmbeddingDatabase, expected_vectors, family_label, load_embedding
from modules.models.detection import detect
from tests import ldm_layout as ldm


def vec(n: int, dim: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, dim, generator=torch.Generator().manual_seed(seed))


def save_a1111_pt(path, vectors, step=1500):
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"string_to_token": {"*": 265}, "string_to_param": {"*": vectors}, "name": "trained-name",
                "step": step, "sd_checkpoint": "cc6cb27103", "sd_checkpoint_name": "v1-5-pruned-emaonly"}, path)


def save_sdxl(path, n=2, seed=0, dims=(768, 1280)):
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({"clip_l": vec(n, dims[0], seed), "clip_g": vec(n, dims[1], seed + 1)}, str(path))


# --- formats -------------------------------------------------------------------------------------

def test_a1111_pt(tmp_path):
    v = vec(3, 768)
    save_a1111_pt(tmp_path / "my-style.pt", v)
    e = load_embedding(tmp_path / "my-style.pt")
    assert e.name == "my-style"  # the file name counts, not the name stored inside
    assert e.vector_count == 3 and e.dims == {DEFAULT: 768} and e.step == 1500
    assert torch.equal(e.vectors[DEFAULT], v)
    assert e.checksum == hashlib.sha256((tmp_path / "my-style.pt").read_bytes()).hexdigest()[:8]
    assert family_label(e) == "SD1.x"


def test_a1111_pt_from_old_torch_with_parameter_dict(tmp_path):
    v = vec(2, 1024, seed=1)
    params = torch.nn.ParameterDict({"*": torch.nn.Parameter(v.clone())})
    torch.save({"string_to_token": {"*": 265}, "string_to_param": params, "name": "x", "step": 7}, tmp_path / "old.pt")
    e = load_embedding(tmp_path / "old.pt")
    assert type(e.vectors[DEFAULT]) is torch.Tensor and torch.equal(e.vectors[DEFAULT], v)
    assert e.step == 7 and family_label(e) == "SD2.x"


@pytest.mark.parametrize("value, n", [(vec(1, 768)[0], 1), (vec(4, 768), 4)])
def test_diffusers_bin(tmp_path, value, n):
    torch.save({"<cat-toy>": value}, tmp_path / "learned_embeds.bin")
    e = load_embedding(tmp_path / "learned_embeds.bin")
    assert e.name == "learned_embeds" and e.vector_count == n and e.step is None
    assert torch.equal(e.vectors[DEFAULT], value.reshape(n, 768))


def test_a1111_safetensors_and_old_pt_with_emb_params(tmp_path):
    v = vec(5, 768)
    save_file({"emb_params": v.half()}, str(tmp_path / "st.safetensors"))
    torch.save({"emb_params": v, "name": "x", "step": 42}, tmp_path / "older.pt")
    st, old = load_embedding(tmp_path / "st.safetensors"), load_embedding(tmp_path / "older.pt")
    assert st.vectors[DEFAULT].dtype == torch.float32 and torch.equal(st.vectors[DEFAULT], v.half().float())
    assert torch.equal(old.vectors[DEFAULT], v) and old.step == 42 and st.step is None


def test_sdxl_safetensors(tmp_path):
    save_sdxl(tmp_path / "xl.safetensors", n=4)
    e = load_embedding(tmp_path / "xl.safetensors")
    assert e.vector_count == 4 and e.dims == {"clip_l": 768, "clip_g": 1280}
    assert torch.equal(e.vectors["clip_g"], vec(4, 1280, seed=1))
    assert family_label(e) == "SDXL"


def test_family_label_of_unusual_width(tmp_path):
    save_file({"emb_params": vec(1, 64)}, str(tmp_path / "tiny.safetensors"))
    assert family_label(load_embedding(tmp_path / "tiny.safetensors")) == "unknown (dim 64)"


# --- which models an embedding fits --------------------------------------------------------------

@pytest.fixture(scope="module")
def specs():
    layouts = {"sd1": ldm.SD15, "sd2": ldm.SD21, "sdxl": ldm.SDXL, "refiner": ldm.SDXL_REFINER,
               "tiny-sd1": ldm.TINY_SD1, "tiny-sd2": ldm.TINY_SD2, "tiny-sdxl": ldm.TINY_SDXL}
    return {k: detect(f"{k}.safetensors", layout.shapes()) for k, layout in layouts.items()}


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    folder = tmp_path_factory.mktemp("embeddings")
    save_a1111_pt(folder / "sd1-768.pt", vec(2, 768))
    save_file({"emb_params": vec(1, 1024)}, str(folder / "sd2-1024.safetensors"))
    save_sdxl(folder / "xl.safetensors")
    save_file({"emb_params": vec(1, 1280)}, str(folder / "g-only-1280.safetensors"))
    save_file({"emb_params": vec(1, 64)}, str(folder / "tiny-64.safetensors"))
    save_sdxl(folder / "tiny-xl.safetensors", dims=(64, 128))
    return EmbeddingDatabase(folder)


def test_expected_vectors_follow_the_model(specs):
    assert expected_vectors(specs["sd1"]) == {DEFAULT: 768}
    assert expected_vectors(specs["sd2"]) == {DEFAULT: 1024}
    assert expected_vectors(specs["sdxl"]) == {"clip_l": 768, "clip_g": 1280}
    assert expected_vectors(specs["refiner"]) == {"clip_g": 1280}
    assert expected_vectors(specs["tiny-sdxl"]) == {"clip_l": 64, "clip_g": 128}


@pytest.mark.parametrize("model, usable", [
    ("sd1", ["sd1-768"]),
    ("sd2", ["sd2-1024"]),
    ("sdxl", ["xl"]),
    ("refiner", ["xl"]),  # the refiner uses the clip_g half of SDXL embeddings
    ("tiny-sd1", ["tiny-64"]),
    ("tiny-sd2", ["tiny-64"]),
    ("tiny-sdxl", ["tiny-xl"]),
])
def test_for_model_splits_usable_and_skipped(zoo, specs, model, usable):
    ok, skipped = zoo.for_model(specs[model])
    assert sorted(ok) == usable
    assert set(skipped) == set(zoo.all) - set(ok)


@pytest.mark.parametrize("model, name, reason", [
    ("sd2", "sd1-768", "768-dim vectors, this SD2.x model needs 1024-dim vectors"),
    ("sd1", "sd2-1024", "1024-dim vectors, this SD1.x model needs 768-dim vectors"),
    ("sd1", "xl", "clip_l 768-dim + clip_g 1280-dim vectors, this SD1.x model needs 768-dim vectors"),
    ("sdxl", "sd1-768", "768-dim vectors, this SDXL model needs clip_l 768-dim + clip_g 1280-dim vectors"),
    ("refiner", "g-only-1280", "1280-dim vectors, this SDXL refiner model needs clip_g 1280-dim vectors"),
    ("tiny-sd1", "sd1-768", "768-dim vectors, this SD1.x model needs 64-dim vectors"),
])
def test_skip_reasons(zoo, specs, model, name, reason):
    assert zoo.for_model(specs[model])[1][name] == reason


# --- the folder ----------------------------------------------------------------------------------

def test_reload_picks_up_new_changed_and_deleted_files(tmp_path, monkeypatch):
    save_a1111_pt(tmp_path / "a.pt", vec(1, 768))
    db = EmbeddingDatabase(tmp_path)
    assert list(db.all) == ["a"] and db.errors == {}

    reads = []
    real_load = ti.load_embedding

    def counting_load(path, allow_unsafe_pickle=False):
        reads.append(path.name)
        return real_load(path, allow_unsafe_pickle)
    monkeypatch.setattr(ti, "load_embedding", counting_load)
    assert db.reload() is False and reads == []  # nothing changed: nothing read

    save_sdxl(tmp_path / "deep" / "er" / "b.safetensors")
    assert db.reload() is True
    assert sorted(db.all) == ["a", "b"] and reads == ["b.safetensors"]  # only the new file was read

    save_a1111_pt(tmp_path / "a.pt", vec(4, 768), step=9)
    os.utime(tmp_path / "a.pt", ns=(1, 1))  # a different mtime even on coarse-clock file systems
    assert db.reload() is True
    assert db.all["a"].vector_count == 4 and db.all["a"].step == 9

    (tmp_path / "deep" / "er" / "b.safetensors").unlink()
    assert db.reload() is True
    assert list(db.all) == ["a"]


def test_missing_folder_is_empty(tmp_path):
    db = EmbeddingDatabase(tmp_path / "nope")
    assert db.all == {} and db.errors == {} and db.reload() is False


def test_linked_folders_are_followed_without_looping(tmp_path):
    save_a1111_pt(tmp_path / "real" / "a.pt", vec(1, 768))
    (tmp_path / "emb").mkdir()
    (tmp_path / "emb" / "linked").symlink_to(tmp_path / "real")
    (tmp_path / "emb" / "loop").symlink_to(tmp_path / "emb")
    db = EmbeddingDatabase(tmp_path / "emb")
    assert list(db.all) == ["a"] and db.errors == {}


def test_name_collision_first_found_wins(tmp_path):
    save_a1111_pt(tmp_path / "style.pt", vec(1, 768))
    save_sdxl(tmp_path / "sub" / "style.safetensors")
    db = EmbeddingDatabase(tmp_path)
    assert db.all["style"].path == tmp_path / "style.pt"
    assert db.errors == {"sub/style.safetensors": "the name 'style' is already used by style.pt; "
                                                  "rename this file to use it"}


@pytest.mark.parametrize("name, content, reason", [
    ("empty.pt", b"", "the file is empty"),
    ("garbage.pt", b"not a pickle at all" * 10, "not a readable checkpoint"),
    ("garbage.safetensors", b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}", "not a valid .safetensors"),
    ("lora.safetensors", {"lora_unet_a.lora_down.weight": vec(4, 8), "lora_unet_a.lora_up.weight": vec(8, 4)},
     "It looks like a LoRA"),
    ("two.pt", {"string_to_param": {"*": vec(1, 768), "x": vec(1, 768)}}, "exactly one tensor"),
    ("ints.bin", {"<tok>": torch.arange(768)}, "holds torch.int64 values, not floats"),
    ("xl-mismatch.safetensors", {"clip_l": vec(2, 768), "clip_g": vec(3, 1280)}, "different numbers of vectors"),
])
def test_broken_files_become_errors(tmp_path, name, content, reason):
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif name.endswith(".safetensors"):
        save_file(content, str(path))
    else:
        torch.save(content, path)
    save_a1111_pt(tmp_path / "good.pt", vec(1, 768))
    db = EmbeddingDatabase(tmp_path)
    assert list(db.all) == ["good"]
    assert list(db.errors) == [name] and reason in db.errors[name]


class _CreatesMarker:
    """Unpickling this would create a file: a stand-in for any code a malicious pickle runs."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def test_malicious_pickle_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    folder = tmp_path / "embeddings"
    folder.mkdir()
    torch.save({"string_to_param": {"*": vec(1, 768)}, "payload": _CreatesMarker(marker)}, folder / "evil.pt")
    db = EmbeddingDatabase(folder)
    assert db.all == {}
    assert "refused" in db.errors["evil.pt"] and "--disable-safe-unpickle" in db.errors["evil.pt"]
    assert not marker.exists()
