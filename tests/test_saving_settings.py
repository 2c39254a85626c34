"""The saving settings (A1111's Settings -> Saving images/grids, Paths for saving, Saving to a directory): file and
folder name patterns, formats, folders; each read back from the files a job writes."""
import datetime as dt
import hashlib
import json
import os
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import numpy as np
import pytest
from PIL import Image

from modules.generation import Img2ImgRequest, Txt2ImgRequest, process_img2img, process_txt2img, saving
from modules.generation.extras import ExtrasRequest, run_extras
from modules.generation.filenames import FilenameGenerator, NameInfo, safe_name, safe_subfolders, sanitize_part
from modules.options import PATH_SETTINGS, Options
from tests.helpers import job_context

NOW = dt.datetime(2024, 3, 5, 14, 7, 9, tzinfo=dt.timezone.utc)
INFO = NameInfo(seed=1234, prompt="a red circle, (sharp:1.2)/night", prompt_no_styles="a red circle",
                negative_prompt="blue: ugly", steps=20, cfg_scale=7.5, sampler="DPM++ 2M", scheduler="Karras",
                styles=["night", "None"], model_name="tiny-sd1", model_hash="0123456789", vae_file="sub/my.vae.pt",
                clip_skip=2, denoising=0.75, job_timestamp="20240305140709", batch_size=2, n_iter=3, batch_index=1,
                iteration=2, all_seeds=[1230, 1231, 1232, 1233, 1234, 1235])


def gen(info: NameInfo = INFO, **kw) -> FilenameGenerator:
    return FilenameGenerator(info, Image.new("RGB", (48, 32)), now=NOW, **kw)


# ---- the pattern generator ----------------------------------------------------------------------

@pytest.mark.parametrize("pattern, expected", [
    ("[seed]", "1234"), ("[seed_first]", "1230"), ("[seed_last]", "1235"), ("[steps]", "20"), ("[cfg]", "7.5"),
    ("[width]x[height]", "48x32"), ("[sampler]", "DPM++ 2M"), ("[scheduler]", "Karras"),
    ("[sampler_scheduler]", "DPM++ 2M Karras"), ("[model_name]", "tiny-sd1"), ("[model_hash]", "0123456789"),
    ("[prompt]", "a_red_circle,_(sharp_1.2)_night"), ("[prompt_spaces]", "a red circle, (sharp_1.2)_night"),
    ("[prompt_no_styles]", "a red circle"), ("[prompt_words]", "a red circle sharp 1 2 night"),
    ("[negative_prompt]", "blue__ugly"), ("[styles]", "night"), ("[date]", "2024-03-05"),
    ("[datetime]", "20240305140709"), ("[datetime<%Y/%m/%d %H>]", "2024_03_05 14"),
    ("[datetime<%H:%M><Asia/Tokyo>]", "23_07"), ("[datetime<%H><No/Such_Zone>]", NOW.astimezone().strftime("%H")),
    ("[job_timestamp]", "20240305140709"), ("[clip_skip]", "2"), ("[batch_number]", "2"),
    ("[generation_number]", "6"), ("[denoising]", "0.75"), ("[vae_filename]", "my"), ("[none]", ""),
    ("[hasprompt<circle><square|nosquare>]", "circlenosquare"), ("[hasprompt<RED|x>]", "red"),
    ("[prompt_hash]", hashlib.sha256(b"a red circle, (sharp:1.2)/night").hexdigest()[:8]),
    ("[prompt_hash<4>]", hashlib.sha256(b"a red circle, (sharp:1.2)/night").hexdigest()[:4]),
    ("[SEED]-[Steps]", "1234-20"), ("[unknown]-[seed]", "[unknown]-1234"), ("x[none]y", "xy"),
])
def test_every_tag(pattern, expected):
    assert gen().apply(pattern) == expected


def test_tags_of_a_single_picture_leave_out_their_text():
    single = replace(INFO, batch_size=1, n_iter=1, batch_index=0, iteration=0, denoising=None)
    g = gen(single)
    assert g.apply("[seed]-[seed_last]") == "1234"  # [seed_last] and the "-" before it
    assert g.apply("[seed]-[batch_number]-[generation_number]-[denoising]") == "1234"
    assert g.apply("[seed_first]") == "1234"
    assert gen(replace(single, vae_file=None)).apply("[vae_filename]") == "NoneType"
    assert gen(NameInfo(seed=5)).apply("[seed]-[steps]-[prompt]") == "5-[steps]-[prompt]"  # not known: kept
    assert gen(replace(INFO, prompt="!!! ...")).apply("[prompt_words]") == "empty"
    assert gen(max_prompt_words=2).apply("[prompt_words]") == "a red"


