"""Face restoration where users ask for it: "Restore faces" of txt2img/img2img (the request field or the setting),
Extras' GFPGAN and CodeFormer visibilities, and the API's face-restorers list and answers."""
import json
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from modules.generation import Img2ImgRequest, Txt2ImgRequest, process_img2img, process_txt2img
from modules.generation.extras import ExtrasRequest, PostprocessError, run_extras
from modules.options import Options
from modules.postprocessing.face_restoration import FaceRestorers, RestorerError
from tests.face_fixtures import FACE_REGION, astronaut
from tests.helpers import job_context, serving_checkpoints
from tests.test_api import b64_png, call, picture


def face_flags(models) -> list[str]:
    return ["--gfpgan-models-path", str(models / "GFPGAN"), "--codeformer-models-path", str(models / "Codeformer")]


@pytest.fixture(scope="module")
def services(make_services, tiny_dir, face_models_dir):
    return make_services(Options(randn_source="CPU"), "--ckpt-dir", str(tiny_dir), *face_flags(face_models_dir))


class RecordingRestorers:
    """The real restorers, with each restore call recorded (name, picture size, CodeFormer weight)."""

    def __init__(self, real: FaceRestorers):
        self.real = real
        self.calls: list[tuple] = []

    def model(self, name):
        return self.real.model(name)

    def restore(self, name, picture, **kwargs):
        self.calls.append((name, picture.size, kwargs["codeformer_weight"]))
        return self.real.restore(name, picture, **kwargs)

    def release(self):
        self.real.release()


def small(**kw) -> Txt2ImgRequest:
    return Txt2ImgRequest(**{**dict(prompt="a face", width=32, height=32, steps=2, seed=5, sampler_name="Euler",
                                    batch_size=2, save_images=False), **kw})


def recording_context(services, tmp_path, **options):
    ctx = job_context(services, tmp_path)
    ctx = replace(ctx, options=replace(ctx.options, **options),
                  face_restorers=RecordingRestorers(services.context.face_restorers))
    return ctx


def test_restore_faces_restores_every_picture_and_names_the_model(services, tmp_path):
    ctx = recording_context(services, tmp_path, face_restoration_model="RestoreFormer", code_former_weight=0.3)
    res = process_txt2img(small(restore_faces=True), ctx)
    assert ctx.face_restorers.calls == [("RestoreFormer", (32, 32), 0.3)] * 2
    assert all("Face restoration: RestoreFormer" in text for text in res.infotexts)
    # A1111's place for the key: after the seed, before the size
    assert "Seed: 5, Face restoration: RestoreFormer, Size: 32x32" in res.infotexts[0]


def test_the_setting_decides_unless_the_request_says(services, tmp_path):
    ctx = recording_context(services, tmp_path, face_restoration=True, face_restoration_model="RestoreFormer")
    process_txt2img(small(batch_size=1), ctx)
    assert len(ctx.face_restorers.calls) == 1
    res = process_txt2img(small(batch_size=1, restore_faces=False), ctx)
    assert len(ctx.face_restorers.calls) == 1 and "Face restoration" not in res.infotexts[0]
    src = Image.new("RGB", (32, 32), (90, 120, 150))
    img2img = process_img2img(Img2ImgRequest(prompt="a face", init_images=[src], width=32, height=32, steps=2,
                                             denoising_strength=0.5, save_images=False), ctx)
    assert len(ctx.face_restorers.calls) == 2 and "Face restoration: RestoreFormer" in img2img.infotexts[0]


def test_without_the_model_pictures_come_with_a_warning(services, tmp_path):
    ctx = replace(job_context(services, tmp_path),
                  face_restorers=FaceRestorers(tmp_path / "GFPGAN", tmp_path / "Codeformer"))
    res = process_txt2img(small(restore_faces=True), ctx)
    assert len(res.images) == 2 and "Face restoration" not in res.infotexts[0]  # not pretended
    folder = tmp_path / "Codeformer"
    assert res.warnings == [f"restore_faces: no CodeFormer model: put codeformer-v0.1.0.pth in {folder}; faces were "
                            f"not restored"]


class FailingRestorers(RecordingRestorers):
    def restore(self, name, picture, **kwargs):
        raise RestorerError("RestoreFormer (RestoreFormer.pth) failed on a face: RuntimeError: out of memory")


