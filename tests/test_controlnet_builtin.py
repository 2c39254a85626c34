"""The built-in ControlNet through the A1111 extension's API form (`alwayson_scripts: {"controlnet": {"args":
[unit]}}`) on the tiny SD1 checkpoint with a tiny random ControlNet in models/ControlNet, and the extension's
routes."""
import base64
import io

import numpy as np
import pytest
from PIL import Image, ImageDraw

from modules import extensions, script_callbacks, scripts, shared
from modules.cmd_args import parse_args
from modules.generation import GenerationError, Txt2ImgRequest
from modules.generation.services import build_services
from modules.options import Options
from modules.paths import REPO_ROOT, Paths
from tests.controlnet_fixtures import write_tiny_controlnet


@pytest.fixture(scope="module")
def program(tmp_path_factory, cpu_policy, tiny_dir):
    data = tmp_path_factory.mktemp("controlnet-data")
    write_tiny_controlnet(data / "models" / "ControlNet" / "tiny-canny.safetensors", "ldm", "sd1", seed=3)
    write_tiny_controlnet(data / "models" / "ControlNet" / "tiny-xl.safetensors", "ldm-prefixed", "sdxl", seed=4)
    args = parse_args(["--data-dir", str(data), "--ckpt-dir", str(tiny_dir)])
    paths = Paths.from_args(args)
    paths.ensure()
    services = build_services(paths, cpu_policy, Options(randn_source="CPU"), console_progress=False)
    services.models.load("tiny-sd1")
    shared.bind(services, args)
    found = extensions.discover(REPO_ROOT / "extensions-builtin", paths.data_dir / "extensions", services.options)
    host = scripts.initialize(extensions.active_extensions(found, services.options, args))
    yield services, host
    script_callbacks.clear_callbacks()


def square(size: int = 32) -> str:
    picture = Image.new("RGB", (size, size), "black")
    ImageDraw.Draw(picture).rectangle((4, 4, 14, 14), outline="white", width=2)
    out = io.BytesIO()
    picture.save(out, "PNG")
    return base64.b64encode(out.getvalue()).decode()


def run(program, units=None):
    services, host = program
    req = Txt2ImgRequest(prompt="a red circle", width=32, height=32, steps=3, seed=5, sampler_name="Euler",
                         save_images=False)
    alwayson = {"controlnet": {"args": units}} if units is not None else {}
    result = services.worker.run(req, runner=host.api_runner("txt2img", None, [], alwayson))
    return np.asarray(result.images[0], dtype=np.int16), result.infotexts[0]


def unit(**fields):
    return {"enabled": True, "module": "canny", "model": "tiny-canny", "image": square(), **fields}


def test_a_unit_guides_the_picture_and_is_written_into_the_infotext(program):
    plain, plain_text = run(program)
    guided, text = run(program, [unit(threshold_a=50, threshold_b=150)])
    assert np.abs(guided - plain).mean() > 0.5
    assert 'ControlNet 0: "Module: canny, Model: tiny-canny [' in text and "Threshold A: 50" in text
    assert "ControlNet" not in plain_text
    same, _ = run(program, [unit(weight=0)])  # weight 0: the ControlNet has no effect at all
    assert np.array_equal(same, plain)
    off, _ = run(program, [unit(enabled=False)])
    assert np.array_equal(off, plain)


@pytest.mark.parametrize(("fields", "message"), [
    ({"model": "nothing-like-it"}, "controlnet unit 0: unknown model 'nothing-like-it'; choose one of tiny-canny"),
    ({"module": "sharpen"}, "controlnet unit 0: "),
    ({"model": "tiny-xl"}, "an SDXL ControlNet cannot guide the loaded SD1.x checkpoint"),
    ({"image": None}, "give it a picture"),
])
def test_a_unit_that_cannot_be_used_stops_the_job_with_its_reason(program, fields, message):
    with pytest.raises(GenerationError, match=message.replace("[", r"\[")):
        run(program, [unit(**fields)])


@pytest.mark.usefixtures("program")
def test_the_extensions_routes_answer():
    from fastapi import FastAPI
    from fastapi.testclient import TestClient
    app = FastAPI()
    script_callbacks.app_started_callback(None, app)
    client = TestClient(app)
    assert client.get("/controlnet/version").json() == {"version": 2}
    assert sorted(client.get("/controlnet/model_list").json()["model_list"])[0].startswith("tiny-canny [")
    modules = client.get("/controlnet/module_list").json()
    assert "canny" in modules["module_list"] and modules["module_detail"]["canny"]["sliders"]
    assert client.get("/controlnet/settings").json() == {"control_net_unit_count": 3}