def test_values_are_cleaned_as_a1111_cleans_them():
    assert sanitize_part('a<b>c:d"e/f\\g|h?i*j#k\nl') == "a_b_c_d_e_f_g_h_i_j_k_l"
    assert sanitize_part(" two words") == "_two_words"  # spaces become "_" first, as in A1111
    assert sanitize_part("  keep spaces  .", replace_spaces=False) == "keep spaces"
    assert len(sanitize_part("w" * 1000)) == 128
    assert len(gen(replace(INFO, prompt="word " * 100)).apply("[prompt]")) == 128


@pytest.mark.parametrize("pattern", ["../../escaped", "..", "/etc/passwd", "\\\\server\\share\\x", "C:\\Windows\\x",
                                     "a/../../b", '<>:"|?*', "CON", "nul.txt", "  .  ", "[prompt]/../[seed]"])
def test_no_pattern_names_a_place_outside_the_folder(pattern, tmp_path):
    name = gen().file_stem(pattern)
    assert "/" not in name and "\\" not in name and name not in (".", "..")
    assert not set('<>:"|?*').intersection(name)
    assert name.split(".")[0].upper() not in ("CON", "NUL")
    for part in gen().subfolders(pattern):
        assert part not in ("", ".", "..") and "/" not in part and "\\" not in part and ":" not in part
    folder = tmp_path / "out"
    opts = Options(samples_filename_pattern=pattern, directories_filename_pattern=pattern)
    path = saving.save_image(Image.new("RGB", (8, 8)), folder, 1234, "text", opts=opts, names=gen())
    assert path.resolve().is_relative_to(folder.resolve()) and path.is_file()
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == [path]  # nothing was written anywhere else


def test_names_fit_the_file_system():
    long = "日本語のプロンプト " * 200  # 3 bytes a character
    assert len(safe_name(long).encode()) <= 255
    assert safe_name(long).encode().decode() == safe_name(long)  # never cut inside a character
    assert safe_subfolders("a//b/./c/../d") == ["a", "b", "c", "d"]


def test_a_long_name_is_shortened_to_fit(tmp_path):
    opts = Options(samples_filename_pattern="[prompt_spaces]-[prompt_spaces]-[prompt_spaces]", save_to_dirs=False)
    names = gen(replace(INFO, prompt="日本語のプロンプト " * 200))
    path = saving.save_image(Image.new("RGB", (8, 8)), tmp_path, 1, "x", opts=opts, names=names)
    assert path.is_file() and len(path.name.encode()) <= 255 and path.name.startswith("00000-日本語")


def test_sequence_numbers_continue_after_existing_files(tmp_path):
    for name in ("00007-1.png", "00003.png", "grid-0011.png", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "00099-a-folder").mkdir()
    assert saving.next_sequence_number(tmp_path) == 8
    assert saving.next_sequence_number(tmp_path, "grid") == 12
    opts = Options(save_to_dirs=False, samples_filename_pattern="[seed]")
    assert saving.save_image(Image.new("RGB", (8, 8)), tmp_path, 5, None, opts=opts).name == "00008-5.png"


def test_the_number_can_be_left_out_and_the_name_then_replaces(tmp_path):
    opts = Options(save_images_add_number=False, save_to_dirs=False, samples_filename_pattern="[seed]-[steps]")
    first = saving.save_image(Image.new("RGB", (8, 8), "red"), tmp_path, 1234, None, opts=opts, names=gen())
    again = saving.save_image(Image.new("RGB", (8, 8), "blue"), tmp_path, 1234, None, opts=opts, names=gen())
    assert first == again == tmp_path / "1234-20.png" and len(list(tmp_path.iterdir())) == 1
    assert Image.open(again).getpixel((0, 0)) == (0, 0, 255)
    blank = Options(save_images_add_number=False, save_to_dirs=False, samples_filename_pattern="[none]")
    path = saving.save_image(Image.new("RGB", (8, 8)), tmp_path / "new", 1, None, opts=blank)
    assert path == tmp_path / "new" / "00000.png"  # an empty name: numbered after all


def test_without_subfolders_the_default_name_has_the_prompt(tmp_path):
    path = saving.save_image(Image.new("RGB", (8, 8)), tmp_path, 1234, None, opts=Options(save_to_dirs=False),
                             names=gen())
    assert path.name == "00000-1234-a red circle, (sharp_1.2)_night.png"


