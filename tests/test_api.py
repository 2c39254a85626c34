"""The /sdapi/v1 HTTP API on the real server: A1111's routes and answers, auth, CORS, --nowebui, and the
page's ui-config.json."""
import base64
import io
import json
import threading
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from tests.helpers import component, serving_checkpoints

pytestmark = pytest.mark.server

AUTH = "Basic " + base64.b64encode(b"api:s3cret").decode()


@contextmanager
def api_server_on(data: Path, tiny_dir: Path, *flags: str):
    """The server over `data` with tiny-sd1 loaded; yields its URL."""
    with serving_checkpoints(data, tiny_dir, *flags) as server:
        yield server.url


def call(url: str, body=None, method: str | None = None, headers: dict | None = None, auth: bool = True):
    """(status, parsed JSON or text, headers) of one request."""
    hdrs = {"Content-Type": "application/json", **(headers or {})}
    if auth:
        hdrs["Authorization"] = AUTH
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers=hdrs, method=method or ("POST" if data else "GET"))
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            raw, status, rh = r.read(), r.status, r.headers
    except urllib.error.HTTPError as e:
        raw, status, rh = e.read(), e.code, e.headers
    try:
        return status, json.loads(raw), rh
    except ValueError:
        return status, raw.decode(errors="replace"), rh


def b64_png(image: Image.Image, text: str | None = None) -> str:
    buf = io.BytesIO()
    info = None
    if text:
        info = PngImagePlugin.PngInfo()
        info.add_text("parameters", text)
    image.save(buf, format="PNG", pnginfo=info)
    return base64.b64encode(buf.getvalue()).decode()


def picture(b64: str) -> Image.Image:
    im = Image.open(io.BytesIO(base64.b64decode(b64)))
    im.load()
    return im


@pytest.fixture(scope="module")
def api_server(tmp_path_factory, tiny_dir):
    data = tmp_path_factory.mktemp("api")
    (data / "ui-config.json").write_text(json.dumps({
        "txt2img/Sampling steps/maximum": 300, "txt2img/Sampling steps/value": 250,
        "txt2img/CFG Scale/value": "strong"}))
    with api_server_on(data, tiny_dir, "--api", "--api-auth", "api:s3cret",
                       "--cors-allow-origins", "http://localhost:3000") as url:
        yield url, data


def test_txt2img_answers_like_a1111_and_reproduces_its_seed(api_server):
    url, data = api_server
    body = {"prompt": "a red circle", "negative_prompt": "blue", "steps": 3, "width": 64, "height": 64,
            "batch_size": 2, "seed": 1234, "sampler_name": "Euler a", "cfg_scale": 5,
            "alwayson_scripts": {}, "script_args": []}  # empty fields for extensions we lack: nothing to warn about
    status, answer, _ = call(url + "/sdapi/v1/txt2img", body)
    assert status == 200, answer
    info = json.loads(answer["info"])
    assert info["all_seeds"] == [1234, 1235] and info["seed"] == 1234 and info["warnings"] == []
    assert len(answer["images"]) == 2  # no grid: A1111 returns one only when it saves it (save_images)
    first = picture(answer["images"][0])
    assert first.size == (64, 64)
    assert "Seed: 1234" in first.info["parameters"] and "Sampler: Euler a" in first.info["parameters"]
    assert info["infotexts"][0] == first.info["parameters"]
    assert answer["parameters"]["prompt"] == "a red circle"
    assert not (data / "outputs" / "txt2img-images").exists()  # the API does not save unless asked

    again = call(url + "/sdapi/v1/txt2img", {**body, "batch_size": 1, "seed": 1235})[1]
    alone = np.asarray(picture(again["images"][0]), dtype=int)
    in_batch = np.asarray(picture(answer["images"][1]), dtype=int)
    assert np.abs(alone - in_batch).max() <= 2  # batched maths may round the last bit differently


