"""Face restoration: random-weight GFPGAN, CodeFormer and RestoreFormer models in their real key layouts, in A1111's
folders, restoring scikit-image's astronaut (a photo that ships inside the scikit-image wheel).

GFPGAN's size is fixed by spandrel (the full 86M-parameter network, about 350 MB as a .pth): it is built once per
session. CodeFormer's transformer is shrunk (spandrel reads its sizes from the weights); its VQ autoencoder is fixed.
"""
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from modules.postprocessing import face_detection as fd
from modules.postprocessing import face_restoration as fr
from tests.face_fixtures import (
    EYES,
    FACE_REGION,
    SAMPLES,
    astronaut,
    codeformer_weights,
    facexlib_retinaface_weights,
    gfpgan_weights,
    half,
    restoreformer_weights,
)


@pytest.fixture(scope="session")
def models_dir(face_models_dir):
    return face_models_dir


@pytest.fixture(scope="session")
def restorers(models_dir):
    return fr.FaceRestorers(models_dir / "GFPGAN", models_dir / "Codeformer")


def test_discovery_uses_a1111_names_and_picks_the_first_file(restorers, models_dir):
    found = restorers.refresh()
    assert found.names() == ["CodeFormer", "GFPGAN", "RestoreFormer"]
    assert restorers.names() == found.names()
    assert found.restorers["GFPGAN"].path == models_dir / "GFPGAN" / "GFPGANv1.3.pth"
    assert found.restorers["CodeFormer"].path.name == "codeformer-v0.1.0.pth"
    assert found.restorers["RestoreFormer"].architecture == "RestoreFormer"
    assert found.detector is None  # the mobilenet detection file is not RetinaFace-ResNet50: OpenCV finds faces
    assert found.problems == ["4x-tiny-esrgan.pth: not a face restoration model but ESRGAN (SR); "
                              "face restorers are CodeFormer, GFPGAN, RestoreFormer"]


def test_safetensors_files_are_found_and_load(tmp_path):
    (tmp_path / "GFPGAN").mkdir()
    (tmp_path / "Codeformer" / "sub").mkdir(parents=True)
    torch.manual_seed(1)
    save_file(half(gfpgan_weights()), tmp_path / "GFPGAN" / "GFPGANv1.4.safetensors")
    save_file(half(codeformer_weights()), tmp_path / "Codeformer" / "sub" / "codeformer.safetensors")
    library = fr.FaceRestorers(tmp_path / "GFPGAN", tmp_path / "Codeformer")
    assert library.names() == ["CodeFormer", "GFPGAN"] and library.discovery.problems == []
    net = library.load("CodeFormer")
    assert next(net.parameters()).dtype == torch.float32  # fp16 weights, fp32 on the CPU


