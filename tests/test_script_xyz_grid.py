"""The built-in X/Y/Z plot script (scripts/xyz_grid.py) as A1111's clients and extensions use it: A1111's value
syntax, its axis list and argument order, grids whose cells are the pictures generated alone, and the API."""
import base64
import io
import json
import re
import urllib.error
import urllib.request
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from modules import processing, scripts, shared
from modules.cmd_args import parse_args
from modules.generation import GenerationError, Img2ImgRequest, Txt2ImgRequest
from modules.generation.progress import GenerationState
from modules.generation.services import build_services
from modules.paths import Paths
from tests.helpers import serving

# A1111 1.10's axis list, in its order: API clients send the axis types as indices into the tab's part of it.
A1111_AXES = [
    ("Nothing", None), ("Seed", None), ("Var. seed", None), ("Var. strength", None), ("Steps", None),
    ("Hires steps", "txt2img"), ("CFG Scale", None), ("Image CFG Scale", "img2img"), ("Prompt S/R", None),
    ("Prompt order", None), ("Sampler", "txt2img"), ("Hires sampler", "txt2img"), ("Sampler", "img2img"),
    ("Checkpoint name", None), ("Negative Guidance minimum sigma", None), ("Sigma Churn", None), ("Sigma min", None),
    ("Sigma max", None), ("Sigma noise", None), ("Schedule type", None), ("Schedule min sigma", None),
    ("Schedule max sigma", None), ("Schedule rho", None), ("Skip Early CFG", None), ("Beta schedule alpha", None),
    ("Beta schedule beta", None), ("Eta", None), ("Clip skip", None), ("Denoising", None),
    ("Initial noise multiplier", None), ("Extra noise", None), ("Hires upscaler", "txt2img"),
    ("Cond. Image Mask Weight", "img2img"), ("VAE", None), ("Styles", None), ("UniPC Order", None),
    ("Face restore", None), ("Token merging ratio", None), ("Token merging ratio high-res", None),
    ("Always discard next-to-last sigma", None), ("SGM noise multiplier", None), ("Refiner checkpoint", None),
    ("Refiner switch at", None), ("RNG source", None), ("FP8 mode", None), ("Size", None),
]
CELL = 64  # the demo model's pictures


@pytest.fixture(scope="module")
def program(tmp_path_factory, cpu_policy, tiny_dir):
    """The program over a data folder with the demo model loaded, tiny-sd1 beside it and one style, and the
    repo's scripts loaded as webui.py loads them."""
    data = tmp_path_factory.mktemp("xyz-data")
    (data / "models" / "Stable-diffusion").mkdir(parents=True)
    (data / "models" / "Stable-diffusion" / "tiny-sd1.safetensors").write_bytes(
        (tiny_dir / "tiny-sd1.safetensors").read_bytes())
    (data / "styles.csv").write_text("name,prompt,negative_prompt\nink,\"{prompt}, in ink\",\n", encoding="utf-8")
    args = parse_args(["--data-dir", str(data)])
    paths = Paths.from_args(args)
    paths.ensure()
    services = build_services(paths, cpu_policy, console_progress=False)
    services.load_initial_checkpoint(None)
    shared.bind(services, args)
    host = scripts.initialize([])
    return services, host, data


@pytest.fixture(scope="module")
def xyz(program):
    """The loaded module, found as extensions find it: by its file name among the loaded scripts."""
    _, host, _ = program
    assert "x/y/z plot" in host.script_names()["txt2img"] and "x/y/z plot" in host.script_names()["img2img"]
    return next(d.module for d in scripts.scripts_data if d.script_class.__module__ == "xyz_grid.py")


def axis_index(label: str, tab: str = "txt2img") -> int:
    runner = scripts.scripts_txt2img if tab == "txt2img" else scripts.scripts_img2img
    script = runner.title_map["x/y/z plot"]
    return [a.label for a in script.axes_of_tab(tab == "img2img")].index(label)