def test_bad_requests_get_clear_answers_and_the_server_goes_on(api_server):
    url, _ = api_server
    status, answer, _ = call(url + "/sdapi/v1/txt2img", {"prompt": "x", "sampler_name": "Nonsense", "steps": 1,
                                                         "width": 64, "height": 64})
    assert status == 422 and "Nonsense" in answer["detail"]
    status, answer, _ = call(url + "/sdapi/v1/txt2img", {"prompt": "x", "width": 65, "height": 64, "steps": 1})
    assert status == 422 and "multiples of 8" in answer["detail"]
    status, answer, _ = call(url + "/sdapi/v1/txt2img", {"steps": "many"})
    assert status == 422  # pydantic's validation answer
    status, answer, _ = call(url + "/sdapi/v1/img2img", {"init_images": ["bm90IGEgcGljdHVyZQ=="], "steps": 1})
    assert status == 422 and "init_images[0]" in answer["detail"]
    status, answer, _ = call(url + "/sdapi/v1/img2img", {"init_images": ["https://example.com/a.png"]})
    assert status == 422 and "not fetched" in answer["detail"]
    status, answer, _ = call(url + "/sdapi/v1/options", {"no_such_setting": 1})
    assert status == 422 and "no_such_setting" in answer["detail"]
    status, answer, _ = call(url + "/sdapi/v1/options", {"sd_model_checkpoint": "missing.safetensors"})
    assert status == 422 and "missing" in answer["detail"]
    assert call(url + "/sdapi/v1/samplers")[0] == 200


def test_img2img_with_mask_keeps_unmasked_pixels(api_server):
    url, _ = api_server
    init = Image.new("RGB", (64, 64), (200, 30, 30))
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    status, answer, _ = call(url + "/sdapi/v1/img2img", {
        "init_images": ["data:image/png;base64," + b64_png(init)], "mask": b64_png(mask), "mask_blur": 0,
        "denoising_strength": 1.0, "steps": 2, "width": 64, "height": 64, "seed": 7, "include_init_images": True})
    assert status == 200, answer
    out = picture(answer["images"][0]).convert("RGB")
    assert out.getpixel((2, 2)) == (200, 30, 30)  # outside the mask: the input, exactly
    assert out.getpixel((32, 32)) != (200, 30, 30)
    assert answer["parameters"]["init_images"]


def test_extras_png_info_and_lists(api_server):
    url, _ = api_server
    src = b64_png(Image.new("RGB", (20, 10), (0, 128, 255)), "a cat\nSteps: 5, Sampler: Euler, Seed: 9, Size: 20x10")
    status, answer, _ = call(url + "/sdapi/v1/extra-single-image",
                             {"image": src, "upscaling_resize": 2, "upscaler_1": "Lanczos"})
    assert status == 200, answer
    big = picture(answer["image"])
    assert big.size == (40, 20) and "Steps: 5" in big.info["parameters"]
    status, answer, _ = call(url + "/sdapi/v1/extra-batch-images",
                             {"imageList": [{"data": src, "name": "a.png"}], "resize_mode": 1,
                              "upscaling_resize_w": 30, "upscaling_resize_h": 30, "upscaler_1": "Nearest"})
    assert status == 200 and picture(answer["images"][0]).size == (30, 30)
    status, answer, _ = call(url + "/sdapi/v1/extra-single-image", {"image": src, "upscaler_1": "ESRGAN_4x"})
    assert status == 422 and "ESRGAN_4x" in answer["detail"]

    status, answer, _ = call(url + "/sdapi/v1/png-info", {"image": src})
    assert str(answer["parameters"]["Seed"]) == "9" and answer["info"].startswith("a cat")

    assert "Euler a" in [s["name"] for s in call(url + "/sdapi/v1/samplers")[1]]
    assert "Karras" in [s["label"] for s in call(url + "/sdapi/v1/schedulers")[1]]
    models = call(url + "/sdapi/v1/sd-models")[1]
    assert any(m["title"].startswith("tiny-sd1.safetensors [") for m in models)
    assert {"loaded", "skipped"} <= set(call(url + "/sdapi/v1/embeddings")[1])
    assert [lora["name"] for lora in call(url + "/sdapi/v1/loras")[1]] == ["demo-night"]  # the built-in one
    assert call(url + "/sdapi/v1/cmd-flags")[1]["api"] is True
    progress = call(url + "/sdapi/v1/progress")[1]
    assert progress["progress"] == 0 and progress["state"]["job_count"] == 0


