"""The real program on a loopback port: it starts, serves the page, switches models over HTTP,
survives a broken file, and stops on Ctrl+C."""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(tmp_path, tiny_dir):
    ckpts = tmp_path / "models" / "Stable-diffusion"
    ckpts.mkdir(parents=True)
    shutil.copy(tiny_dir / "tiny-sd1.safetensors", ckpts)
    shutil.copy(tiny_dir / "tiny-sdxl.safetensors", ckpts)
    (ckpts / "broken.safetensors").write_bytes(b"not really a model")
    port = free_port()
    log = open(tmp_path / "server.log", "w+")
    proc = subprocess.Popen([sys.executable, "webui.py", "--data-dir", str(tmp_path), "--port", str(port),
                             "--ckpt", str(ckpts / "tiny-sd1.safetensors")],
                            cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    deadline = time.time() + 120
    while "Running on local URL" not in (tmp_path / "server.log").read_text():
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            pytest.fail("server did not start:\n" + (tmp_path / "server.log").read_text())
        time.sleep(0.3)
    yield proc, f"http://127.0.0.1:{port}", tmp_path
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    log.close()


def get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=30) as r:
        return r.status, r.read().decode()


def value(update) -> str:
    """A component update as the HTTP client receives it."""
    return update["value"] if isinstance(update, dict) else update


def component(config: dict, elem_id: str) -> dict:
    return next(c for c in config["components"] if c.get("props", {}).get("elem_id") == elem_id)


def test_serves_page_switches_models_and_stops_on_ctrl_c(server):
    proc, url, data = server
    status, html = get(url + "/")
    assert status == 200 and "<html" in html.lower()
    config = json.loads(get(url + "/config")[1])
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
