"""A1111's built-in selectable scripts of scripts/ (Prompt matrix, Prompts from file or textbox, Loopback, SD upscale,
Outpainting mk2, Poor man's outpainting) on the demo model, run as the API runs them (script name and positional
script_args), and Prompt matrix once through a real server's /sdapi/v1/txt2img."""
import base64
import io
import json
import urllib.request

import numpy as np
import pytest
from PIL import Image

from modules import infotext_utils, processing, scripts, shared
from modules.cmd_args import parse_args
from modules.generation import GenerationError, Img2ImgRequest, Txt2ImgRequest
from modules.options import Options
from tests.helpers import serving


@pytest.fixture(scope="module")
def program(make_services):
    """The services on the demo model with the repo's scripts loaded, as webui.py starts them."""
    services = make_services(Options())
    services.load_initial_checkpoint(None)
    shared.bind(services, parse_args([]))
    return services, scripts.initialize([])


def run_script(program, tab: str, title: str, args: list, **fields):
    services, host = program
    base = {"prompt": "a red square", "steps": 4, "width": 64, "height": 64, "seed": 5, "save_images": False}
    cls = Img2ImgRequest if tab == "img2img" else Txt2ImgRequest
    return services.worker.run(cls(**{**base, **fields}), runner=host.api_runner(tab, title, args, {}))


def script_module(title: str):
    """The module a built-in script was loaded from (for its helper functions)."""
    return next(d.module for d in scripts.scripts_data if d.script_class().title() == title)


def params(infotext: str) -> dict:
    return infotext_utils.parse_generation_parameters(infotext)


def pixels(picture: Image.Image) -> np.ndarray:
    return np.asarray(picture.convert("RGB"), dtype=np.int16)


def square_picture(program) -> Image.Image:
    services, _ = program
    return services.worker.run(Txt2ImgRequest(prompt="a blue circle", steps=4, width=64, height=64, seed=9,
                                              save_images=False)).images[0]


def test_the_scripts_are_on_a1111s_tabs_with_its_element_ids(program):
    _, host = program
    names = host.script_names()
    assert {"prompt matrix", "prompts from file or textbox"} <= set(names["txt2img"])
    assert {"loopback", "sd upscale", "outpainting mk2", "poor man's outpainting"}.isdisjoint(names["txt2img"])
    assert {"prompt matrix", "prompts from file or textbox", "loopback", "sd upscale", "outpainting mk2",
            "poor man's outpainting"} <= set(names["img2img"])
    info = {(i["name"], i["is_img2img"]): [a["label"] for a in i["args"]] for i in host.script_info()}
    assert info["sd upscale", True] == [None, "Tile overlap", "Upscaler", "Scale Factor"]  # A1111's script_args order
    assert info["prompts from file or textbox", False] == [
        "Iterate seed every line", "Use same random seed for all lines", "Insert prompts at the",
        "List of prompt inputs", "Make a combined image containing all outputs (if more than one)"]
    ids = {c.elem_id for c in scripts.scripts_txt2img.inputs[1:] + scripts.scripts_img2img.inputs[1:]}
    assert {"script_txt2img_prompt_matrix_put_at_start", "script_img2img_prompts_from_file_or_textbox_prompt_txt",
            "script_loopback_loops", "script_sd_upscale_upscaler_index", "script_outpainting_mk2_noise_q",
            "script_poor_mans_outpainting_inpainting_fill"} <= ids


# ---- Prompt matrix