def test_a_failing_restorer_keeps_the_pictures_and_says_so(services, tmp_path):
    ctx = recording_context(services, tmp_path, face_restoration_model="RestoreFormer")
    ctx = replace(ctx, face_restorers=FailingRestorers(services.context.face_restorers))
    res = process_txt2img(small(restore_faces=True, n_iter=2), ctx)
    assert len(res.images) == 4 and not any("Face restoration" in text for text in res.infotexts)
    assert res.warnings == ["restore_faces: RestoreFormer (RestoreFormer.pth) failed on a face: RuntimeError: out of "
                            "memory; faces were not restored"]  # once: left off for the rest of the job


def test_detection_never_scales_a_picture_to_gigapixels():
    from modules.postprocessing import face_detection as fd
    scale = fd._detection_scale(1, 10000)  # A1111 would scale its short side to 640: 6.4 gigapixels
    assert 10000 * scale * scale <= fd.DETECTION_MAX_PIXELS
    assert fd._detection_scale(320, 480) == 2  # small pictures are still scaled up to a 640 short side


def far_from_the_face(image: Image.Image) -> np.ndarray:
    array = np.asarray(image.convert("RGB")).copy()
    left, top, right, bottom = FACE_REGION
    array[max(0, top - 60):bottom + 60, max(0, left - 60):right + 60] = 0
    return array


def test_extras_restores_the_face_after_upscaling(services, tmp_path):
    source = astronaut()
    req = ExtrasRequest(upscaling_resize=1, upscaler_1="None", gfpgan_visibility=1, save=False)
    out, texts, _ = run_extras([source], req, tmp_path, upscalers=services.context.upscalers,
                               face_restorers=services.context.face_restorers)
    left, top, right, bottom = FACE_REGION
    face_before = np.asarray(source)[top:bottom, left:right].astype(int)
    face_after = np.asarray(out[0])[top:bottom, left:right].astype(int)
    assert np.abs(face_after - face_before).mean() > 5  # random weights: changed, not beautiful
    assert np.array_equal(far_from_the_face(out[0]), far_from_the_face(source))
    assert "GFPGAN visibility: 1" in texts[0] and "CodeFormer" not in texts[0]
    with pytest.raises(PostprocessError, match="codeformer_visibility: 1.5 is out of range"):
        run_extras([source], ExtrasRequest(codeformer_visibility=1.5), tmp_path)


@pytest.fixture(scope="module")
def api_url(tmp_path_factory, tiny_dir, face_models_dir):
    data = tmp_path_factory.mktemp("api-faces")
    with serving_checkpoints(data, tiny_dir, "--api", *face_flags(face_models_dir)) as server:
        yield server.url


def test_api_lists_restorers_and_answers_what_the_job_did(api_url, face_models_dir):
    restorers = call(api_url + "/sdapi/v1/face-restorers")[1]
    assert [(r["name"], r["cmd_dir"]) for r in restorers] == [
        ("CodeFormer", str(face_models_dir / "Codeformer")), ("GFPGAN", str(face_models_dir / "GFPGAN")),
        ("RestoreFormer", str(face_models_dir / "GFPGAN"))]
    status, answer, _ = call(api_url + "/sdapi/v1/txt2img", {
        "prompt": "a face", "width": 32, "height": 32, "steps": 2, "restore_faces": True,
        "override_settings": {"face_restoration_model": "RestoreFormer"}})
    assert status == 200, answer
    info = json.loads(answer["info"])
    assert info["restore_faces"] is True and info["face_restoration_model"] == "RestoreFormer"
    assert not any("face restoration" in w for w in info.get("warnings", []))
    status, answer, _ = call(api_url + "/sdapi/v1/txt2img", {"prompt": "a face", "width": 32, "height": 32,
                                                             "steps": 2})
    assert json.loads(answer["info"])["restore_faces"] is False


def test_api_extras_restores_faces(api_url):
    status, answer, _ = call(api_url + "/sdapi/v1/extra-single-image", {
        "image": b64_png(astronaut().resize((256, 256))), "upscaling_resize": 2, "upscaler_1": "Lanczos",
        "gfpgan_visibility": 0.5})
    assert status == 200, answer
    assert picture(answer["image"]).size == (512, 512) and "GFPGAN visibility: 0.5" in answer["html_info"]
