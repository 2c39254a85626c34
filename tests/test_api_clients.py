"""What A1111's own API tests and common clients (the webuiapi package) rely on, on the real server: A1111's
defaults for omitted fields, the keys of `info`, the `infotext` field, response models in /openapi.json, every
A1111 route answering, unload/reload of the checkpoint, and server-stop with --api-server-stop."""
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from safetensors.torch import save_file

from tests import ldm_layout as ldm
from tests.helpers import serving, serving_checkpoints
from tests.test_api import b64_png, call, picture

pytestmark = pytest.mark.server

# The keys of A1111's Processed.js() (modules/processing.py), the `info` of its txt2img and img2img answers.
A1111_INFO_KEYS = {
    "prompt", "all_prompts", "negative_prompt", "all_negative_prompts", "seed", "all_seeds", "subseed",
    "all_subseeds", "subseed_strength", "width", "height", "sampler_name", "cfg_scale", "steps", "batch_size",
    "restore_faces", "face_restoration_model", "sd_model_name", "sd_model_hash", "sd_vae_name", "sd_vae_hash",
    "seed_resize_from_w", "seed_resize_from_h", "denoising_strength", "extra_generation_params",
    "index_of_first_image", "infotexts", "styles", "job_timestamp", "clip_skip", "is_using_inpainting_conditioning",
    "version",
}
# A1111's add_api_route list (modules/api/api.py) with the response model each route declares there.
A1111_ROUTES = {
    ("post", "/txt2img"): "TextToImageResponse", ("post", "/img2img"): "ImageToImageResponse",
    ("post", "/extra-single-image"): "ExtrasSingleImageResponse",
    ("post", "/extra-batch-images"): "ExtrasBatchImagesResponse", ("post", "/png-info"): "PNGInfoResponse",
    ("get", "/progress"): "ProgressResponse", ("post", "/interrogate"): None, ("post", "/interrupt"): None,
    ("post", "/skip"): None, ("get", "/options"): "Options", ("post", "/options"): None,
    ("get", "/cmd-flags"): "Flags", ("get", "/samplers"): "SamplerItem", ("get", "/schedulers"): "SchedulerItem",
    ("get", "/upscalers"): "UpscalerItem", ("get", "/latent-upscale-modes"): "LatentUpscalerModeItem",
    ("get", "/sd-models"): "SDModelItem", ("get", "/sd-vae"): "SDVaeItem",
    ("get", "/hypernetworks"): "HypernetworkItem", ("get", "/face-restorers"): "FaceRestorerItem",
    ("get", "/realesrgan-models"): "RealesrganItem",
    ("get", "/prompt-styles"): "PromptStyleItem", ("get", "/embeddings"): "EmbeddingsResponse",
    ("post", "/refresh-embeddings"): None, ("post", "/refresh-checkpoints"): None, ("post", "/refresh-vae"): None,
    ("post", "/create/embedding"): "CreateResponse", ("post", "/create/hypernetwork"): "CreateResponse",
    ("post", "/train/embedding"): "TrainResponse", ("post", "/train/hypernetwork"): "TrainResponse",
    ("get", "/memory"): "MemoryResponse", ("post", "/unload-checkpoint"): None, ("post", "/reload-checkpoint"): None,
    ("get", "/scripts"): "ScriptsList", ("get", "/script-info"): "ScriptInfo", ("get", "/extensions"): "ExtensionItem",
}
NOT_HERE = ["/interrogate", "/create/embedding", "/create/hypernetwork", "/train/embedding", "/train/hypernetwork"]
SMALL = {"width": 64, "height": 64}


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_dir):
    """The API alone (--nowebui) over tiny-sd1, with a style, a VAE and a git-cloned extension in its folders."""
    data = tmp_path_factory.mktemp("clients")
    (data / "styles.csv").write_text('name,prompt,negative_prompt\nwarm,"{prompt}, warm light",cold\n')
    (data / "models" / "VAE").mkdir(parents=True)
    save_file(ldm.materialize(ldm.vae_shapes(ldm.TINY_VAE, prefix=""), seed=99),
              str(data / "models" / "VAE" / "other-vae.safetensors"))
    git = data / "extensions" / "sd-webui-controlnet" / ".git"
    (git / "refs" / "heads").mkdir(parents=True)
    (git / "config").write_text('[remote "origin"]\n\turl = https://github.com/Mikubill/sd-webui-controlnet.git\n')
    (git / "HEAD").write_text("ref: refs/heads/main\n")
    (git / "refs" / "heads" / "main").write_text("56cec5b2958edf3b1807b7e7b2b1b5186dbd2f81\n")
    with serving_checkpoints(data, tiny_dir, "--nowebui") as s:
        yield s.url + "/sdapi/v1", data