def test_path_settings_are_the_ones_a1111_restricts():
    assert {"samples_filename_pattern", "directories_filename_pattern", "outdir_samples", "outdir_txt2img_samples",
            "outdir_img2img_samples", "outdir_extras_samples", "outdir_grids", "outdir_txt2img_grids",
            "outdir_save", "outdir_init_images", "outdir_img2img_grids"} == set(PATH_SETTINGS)


def test_folders_resolve_inside_the_data_folder(tmp_path):
    outputs = tmp_path / "outputs"
    opts = Options()
    assert saving.output_folder(opts, outputs, "txt2img-images") == outputs / "txt2img-images"
    assert saving.output_folder(opts, outputs, "img2img-grids") == outputs / "img2img-grids"
    assert saving.output_folder(opts, outputs, "save") == tmp_path / "log" / "images"
    assert saving.output_folder(opts, outputs, "init-images") == outputs / "init-images"
    mine = Options(outdir_txt2img_samples="pictures/t2i", outdir_grids=str(tmp_path / "all-grids"))
    assert saving.output_folder(mine, outputs, "txt2img-images") == tmp_path / "pictures" / "t2i"
    assert saving.output_folder(mine, outputs, "txt2img-grids") == tmp_path / "all-grids"
    every = Options(outdir_samples=str(tmp_path / "every"))
    assert saving.output_folder(every, outputs, "extras-images") == tmp_path / "every"


def test_old_config_files_with_empty_folders_keep_the_usual_ones(tmp_path):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"outdir_txt2img_samples": "", "outdir_img2img_samples": ""}))
    opts = Options.load(config)
    assert saving.output_folder(opts, tmp_path / "outputs", "txt2img-images") == tmp_path / "outputs" / "txt2img-images"
    assert saving.output_folder(opts, tmp_path / "outputs", "img2img-images") == tmp_path / "outputs" / "img2img-images"


def test_grid_layout_settings():
    assert saving.grid_rows(6) == 2 and saving.grid_rows(6, n_rows=3) == 3 and saving.grid_rows(6, 0, 3) == 3
    assert saving.grid_rows(5) == 2 and saving.grid_rows(5, prevent_empty_spots=True) == 1
    assert saving.grid_rows(8, prevent_empty_spots=True) == 2


# ---- what jobs write ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def services(make_services, tiny_dir):
    return make_services(Options(randn_source="CPU"), "--ckpt-dir", str(tiny_dir))


@pytest.fixture
def ctx(services, tmp_path):
    return job_context(services, tmp_path)


def small(**kw) -> Txt2ImgRequest:
    base = dict(prompt="a red circle", negative_prompt="blue", width=32, height=32, steps=3, seed=1234,
                sampler_name="Euler a", cfg_scale=5.0)
    return Txt2ImgRequest(**{**base, **kw})


def files(folder: Path, pattern: str = "*") -> list[Path]:
    return sorted(p for p in folder.rglob(pattern) if p.is_file())


def test_default_folders_names_and_date_subfolder(ctx):
    before = dt.date.today().isoformat()
    res = process_txt2img(small(batch_size=2), ctx)
    after = dt.date.today().isoformat()
    [first, second] = res.paths
    assert first.parent.parent == ctx.outputs_dir / "txt2img-images" and first.parent.name in (before, after)
    assert (first.name, second.name) == ("00000-1234.png", "00001-1235.png")
    [grid] = files(ctx.outputs_dir / "txt2img-grids")
    assert grid.parent.name in (before, after) and grid.name == "grid-0000.png"


def test_patterns_and_subfolder_settings(ctx, tmp_path):
    opts = ctx.options
    opts.samples_filename_pattern = "[seed]-[steps]-[sampler]-[model_name]-[prompt_words]"
    opts.directories_filename_pattern = "[model_name]/[cfg]"
    opts.directories_max_prompt_words = 2
    opts.grid_extended_filename = True
    opts.grid_save_to_dirs = False
    opts.outdir_txt2img_samples = str(tmp_path / "mine")
    res = process_txt2img(small(batch_size=2), ctx)
    assert res.paths[0] == tmp_path / "mine" / "tiny-sd1" / "5.0" / "00000-1234-3-Euler a-tiny-sd1-a red.png"
    [grid] = files(ctx.outputs_dir / "txt2img-grids")
    assert grid.parent == ctx.outputs_dir / "txt2img-grids"  # grid_save_to_dirs off
    assert grid.name == "grid-0000-1234-3-Euler a-tiny-sd1-a red.png"  # grid_extended_filename
    opts.save_to_dirs, opts.save_images_add_number = False, False
    opts.samples_filename_pattern = "../../[seed]-[batch_number]"
    res = process_txt2img(small(batch_size=2), ctx)
    assert [p.name for p in res.paths] == [".._.._1234-1.png", ".._.._1235-2.png"]
    assert all(p.parent == tmp_path / "mine" for p in res.paths)


