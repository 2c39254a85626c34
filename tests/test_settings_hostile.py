"""Hostile settings: every writer (API options, override_settings, the Settings page, config.json at load) checks
each value against its setting's constraints; --hide-ui-dir-config keeps folders where they are; corrupt files
at start are kept aside; a full disk is named."""
import errno
import json
import math
import shutil
import threading
from contextlib import contextmanager
from dataclasses import asdict, fields
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from modules.api.routes import ApiServices, create_router, install_error_handler
from modules.conditioning.text import EMPHASIS_MODES
from modules.generation.saving import FORMATS
from modules.options import EMPHASIS_MODES as OPTION_EMPHASIS_MODES
from modules.options import PATH_SETTINGS, SAMPLE_FORMATS, Options, SettingError
from modules.ui import settings as settings_page
from tests.helpers import serving
from tests.test_api import call, picture

# (setting, bad value): each answers 422 naming the setting, from POST /options and from override_settings
BAD_VALUES = [
    ("s_noise", math.nan),
    ("s_noise", math.inf),
    ("s_noise", 5.0),
    ("s_churn", "lots"),
    ("randn_source", "XYZ"),
    ("samples_format", "exe"),
    ("samples_format", None),
    ("emphasis", "Loud"),
    ("fp8_storage", True),
    ("sd_model_checkpoint", 123),
    ("sd_vae", ["a"]),
    ("CLIP_stop_at_last_layers", 0),
    ("eta_noise_seed_delta", 1.5),
    ("eta_noise_seed_delta", 10**30),
    ("sd_checkpoints_limit", True),
    ("samples_save", "yes"),
    ("localization", "../../secret"),
    ("outdir_txt2img_samples", {"path": "/"}),
]
JOB = {"prompt": "x", "steps": 2, "width": 64, "height": 64, "seed": 5, "sampler_name": "Euler a"}


def test_choices_match_what_the_code_accepts():
    assert OPTION_EMPHASIS_MODES == EMPHASIS_MODES
    assert set(SAMPLE_FORMATS) == set(FORMATS)


@pytest.mark.parametrize("name, value", BAD_VALUES)
def test_check_names_the_setting(name, value):
    with pytest.raises(SettingError, match=f"setting {name}:"):
        Options.check(name, value)


def test_check_accepts_and_normalises_good_values():
    assert Options.check("CLIP_stop_at_last_layers", 2.0) == 2 and Options.check("s_noise", 1) == 1.0
    assert isinstance(Options.check("s_noise", 1), float)
    defaults = Options()
    for f in fields(Options):
        default = getattr(defaults, f.name)
        assert Options.check(f.name, default) == default  # every default fits its own constraints


# ---- the API's writers, in process (a full disk can be simulated here) ---------------------------------

def disk_full(*_args):
    raise OSError(errno.ENOSPC, "No space left on device")


@contextmanager
def api_client(make_services, hide_dir_settings: bool = False):
    services = make_services(Options())
    app = FastAPI()
    install_error_handler(app)
    app.include_router(create_router(ApiServices(worker=services.worker, save_settings=services.save_settings,
                                                 cmd_flags={}, hide_dir_settings=hide_dir_settings)))
    with TestClient(app) as client:
        yield client, services


def test_a_full_disk_is_named_and_leaves_no_temp_file(make_services, monkeypatch):
    with api_client(make_services) as (client, services):
        config = services.paths.config_file
        assert client.post("/sdapi/v1/options", json={"s_noise": 0.9}).status_code == 200
        before = config.read_bytes()
        monkeypatch.setattr("modules.user_files.os.replace", disk_full)
        answer = client.post("/sdapi/v1/options", json={"s_noise": 0.8})
        assert answer.status_code == 507 and "disk full" in answer.json()["detail"]
        assert config.read_bytes() == before
        assert not [p.name for p in config.parent.iterdir() if p.name.endswith(".tmp")]
        assert client.get("/sdapi/v1/options").status_code == 200