def xyz_args(x=("Nothing", ""), y=("Nothing", ""), z=("Nothing", ""), *, draw_legend=True, lone_images=False,
             sub_grids=False, keep_seeds=False, vary=(False, False, False), margin=0, csv_mode=False,
             tab="txt2img") -> list:
    """script_args in A1111's order; an axis as (label, text) or (label, [dropdown values])."""
    args = []
    for label, values in (x, y, z):
        text, chosen = (values, []) if isinstance(values, str) else ("", list(values))
        args += [axis_index(label, tab), text, chosen]
    return [*args, draw_legend, lone_images, sub_grids, keep_seeds, *vary, margin, csv_mode]


def small(**fields) -> Txt2ImgRequest:
    return Txt2ImgRequest(**{"prompt": "a red square", "steps": 3, "width": CELL, "height": CELL, "seed": 5,
                             "sampler_name": "Euler a", "save_images": False, **fields})


def plot(program, args, **fields):
    services, host, _ = program
    return services.worker.run(small(**fields), runner=host.api_runner("txt2img", "X/Y/Z plot", args, {}))


def pixels(picture: Image.Image) -> np.ndarray:
    return np.asarray(picture.convert("RGB"), dtype=np.int16)


def cell_of(grid: Image.Image, columns: int, rows: int, ix: int, iy: int, margin: int = 0) -> Image.Image:
    """A cell of a grid with legends: the legends take the top and the left, cells and margins the rest."""
    left = grid.width - columns * CELL - (columns - 1) * margin
    top = grid.height - rows * CELL - (rows - 1) * margin
    x, y = left + ix * (CELL + margin), top + iy * (CELL + margin)
    return grid.crop((x, y, x + CELL, y + CELL))


@pytest.fixture
def recorded(xyz, monkeypatch):
    """process_images replaced by one that records each cell's `p` and returns a small picture: the plot's own
    logic, without generating."""
    cells = []

    def fake_process_images(p):
        cells.append(p)
        picture = Image.new("RGB", (8, 8), (len(cells) * 20, 0, 0))
        return processing.Processed(p, [picture], seed=p.seed, infotexts=[f"cell {len(cells)}"])
    monkeypatch.setattr(xyz, "process_images", fake_process_images)
    return cells


# ---- values

@pytest.mark.parametrize(("label", "text", "expected"), [
    ("Steps", "1-5", [1, 2, 3, 4, 5]),
    ("Steps", "1-10 (+2)", [1, 3, 5, 7, 9]),
    ("Steps", "10-1 (-3)", [10, 7, 4, 1]),
    ("Steps", "1-10 [5]", [1, 3, 5, 7, 10]),
    ("Steps", "5-1", [5, 4, 3, 2, 1]),
    ("Steps", " 2 , 3 ,4 ", [2, 3, 4]),
    ("Steps", "1-3, 7, 9-10", [1, 2, 3, 7, 9, 10]),
    ("Steps", "2,3,", [2, 3]),
    ("Seed", "-5--3", [-5, -4, -3]),
    ("Seed", "-1, 7", [-1, 7]),
    ("CFG Scale", "1-2 (+0.5)", [1.0, 1.5, 2.0]),
    ("CFG Scale", "1-2 (+0.3)", [1.0, 1.3, 1.6, 1.9]),
    ("CFG Scale", "0.0-1.0 [6]", [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]),
    ("CFG Scale", "7.5, 8", [7.5, 8.0]),
    ("CFG Scale", "3-1", [3.0, 2.0, 1.0]),
    ("Prompt S/R", 'cat, "dog, big", bird', ["cat", "dog, big", "bird"]),
    ("Prompt S/R", "cat,", ["cat", ""]),
    ("Prompt S/R", "red\nblue", ["red", "blue"]),
    ("Size", "64x96, 128 x 64", ["64x96", "128 x 64"]),
])
def test_values_follow_a1111s_ranges_and_csv(xyz, label, text, expected):
    option = next(o for o in xyz.axis_options if o.label == label)
    values = xyz.axis_values(option, text)
    assert values == expected
    assert all(type(v) is option.type for v in values)


def test_prompt_order_values_are_every_ordering(xyz):
    option = next(o for o in xyz.axis_options if o.label == "Prompt order")
    assert xyz.axis_values(option, "a, b, c") == [("a", "b", "c"), ("a", "c", "b"), ("b", "a", "c"),
                                                  ("b", "c", "a"), ("c", "a", "b"), ("c", "b", "a")]