def generate(url: str, mode: str, body: dict) -> tuple[list[Image.Image], dict, dict]:
    status, answer, _ = call(f"{url}/{mode}", body, auth=False)
    assert status == 200, answer
    return [picture(b64) for b64 in answer["images"]], json.loads(answer["info"]), answer["parameters"]


def test_omitted_fields_take_a1111_api_defaults(server):
    url, _ = server
    _, info, parameters = generate(url, "txt2img", {"prompt": "x", "seed": 1, "width": 32, "height": 32})
    assert (info["sampler_name"], info["steps"], info["cfg_scale"]) == ("Euler", 50, 7.0)  # sampler_index "Euler"
    assert "Steps: 50, Sampler: Euler, Schedule type: Automatic, CFG scale: 7.0" in info["infotexts"][0]
    assert (info["seed_resize_from_w"], info["seed_resize_from_h"], info["denoising_strength"]) == (-1, -1, 0.75)
    assert parameters["sampler_name"] is None and parameters["sampler_index"] == "Euler"

    init = b64_png(Image.new("RGB", (64, 64), (200, 30, 30)))
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (24, 24, 40, 40))
    _, info, parameters = generate(url, "img2img", {"init_images": [init], "mask": b64_png(mask), "steps": 2,
                                                    "seed": 1, **SMALL})
    assert info["sampler_name"] == "Euler" and info["denoising_strength"] == 0.75
    # A1111's img2img defaults: fill the masked area, inpaint only the masked area, no padding
    assert (parameters["inpainting_fill"], parameters["inpaint_full_res"], parameters["inpaint_full_res_padding"]) \
        == (0, True, 0)
    assert info["extra_generation_params"]["Inpaint area"] == "Only masked"
    assert info["extra_generation_params"]["Masked content"] == "fill"
    assert "Masked area padding: 0" in info["infotexts"][0]

    # an older client's sampler name with the schedule type in it
    _, info, _ = generate(url, "txt2img", {"prompt": "x", "steps": 2, "sampler_name": "DPM++ 2M Karras", **SMALL})
    assert info["sampler_name"] == "DPM++ 2M" and "Sampler: DPM++ 2M, Schedule type: Karras" in info["infotexts"][0]