def test_hidden_dir_config_refuses_changing_folders_from_the_api(make_services):
    with api_client(make_services, hide_dir_settings=True) as (client, services):
        for name in PATH_SETTINGS:
            answer = client.post("/sdapi/v1/options", json={name: "/tmp/elsewhere"})
            assert answer.status_code == 403 and name in answer.json()["detail"]
            answer = client.post("/sdapi/v1/txt2img", json={**JOB, "override_settings": {name: "/tmp/elsewhere"}})
            assert answer.status_code == 403 and name in answer.json()["detail"]
        everything = client.get("/sdapi/v1/options").json()
        assert client.post("/sdapi/v1/options", json={**everything, "s_noise": 0.7}).status_code == 200  # round trip
        assert services.options.s_noise == 0.7 and services.options.outdir_txt2img_samples == "outputs/txt2img-images"


# ---- the Settings page's Apply -----------------------------------------------------------------

def settings_apply(options: Options, save=lambda: None, shown: dict | None = None):
    """The Apply button's handler of a Settings tab built over `options`, called as the page calls it: with what
    the page showed (`shown`, by default what the options hold) and every control's value, changed or not."""
    with gr.Blocks() as demo:
        page = settings_page.build(options, save, lambda fn: fn(), frozen=False, show_dir_fields=True,
                                   extra_choices=settings_page.page_choices([], [], []), quick={},
                                   tabs={})
    handler = next(f.fn for f in demo.fns.values() if getattr(f.fn, "__name__", "") == "apply_settings")

    showing = dict(shown) if shown is not None else {n: getattr(options, n) for n in page.controls}

    def apply(**changes):  # the page keeps the snapshot each Apply hands back, as the page's State does
        message, new_snapshot, _ = handler(dict(showing), *(changes.get(n, showing[n]) for n in page.controls))
        showing.clear()
        showing.update(new_snapshot)
        return message
    return apply


def test_the_page_refuses_bad_values_and_changes_nothing():
    options = Options()
    apply = settings_apply(options)
    message = apply(s_noise=math.nan, randn_source="XYZ", eta_ddim=0.5)
    assert "Nothing was changed" in message and "s_noise" in message and "randn_source" in message
    assert options == Options()
    assert apply(s_noise=0.5, CLIP_stop_at_last_layers=2.0, sd_checkpoints_limit=None).startswith("2 settings")
    assert (options.s_noise, options.CLIP_stop_at_last_layers) == (0.5, 2)


def test_the_page_says_disk_full(tmp_path, monkeypatch):
    monkeypatch.setattr("modules.user_files.os.replace", disk_full)
    options = Options()
    message = settings_apply(options, save=lambda: options.save(tmp_path / "config.json"))(s_noise=0.5)
    assert "not saved" in message and "disk full" in message
    assert list(tmp_path.iterdir()) == []


def test_a_stale_page_applies_only_what_was_changed_on_it():
    """A page loaded before the API changed s_noise sends the old s_noise back with its own change: only its own
    change is applied."""
    options = Options()
    page_showed = {f.name: getattr(options, f.name) for f in fields(Options)}
    options.s_noise = 0.7  # changed elsewhere after the page loaded
    message = settings_apply(options, shown=page_showed)(eta_noise_seed_delta=31337)
    assert message == "1 settings changed: Eta noise seed delta."
    assert (options.s_noise, options.eta_noise_seed_delta) == (0.7, 31337)


def test_a_change_made_elsewhere_survives_two_applies_on_a_page_that_never_showed_it():
    options = Options()
    apply = settings_apply(options)  # the page shows Clip skip 1
    options.CLIP_stop_at_last_layers = 2  # a quicksetting or the API changes it
    assert apply(eta_ddim=0.5) == "1 settings changed: Eta for DDIM."
    assert apply(s_churn=0.3) == "1 settings changed: sigma churn."
    assert options.CLIP_stop_at_last_layers == 2


