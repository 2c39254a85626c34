"""Issue 12 section 1 against a real server: a client may name any file as a checkpoint (options,
override_settings, refiner), and only files the folder scan found may ever be opened."""
import json
import shutil
from pathlib import Path

import pytest

from tests.test_api import api_server_on, call

pytestmark = pytest.mark.server


def anonymous(body, name: str) -> str:
    """The answer with the asked-for name taken out, to compare answers about different names."""
    return str(body).replace(name, "NAME").replace(Path(name).name, "NAME")


def test_a_path_is_never_a_checkpoint(tmp_path, tiny_dir):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    secret = elsewhere / "uploaded.ckpt"
    shutil.copy(tiny_dir / "tiny-sd1-inpainting.ckpt", secret)
    data = tmp_path / "data"
    with api_server_on(data, tiny_dir, "--api", "--api-auth", "api:s3cret", "--disable-safe-unpickle") as url:
        answers = []
        for name in (str(secret), str(elsewhere / "missing.ckpt")):
            status, body, _ = call(f"{url}/sdapi/v1/options", {"sd_model_checkpoint": name})
            answers.append((status, anonymous(body, name)))
            status, body, _ = call(f"{url}/sdapi/v1/txt2img", {"prompt": "x", "steps": 1, "width": 64, "height": 64,
                                                               "override_settings": {"sd_model_checkpoint": name}})
            answers.append((status, anonymous(body, name)))
            status, body, _ = call(f"{url}/sdapi/v1/txt2img", {"prompt": "x", "steps": 2, "width": 64, "height": 64,
                                                               "refiner_checkpoint": name, "refiner_switch_at": 0.5})
            assert status == 200, body
            warnings = json.loads(body["info"])["warnings"]
            assert any("refiner not used" in w and "no such checkpoint" in w for w in warnings), warnings
        assert all(status == 422 and "no such checkpoint" in text for status, text in answers)
        assert answers[:2] == answers[2:]  # an existing file and a missing one get the same answers
        status, options, _ = call(f"{url}/sdapi/v1/options")
        assert status == 200 and options["sd_model_checkpoint"].startswith("tiny-sd1")
    cache = (data / "cache.json").read_text() if (data / "cache.json").exists() else ""
    assert str(secret) not in cache and "uploaded" not in cache  # never hashed