def test_info_has_the_keys_of_a1111s_processed(server):
    url, data = server
    body = {"prompt": "a cat", "negative_prompt": "dog", "styles": ["warm"], "steps": 2, "batch_size": 2, "seed": 5,
            "sampler_name": "Euler a", **SMALL}
    _, info, _ = generate(url, "txt2img", body)
    assert A1111_INFO_KEYS <= set(info), A1111_INFO_KEYS - set(info)
    assert info["all_prompts"] == ["a cat, warm light"] * 2 and info["prompt"] == "a cat, warm light"
    assert info["all_negative_prompts"] == ["dog, cold"] * 2
    assert info["all_seeds"] == [5, 6] and info["index_of_first_image"] == 0 and info["styles"] == ["warm"]
    model = next(m for m in call(url + "/sd-models", auth=False)[1] if m["model_name"] == "tiny-sd1")
    assert (info["sd_model_name"], info["sd_model_hash"]) == ("tiny-sd1", model["hash"])
    assert info["sd_vae_name"] is None and info["sd_vae_hash"] is None  # the checkpoint's own VAE
    assert info["face_restoration_model"] is None and info["is_using_inpainting_conditioning"] is False
    assert info["clip_skip"] == 1 and info["extra_generation_params"] == {}
    assert len(info["job_timestamp"]) == 14 and info["job_timestamp"].isdigit()

    vae = data / "models" / "VAE" / "other-vae.safetensors"
    _, info, _ = generate(url, "txt2img", {**body, "batch_size": 1, "override_settings": {
        "sd_vae": "other-vae.safetensors", "CLIP_stop_at_last_layers": 2}})
    assert info["sd_vae_name"] == "other-vae.safetensors"
    assert info["sd_vae_hash"] == hashlib.sha256(vae.read_bytes()).hexdigest()[:10]
    assert info["clip_skip"] == 2

    init = b64_png(Image.new("RGB", (64, 64), (0, 90, 200)))
    _, info, _ = generate(url, "img2img", {**body, "init_images": [init], "denoising_strength": 0.5})
    assert info["extra_generation_params"] == {"Denoising strength": 0.5} and info["denoising_strength"] == 0.5


def test_infotext_fills_the_fields_not_given(server):
    url, _ = server
    body = {"prompt": "a red circle", "negative_prompt": "blue", "steps": 3, "sampler_name": "Euler a",
            "cfg_scale": 5, "seed": 1234, **SMALL}
    [original], info, _ = generate(url, "txt2img", body)
    text = info["infotexts"][0]

    [again], info, parameters = generate(url, "txt2img", {"infotext": text})
    assert np.array_equal(np.asarray(again), np.asarray(original))  # every field read back: the same picture
    assert (info["prompt"], info["negative_prompt"], info["steps"], info["sampler_name"], info["cfg_scale"],
            info["seed"], info["width"]) == ("a red circle", "blue", 3, "Euler a", 5.0, 1234, 64)
    assert parameters["steps"] == 3 and parameters["infotext"] == text

    # fields the request gives win; settings the infotext names apply to this job only
    [other], info, _ = generate(url, "txt2img", {"infotext": text + ", Clip skip: 2", "seed": 99, "steps": 2})
    assert (info["seed"], info["steps"], info["prompt"], info["clip_skip"]) == (99, 2, "a red circle", 2)
    assert "Clip skip: 2" in info["infotexts"][0]
    assert call(url + "/options", auth=False)[1]["CLIP_stop_at_last_layers"] == 1

    status, answer, _ = call(url + "/txt2img", {"infotext": "x\nSteps: many, Sampler: Euler, Seed: 1"}, auth=False)
    assert status == 422 and "steps" in answer["detail"] and "many" in answer["detail"]


def test_openapi_describes_each_answer_with_a1111s_models(server):
    url, _ = server
    status, schema, _ = call(url.removesuffix("/sdapi/v1") + "/openapi.json", auth=False)
    assert status == 200
    components = schema["components"]["schemas"]
    for (method, path), model in A1111_ROUTES.items():
        assert method in schema["paths"].get("/sdapi/v1" + path, {}), (method, path)
        if model is None:
            continue
        answer = schema["paths"]["/sdapi/v1" + path][method]["responses"]["200"]["content"]["application/json"]
        assert model in json.dumps(answer["schema"]), (path, answer)
        assert components[model]["properties"], model
    assert set(components["TextToImageResponse"]["properties"]) == {"images", "parameters", "info"}
    assert {"progress", "eta_relative", "state", "current_image", "textinfo"} <= set(
        components["ProgressResponse"]["properties"])
    assert {"title", "model_name", "hash", "sha256", "filename", "config"} == set(
        components["SDModelItem"]["properties"])
    assert "eta_noise_seed_delta" in components["Options"]["properties"]
    assert "api_server_stop" in components["Flags"]["properties"]