def test_prompt_matrix_makes_every_combination_and_a_grid_of_them(program):
    result = run_script(program, "txt2img", "Prompt matrix", [False, False, "positive", "comma", 0],
                        prompt="a red square|blue background|small")
    assert result.first_image == 1 and len(result.images) == 1 + 4
    cells = result.images[1:]
    assert result.all_prompts == ["a red square", "a red square, blue background", "a red square, small",
                                  "a red square, blue background, small"]
    assert [text.split("\n")[0] for text in result.infotexts[1:]] == result.all_prompts
    assert result.seeds == [5, 5, 5, 5]
    assert not np.array_equal(pixels(cells[0]), pixels(cells[1]))  # the prompts really differ
    # first part across the columns, second down the rows; the legends above and to the left
    grid = result.images[0]
    assert grid.width > 128 and grid.height > 128
    for index, cell in enumerate(cells):
        x = grid.width - 128 + (index % 2) * 64
        y = grid.height - 128 + (index // 2) * 64
        assert np.array_equal(pixels(grid.crop((x, y, x + 64, y + 64))), pixels(cell))


def test_prompt_matrix_options_negative_prompt_space_start_and_seeds(program):
    result = run_script(program, "txt2img", "Prompt matrix", [True, True, "negative", "space", 4],
                        negative_prompt="blurry |dark,| noisy", batch_size=3)
    assert result.all_negative_prompts == ["blurry ", "dark blurry ", "noisy blurry ", "dark noisy blurry "]
    assert result.all_prompts == ["a red square"] * 4
    assert result.seeds == [5, 6, 7, 8]
    assert len(result.images) == 5  # no picture beyond the matrix although the batch size does not divide it


# ---- Prompts from file or textbox

LINES = ('--prompt "a red square" --steps 2 --seed 3 --cfg_scale 5\n'
         '\n'
         'a blue circle\n'
         '--prompt a blue   circle --negative_prompt "red things" --steps 3 --sampler_name "euler" --seed 7 '
         '--width 32 --batch_size 2\n')


def test_prompts_from_file_runs_each_line_with_its_own_parameters(program):
    result = run_script(program, "txt2img", "Prompts from file or textbox", [False, False, "start", LINES],
                        prompt="", steps=4, seed=11)
    assert len(result.images) == 4
    texts = [params(t) for t in result.infotexts]
    assert [(t["Prompt"], t["Steps"], t["Seed"]) for t in texts] == [
        ("a red square", "2", "3"), ("a blue circle", "4", "11"), ("a blue circle", "3", "7"),
        ("a blue circle", "3", "8")]
    assert texts[0]["CFG scale"] == "5.0" and texts[1]["CFG scale"] == "7.0"
    assert texts[2]["Negative prompt"] == "red things" and texts[2]["Sampler"] == "Euler"
    assert [im.size for im in result.images] == [(64, 64), (64, 64), (32, 64), (32, 64)]
    assert result.seeds == [3, 11, 7, 8]


def test_prompts_from_file_joins_the_main_prompt_and_iterates_the_seed(program):
    result = run_script(program, "txt2img", "Prompts from file or textbox",
                        [True, False, "end", "a red square\n--prompt a blue circle", True], prompt="on grass",
                        seed=20)
    assert result.first_image == 1 and len(result.images) == 3  # the combined picture first
    assert [params(t)["Prompt"] for t in result.infotexts[1:]] == ["on grass a red square", "on grass a blue circle"]
    assert result.seeds == [20, 21]
    assert result.images[0].size == (128, 64)
    same = run_script(program, "txt2img", "Prompts from file or textbox", [False, True, "start", "a red square\nsmall"],
                      seed=-1)
    assert len(same.seeds) == 2 and same.seeds[0] == same.seeds[1]  # one random seed for all lines


def test_prompts_from_file_refuses_an_unknown_option_before_generating(program, monkeypatch):
    calls = []
    monkeypatch.setattr(processing, "process_images", lambda p: calls.append(p))
    with pytest.raises(GenerationError, match="unknown option --stepz"):
        run_script(program, "txt2img", "Prompts from file or textbox",
                   [False, False, "start", "a red square\n--prompt a blue circle --stepz 3"])
    with pytest.raises(GenerationError, match="--steps 'ten'"):
        run_script(program, "txt2img", "Prompts from file or textbox", [False, False, "start", "--steps ten"])
    with pytest.raises(GenerationError, match="unknown sampler 'Euler b'"):
        run_script(program, "txt2img", "Prompts from file or textbox",
                   [False, False, "start", '--sampler_name "Euler b"'])
    # a server others may reach hides its folders: a line cannot send pictures elsewhere
    from modules import shared
    monkeypatch.setattr(shared.cmd_opts, "hide_ui_dir_config", True, raising=False)
    with pytest.raises(GenerationError, match="output folders cannot be chosen"):
        run_script(program, "txt2img", "Prompts from file or textbox",
                   [False, False, "start", "--prompt x --outpath_samples /tmp/elsewhere"])
    assert calls == []


@pytest.mark.usefixtures("program")  # the scripts loaded
def test_an_uploaded_prompt_file_fills_the_textbox_with_its_lines():
    module = script_module("Prompts from file or textbox")
    assert module.text_of_upload(b"  a red square \r\n--prompt x --steps 2\n") == (
        None, "a red square\n--prompt x --steps 2\n")


# ---- Loopback

def test_loopback_feeds_each_result_back_with_the_denoising_curve(program):
    services, _ = program
    start = square_picture(program)
    result = run_script(program, "img2img", "Loopback", [3, 0.3, "Linear", "None"], init_images=[start],
                        denoising_strength=0.6)
    assert result.first_image == 1 and len(result.images) == 4  # the row of loops first
    texts = [params(t) for t in result.infotexts[1:]]
    assert [float(t["Denoising strength"]) for t in texts] == pytest.approx([0.6, 0.45, 0.3])
    assert [t["Seed"] for t in texts] == ["5", "6", "7"]
    assert all(t["Final denoising strength"] == "0.3" and t["Denoising curve"] == "Linear" for t in texts)
    # each loop is img2img of the loop before it
    again = services.worker.run(Img2ImgRequest(prompt="a red square", steps=4, width=64, height=64, seed=6,
                                               denoising_strength=float(texts[1]["Denoising strength"]),
                                               init_images=[result.images[1]],
                                               save_images=False))
    assert np.array_equal(pixels(again.images[0]), pixels(result.images[2]))
    assert result.warnings == []


def test_loopback_curves_and_interrogation_that_is_not_available(program):
    strengths = script_module("Loopback").denoising_strengths
    assert strengths(0.8, 0.2, "Linear", 4) == pytest.approx([0.8, 0.6, 0.4, 0.2])
    assert strengths(0.8, 0.2, "Aggressive", 3) == pytest.approx([0.8, 0.8 - 0.6 * np.sin(np.pi / 4), 0.2])
    assert strengths(0.8, 0.2, "Lazy", 3) == pytest.approx([0.8, 0.8 - 0.6 * (1 - np.cos(np.pi / 4)), 0.2])
    assert strengths(0.8, 0.2, "Lazy", 1) == [0.8]
    result = run_script(program, "img2img", "Loopback", [2, 0.5, "Aggressive", "CLIP"],
                        init_images=[square_picture(program)], denoising_strength=0.5)
    assert len(result.images) == 3
    assert any("interrogated prompt (CLIP) is not available" in w for w in result.warnings)
    assert all(params(t)["Prompt"] == "a red square" for t in result.infotexts)


# ---- SD upscale

def test_sd_upscale_tiles_redraws_and_blends_without_seams(program):
    flat = Image.new("RGB", (64, 64), (150, 90, 60))
    result = run_script(program, "img2img", "SD upscale", ["", 32, "Lanczos", 2.0], init_images=[flat],
                        prompt="", steps=10, denoising_strength=0.3)
    assert len(result.images) == 1 and result.images[0].size == (128, 128)
    text = params(result.infotexts[0])
    assert text["SD upscale overlap"] == "32" and text["SD upscale upscaler"] == "Lanczos"
    assert text["Seed"] == "5" and text["Denoising strength"] == "0.3" and text["Size-1"] == "64"
    # tiles meet at x and y = 32, 64, 96; inside the picture's edges, no step between neighbouring rows or
    # columns stands out (hard-pasted tiles of the demo model make steps of 10 and more there)
    inner = pixels(result.images[0]).astype(float)[16:-16, 16:-16]
    assert np.abs(np.diff(inner, axis=1)).mean(axis=(0, 2)).max() < 3
    assert np.abs(np.diff(inner, axis=0)).mean(axis=(1, 2)).max() < 3


def test_sd_upscale_seeds_and_upscaler_choice_as_a1111(program):
    module = script_module("SD upscale")
    assert module.tile_seeds(5, 5, 1) == [5, 6, 7, 8, 9]
    assert module.tile_seeds(5, 5, 2) == [5, 6, 6, 7, 7]  # batch b starts at seed + b, its tiles count up
    assert module.find_upscaler(1).name == module.find_upscaler("lanczos").name == "Lanczos"
    with pytest.raises(GenerationError, match="unknown upscaler 'nope'"):
        module.find_upscaler("nope")
    result = run_script(program, "img2img", "SD upscale", ["", 0, 0, 3.0], init_images=[square_picture(program)],
                        n_iter=2, denoising_strength=0.3)
    assert [im.size for im in result.images] == [(64, 64), (64, 64)]  # "None" keeps the size, as A1111
    assert result.seeds == [5, 6] and [params(t)["Seed"] for t in result.infotexts] == ["5", "6"]


# ---- Outpainting

def test_outpainting_mk2_grows_the_picture_and_keeps_the_original(program):
    start = square_picture(program)
    result = run_script(program, "img2img", "Outpainting mk2", ["", 32, 1, ["left", "right"], 1.0, 0.05],
                        init_images=[start], denoising_strength=0.8)
    assert len(result.images) == 1
    grown = pixels(result.images[0])
    assert grown.shape == (64, 128, 3)
    original = pixels(start)
    assert np.array_equal(grown[:, 44:84], original[:, 12:52])  # away from the new parts: untouched
    assert np.abs(grown[:, 32:96] - original).mean() < 8  # the original region mostly unchanged
    assert grown[:, :28].mean() > 20 and grown[:, 100:].mean() > 20  # the new parts are painted, not black
    assert params(result.infotexts[0])["Mask blur"] == "4"


@pytest.mark.usefixtures("program")  # the scripts loaded
def test_outpainting_mk2_noise_fill_keeps_the_picture_and_matches_its_colours():
    matched_noise = script_module("Outpainting mk2").matched_noise
    picture = np.zeros((64, 128, 3))
    picture[:, 64:] = np.random.default_rng(1).uniform(0.2, 0.4, (64, 64, 3)) * [1, 0.5, 2]
    mask = np.ones_like(picture)
    mask[:, 64:] = 0
    filled = matched_noise(picture, mask, 1.0, 0.05)
    assert np.array_equal(filled[:, 64:], picture[:, 64:])
    for channel in range(3):  # the new part's colours have the kept part's distribution
        assert np.percentile(filled[:, :64, channel], [10, 50, 90]) == pytest.approx(
            np.percentile(picture[:, 64:, channel], [10, 50, 90]), abs=0.02)
    assert np.array_equal(filled, matched_noise(picture, mask, 1.0, 0.05))  # deterministic


def test_poor_mans_outpainting_grows_the_picture_and_keeps_the_original(program):
    start = square_picture(program)
    result = run_script(program, "img2img", "Poor man's outpainting", [32, 2, "fill", ["up", "down"]],
                        init_images=[start], denoising_strength=0.8)
    grown = pixels(result.images[0])
    assert grown.shape == (128, 64, 3)
    original = pixels(start)
    assert np.array_equal(grown[48:80], original[16:48])
    assert np.abs(grown[32:96] - original).mean() < 8
    assert grown[:28].mean() > 20 and grown[100:].mean() > 20
    text = params(result.infotexts[0])
    assert text["Mask blur"] == "4" and text["Masked content"] == "fill"


# ---- through the API of a real server

@pytest.mark.server
def test_prompt_matrix_through_the_api(tmp_path):
    body = {"prompt": "a red square|blue background", "steps": 3, "width": 64, "height": 64, "seed": 4,
            "sampler_name": "Euler a", "script_name": "prompt matrix",
            "script_args": [False, True, "positive", "comma", 0]}
    with serving(tmp_path, "--api") as server:
        request = urllib.request.Request(f"{server.url}/sdapi/v1/txt2img", data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=120) as answer:
            reply = json.loads(answer.read())
    info = json.loads(reply["info"])
    assert len(reply["images"]) == 3 and info["index_of_first_image"] == 1
    assert info["all_prompts"] == ["a red square", "a red square, blue background"]
    assert info["all_seeds"] == [4, 5]
    pictures = [Image.open(io.BytesIO(base64.b64decode(data))) for data in reply["images"]]
    assert [p.size for p in pictures[1:]] == [(64, 64), (64, 64)]
    assert pictures[0].width == 128 and pictures[0].height > 64  # the legends above the two columns
    assert info["infotexts"][2].startswith("a red square, blue background\n")