@pytest.mark.parametrize(("label", "text", "message"), [
    ("Steps", "abc", "Steps: 'abc' is not a whole number"),
    ("Steps", "2.5", "Steps: '2.5' is not a whole number"),
    ("Steps", "1-5 (-1)", "holds no values"),
    ("Steps", "1-5 (0)", "step of 0"),
    ("Steps", "", "Steps: give at least one value"),
    ("Steps", " , ", "Steps: give at least one value"),
    ("Seed", "1-100000", "makes 100000 values; an axis takes at most 1000"),
    ("Steps", "1-10 [5000]", "makes 5000 values"),
    ("CFG Scale", "lots", "CFG Scale: 'lots' is not a number"),
    ("CFG Scale", "nan", "not a finite number"),
    ("Prompt order", "a,b,c,d,e,f,g", "at most 1000"),
])
def test_bad_values_are_clear_errors(xyz, label, text, message):
    option = next(o for o in xyz.axis_options if o.label == label)
    with pytest.raises(xyz.XYZPlotError, match=re.escape(message)):
        xyz.axis_values(option, text)


def test_csv_helpers_round_trip_quoted_values(xyz):
    text = xyz.list_to_csv_string(["Euler a", "DPM++ 2M, fast", 'say "hi"'])
    assert text == 'Euler a,"DPM++ 2M, fast","say ""hi"""'
    assert xyz.csv_string_to_list_strip(text) == ["Euler a", "DPM++ 2M, fast", 'say "hi"']


# ---- the module as extensions use it

def test_the_axis_list_keeps_a1111s_indices_on_both_tabs(xyz):
    script = scripts.scripts_txt2img.title_map["x/y/z plot"]
    for tab in ("txt2img", "img2img"):
        expected = [label for label, only in A1111_AXES if only in (None, tab)]
        assert [a.label for a in script.axes_of_tab(tab == "img2img")][:len(expected)] == expected
    assert axis_index("Prompt S/R") == axis_index("Prompt S/R", "img2img") == 7  # what clients hard-code
    assert axis_index("Checkpoint name") == 11 and axis_index("Checkpoint name", "img2img") == 10
    for name in ("AxisOption", "AxisOptionImg2Img", "AxisOptionTxt2Img", "axis_options", "apply_field",
                 "apply_override", "format_value_add_label", "format_value", "format_value_join_list", "do_nothing",
                 "format_nothing", "str_permutations", "boolean_choice"):
        assert hasattr(xyz, name), name
    assert xyz.boolean_choice(reverse=True)() == ["False", "True"]


def test_the_ui_has_a1111s_arguments_in_order(program):
    _, host, _ = program
    info = next(s for s in host.script_info() if s["name"] == "x/y/z plot" and not s["is_img2img"])
    assert [a["label"] for a in info["args"]] == [
        "X type", "X values", "X values", "Y type", "Y values", "Y values", "Z type", "Z values", "Z values",
        "Draw legend", "Include Sub Images", "Include Sub Grids", "Keep -1 for seeds", "Vary seeds for X",
        "Vary seeds for Y", "Vary seeds for Z", "Grid margins (px)", "Use text inputs instead of dropdowns"]
    assert info["args"][0]["value"] == "Seed" and info["args"][3]["value"] == "Nothing"
    assert info["args"][16]["maximum"] == 500 and info["args"][9]["value"] is True


def test_axes_an_extension_appends_can_be_used(program, xyz, recorded):
    def apply_steps(p, x, _xs):
        p.steps = x
    xyz.axis_options += [xyz.AxisOptionTxt2Img("[Test] CFG", float, xyz.apply_field("cfg_scale")),
                         xyz.AxisOption("[Test] steps", int, apply_steps),
                         xyz.AxisOptionImg2Img("[Test] img2img only", int, apply_steps)]
    try:
        scripts.scripts_txt2img.initialize_scripts(False)  # the tab's controls are made again with the new axes
        result = plot(program, xyz_args(("[Test] CFG", "3, 7"), ("[Test] steps", "2")))
        labels = [a.label for a in scripts.scripts_txt2img.title_map["x/y/z plot"].current_axis_options]
    finally:
        del xyz.axis_options[-3:]
        scripts.scripts_txt2img.initialize_scripts(False)
    assert labels[-2:] == ["[Test] CFG", "[Test] steps"]
    assert [(p.cfg_scale, p.steps) for p in recorded] == [(3.0, 2), (7.0, 2)]
    assert 'X Type: [Test] CFG, X Values: "3, 7", Y Type: [Test] steps' in result.infotexts[0]


