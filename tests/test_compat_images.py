"""modules.images, A1111's picture helpers for scripts and extensions: grids, tiles, legends, resizing, saving and
reading pictures, on real files."""
import datetime as dt
import random
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image, ImageOps

from modules import images, script_callbacks, shared
from modules.generation import saving
from modules.options import Options


@pytest.fixture(autouse=True)
def opts(monkeypatch) -> Options:
    """shared.opts as the settings' defaults (any object with attribute access by A1111 key works)."""
    options = Options()
    monkeypatch.setattr(shared, "opts", options)
    return options


@pytest.fixture
def callback():
    """Register an A1111 callback for one test: callback(script_callbacks.on_image_saved, function)."""
    registered = []

    def register(on, function):
        on(function)
        registered.append(function)

    yield register
    for function in registered:
        script_callbacks.remove_callbacks_for_function(function)


def noise(width: int, height: int, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


def colours(count: int) -> list[tuple[int, int, int]]:
    return [(20 * i + 10, 255 - 20 * i, 100) for i in range(count)]


def ink(image: Image.Image, box: tuple[int, int, int, int], darker_than: int = 100) -> np.ndarray:
    """Where the picture's region is darker than `darker_than` (text on the white background)."""
    return np.asarray(image.crop(box).convert("L")) < darker_than


# ---- image_grid

@pytest.mark.parametrize(("n_rows", "prevent_empty", "batch_size", "count", "cols", "rows"), [
    (-1, False, 1, 6, 3, 2),  # near square
    (-1, False, 1, 5, 3, 2),
    (-1, True, 1, 5, 5, 1),  # no empty spot: one row
    (0, False, 3, 6, 2, 3),  # one row per picture of a batch
    (4, False, 1, 6, 2, 4),
    (8, False, 1, 3, 1, 3),  # never more rows than pictures
])
def test_image_grid_layout_follows_the_settings(opts, n_rows, prevent_empty, batch_size, count, cols, rows):
    opts.n_rows, opts.grid_prevent_empty_spots = n_rows, prevent_empty
    pictures = [Image.new("RGB", (40, 30), c) for c in colours(count)]
    grid = images.image_grid(pictures, batch_size=batch_size)
    assert grid.size == (cols * 40, rows * 30)
    for i, colour in enumerate(colours(count)):
        assert grid.getpixel((i % cols * 40 + 20, i // cols * 30 + 15)) == colour


def test_image_grid_rows_argument_and_grid_callbacks(callback):
    pictures = [Image.new("RGB", (10, 10), c) for c in colours(4)]
    assert images.image_grid(pictures, rows=1).size == (40, 10)
    callback(script_callbacks.on_image_grid, lambda params: setattr(params, "cols", 4) or setattr(params, "rows", 1))
    assert images.image_grid(pictures).size == (40, 10)  # the callback's layout, not the 2x2 of the settings


# ---- split_grid / combine_grid

@pytest.mark.parametrize(("width", "height", "tile_w", "tile_h", "overlap"), [
    (1000, 700, 256, 256, 64),
    (777, 555, 200, 160, 32),
    (512, 512, 512, 512, 64),  # one tile
    (300, 200, 512, 512, 64),  # smaller than a tile
    (600, 400, 256, 256, 0),
])
def test_split_then_combine_gives_the_picture_back(width, height, tile_w, tile_h, overlap):
    picture = noise(width, height)
    grid = images.split_grid(picture, tile_w, tile_h, overlap)
    assert (grid.image_w, grid.image_h, grid.tile_w, grid.tile_h, grid.overlap) == (width, height, tile_w, tile_h,
                                                                                     overlap)
    for _, h, row in grid.tiles:
        assert h == tile_h
        for _, w, tile in row:
            assert w == tile_w and tile.size == (tile_w, tile_h)
    assert np.array_equal(np.asarray(images.combine_grid(grid)), np.asarray(picture))


def test_tiles_cover_the_picture_with_the_overlap():
    grid = images.split_grid(noise(1000, 700), 256, 256, 64)
    assert len(grid.tiles) == 4 and all(len(row) == 5 for _, _, row in grid.tiles)  # A1111's counts
    xs = [x for x, _, _ in grid.tiles[0][2]]
    assert xs[0] == 0 and xs[-1] == 1000 - 256
    assert all(b - a <= 256 - 64 for a, b in zip(xs, xs[1:]))


def test_combine_uses_the_processed_tiles():
    """What SD upscale does: process every tile in place, then combine."""
    picture = noise(700, 500, seed=1)
    grid = images.split_grid(picture, 256, 256, 64)
    for _, _, row in grid.tiles:
        for tiledata in row:
            tiledata[2] = ImageOps.invert(tiledata[2])
    assert np.array_equal(np.asarray(images.combine_grid(grid)), np.asarray(ImageOps.invert(picture)))


def test_overlaps_fade_from_one_tile_into_the_next():
    grid = images.split_grid(Image.new("RGB", (400, 256), "grey"), 256, 256, 64)
    (_, _, row), = grid.tiles
    assert [x for x, _, _ in row] == [0, 144]
    row[0][2], row[1][2] = Image.new("RGB", (256, 256), "black"), Image.new("RGB", (256, 256), "white")
    line = np.asarray(images.combine_grid(grid).convert("L"))[100]
    assert (line[:144] == 0).all() and (line[208:] == 255).all()
    fade = line[144:208]
    assert fade[0] < 10 and fade[-1] > 240 and (np.diff(fade.astype(int)) >= 0).all()


def test_split_refuses_an_overlap_as_large_as_a_tile():
    with pytest.raises(ValueError, match="overlap"):
        images.split_grid(noise(300, 300), 64, 64, 64)


# ---- legends

def cells_grid(cols: int, rows: int, size: int, colour=(128, 128, 128)) -> Image.Image:
    return Image.new("RGB", (cols * size, rows * size), colour)


def test_annotations_draw_legends_around_the_cells():
    grid = noise(256, 256, seed=2)
    hor = [[images.GridAnnotation("CFG Scale: 7")], [images.GridAnnotation("CFG Scale: 9")]]
    ver = [[images.GridAnnotation("Seed: 1")], [images.GridAnnotation("Seed: 2")]]
    out = images.draw_grid_annotations(grid, 128, 128, hor, ver)
    pad_left = 128 * 3 // 4
    pad_top = out.height - 256
    assert out.width == 256 + pad_left and pad_top > 0
    assert np.array_equal(np.asarray(out.crop((pad_left, pad_top, out.width, out.height))), np.asarray(grid))
    for col in range(2):  # text above each column
        assert ink(out, (pad_left + 128 * col, 0, pad_left + 128 * (col + 1), pad_top)).sum() > 30
    for row in range(2):  # and beside each row
        assert ink(out, (0, pad_top + 128 * row, pad_left, pad_top + 128 * (row + 1))).sum() > 30


def test_margin_separates_the_cells():
    hor = [[images.GridAnnotation("a")], [images.GridAnnotation("b")], [images.GridAnnotation("c")]]
    ver = [[images.GridAnnotation("x")], [images.GridAnnotation("y")]]
    plain = images.draw_grid_annotations(cells_grid(3, 2, 100), 100, 100, hor, ver)
    spaced = images.draw_grid_annotations(cells_grid(3, 2, 100), 100, 100, hor, ver, margin=10)
    assert spaced.size == (plain.width + 20, plain.height + 10)
    pad_left, pad_top = 75, plain.height - 200
    gap = np.asarray(spaced.crop((pad_left + 100, pad_top, pad_left + 110, spaced.height)))
    assert (gap == 255).all()  # the background between two columns


def test_font_size_follows_the_cell_size():
    def text_height(size: int) -> int:
        out = images.draw_grid_annotations(cells_grid(1, 1, size), size, size, [[images.GridAnnotation("Steps")]],
                                           [[images.GridAnnotation("")]])
        rows = np.nonzero(ink(out, (0, 0, out.width, out.height - size)).any(axis=1))[0]
        return rows[-1] - rows[0] + 1

    small, large = text_height(256), text_height(1024)
    assert 3.2 < large / small < 4.8  # (width + height) / 25 pixels: four times the cell, four times the text
    # small cells (the demo model's 64 px) keep a readable size instead of A1111's 5 px
    assert text_height(64) >= 0.6 * images.MIN_LEGEND_FONT_SIZE


def test_long_texts_wrap_within_their_column():
    words = "Sampler: DPM++ 2M Karras with a prompt that goes on and on"
    short = images.draw_grid_annotations(cells_grid(2, 1, 200), 200, 200, [[images.GridAnnotation("short")],
                                         [images.GridAnnotation("")]], [[images.GridAnnotation("")]])
    long = images.draw_grid_annotations(cells_grid(2, 1, 200), 200, 200, [[images.GridAnnotation(words)],
                                        [images.GridAnnotation("")]], [[images.GridAnnotation("")]])
    assert long.width == 400 and long.height > short.height + 30  # more lines, a taller legend
    top = ink(long, (0, 0, 400, long.height - 200))
    columns = np.nonzero(top.any(axis=0))[0]
    assert columns[0] >= 0 and columns[-1] < 200  # all of it above the first column


def test_inactive_texts_are_grey_and_struck_through():
    out = images.draw_grid_annotations(cells_grid(1, 1, 256), 256, 256, [[images.GridAnnotation("negative", False)]],
                                       [[images.GridAnnotation("")]])
    top = np.asarray(out.crop((0, 0, 256, out.height - 256)).convert("L")).astype(int)
    assert top.min() > 100  # no black text
    grey = (top > 120) & (top < 190)
    text_width = np.ptp(np.nonzero(grey.any(axis=0))[0])
    assert grey.sum(axis=1).max() >= 0.9 * text_width  # one line of grey across the whole word


def test_prompt_matrix_legends_every_combination():
    out = images.draw_prompt_matrix(cells_grid(4, 2, 64), 64, 64, ["a cat", "red", "hat", "sunny"])
    pad_left, pad_top = out.width - 256, out.height - 128
    assert pad_left >= 48 and pad_top > 0  # at least A1111's 3/4 of a cell, more where the row legends need it
    for col in range(4):
        assert ink(out, (pad_left + 64 * col, 0, pad_left + 64 * (col + 1), pad_top), 200).any()
    with pytest.raises(ValueError, match="horizontal texts"):
        images.draw_prompt_matrix(cells_grid(3, 2, 64), 64, 64, ["a cat", "red", "hat", "sunny"])


def test_font_falls_back_to_the_built_in_one(opts, monkeypatch):
    monkeypatch.setattr(opts, "font", "/nonexistent/font.ttf", raising=False)
    font = images.get_font(30)
    assert font.size == 30 and font.getlength("Seed") > 30


# ---- resize_image

def halves(width: int, height: int) -> Image.Image:
    picture = Image.new("RGB", (width, height), "red")
    picture.paste("blue", (width // 2, 0, width, height))
    return picture


def test_resize_modes():
    assert images.resize_image(0, halves(100, 50), 64, 64).size == (64, 64)
    cropped = images.resize_image(1, halves(200, 100), 100, 100)  # the middle of the picture: red, then blue
    assert cropped.getpixel((2, 50))[0] > 200 and cropped.getpixel((97, 50))[2] > 200
    filled = images.resize_image(2, halves(200, 100), 100, 100)  # top and bottom filled from the edge, not black
    assert filled.size == (100, 100) and sum(filled.getpixel((10, 2))) > 200 and sum(filled.getpixel((90, 97))) > 200


class FakeScaler:
    def __init__(self):
        self.calls = []

    def upscale(self, img, scale, data_path):
        self.calls.append((scale, data_path))
        return img.resize((round(img.width * scale), round(img.height * scale)), Image.NEAREST)


def test_resize_enlarges_with_the_named_upscaler(opts, monkeypatch):
    scaler = FakeScaler()
    monkeypatch.setattr(shared, "sd_upscalers", [SimpleNamespace(name="Fake", scaler=scaler, data_path="fake.pth")],
                        raising=False)
    assert images.resize_image(0, noise(32, 32), 64, 64, upscaler_name="Fake").size == (64, 64)
    assert scaler.calls == [(2.0, "fake.pth")]
    images.resize_image(0, noise(64, 64), 32, 32, upscaler_name="Fake")  # smaller: no upscaler
    assert len(scaler.calls) == 1
    opts.upscaler_for_img2img = "Fake"  # the setting, when no name is given
    images.resize_image(1, noise(40, 20), 80, 80)
    assert len(scaler.calls) == 2
    with pytest.raises(ValueError, match="Missing"):
        images.resize_image(0, noise(32, 32), 64, 64, upscaler_name="Missing")


def test_flatten_fills_transparency():
    picture = Image.new("RGBA", (2, 1), (0, 0, 255, 255))
    picture.putpixel((1, 0), (0, 255, 0, 0))
    flat = images.flatten(picture, "#ff0000")
    assert flat.mode == "RGB" and flat.getpixel((0, 0)) == (0, 0, 255) and flat.getpixel((1, 0)) == (255, 0, 0)


# ---- names

def test_sanitize_filename_part():
    assert images.sanitize_filename_part("a b/c:d") == "a_b_c_d"
    assert images.sanitize_filename_part(" a b?. ", replace_spaces=False) == "a b_"  # no spaces or dots at the ends


def test_filename_generator_reads_a1111_processing_objects():
    p = SimpleNamespace(steps=20, cfg_scale=7.0, sampler_name="Euler a", styles=[], batch_size=1, n_iter=1,
                        prompt="a cat", negative_prompt="", all_seeds=[42], denoising_strength=None)
    picture = Image.new("RGB", (64, 32))
    names = images.FilenameGenerator(p, 42, "a cat, photo", picture)
    assert names.apply("[seed]-[steps]-[cfg]-[sampler]-[width]x[height]-[basename]") == "42-20-7.0-Euler a-64x32-img"
    assert names.apply("[prompt_words]-[styles]") == "a cat photo-None"
    assert images.FilenameGenerator(p, 42, None, picture, basename="grid").apply("[basename]") == "grid"
    assert images.FilenameGenerator(None, 7, "x", picture).apply("[seed]-[steps]") == "7-[steps]"  # unknown stays


def test_get_next_sequence_number(tmp_path):
    (tmp_path / "00003-1.png").touch()
    (tmp_path / "grid-0007.png").touch()
    assert images.get_next_sequence_number(tmp_path, "") == 4
    assert images.get_next_sequence_number(str(tmp_path), "grid") == 8


# ---- saving and reading

def test_save_image_writes_a_numbered_file_whose_text_reads_back(tmp_path):
    fullfn, txt = images.save_image(noise(32, 32), str(tmp_path), "", seed=42, prompt="a cat", info="a cat\nSeed: 42")
    path = Path(fullfn)
    assert path.parent == tmp_path / dt.date.today().isoformat()  # save_to_dirs with the [date] pattern
    assert path.name == "00000-42.png" and txt is None
    with Image.open(path) as saved:
        assert images.read_info_from_image(saved) == ("a cat\nSeed: 42", {})
    second, _ = images.save_image(noise(32, 32), str(tmp_path), "", seed=42, info="x")
    assert Path(second).name == "00001-42.png"


def test_save_image_follows_the_name_settings(opts, tmp_path):
    opts.save_to_dirs, opts.samples_filename_pattern = False, "[seed]-[steps]-[sampler]"
    p = SimpleNamespace(steps=20, cfg_scale=7, sampler_name="Euler a", styles=[], batch_size=1, n_iter=1)
    fullfn, _ = images.save_image(noise(8, 8), tmp_path, "", seed=5, prompt="x", p=p, extension="jpg", info="text")
    assert Path(fullfn) == tmp_path / "00000-5-20-Euler a.jpg"
    with Image.open(fullfn) as saved:
        assert saved.format == "JPEG" and images.read_info_from_image(saved)[0] == "text"
    grid, _ = images.save_image(noise(8, 8), tmp_path, "grid", grid=True, info="g")
    assert Path(grid).parent.name == dt.date.today().isoformat() and Path(grid).name == "grid-0000.png"
    plain, _ = images.save_image(noise(8, 8), tmp_path, "", seed=6, no_prompt=True, forced_filename="../../evil")
    assert Path(plain).parent == tmp_path and Path(plain).name == ".._.._evil.png"


def test_save_image_text_file_and_extra_chunks(opts, tmp_path):
    opts.save_txt = True
    fullfn, txt = images.save_image(noise(8, 8), tmp_path, "", seed=1, info="the infotext",
                                    existing_info={"extra": "kept"})
    assert Path(txt).read_text(encoding="utf-8") == "the infotext\n" and txt == str(Path(fullfn).with_suffix(".txt"))
    with Image.open(fullfn) as saved:
        assert images.read_info_from_image(saved) == ("the infotext", {"extra": "kept"})
    other, _ = images.save_image(noise(8, 8), tmp_path, "", seed=1, info="elsewhere", pnginfo_section_name="custom")
    with Image.open(other) as saved:
        assert saved.info.get("custom") == "elsewhere" and "parameters" not in saved.info


def test_save_image_runs_the_image_saved_callbacks(tmp_path, callback):
    seen = []

    def before(params):
        params.pnginfo["extra"] = "yes"
        params.image = Image.new("RGB", params.image.size, "red")

    callback(script_callbacks.on_before_image_saved, before)
    callback(script_callbacks.on_image_saved, lambda params: seen.append(params.filename))
    picture = noise(8, 8)
    fullfn, _ = images.save_image(picture, tmp_path, "", seed=3, info="info")
    assert seen == [fullfn]
    with Image.open(fullfn) as saved:
        assert saved.getpixel((0, 0)) == (255, 0, 0)
        assert images.read_info_from_image(saved) == ("info", {"extra": "yes"})


def test_save_image_with_geninfo(opts, tmp_path):
    picture = noise(16, 16)
    images.save_image_with_geninfo(picture, "png text", tmp_path / "a.png", existing_pnginfo={"other": "1"})
    images.save_image_with_geninfo(picture, "webp text", str(tmp_path / "b.tmp"), extension=".webp")
    with Image.open(tmp_path / "a.png") as a, Image.open(tmp_path / "b.tmp") as b:
        assert images.read_info_from_image(a) == ("png text", {"other": "1"})
        assert b.format == "WEBP" and images.read_info_from_image(b)[0] == "webp text"
    opts.enable_pnginfo = False
    images.save_image_with_geninfo(picture, "hidden", tmp_path / "c.png")
    with Image.open(tmp_path / "c.png") as c:
        assert images.read_info_from_image(c) == (None, {})


def test_read_info_from_a_jpeg_leaves_out_the_file_details(tmp_path):
    path = tmp_path / "x.jpg"
    path.write_bytes(saving.image_bytes(noise(16, 16), "jpeg text", "jpg"))
    with Image.open(path) as saved:
        geninfo, items = images.read_info_from_image(saved)
    assert geninfo == "jpeg text" and not {"exif", "jfif", "jfif_version", "dpi"} & set(items)


def test_image_data():
    png = saving.image_bytes(noise(8, 8), "dropped text", "png")
    assert images.image_data(png) == ("dropped text", None)
    assert images.image_data(b"a prompt in a file") == ("a prompt in a file", None)
    unchanged, _ = images.image_data(bytes(random.Random(0).randrange(128, 256) for _ in range(64)))
    assert unchanged == {"__type__": "update"}