def test_options_round_trip_and_override_settings(api_server):
    url, data = api_server
    opts = call(url + "/sdapi/v1/options")[1]
    assert opts["samples_format"] == "png" and opts["sd_model_checkpoint"].startswith("tiny-sd1")
    assert call(url + "/sdapi/v1/options", {"eta_noise_seed_delta": 31337})[0] == 200
    assert call(url + "/sdapi/v1/options")[1]["eta_noise_seed_delta"] == 31337
    assert json.loads((data / "config.json").read_text())["eta_noise_seed_delta"] == 31337
    call(url + "/sdapi/v1/options", {"eta_noise_seed_delta": 0})

    body = {"prompt": "x", "steps": 2, "width": 64, "height": 64, "seed": 3, "sampler_name": "Euler a"}
    answer = call(url + "/sdapi/v1/txt2img", {**body, "override_settings": {"eta_noise_seed_delta": 5}})[1]
    assert "ENSD: 5" in json.loads(answer["info"])["infotexts"][0]
    assert call(url + "/sdapi/v1/options")[1]["eta_noise_seed_delta"] == 0  # only for that job
    status, answer, _ = call(url + "/sdapi/v1/txt2img", {**body, "override_settings": {"samples_format": 4}})
    assert status == 422 and "samples_format" in answer["detail"]


def _images_and_info(answer: dict) -> tuple[list[Image.Image], dict]:
    return [picture(b64) for b64 in answer["images"]], json.loads(answer["info"])


@pytest.mark.parametrize("mode", ["txt2img", "img2img"])
def test_a_batch_comes_back_without_its_grid_unless_the_grid_is_saved(api_server, mode):
    url, data = api_server
    body = {"prompt": "a red circle", "steps": 2, "width": 64, "height": 64, "batch_size": 2, "seed": 50,
            "sampler_name": "Euler a"}
    if mode == "img2img":
        body["init_images"] = [b64_png(Image.new("RGB", (64, 64), (200, 30, 30)))]
    status, answer, _ = call(f"{url}/sdapi/v1/{mode}", body)
    assert status == 200, answer
    pictures, info = _images_and_info(answer)
    assert [p.size for p in pictures] == [(64, 64)] * 2 and info["index_of_first_image"] == 0
    assert info["all_seeds"] == [50, 51]
    for p, seed, text in zip(pictures, info["all_seeds"], info["infotexts"], strict=True):
        assert p.info["parameters"] == text and f"Seed: {seed}," in text
    assert not (data / "outputs" / f"{mode}-grids").exists()

    status, answer, _ = call(f"{url}/sdapi/v1/{mode}", {**body, "save_images": True})
    assert status == 200, answer
    pictures, info = _images_and_info(answer)
    assert len(pictures) == 3 and pictures[0].size != (64, 64)  # the saved grid first, as A1111 sends it
    assert info["index_of_first_image"] == 1 and info["all_seeds"] == [50, 51]  # seeds of the batch, after the grid
    assert [p.info["parameters"] for p in pictures] == info["infotexts"]
    assert list((data / "outputs" / f"{mode}-grids").rglob("*.png"))


def test_a1111_fields_we_do_not_implement_are_reported_not_pretended(api_server):
    url, data = api_server
    body = {"prompt": "x", "steps": 1, "width": 64, "height": 64, "seed": 5}
    init = [b64_png(Image.new("RGB", (64, 64), (0, 90, 200)))]
    left_alone = {"alwayson_scripts": {}, "script_args": [], "restore_faces": False, "hr_checkpoint_name": None,
                  "script_name": "", "hr_additional_modules": ["Use same choices"], "s_min_uncond": 0}
    status, answer, _ = call(url + "/sdapi/v1/txt2img", {**body, **left_alone})
    assert status == 200 and json.loads(answer["info"])["warnings"] == []

    # restore_faces without a model file: generated, with a warning (test_face_restoration_wiring.py)
    unimplemented = {"restore_faces": True, "hr_additional_modules": ["clip_l.safetensors"], "firstphase_width": 512}
    status, answer, _ = call(url + "/sdapi/v1/txt2img", {**body, **unimplemented})
    assert status == 200 and len(answer["images"]) == 1  # still answered...
    warnings = json.loads(answer["info"])["warnings"]
    for name in unimplemented:  # ...but saying what was not applied
        assert sum(w.startswith(name + ":") for w in warnings) == 1, warnings
    assert "firstphase_width: not applied" in (data / "server.log").read_text()

    status, answer, _ = call(url + "/sdapi/v1/img2img", {**body, "init_images": init, "mask_round": False,
                                                         "restore_faces": True, "mask_blur_x": 9})
    assert status == 200, answer
    warnings = json.loads(answer["info"])["warnings"]
    assert sorted(w.split(":")[0] for w in warnings) == ["mask_blur_x", "mask_round", "restore_faces"]

    # scripts and always-on scripts nobody installed: refused with A1111's messages, not run without them
    for mode, extra in (("txt2img", {}), ("img2img", {"init_images": init})):
        status, answer, _ = call(f"{url}/sdapi/v1/{mode}", {**body, **extra, "script_name": "No such script"})
        assert status == 422 and answer["detail"] == "Script 'No such script' not found"
        status, answer, _ = call(f"{url}/sdapi/v1/{mode}", {**body, **extra,
                                                            "alwayson_scripts": {"adetailer": {"args": [{}]}}})
        assert status == 422 and answer["detail"] == "always on script adetailer not found"


