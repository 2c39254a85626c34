"""Hostile and malformed requests against the real server: each gets a 4xx naming the field, the server stays up,
and the next ordinary job comes out right. Ends with a seeded, bounded fuzz of extreme field values."""
import base64
import io
import json
import random
import struct
import time
import urllib.error
import urllib.request
import zlib

import pytest
from PIL import Image

from tests.helpers import serving_checkpoints

SMALL = {"prompt": "a red circle", "steps": 1, "width": 64, "height": 64, "seed": 5}


@pytest.fixture(scope="module")
def url(tmp_path_factory, tiny_dir):
    with serving_checkpoints(tmp_path_factory.mktemp("hostile"), tiny_dir, "--api") as server:
        yield server.url


def post(url: str, path: str, body: dict) -> tuple[int, object]:
    """Python's json writes NaN and Infinity as JSON does not, and keeps lone surrogates as \\ud800 escapes: as a
    hostile client may send them."""
    request = urllib.request.Request(url + "/sdapi/v1/" + path, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=300) as answer:
            raw, status = answer.read(), answer.status
    except urllib.error.HTTPError as e:
        raw, status = e.read(), e.code
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode(errors="replace")


def png_b64(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def claimed_size_png(width: int, height: int) -> str:
    """A tiny PNG whose header claims `width`x`height` grey pixels: a decompression bomb's opening."""
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    raw = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
           + chunk(b"IEND", b""))
    return base64.b64encode(raw).decode()


INIT = png_b64(Image.new("RGB", (64, 64), (200, 30, 30)))
NAN, INF = float("nan"), float("inf")

# (route, body, the field the answer must name)
HOSTILE = [
    *[("txt2img", {**SMALL, name: value}, name) for name in ("cfg_scale", "eta", "s_noise", "subseed_strength",
                                                             "denoising_strength", "refiner_switch_at")
      for value in (NAN, INF)],
    ("img2img", {**SMALL, "init_images": [INIT], "initial_noise_multiplier": NAN}, "initial_noise_multiplier"),
    ("img2img", {**SMALL, "init_images": [INIT], "denoising_strength": INF}, "denoising_strength"),
    ("extra-single-image", {"image": INIT, "upscaling_resize": NAN}, "upscaling_resize"),
    ("extra-single-image", {"image": INIT, "upscaling_resize": INF}, "upscaling_resize"),
    ("extra-single-image", {"image": INIT, "upscaling_resize": 1000}, "upscaling_resize"),
    ("img2img", {**SMALL, "init_images": [claimed_size_png(20000, 20000)]}, "init_images[0]"),
    ("img2img", {**SMALL, "init_images": [claimed_size_png(10500, 10000)]}, "init_images[0]"),
    ("img2img", {**SMALL, "init_images": [INIT], "mask": claimed_size_png(20000, 20000)}, "mask"),
    ("extra-single-image", {"image": claimed_size_png(20000, 20000)}, "image"),
    ("png-info", {"image": claimed_size_png(20000, 20000)}, "image"),
    ("txt2img", {**SMALL, "width": 2**63}, "width"),
    ("txt2img", {**SMALL, "width": 100000}, "width"),
    ("txt2img", {**SMALL, "width": 100000, "height": 100000}, "width"),
    ("txt2img", {**SMALL, "batch_size": 10000}, "batch_size"),
    # within each field's range, but past any memory: refused with the estimate, before starting
    ("txt2img", {**SMALL, "width": 2048, "height": 2048, "batch_size": 64, "n_iter": 1000}, "GiB"),
    ("txt2img", {**SMALL, "n_iter": 10000}, "n_iter"),
    ("txt2img", {**SMALL, "steps": 100000}, "steps"),
    ("txt2img", {**SMALL, "steps": 2**40}, "steps"),
    ("txt2img", {**SMALL, "seed": 2**64}, "seed"),
    ("txt2img", {**SMALL, "subseed": -2}, "subseed"),
    ("txt2img", {**SMALL, "clip_skip": 1000}, "clip_skip"),
    ("txt2img", {**SMALL, "hr_scale": -1}, "hr_scale"),
    ("txt2img", {**SMALL, "enable_hr": True, "hr_scale": 1000}, "hr_scale"),
    ("txt2img", {**SMALL, "enable_hr": True, "hr_resize_x": 100000}, "hr_resize_x"),
    ("txt2img", {**SMALL, "seed_resize_from_w": 100000, "seed_resize_from_h": 100000}, "seed_resize_from_"),
    ("img2img", {**SMALL, "init_images": [INIT], "width": 100000}, "width"),
    ("img2img", {**SMALL, "init_images": [INIT], "inpainting_fill": 99}, "inpainting_fill"),
    ("img2img", {**SMALL, "init_images": [INIT], "inpaint_full_res_padding": -1000}, "inpaint_full_res_padding"),
    ("img2img", {**SMALL, "init_images": [INIT], "resize_mode": 7}, "resize_mode"),
    ("txt2img", {**SMALL, "prompt": "a \ud800 cat"}, "prompt"),
    ("txt2img", {**SMALL, "negative_prompt": "\udfff"}, "negative_prompt"),
    ("txt2img", {**SMALL, "sampler_name": "\ud800"}, "sampler_name"),
    ("txt2img", {**SMALL, "script_name": "\ud800"}, "Script"),
    ("txt2img", {**SMALL, "prompt": "(" * 5000 + "a"}, "prompt"),
    ("txt2img", {**SMALL, "prompt": "[" * 5000 + "a"}, "prompt"),
    ("txt2img", {**SMALL, "prompt": "[a|b]" * 2000}, "prompt"),
    ("txt2img", {**SMALL, "hr_prompt": "[a:b:0.5] " * 500}, "hr_prompt"),
    ("txt2img", {**SMALL, "steps": 20, "prompt": "[a|b|c|d|e|f|g|h|i|j] " + "word " * 5000}, "prompt"),
    # issue 13: the message names the field and says the range (no "Overflow when unpacking long long")
    ("txt2img", {**SMALL, "seed": 99999999999999999999}, "seed: 99999999999999999999 is out of range; a seed is 0"),
    ("txt2img", {**SMALL, "subseed": 99999999999999999999}, "subseed: 99999999999999999999 is out of range"),
    ("txt2img", {**SMALL, "width": 2049}, "width/height: width and height must be positive multiples of 8"),
    ("txt2img", {**SMALL, "steps": 0}, "steps: 0 is out of range; give 1 to 1000"),
]