def test_jpeg_quality_changes_the_file_size(ctx):
    ctx.options.samples_format = "jpg"
    sizes = {}
    for quality in (5, 100):
        ctx.options.jpeg_quality = quality
        [path] = process_txt2img(small(width=64, height=64), ctx).paths
        assert path.suffix == ".jpg" and Image.open(path).format == "JPEG"
        sizes[quality] = path.stat().st_size
    assert sizes[5] < sizes[100] * 0.7


def test_webp_lossless_keeps_every_pixel(ctx):
    ctx.options.samples_format = "webp"
    ctx.options.webp_lossless = True
    res = process_txt2img(small(), ctx)
    saved = Image.open(res.paths[0])
    assert np.array_equal(np.asarray(saved.convert("RGB")), np.asarray(res.images[0].convert("RGB")))
    assert saving.read_infotext(saved) == res.infotexts[0]
    ctx.options.webp_lossless = False
    lossy = Image.open(process_txt2img(small(), ctx).paths[0])
    assert not np.array_equal(np.asarray(lossy.convert("RGB")), np.asarray(res.images[0].convert("RGB")))


def test_save_txt_writes_the_infotext_beside_the_picture(ctx):
    ctx.options.save_txt = True
    res = process_txt2img(small(), ctx)
    png = res.paths[0]
    text = png.with_suffix(".txt").read_text(encoding="utf-8")
    assert text == Image.open(png).info["parameters"] + "\n" == res.infotexts[0] + "\n"


def test_enable_pnginfo_off_leaves_the_parameters_out(ctx):
    ctx.options.enable_pnginfo = False
    ctx.options.save_txt = True
    res = process_txt2img(small(), ctx)
    saved = Image.open(res.paths[0])
    assert "parameters" not in saved.info and saving.read_infotext(saved) is None
    assert res.paths[0].with_suffix(".txt").read_text(encoding="utf-8") == res.infotexts[0] + "\n"  # as A1111
    ctx.options.samples_format = "jpg"
    assert saving.read_infotext(Image.open(process_txt2img(small(), ctx).paths[0])) is None


def test_grid_format_rows_and_single_picture_grids(ctx):
    opts = ctx.options
    opts.grid_format, opts.n_rows = "webp", 1
    process_txt2img(small(batch_size=2), ctx)
    [grid] = files(ctx.outputs_dir / "txt2img-grids")
    assert grid.suffix == ".webp" and Image.open(grid).format == "WEBP" and Image.open(grid).size == (64, 32)
    opts.n_rows = 0  # one row per picture of a batch
    process_txt2img(small(batch_size=2), ctx)
    assert Image.open(files(ctx.outputs_dir / "txt2img-grids")[-1]).size == (32, 64)
    res = process_txt2img(small(), ctx)
    assert res.grid is None and len(files(ctx.outputs_dir / "txt2img-grids")) == 2  # one picture: no grid
    opts.grid_only_if_multiple = False
    res = process_txt2img(small(), ctx)
    assert res.grid is not None and len(files(ctx.outputs_dir / "txt2img-grids")) == 3


def test_outdir_settings_place_images_and_grids(ctx, tmp_path):
    opts = ctx.options
    opts.outdir_samples, opts.outdir_grids = "every/images", str(tmp_path / "every-grid")
    res = process_txt2img(small(batch_size=2), ctx)
    assert res.paths[0].parent.parent == ctx.outputs_dir.parent / "every" / "images"
    assert len(files(tmp_path / "every-grid")) == 1 and not (ctx.outputs_dir / "txt2img-grids").exists()