# ---- what each axis does to the cells (process_images recorded, nothing generated)

def test_axes_set_the_fields_and_settings_of_each_cell(program, recorded):
    plot(program, xyz_args(("Size", "64x96, 128x64"), ("Clip skip", "1,2"), ("RNG source", ["CPU"])))
    assert [(p.width, p.height, p.clip_skip) for p in recorded] == [(64, 96, 1), (128, 64, 1), (64, 96, 2),
                                                                     (128, 64, 2)]
    assert recorded[2].override_settings == {"CLIP_stop_at_last_layers": 2, "randn_source": "CPU"}
    assert all(p.override_settings_restore_afterwards is False for p in recorded)


def test_prompt_search_replace_order_styles_and_face_restore(program, recorded):
    plot(program, xyz_args(("Prompt S/R", "square, circle"), ("Prompt order", "red, big"),
                           ("Face restore", "no, CodeFormer")), prompt="a red big square", negative_prompt="square")
    assert [p.prompt for p in recorded[:4]] == ["a red big square", "a red big circle", "a big red square",
                                                "a big red circle"]
    assert recorded[1].negative_prompt == "circle"
    assert [p.restore_faces for p in recorded[::4]] == [False, True]
    assert recorded[4].override_settings["face_restoration_model"] == "CodeFormer"
    recorded.clear()
    plot(program, xyz_args(("Styles", ["ink"])))
    assert recorded[0].styles == ["ink"]


def test_seeds_are_fixed_once_unless_kept_and_vary_along_the_axes_asked(program, recorded):
    result = plot(program, xyz_args(("Seed", "-1, -1, 7")), seed=-1)
    seeds = [p.seed for p in recorded]
    assert seeds[2] == 7 and -1 not in seeds and seeds[0] != seeds[1]
    assert f"Fixed X Values: \"{seeds[0]}, {seeds[1]}, 7\"" in result.infotexts[0]
    recorded.clear()
    plot(program, xyz_args(("CFG Scale", "3,5,7"), ("Steps", "2,3"), vary=(True, True, False)), seed=100)
    assert [p.seed for p in recorded] == [100, 101, 102, 103, 104, 105]
    recorded.clear()
    plot(program, xyz_args(("CFG Scale", "3,5"), ("Steps", "2,3")), seed=-1)
    assert len({p.seed for p in recorded}) == 1 and recorded[0].seed != -1  # one fixed seed for the whole grid
    recorded.clear()
    plot(program, xyz_args(("CFG Scale", "3,5"), keep_seeds=True), seed=-1)
    assert [p.seed for p in recorded] == [-1, -1]  # each cell draws its own


def test_the_costliest_axis_changes_least_often(program, recorded):
    plot(program, xyz_args(("Steps", "2,3"), ("Checkpoint name", ["demo-shapes", "tiny-sd1"])))
    assert [(p.steps, p.override_settings["sd_model_checkpoint"].split(".")[0]) for p in recorded] == [
        (2, "demo-shapes"), (3, "demo-shapes"), (2, "tiny-sd1"), (3, "tiny-sd1")]
    recorded.clear()
    plot(program, xyz_args(("Checkpoint name", ["demo-shapes", "tiny-sd1"]), ("Steps", "2,3")))
    assert [p.steps for p in recorded] == [2, 3, 2, 3]  # Y is the inner loop: the checkpoint (X) costs more


def test_choice_axes_read_the_dropdown_or_the_text_in_csv_mode(program, recorded):
    plot(program, xyz_args(("Sampler", ["Euler a", "DPM++ 2M"])))
    plot(program, xyz_args(("Sampler", "euler a, DPM++ 2M"), csv_mode=True))
    plot(program, xyz_args(("Sampler", "Heun")))  # an API client filling only the text: taken at its word
    assert [p.sampler_name for p in recorded] == ["Euler a", "DPM++ 2M", "euler a", "DPM++ 2M", "Heun"]