def test_every_a1111_route_answers(server):
    url, _ = server
    for (method, path) in A1111_ROUTES:
        if method == "get":
            status, answer, _ = call(url + path, auth=False)
            assert status == 200, (path, answer)
    assert call(url + "/hypernetworks", auth=False)[1] == []
    # as A1111, both restorers are listed even before their model files are there
    assert [r["name"] for r in call(url + "/face-restorers", auth=False)[1]] == ["CodeFormer", "GFPGAN"]
    scripts = call(url + "/scripts", auth=False)[1]
    assert set(scripts) == {"txt2img", "img2img"} and all(isinstance(n, str) for n in scripts["txt2img"])
    listed = call(url + "/extensions", auth=False)[1]
    [extension] = [e for e in listed if e["name"] == "sd-webui-controlnet"]  # besides our built-in ones
    assert extension == {"name": "sd-webui-controlnet", "remote": "https://github.com/Mikubill/sd-webui-controlnet.git",
                         "branch": "main", "commit_hash": "56cec5b2", "version": "56cec5b2",
                         "commit_date": extension["commit_date"], "enabled": True}
    assert call(url + "/prompt-styles", auth=False)[1] == [
        {"name": "warm", "prompt": "{prompt}, warm light", "negative_prompt": "cold"}]
    for path in NOT_HERE:
        status, answer, _ = call(url + path, {"image": b64_png(Image.new("RGB", (8, 8)))}, auth=False)
        assert status == 501 and "not" in answer["detail"] and "this program" in answer["detail"], (path, answer)
    for path in ("/server-stop", "/server-kill", "/server-restart"):  # only with --api-server-stop, as A1111
        assert call(url + path, {}, auth=False)[0] == 404


def test_unload_checkpoint_frees_it_and_the_next_job_loads_it_again(server):
    url, data = server
    body = {"prompt": "a red circle", "steps": 2, "seed": 77, "sampler_name": "Euler a", **SMALL}
    [before], _, _ = generate(url, "txt2img", body)

    def count(line: str) -> int:
        return (data / "server.log").read_text().count(line)
    loads, unloads = count("loaded tiny-sd1.safetensors"), count("unloading tiny-sd1.safetensors")
    assert call(url + "/unload-checkpoint", {}, auth=False)[0] == 200
    assert count("unloading tiny-sd1.safetensors") == unloads + 1
    assert call(url + "/options", auth=False)[1]["sd_model_checkpoint"].startswith("tiny-sd1")  # still the choice

    [after], info, _ = generate(url, "txt2img", body)  # loads it again
    assert np.array_equal(np.asarray(after), np.asarray(before)) and info["sd_model_name"] == "tiny-sd1"
    assert count("loaded tiny-sd1.safetensors") == loads + 1

    assert call(url + "/reload-checkpoint", {}, auth=False)[0] == 200  # loaded: nothing to do
    assert call(url + "/unload-checkpoint", {}, auth=False)[0] == 200
    assert call(url + "/reload-checkpoint", {}, auth=False)[0] == 200  # loads it at once
    assert count("loaded tiny-sd1.safetensors") == loads + 2


def test_server_stop_ends_the_program_cleanly(tmp_path: Path):
    with serving(tmp_path, "--nowebui", "--api-server-stop") as s:
        url = s.url + "/sdapi/v1"
        status, answer, _ = call(url + "/server-restart", {}, auth=False)
        assert status == 501 and "server-stop" in answer["detail"]
        status, answer, _ = call(url + "/server-stop", {}, auth=False)
        assert (status, answer) == (200, "Stopping.")
        assert s.proc.wait(timeout=60) == 0
        assert "Traceback" not in s.log()


def test_server_kill_ends_the_program(tmp_path: Path):
    with serving(tmp_path, "--nowebui", "--api-server-stop") as s:
        status, answer, _ = call(s.url + "/sdapi/v1/server-kill", {}, auth=False)
        assert (status, answer) == (200, "Killing.")
        assert s.proc.wait(timeout=60) == 0