def ordinary_job_is_right(url: str, first: str) -> None:
    status, answer = post(url, "txt2img", SMALL)
    assert status == 200, answer
    info = json.loads(answer["info"])
    assert info["all_seeds"] == [5] and len(answer["images"]) == 1
    assert base64.b64decode(answer["images"][0]) == first  # the same picture as before any hostile request


@pytest.fixture(scope="module")
def first_picture(url) -> bytes:
    status, answer = post(url, "txt2img", SMALL)
    assert status == 200, answer
    return base64.b64decode(answer["images"][0])


@pytest.mark.server
@pytest.mark.parametrize("route,body,field", HOSTILE, ids=[f"{r}-{f}-{i}" for i, (r, _, f) in enumerate(HOSTILE)])
def test_hostile_value_is_refused_naming_its_field(url, first_picture, route, body, field):
    status, answer = post(url, route, body)
    assert 400 <= status < 500, (status, answer)
    assert field in json.dumps(answer), answer
    ordinary_job_is_right(url, first_picture)


def extreme_value(rng: random.Random, default):
    """A value of the field's kind (or of another kind) from the far ends of its range."""
    numbers = [0, -1, 1, 2**31, 2**63, -(2**63), 2**64 + 1, 10**30, 1e308, -1e308, 1e-308, 0.5, 7, 8, 16, 9000, 65536]
    if isinstance(default, str) or rng.random() < 0.1:
        return rng.choice(["", "\ud800", "x" * 5000, "(" * 100 + "a", "[a|b]" * 70, "\x00", "None", "🙂", 3])
    if isinstance(default, bool):
        return rng.choice([True, False, 2, "yes"])
    if isinstance(default, list):
        return rng.choice([[], ["\ud800"], ["x"] * 200, [1, 2]])
    return rng.choice(numbers + [float("nan"), float("inf"), -float("inf")])


@pytest.mark.server
def test_fuzzed_requests_never_answer_500(url, first_picture):
    """Seeded and bounded: up to 200 payloads to txt2img and img2img, each setting 1-4 of the route's fields to
    extreme values."""
    from modules.api.routes import Img2ImgPayload, Txt2ImgPayload
    routes = {"txt2img": (Txt2ImgPayload, SMALL), "img2img": (Img2ImgPayload, {**SMALL, "init_images": [INIT]})}
    rng = random.Random(12)
    deadline = time.monotonic() + 240
    tried = 0
    while tried < 200 and time.monotonic() < deadline:
        route = rng.choice(sorted(routes))
        model, base = routes[route]
        defaults = {name: f.get_default(call_default_factory=True) for name, f in model.model_fields.items()}
        fuzzable = sorted(set(defaults) - {"override_settings", "script_name", "save_images", "send_images"})
        body = dict(base)
        for name in rng.sample(fuzzable, rng.randint(1, 4)):
            body[name] = extreme_value(rng, defaults[name])
        status, answer = post(url, route, body)
        assert status < 500, (route, body, status, answer)
        tried += 1
    assert tried >= 20
    ordinary_job_is_right(url, first_picture)


# ---- the page: the same checks, shown as a message ----------------------------------------------------------

@pytest.mark.parametrize("values,field", [
    ({"cfg_scale": NAN}, "cfg_scale"), ({"steps": 100000}, "steps"), ({"width": 2**63}, "width"),
    ({"seed": 2**64}, "seed"), ({"clip_skip": 1000}, "clip_skip"), ({"hr_scale": -1}, "hr_scale"),
    ({"prompt": "a \ud800"}, "prompt"), ({"prompt": "(" * 5000}, "prompt"), ({"steps": NAN}, "steps"),
    ({"batch_size": INF}, "batch_size"),
])
def test_page_shows_the_message_naming_the_field(make_services, values, field):
    """As the txt2img tab's run(): a value that cannot be converted, or a request the job refuses, ends as the
    message shown in the info box."""
    from modules.generation.requests import GenerationError
    from modules.options import Options
    from modules.ui.generation import error_html, stream, txt2img_request
    worker = make_services(Options()).worker
    try:
        req = txt2img_request({"steps": 1, "width": 64, "height": 64, **values})
    except GenerationError as e:
        shown = [("", None, error_html(e), None)]
    else:
        shown = list(stream(worker, req))
    assert len(shown) == 1 and f"❌ {field}:" in shown[0][2], shown