def test_the_img2img_tab_has_its_own_axes(program, recorded):
    services, host, _ = program
    source = Image.new("RGB", (CELL, CELL), (200, 30, 30))
    req = Img2ImgRequest(prompt="a red square", steps=3, width=CELL, height=CELL, seed=5, init_images=[source],
                         save_images=False)
    args = xyz_args(("Denoising", "0.3, 0.6"), ("Cond. Image Mask Weight", "0.5"), tab="img2img")
    services.worker.run(req, runner=host.api_runner("img2img", "X/Y/Z plot", args, {}))
    assert [p.denoising_strength for p in recorded] == [0.3, 0.6]
    assert recorded[0].override_settings == {"inpainting_mask_weight": 0.5}
    for axis, message in ((("Image CFG Scale", "1.5"), "'Image CFG Scale' is not available here"),
                          (("Refiner checkpoint", ["None"]), "Refiner checkpoint: works on the txt2img tab only")):
        with pytest.raises(GenerationError, match=re.escape(message)):
            services.worker.run(req, runner=host.api_runner("img2img", "X/Y/Z plot", xyz_args(axis, tab="img2img"),
                                                            {}))


# ---- errors before anything is generated

@pytest.mark.parametrize(("axis", "message"), [
    (("Sampler", ["Euler a", "Euler b"]), "Unknown sampler: Euler b"),
    (("Sampler", "Euler b"), "Unknown sampler: Euler b; valid: DPM++ 2M"),
    (("Hires sampler", ["Nope"]), "Unknown sampler: Nope"),
    (("Checkpoint name", ["no-such-model"]), "Unknown checkpoint: no-such-model"),
    (("Refiner checkpoint", ["None", "no-such-model"]), "Unknown checkpoint: no-such-model"),
    (("VAE", ["no-such-vae"]), "Unknown VAE: no-such-vae; valid: Automatic, None"),
    (("Styles", ["ink", "watercolour"]), "Unknown style: watercolour; valid: ink"),
    (("Schedule type", ["Karass"]), "Unknown schedule type: Karass; valid: Automatic, Uniform, Karras"),
    (("Prompt S/R", "green, blue"), "Prompt S/R did not find green in prompt or negative prompt."),
    (("Prompt order", "red, circle"), "Prompt order: circle is not in the prompt"),
    (("RNG source", ["NV"]), "Unknown RNG source: NV; valid: GPU, CPU"),
    (("Size", "64"), "Size: '64' is not a size"),
    (("Steps", "0, 2"), 'Steps value "0" out of range'),
    (("Token merging ratio", "0.5"), "'Token merging ratio' is not available here: token merging is not implemented"),
    (("FP8 mode", ["Enable"]), "'FP8 mode' is not available here"),
    (("Initial noise multiplier", "1, 1.1"), "Initial noise multiplier: works on the img2img tab only"),
])
def test_bad_axes_are_refused_before_anything_is_generated(program, recorded, axis, message):
    with pytest.raises(GenerationError, match=re.escape(message)):
        plot(program, xyz_args(("Steps", "2,3"), axis))
    assert recorded == []


def test_an_axis_type_index_that_does_not_exist_is_an_error(program, recorded):
    args = xyz_args(("Steps", "2"))
    args[0] = 99
    with pytest.raises(GenerationError, match="axis type 99 does not exist"):
        plot(program, args)
    args[0] = "CFG Scale"  # some clients send the label: understood
    plot(program, args)
    assert recorded[0].cfg_scale == 2.0


# ---- real pictures