def test_problem_files_are_reported_once_with_their_name(tmp_path, caplog):
    gfpgan, codeformer = tmp_path / "GFPGAN", tmp_path / "Codeformer"
    gfpgan.mkdir()
    codeformer.mkdir()
    (codeformer / "codeformer.pth").write_bytes(os.urandom(2048))
    torch.save({"params_ema": restoreformer_weights()}, gfpgan / "RestoreFormer-cut.pth")
    with open(gfpgan / "RestoreFormer-cut.pth", "r+b") as file:  # a download that stopped half way
        file.truncate(file.seek(0, os.SEEK_END) // 2)
    save_file({"foo.weight": torch.randn(4, 4)}, gfpgan / "random.safetensors")
    torch.save({"params_ema": restoreformer_weights()}, codeformer / "RestoreFormer.pth")
    library = fr.FaceRestorers(gfpgan, codeformer)
    with caplog.at_level("WARNING", logger=fr.__name__):
        first = library.refresh()
        second = library.refresh()
    assert first.problems == second.problems and first.names() == []
    problems = dict(p.split(": ", 1) for p in first.problems)
    assert problems["codeformer.pth"].startswith("not a readable checkpoint (corrupt or truncated?)")
    assert problems["RestoreFormer-cut.pth"].startswith("not a readable checkpoint (corrupt or truncated?)")
    assert problems["random.safetensors"].startswith("not a model architecture spandrel recognises")
    assert problems["RestoreFormer.pth"] == f"a RestoreFormer model, which belongs in {gfpgan}"
    logged = [r.getMessage() for r in caplog.records]
    assert len(logged) == 4 and all(any(name in line for line in logged) for name in problems)


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_malicious_pickle_is_refused_and_never_runs(tmp_path):
    (tmp_path / "GFPGAN").mkdir()
    marker = tmp_path / "pwned"
    torch.save({"params_ema": restoreformer_weights(), "payload": _RunsCode(marker)},
               tmp_path / "GFPGAN" / "GFPGANv1.4.pth")
    found = fr.FaceRestorers(tmp_path / "GFPGAN", tmp_path / "Codeformer").refresh()
    assert found.names() == [] and len(found.problems) == 1
    assert found.problems[0].startswith("GFPGANv1.4.pth: refused") and "--disable-safe-unpickle" in found.problems[0]
    assert not marker.exists()


def test_missing_restorer_says_where_to_put_the_file(tmp_path):
    library = fr.FaceRestorers(tmp_path / "GFPGAN", tmp_path / "Codeformer")
    assert library.names() == []
    with pytest.raises(fr.RestorerError, match="no GFPGAN model: put GFPGANv1.4.pth"):
        library.restore("GFPGAN", astronaut())
    with pytest.raises(fr.RestorerError, match=f"in {tmp_path / 'Codeformer'}"):
        library.restore("CodeFormer", astronaut())


def test_opencv_finds_the_astronauts_face_and_eyes():
    faces = fd.HaarFaceDetector().detect(np.asarray(astronaut()))
    assert len(faces) == 1
    left, top, right, bottom = faces[0].box
    assert FACE_REGION[0] <= left < right <= FACE_REGION[2] and FACE_REGION[1] <= top < bottom <= FACE_REGION[3]
    assert np.abs(faces[0].landmarks[:2] - np.array(EYES)).max() < 6
    nose, mouth = faces[0].landmarks[2], faces[0].landmarks[3:].mean(axis=0)
    assert EYES[0][0] < nose[0] < EYES[1][0] and EYES[0][1] < nose[1] < mouth[1] < bottom


def test_small_pictures_are_scaled_up_for_detection_and_landmarks_scaled_back():
    small = astronaut().resize((200, 200), Image.LANCZOS)
    faces = fd.HaarFaceDetector().detect(np.asarray(small))
    assert len(faces) == 1
    assert np.abs(faces[0].landmarks[:2] - np.array(EYES) * 200 / 512).max() < 4


def test_aligned_face_is_ffhq_aligned_and_pastes_back_in_place():
    rgb = np.asarray(astronaut())
    face = fd.HaarFaceDetector().detect(rgb)[0]
    crop, to_aligned = fr.align_face(rgb, face)
    assert crop.shape == (512, 512, 3)
    assert np.abs(fd.apply_transform(to_aligned, face.landmarks) - fd.FFHQ_LANDMARKS_512).max() < 1
    canvas = rgb.astype(np.float32)
    fr.paste_face(canvas, crop.astype(np.float32), to_aligned, fr.feather_mask())
    left, top, right, bottom = FACE_REGION
    assert np.abs(canvas - rgb)[top:bottom, left:right].mean() < 2  # only resampling blur: it lands where it was


def _changed(before: Image.Image, after: Image.Image) -> np.ndarray:
    return np.abs(np.asarray(before, dtype=np.int16) - np.asarray(after, dtype=np.int16)).max(axis=2) > 0


def _assert_only_the_face_changed(before, after):
    changed = _changed(before, after)
    left, top, right, bottom = FACE_REGION
    assert changed[top + 20:bottom - 20, left + 20:right - 20].mean() > 0.9
    ys, xs = np.nonzero(changed)
    # the aligned square, mapped back, spans about 1.9 face widths around the face
    assert xs.min() > 90 and xs.max() < 360 and ys.min() > 0 and ys.max() < 260


def test_gfpgan_restores_the_face_and_nothing_else(restorers):
    picture = astronaut()
    restored = restorers.restore("GFPGAN", picture)
    assert restored.size == picture.size and restored.mode == "RGB"
    _assert_only_the_face_changed(picture, restored)
    assert restorers.loaded.name == "GFPGANv1.3.pth"


@pytest.mark.slow
def test_codeformer_restores_the_face_with_its_weight(restorers):
    picture = astronaut()
    restored = restorers.restore("CodeFormer", picture, codeformer_weight=0.7)
    _assert_only_the_face_changed(picture, restored)


@pytest.mark.parametrize("options", [{"codeformer_weight": 1.5}, {"visibility": -0.1},
                                     {"codeformer_weight": float("nan")}])
def test_out_of_range_settings_are_refused(restorers, options):
    with pytest.raises(fr.RestorerError, match="must be a number from 0 to 1"):
        restorers.restore("CodeFormer", astronaut(), **options)


def test_visibility_mixes_with_the_original_and_alpha_is_kept(restorers):
    picture = astronaut().convert("RGBA")
    picture.putalpha(Image.new("L", picture.size, 200))
    full = restorers.restore("RestoreFormer", picture)
    half = restorers.restore("RestoreFormer", picture, visibility=0.5)
    assert full.mode == half.mode == "RGBA" and np.all(np.asarray(half)[:, :, 3] == 200)
    original = np.asarray(picture.convert("RGB"), dtype=np.float32)
    expected = (original + np.asarray(full.convert("RGB"), dtype=np.float32)) / 2
    assert np.abs(np.asarray(half.convert("RGB"), dtype=np.float32) - expected).max() <= 1.0
    assert restorers.restore("RestoreFormer", picture, visibility=0) == picture


def test_a_picture_without_a_face_comes_back_unchanged(restorers, caplog):
    cat = Image.open(SAMPLES / "chelsea.png").convert("RGB")
    with caplog.at_level("INFO", logger=fr.__name__):
        result = restorers.restore("GFPGAN", cat)
    assert np.array_equal(np.asarray(result), np.asarray(cat))
    assert any("found no face in the 451x300 picture" in r.getMessage() for r in caplog.records)


def test_should_stop_is_asked_between_faces(restorers):
    face = astronaut()
    two = Image.new("RGB", (1024, 512))
    two.paste(face, (0, 0))
    two.paste(face.transpose(Image.FLIP_LEFT_RIGHT), (512, 0))
    assert len(restorers.detector().detect(np.asarray(two))) == 2
    asked = []

    def should_stop():
        asked.append(1)
        return len(asked) > 1

    with pytest.raises(fr.RestoreInterruptedError):
        restorers.restore("RestoreFormer", two, should_stop=should_stop)
    assert len(asked) == 2


def test_one_restorer_stays_loaded(restorers):
    first = restorers.load("RestoreFormer")
    assert restorers.load("RestoreFormer") is first
    restorers.load("GFPGAN")
    assert restorers.loaded.name == "GFPGANv1.3.pth"
    restorers.release()
    assert restorers.loaded is None


# ---- RetinaFace-ResNet50 from facexlib's detection_Resnet50_Final.pth ----

def _save_retinaface(path: Path, with_module_prefix: bool) -> dict:
    torch.manual_seed(2)
    sd = facexlib_retinaface_weights()
    torch.save({f"module.{k}" if with_module_prefix else k: v for k, v in sd.items()}, path)
    return sd


@pytest.mark.parametrize("with_module_prefix", [False, True])
def test_retinaface_file_in_facexlibs_layout_is_the_detector(tmp_path, with_module_prefix):
    (tmp_path / "GFPGAN").mkdir()
    _save_retinaface(tmp_path / "GFPGAN" / "detection_Resnet50_Final.pth", with_module_prefix)
    library = fr.FaceRestorers(tmp_path / "GFPGAN", tmp_path / "Codeformer")
    found = library.refresh()
    assert found.detector == tmp_path / "GFPGAN" / "detection_Resnet50_Final.pth" and found.problems == []
    assert isinstance(library.detector(), fd.RetinaFaceDetector)


def test_retinaface_with_a_wrong_layout_is_refused(tmp_path):
    sd = facexlib_retinaface_weights()
    del sd["fpn.merge1.0.weight"]
    torch.save(sd, tmp_path / "detection_Resnet50_Final.pth")
    with pytest.raises(fd.FaceDetectorError, match="detection_Resnet50_Final.pth: .*'fpn.merge1.0.weight'"):
        fd.read_retinaface_weights(tmp_path / "detection_Resnet50_Final.pth")


def test_retinaface_decodes_anchors_and_landmarks_into_picture_pixels():
    """Heads with zero weights give their biases everywhere: only the 256-pixel anchors of the coarsest level
    score as faces, with no box offset and known landmark offsets. Every face found must then be such an anchor,
    mapped back from the detection scale (a 320-pixel picture is detected at 640)."""
    sd = facexlib_retinaface_weights()
    for key in [k for k in sd if "Head." in k and k.endswith(".weight")]:
        sd[key] = torch.zeros_like(sd[key])
    for level in range(3):
        sd[f"ClassHead.{level}.conv1x1.bias"] = torch.tensor([6.0, -6.0, 6.0, -6.0])
    sd["ClassHead.2.conv1x1.bias"] = torch.tensor([-6.0, 6.0, 6.0, -6.0])  # (background, face) per anchor size
    offsets = torch.tensor([[-1.0, -0.4], [1.0, -0.4], [0.0, 0.2], [-0.6, 0.8], [0.6, 0.8]])
    sd["LandmarkHead.2.conv1x1.bias"] = torch.cat([offsets.reshape(-1), torch.zeros(10)])
    faces = fd.RetinaFaceDetector(sd).detect(np.zeros((320, 320, 3), np.uint8))
    assert faces
    for face in faces:
        left, top, right, bottom = face.box
        assert right - left == pytest.approx(128) and bottom - top == pytest.approx(128)
        centre = np.array([(left + right) / 2, (top + bottom) / 2])
        assert np.allclose((centre * 2 / 32 - 0.5) % 1, 0, atol=1e-4)  # on the stride-32 grid at detection scale
        assert np.allclose(face.landmarks, centre + offsets.numpy() * 0.1 * 128, atol=1e-3)