def test_list_settings_are_checked():
    assert Options.check("quicksettings_list", ["sd_vae", "CLIP_stop_at_last_layers"]) == ["sd_vae",
                                                                                          "CLIP_stop_at_last_layers"]
    for bad in ("sd_vae", ["no_such_setting"], [1]):
        with pytest.raises(SettingError, match="quicksettings_list"):
            Options.check("quicksettings_list", bad)


# ---- the real server ---------------------------------------------------------------------------

def start(data: Path, tiny_dir: Path, *flags: str):
    ckpts = data / "models" / "Stable-diffusion"
    ckpts.mkdir(parents=True, exist_ok=True)
    shutil.copy(tiny_dir / "tiny-sd1.safetensors", ckpts)
    return serving(data, "--api", "--api-auth", "api:s3cret", "--ckpt", str(ckpts / "tiny-sd1.safetensors"), *flags)


@pytest.mark.server
def test_bad_values_are_refused_and_the_server_keeps_working_after_a_restart(tmp_path, tiny_dir):
    with start(tmp_path, tiny_dir) as server:
        url = server.url + "/sdapi/v1"
        for name, value in BAD_VALUES:
            status, answer, _ = call(url + "/options", {name: value})
            assert status == 422 and f"setting {name}" in answer["detail"], (name, value, answer)
            status, answer, _ = call(url + "/txt2img", {**JOB, "override_settings": {name: value}})
            assert status == 422 and f"setting {name}" in answer["detail"], (name, value, answer)
        status, options, _ = call(url + "/options")
        assert status == 200 and options["s_noise"] == 1.0 and options["randn_source"] == "GPU"

        status, answer, _ = call(url + "/txt2img", JOB)
        assert status == 200 and np.asarray(picture(answer["images"][0])).std() > 1  # not a black picture

        answers = []
        threads = [threading.Thread(target=lambda i=i: answers.append(
            call(url + "/options", {"eta_noise_seed_delta": i, "s_noise": 0.9})[0])) for i in range(40)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert answers == [200] * 40
        config = json.loads((tmp_path / "config.json").read_text())
        assert config["s_noise"] == 0.9 and not list(tmp_path.glob("*.tmp"))

    with start(tmp_path, tiny_dir) as server:
        url = server.url + "/sdapi/v1"
        status, options, _ = call(url + "/options")
        assert status == 200 and options["s_noise"] == 0.9
        assert call(url + "/txt2img", JOB)[0] == 200
        assert "using the default" not in server.log()  # nothing bad was saved


@pytest.mark.server
def test_corrupt_files_at_start_are_kept_aside_and_folders_stay_put(tmp_path, tiny_dir):
    (tmp_path / "config.json").write_text("[]")
    (tmp_path / "cache.json").write_text('{"hashes": []}')
    with start(tmp_path, tiny_dir, "--hide-ui-dir-config") as server:
        url = server.url + "/sdapi/v1"
        for name in ("config.json", "cache.json"):
            bad = list(tmp_path.glob(f"{name}.bad-*"))
            assert len(bad) == 1 and bad[0].name in server.log()
        status, options, _ = call(url + "/options")
        assert status == 200 and options == asdict(Options()) | {"sd_model_checkpoint": options["sd_model_checkpoint"],
                                                                 "sd_checkpoint_hash": options["sd_checkpoint_hash"]}
        assert len(options["sd_checkpoint_hash"]) == 64  # what A1111 clients read to know the loaded model

        status, answer, _ = call(url + "/options", {"outdir_txt2img_samples": "/tmp/elsewhere"})
        assert status == 403 and "outdir_txt2img_samples" in answer["detail"]
        status, answer, _ = call(url + "/txt2img", {**JOB, "save_images": True,
                                                   "override_settings": {"outdir_img2img_samples": "/tmp/x"}})
        assert status == 403 and "outdir_img2img_samples" in answer["detail"]
        assert call(url + "/options", {**options, "s_noise": 0.5})[0] == 200  # an unchanged folder passes
        assert json.loads((tmp_path / "config.json").read_text())["s_noise"] == 0.5
