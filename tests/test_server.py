"""The real program on a loopback port: it starts, serves the page, switches models over HTTP,
survives a broken file, and stops on Ctrl+C."""
import json
import shutil
import signal

import pytest

from tests.helpers import component, http_get, serving

pytestmark = [pytest.mark.server, pytest.mark.slow]


@pytest.fixture
def server(tmp_path, tiny_dir):
    ckpts = tmp_path / "models" / "Stable-diffusion"
    ckpts.mkdir(parents=True)
    shutil.copy(tiny_dir / "tiny-sd1.safetensors", ckpts)
    shutil.copy(tiny_dir / "tiny-sdxl.safetensors", ckpts)
    (ckpts / "broken.safetensors").write_bytes(b"not really a model")
    with serving(tmp_path, "--ckpt", str(ckpts / "tiny-sd1.safetensors")) as server:
        yield server.proc, server.url, tmp_path


def value(update) -> str:
    """A component update as the HTTP client receives it."""
    return update["value"] if isinstance(update, dict) else update


def test_serves_page_switches_models_and_stops_on_ctrl_c(server):
    proc, url, data = server
    status, html = http_get(url + "/")
    assert status == 200 and "<html" in html.decode().lower()
    config = json.loads(http_get(url + "/config")[1])
    dropdown = component(config, "setting_sd_model_checkpoint")
    titles = [c[0] for c in dropdown["props"]["choices"]]
    assert dropdown["props"]["value"].startswith("tiny-sd1.safetensors [")
    assert "broken.safetensors" in titles
    assert "SD1.x" in component(config, "sd_model_status")["props"]["value"]

    from gradio_client import Client
    client = Client(url, verbose=False)
    title, message = client.predict("broken.safetensors", api_name="/set_checkpoint")
    assert "Could not load" in message and "broken.safetensors" in message
    assert value(title).startswith("tiny-sd1.safetensors [")  # the picker goes back to what is loaded
    title, message = client.predict("tiny-sdxl.safetensors", api_name="/set_checkpoint")
    assert value(title).startswith("tiny-sdxl.safetensors [") and "SDXL" in message
    assert json.loads((data / "config.json").read_text())["sd_model_checkpoint"] == value(title)

    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=30) is not None