def test_a_3x2_grid_of_steps_and_cfg_each_cell_the_picture_generated_alone(program):
    services, _, data = program
    grids = data / "outputs" / "txt2img-grids"
    before = set(grids.rglob("*.png"))
    result = plot(program, xyz_args(("Steps", "2,3,4"), ("CFG Scale", "3,7"), lone_images=True))
    grid, *lone = result.images
    assert result.first_image == 1 and len(lone) == 6
    legend_left = grid.width - 3 * CELL  # at least A1111's three quarters of a cell, wider for readable legends
    assert legend_left >= CELL * 3 // 4 and grid.height > 2 * CELL  # and the column legends on top
    top = grid.height - 2 * CELL
    array = pixels(grid)
    for ix, steps in enumerate((2, 3, 4)):
        for iy, cfg in enumerate((3.0, 7.0)):
            alone = services.worker.run(small(steps=steps, cfg_scale=cfg))
            assert np.array_equal(pixels(cell_of(grid, 3, 2, ix, iy)), pixels(alone.images[0])), (steps, cfg)
            assert np.array_equal(pixels(lone[ix + 3 * iy]), pixels(alone.images[0]))
            assert result.infotexts[1 + ix + 3 * iy] == alone.infotexts[0]
        assert array[:top, legend_left + ix * CELL:legend_left + (ix + 1) * CELL].min() < 100, "no column legend"
    for iy in range(2):
        assert array[top + iy * CELL:top + (iy + 1) * CELL, :legend_left].min() < 100, "no row legend"
    assert not np.array_equal(array[:top, legend_left:legend_left + CELL],
                              array[:top, legend_left + CELL:legend_left + 2 * CELL])  # each its own text
    assert (array[:top, :legend_left] == 255).all()  # the corner stays empty, as A1111's
    info = result.infotexts[0]
    assert info.startswith("a red square\nSteps: 2, Sampler: Euler a,")
    assert 'Script: X/Y/Z plot, X Type: Steps, X Values: "2,3,4", Y Type: CFG Scale, Y Values: "3,7"' in info
    assert result.seeds == [5] * 6
    [saved] = set(grids.rglob("*.png")) - before
    assert saved.name.startswith("xyz_grid-")
    with Image.open(saved) as written:
        assert written.info["parameters"] == info and np.array_equal(pixels(written), array)


def test_the_z_axis_makes_sub_grids_side_by_side_with_margins(program):
    result = plot(program, xyz_args(("Steps", "2,3"), z=("CFG Scale", "3,7"), sub_grids=True, margin=4), steps=2)
    main, first, second = result.images
    assert first.size == second.size == (2 * CELL + 4, first.height) and first.height > CELL
    assert main.width == 2 * first.width and main.height > first.height
    top = main.height - first.height
    assert np.array_equal(pixels(main.crop((0, top, first.width, main.height))), pixels(first))
    assert np.array_equal(pixels(main.crop((first.width, top, main.width, main.height))), pixels(second))
    assert (pixels(first)[first.height - CELL:, CELL:CELL + 4] == 255).all()  # the margin between the cells
    main_info, first_info, second_info = result.infotexts[:3]  # then the cells' own, as A1111 lists them
    assert 'Z Type: CFG Scale, Z Values: "3,7"' in main_info and 'X Values: "2,3"' in main_info
    assert "Z Type" not in first_info and "CFG scale: 7.0" in second_info


def test_sampler_names_and_checkpoints_as_axes(program):
    services, _, _ = program
    result = plot(program, xyz_args(("Sampler", ["Euler a", "DPM++ 2M"]),
                                    ("Checkpoint name", ["demo-shapes", "tiny-sd1"]), lone_images=True), steps=2)
    texts = result.infotexts[1:]
    assert ["Sampler: Euler a" in texts[0], "Sampler: DPM++ 2M" in texts[1]] == [True, True]
    assert ["Model: demo-shapes" in t for t in texts] == [True, True, False, False]
    assert ["Model: tiny-sd1" in t for t in texts] == [False, False, True, True]
    alone = services.worker.run(small(steps=2, sampler_name="DPM++ 2M"))
    assert np.array_equal(pixels(result.images[2]), pixels(alone.images[0]))
    assert services.models.current.file.model_name == "demo-shapes"  # put back after the plot
    assert services.options.sd_model_checkpoint.startswith("demo-shapes")


def test_prompt_search_and_replace_changes_the_picture(program):
    services, _, _ = program
    result = plot(program, xyz_args(("Prompt S/R", "red square, blue circle"), lone_images=True), steps=4)
    assert [t.split("\n")[0] for t in result.infotexts[1:]] == ["a red square", "a blue circle"]
    alone = services.worker.run(small(prompt="a blue circle", steps=4))
    assert np.array_equal(pixels(result.images[2]), pixels(alone.images[0]))
    assert not np.array_equal(pixels(result.images[1]), pixels(result.images[2]))


