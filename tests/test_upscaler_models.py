"""Model upscalers through spandrel: tiny random-weight models in the real key layouts, in A1111's folders."""
import os

import numpy as np
import pytest
import torch
from PIL import Image

from modules.postprocessing import upscalers as up
from tests.upscaler_fixtures import tiny_models, write_tiny_upscalers


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    return write_tiny_upscalers(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def models(models_dir):
    return up.discover(up.model_folders(models_dir)).by_name()


def _picture(w, h, seed=0):
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (h // 4 + 1, w // 4 + 1, 3), dtype=np.uint8)
    return Image.fromarray(small).resize((w, h), Image.BICUBIC)  # smooth content, like a photo


def test_discovery_lists_models_by_stem_with_their_scale(models_dir):
    found = up.discover(up.model_folders(models_dir))
    scales = {m.name: m.scale for m in found.models}
    assert scales == {"4x-Tiny": 4, "4x-TinySafe": 4, "RealESRGAN_x4plus_tiny": 4, "realesr-tiny-x2": 2,
                      "SwinIR_x2_tiny": 2}
    archs = {m.name: m.architecture for m in found.models}
    assert archs["4x-Tiny"] == archs["RealESRGAN_x4plus_tiny"] == "ESRGAN"
    assert archs["SwinIR_x2_tiny"] == "SwinIR"
    assert len(found.problems) == 1 and found.problems[0].startswith("random.safetensors: not a model architecture")


def test_unknown_file_is_reported_once(models_dir, caplog):
    library = up.UpscalerLibrary(up.model_folders(models_dir))
    with caplog.at_level("WARNING", logger=up.__name__):
        first = library.refresh()
        second = library.refresh()
    assert first.problems == second.problems and "random" not in second.by_name()
    logged = [r.getMessage() for r in caplog.records if "random.safetensors" in r.getMessage()]
    assert len(logged) == 1


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_malicious_pickle_is_refused_and_never_runs(tmp_path):
    folder = tmp_path / "ESRGAN"
    folder.mkdir()
    marker = tmp_path / "pwned"
    esrgan = tiny_models()[0]
    torch.save({"params_ema": esrgan, "payload": _RunsCode(marker)}, folder / "4x-evil.pth")
    found = up.discover([folder])
    assert found.models == []
    assert len(found.problems) == 1
    assert found.problems[0].startswith("4x-evil.pth: refused") and "--disable-safe-unpickle" in found.problems[0]
    assert not marker.exists()


def test_random_bytes_are_reported_not_fatal(tmp_path):
    folder = tmp_path / "ESRGAN"
    folder.mkdir()
    rng = np.random.default_rng(0)
    junk = [rng.integers(0, 256, 4000, dtype=np.uint8).tobytes() for _ in range(6)]
    junk += [b"\x80\x02.", b"\x80\x02t."]  # a pickle that ends before it made anything: IndexError in torch
    for i, data in enumerate(junk):
        (folder / f"junk{i}.pth").write_bytes(data)
    found = up.discover([folder])
    assert found.models == [] and len(found.problems) == len(junk)
    assert all(p.startswith(f"junk{i}.pth: ") for i, p in enumerate(found.problems))


def test_a1111_names_for_real_esrgan_releases_and_no_shadowing_of_builtins(tmp_path):
    esrgan, rrdb_new, compact, _ = tiny_models()
    (tmp_path / "RealESRGAN").mkdir()
    (tmp_path / "ESRGAN").mkdir()
    torch.save({"params_ema": rrdb_new}, tmp_path / "RealESRGAN" / "RealESRGAN_x4plus.pth")
    torch.save({"params": compact}, tmp_path / "RealESRGAN" / "realesr-general-x4v3.pth")
    torch.save(esrgan, tmp_path / "ESRGAN" / "RealESRGAN_x2plus.pth")  # A1111's ESRGAN lists it by its stem
    torch.save(esrgan, tmp_path / "ESRGAN" / "Lanczos.pth")
    torch.save(esrgan, tmp_path / "ESRGAN" / "Latent (bicubic).pth")
    upscalers = up.Upscalers([tmp_path / "ESRGAN", tmp_path / "RealESRGAN"],
                             realesrgan_folders=[tmp_path / "RealESRGAN"])
    assert upscalers.names() == ["None", "Lanczos", "Nearest", "RealESRGAN_x2plus", "R-ESRGAN General 4xV3",
                                 "R-ESRGAN 4x+"]
    assert sorted(m.name for m in upscalers.realesrgan_models()) == ["R-ESRGAN 4x+", "R-ESRGAN General 4xV3"]
    problems = upscalers.library.discovery.problems
    assert problems == ["Lanczos.pth: named like a built-in upscaler (Lanczos); rename it",
                        "Latent (bicubic).pth: named like a built-in upscaler (Latent (bicubic)); rename it"]


def test_resamplers_resize_as_named():
    upscalers = up.Upscalers([])
    two = Image.fromarray(np.array([[[255, 0, 0], [0, 0, 255]]], dtype=np.uint8))
    nearest = np.asarray(upscalers.upscale("Nearest", two, (8, 4)))
    assert len(np.unique(nearest.reshape(-1, 3), axis=0)) == 2
    lanczos = np.asarray(upscalers.upscale("Lanczos", two, (8, 4)))
    assert len(np.unique(lanczos.reshape(-1, 3), axis=0)) > 2
    assert np.array_equal(np.asarray(upscalers.upscale("None", two, (8, 4))), lanczos)  # A1111 resizes with Lanczos


def test_a_pass_too_large_for_memory_is_left_to_lanczos():
    assert up.plan_passes((10000, 10000), (10100, 10100), 4) == []  # 40000x40000 would be 19 GB of floats
    assert up.plan_passes((2048, 2048), (8192, 8192), 4) == [(2048, 2048)]


@pytest.mark.parametrize("name,scale,target,passes", [
    ("realesr-tiny-x2", 2, 2, 1),
    ("realesr-tiny-x2", 2, 3, 2),  # 2, 4, then down to 3 with Lanczos
    ("4x-Tiny", 4, 3, 1),  # 4, then down to 3
    ("4x-Tiny", 4, 4, 1),
    ("SwinIR_x2_tiny", 2, 4, 2),
])
def test_upscale_reaches_the_exact_target(models, name, scale, target, passes):
    model = models[name]
    picture = _picture(37, 29)
    assert len(up.plan_passes(picture.size, up.target_size(picture.size, target), scale)) == passes
    ticks = []
    result = up.ModelCache().upscale(model, picture, target, tile_size=16, tile_overlap=4,
                                     progress=lambda done, total: ticks.append((done, total)))
    assert result.size == (round(37 * target), round(29 * target)) and result.mode == "RGB"
    assert ticks and ticks[-1][0] == ticks[-1][1] == len(ticks)


def test_alpha_is_kept_and_scale_below_one_only_resizes(models):
    model = models["realesr-tiny-x2"]
    cache = up.ModelCache()
    rgba = _picture(20, 12).convert("RGBA")
    assert cache.upscale(model, rgba, 2).mode == "RGBA"
    assert up.plan_passes((20, 12), (10, 6), 2) == []
    assert cache.upscale(model, _picture(20, 12), 0.5).size == (10, 6)


def _interior_difference(desc, picture, tile, overlap, border):
    tensor = up._to_tensor(picture)
    whole = up.run_tiled(desc, tensor, tile_size=0)
    tiled = up.run_tiled(desc, tensor, tile_size=tile, tile_overlap=overlap)
    b = border * int(desc.scale)
    return (whole - tiled)[..., b:-b, b:-b].abs().mean().item()


# Per model: the blended tiles stay under it, tiles side by side (seams) do not. Random weights give each model its
# own output range (the tiny ESRGAN's is mostly clamped to 0), hence one tolerance each.
@pytest.mark.parametrize("name,tolerance", [("realesr-tiny-x2", 0.001), ("4x-Tiny", 0.0002),
                                            ("SwinIR_x2_tiny", 0.004)])
def test_tiled_output_matches_untiled_away_from_the_border(models, name, tolerance):
    desc = up.ModelCache().get(models[name])
    picture = _picture(64, 48, seed=3)
    blended = _interior_difference(desc, picture, tile=24, overlap=8, border=4)
    naive = _interior_difference(desc, picture, tile=24, overlap=0, border=4)  # tiles side by side: seams
    assert blended < tolerance < naive, (blended, naive)


def test_should_stop_interrupts_between_tiles(models):
    model = models["realesr-tiny-x2"]
    calls = []

    def should_stop():
        calls.append(1)
        return len(calls) > 2

    ticks = []
    with pytest.raises(up.UpscaleInterruptedError):
        up.ModelCache().upscale(model, _picture(64, 64), 2, tile_size=16, tile_overlap=4, should_stop=should_stop,
                                progress=lambda done, total: ticks.append(done))
    assert ticks == [1, 2]


def test_cache_keeps_one_model_and_releases_it(models):
    cache = up.ModelCache()
    first = cache.get(models["4x-Tiny"])
    assert cache.get(models["4x-Tiny"]) is first
    second = cache.get(models["realesr-tiny-x2"])
    assert second is not first and cache.loaded == models["realesr-tiny-x2"].path
    cache.release()
    assert cache.loaded is None