def test_an_options_change_waits_for_the_running_job(api_server):
    url, _ = api_server
    body = {"prompt": "x", "steps": 60, "width": 64, "height": 64, "seed": 3, "sampler_name": "Euler a"}
    finished: dict = {}
    job = threading.Thread(target=lambda: finished.update(answer=call(url + "/sdapi/v1/txt2img", body)[1]))
    job.start()
    try:
        def sampling() -> bool:
            state = call(url + "/sdapi/v1/progress")[1]["state"]
            return state["job_count"] > 0 and state["sampling_step"] > 0
        while not sampling():
            assert job.is_alive(), "the job ended before it was seen running"
            time.sleep(0.05)
        assert call(url + "/sdapi/v1/options", {"eta_noise_seed_delta": 777})[0] == 200
        assert call(url + "/sdapi/v1/progress")[1]["state"]["job_count"] == 0  # the change came after the job
        job.join()
        assert "ENSD" not in json.loads(finished["answer"]["info"])["infotexts"][0]  # made with the old options
        answer = call(url + "/sdapi/v1/txt2img", {**body, "steps": 2})[1]
        assert "ENSD: 777" in json.loads(answer["info"])["infotexts"][0]  # the next job has the new ones
    finally:
        job.join()
        call(url + "/sdapi/v1/options", {"eta_noise_seed_delta": 0})


def test_api_needs_its_password_and_cors_lets_listed_origins_in(api_server):
    url, _ = api_server
    assert call(url + "/sdapi/v1/options", auth=False)[0] == 401
    wrong = {"Authorization": "Basic " + base64.b64encode(b"api:guess").decode()}
    assert call(url + "/sdapi/v1/options", auth=False, headers=wrong)[0] == 401

    preflight = {"Origin": "http://localhost:3000", "Access-Control-Request-Method": "POST"}
    status, _, headers = call(url + "/sdapi/v1/txt2img", method="OPTIONS", headers=preflight, auth=False)
    assert status == 200 and headers["access-control-allow-origin"] == "http://localhost:3000"
    stranger = {"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"}
    status, _, headers = call(url + "/sdapi/v1/txt2img", method="OPTIONS", headers=stranger, auth=False)
    assert headers.get("access-control-allow-origin") != "http://evil.example"
    status, _, headers = call(url + "/sdapi/v1/samplers", headers={"Origin": "http://localhost:3000"})
    assert headers["access-control-allow-origin"] == "http://localhost:3000"


def test_ui_config_file_sets_defaults_and_reports_bad_values(api_server):
    url, data = api_server
    config = call(url + "/config", auth=False)[1]
    steps = component(config, "txt2img_steps")
    assert steps["props"]["maximum"] == 300 and steps["props"]["value"] == 250
    cfg = component(config, "txt2img_cfg_scale")
    assert cfg["props"]["value"] == 7  # "strong" is not a number: reported and ignored
    assert "txt2img/CFG Scale/value" in (data / "server.log").read_text()
    written = json.loads((data / "ui-config.json").read_text())
    assert written["txt2img/Sampling steps/value"] == 250  # the user's values stay
    assert written["img2img/Denoising strength/value"] == 0.75  # the rest is filled in for editing
    assert "txt2img/Width/value" not in written  # the size follows the checkpoint unless pinned


def test_nowebui_serves_only_the_api(tmp_path, tiny_dir):
    with api_server_on(tmp_path, tiny_dir, "--nowebui") as url:
        assert call(url + "/", auth=False)[0] == 404
        status, answer, _ = call(url + "/sdapi/v1/txt2img", {"prompt": "x", "steps": 1, "width": 64, "height": 64},
                                 auth=False)
        assert status == 200 and len(answer["images"]) == 1
        assert call(url + "/docs", auth=False)[0] == 200