def test_an_interrupt_stops_between_cells_and_keeps_what_is_done(program):
    services, host, _ = program

    class InterruptInSecondCell(GenerationState):
        steps = 0

        def step_done(self, preview=None):
            super().step_done(preview)
            InterruptInSecondCell.steps += 1
            if InterruptInSecondCell.steps == 3:
                self.interrupt()

    ctx = replace(services.context, state=InterruptInSecondCell(console=False))
    runner = host.api_runner("txt2img", "X/Y/Z plot", xyz_args(("CFG Scale", "3,5,7")), {})
    result = runner(small(steps=2), ctx)
    assert result.interrupted and InterruptInSecondCell.steps == 3  # nothing sampled after the interrupt
    grid = result.images[0]
    first_alone = services.worker.run(small(steps=2, cfg_scale=3.0)).images[0]
    assert np.array_equal(pixels(cell_of(grid, 3, 1, 0, 0)), pixels(first_alone))
    assert not pixels(cell_of(grid, 3, 1, 2, 0)).any()  # the cell never made is left black


def test_progress_counts_every_cell(program):
    services, host, _ = program
    seen = []

    class Watching(GenerationState):
        def step_done(self, preview=None):
            super().step_done(preview)
            seen.append((self.job_no, self.job_count))

    ctx = replace(services.context, state=Watching(console=False))
    host.api_runner("txt2img", "X/Y/Z plot", xyz_args(("CFG Scale", "3,5,7")), {})(small(steps=1), ctx)
    assert seen == [(0, 3), (1, 3), (2, 3)]


# ---- the API of a real server

def post(url: str, body: dict) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=300) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def decoded(b64: str) -> Image.Image:
    picture = Image.open(io.BytesIO(base64.b64decode(b64)))
    picture.load()
    return picture


@pytest.mark.server
def test_the_api_runs_the_plot_from_positional_script_args(tmp_path):
    body = {"prompt": "a red square", "steps": 3, "width": CELL, "height": CELL, "seed": 5, "sampler_name": "Euler a",
            "cfg_scale": 7}
    steps, cfg = 4, 6  # X: Steps, Y: CFG Scale, as A1111's indices
    script_args = [steps, "2,3", "", cfg, "3,7", "", 0, "", "", True, True, False, False, False, False, False, 0,
                   False]
    with serving(tmp_path, "--api") as server:
        status, answer = post(f"{server.url}/sdapi/v1/txt2img",
                              {**body, "script_name": "X/Y/Z plot", "script_args": script_args})
        assert status == 200, answer
        info = json.loads(answer["info"])
        assert info["index_of_first_image"] == 1 and len(answer["images"]) == 5
        grid = decoded(answer["images"][0])
        assert grid.width >= CELL * 3 // 4 + 2 * CELL and grid.height > 2 * CELL
        assert "Script: X/Y/Z plot, X Type: Steps" in info["infotexts"][0]
        assert [t.split("\n")[1].split(", ")[0] for t in info["infotexts"][1:]] == ["Steps: 2", "Steps: 3"] * 2
        assert ["CFG scale: 7.0" in t for t in info["infotexts"][1:]] == [False, False, True, True]
        status, alone = post(f"{server.url}/sdapi/v1/txt2img", {**body, "steps": 3, "cfg_scale": 7})
        assert np.array_equal(pixels(decoded(alone["images"][0])), pixels(cell_of(grid, 2, 2, 1, 1)))
        assert np.array_equal(pixels(decoded(answer["images"][4])), pixels(cell_of(grid, 2, 2, 1, 1)))

        status, answer = post(f"{server.url}/sdapi/v1/txt2img",
                              {**body, "script_name": "X/Y/Z plot", "script_args": [9, "Euler b", []]})
        assert status == 422 and "Unknown sampler: Euler b" in json.dumps(answer)


def test_a_size_axis_counts_towards_the_grid_limit_before_anything_is_made(program, monkeypatch):
    calls = []
    monkeypatch.setattr(processing, "process_images", lambda p: calls.append(p))
    with pytest.raises(GenerationError, match="too large"):
        plot(program, xyz_args(("Size", "64x64,8192x8192"), ("Seed", ", ".join(str(n) for n in range(4)))))
    assert calls == []