def test_img2img_saves_init_image_mask_and_composite(ctx, tmp_path):
    opts = ctx.options
    opts.save_init_img, opts.save_mask, opts.save_mask_composite = True, True, True
    opts.outdir_init_images = str(tmp_path / "init")
    opts.save_to_dirs = False
    init = Image.new("RGB", (32, 32), (200, 40, 40))
    mask = Image.new("L", (32, 32), 0)
    mask.paste(255, (0, 0, 16, 32))  # paint the left half
    req = Img2ImgRequest(prompt="a red circle", width=32, height=32, steps=3, seed=7, sampler_name="Euler",
                         init_images=[init], mask=mask, mask_blur=0, denoising_strength=0.8)
    res = process_img2img(req, ctx)
    digest = hashlib.md5(init.tobytes()).hexdigest()
    saved_init = tmp_path / "init" / f"{digest}.png"
    assert np.array_equal(np.asarray(Image.open(saved_init).convert("RGB")), np.asarray(init))
    assert f"Init image hash: {digest}" in res.infotexts[0]
    folder = ctx.outputs_dir / "img2img-images"
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["00000-7-a red circle.png", "00001-7-a red circle-mask.png",  # no subfolder: with prompt
                     "00002-7-a red circle-mask-composite.png"]
    saved_mask = np.asarray(Image.open(folder / "00001-7-a red circle-mask.png").convert("L"))
    assert saved_mask[:, :16].min() == 255 and saved_mask[:, 16:].max() == 0
    composite = Image.open(folder / "00002-7-a red circle-mask-composite.png")
    assert composite.mode == "RGBA" and composite.getpixel((30, 5))[3] == 0 and composite.getpixel((2, 5))[3] == 255


def test_extras_use_their_folder_and_format(tmp_path):
    opts = Options(outdir_extras_samples=str(tmp_path / "ex"), samples_format="jpg", jpeg_quality=90)
    picture = Image.new("RGB", (16, 16), (10, 200, 10))
    _, texts, [path] = run_extras([picture], ExtrasRequest(upscaling_resize=2), tmp_path / "outputs", opts)
    assert path == tmp_path / "ex" / "00000.jpg" and Image.open(path).size == (32, 32)
    assert saving.read_infotext(Image.open(path)) == texts[0]


# ---- the page's Save button --------------------------------------------------------------------

def _save_button(options: Options, outputs: Path):
    from modules.ui.generation import output_panel
    worker = SimpleNamespace(ctx=SimpleNamespace(outputs_dir=outputs, options=options))
    with gr.Blocks() as demo:
        output_panel("txt2img", worker)
    [fn] = [f.fn for f in demo.fns.values() if getattr(f.fn, "__name__", "") == "save_selected"]
    return fn


def test_save_button_follows_the_settings(tmp_path):
    opts = Options()
    save = _save_button(opts, tmp_path / "outputs")
    pictures = [(Image.new("RGB", (8, 8), c), None) for c in ("red", "green", "blue")]
    texts = [f"a cat\nSteps: 20, Sampler: Euler, CFG scale: 7, Seed: {s}, Size: 8x8" for s in (10, 11, 12)]
    download, notice = save(pictures, 1, {"infotexts": texts})
    [saved] = files(tmp_path / "log" / "images")
    assert saved.name == "00000-11.png" and Image.open(saved).getpixel((0, 0)) == (0, 128, 0)
    assert saving.read_infotext(Image.open(saved)) == texts[1] and download["value"] == [str(saved)]
    opts.save_selected_only = False
    opts.use_save_to_dirs_for_ui = True
    opts.directories_filename_pattern = "[steps]"
    opts.samples_filename_pattern = "[seed]-[sampler]"
    save(pictures, 1, {"infotexts": texts})
    assert [p.name for p in files(tmp_path / "log" / "images" / "20")] == ["00000-10-Euler.png", "00001-11-Euler.png",
                                                                            "00002-12-Euler.png"]
    opts.outdir_save = str(tmp_path / "elsewhere")
    save(pictures, 0, {})  # pictures without infotext: numbers only
    assert [p.name for p in files(tmp_path / "elsewhere")] == ["00000.png", "00001.png", "00002.png"]
    assert os.path.isdir(tmp_path / "elsewhere")


@pytest.mark.parametrize("pattern", ["[prompt_hash<\u00b2>]", "[prompt_hash<" + "9" * 5000 + ">]",
                                     "[datetime<%Y><America>]", "[datetime<%Y><" + "x" * 5000 + ">]",
                                     "[seed]-[datetime<%Y><../../etc>]"])
def test_a_hostile_tag_never_stops_a_save(pattern):
    name = gen().file_stem(pattern)
    assert name and "/" not in name and len(name.encode()) <= 255


def test_folder_patterns_nest_at_most_eight_deep():
    assert len(gen().subfolders("[seed]/" * 2000)) == 8


def test_hasprompt_takes_the_text_after_the_first_bar_as_a1111():
    assert gen(NameInfo(prompt="a dog")).file_stem("[hasprompt<cat|b|c><dog>]") == "bdog"


@pytest.mark.parametrize("count, n_rows, batch, rows", [(2, 16, 1, 2), (3, 0, 4, 3), (4, -1, 1, 2), (1, -1, 1, 1)])
def test_grid_never_has_more_rows_than_pictures(count, n_rows, batch, rows):
    assert saving.grid_rows(count, n_rows, batch) == rows
