"""ControlNet preprocessors without model files: what each detected map shows, and the hint made from it."""
import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from modules.postprocessing.control_preprocessors import (
    PREPROCESSORS,
    find_preprocessor,
    hint_tensor,
    pixel_perfect_resolution,
    resize_mode_index,
    resized_map,
    run_preprocessor,
    visible_map,
)


def square(size=256, box=(64, 64, 191, 191), fill=255, background=0):
    picture = Image.new("RGB", (size, size), (background,) * 3)
    ImageDraw.Draw(picture).rectangle(box, fill=(fill,) * 3)
    return picture


def array(picture):
    return np.asarray(picture).astype(np.int32)


def sharpness(picture):
    gray = array(picture.convert("L")).astype(np.float64)
    return float(np.abs(np.diff(gray, axis=0)).mean() + np.abs(np.diff(gray, axis=1)).mean())


def noise(w=256, h=256, seed=0):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


def test_canny_finds_the_border_of_a_square_and_nothing_else():
    edges = array(run_preprocessor("canny", square(), 256, 100, 200))[:, :, 0]
    assert set(np.unique(edges)) == {0, 255}
    ys, xs = np.nonzero(edges)
    # distance of each edge pixel from the square's outline (rows/columns 64 and 191)
    distance = np.minimum(np.minimum(np.abs(ys - 64), np.abs(ys - 191)), np.minimum(np.abs(xs - 64), np.abs(xs - 191)))
    inside_band = (ys >= 62) & (ys <= 193) & (xs >= 62) & (xs <= 193)
    assert distance.max() <= 2 and inside_band.all()
    assert len(ys) > 4 * 120  # all four sides, not a few dots


def test_canny_thresholds_decide_which_edges_count():
    faint = square(fill=30)  # a step of 30 grey levels: a gradient of about 120
    assert array(run_preprocessor("canny", faint, 256, 100, 200)).max() == 0
    assert array(run_preprocessor("canny", faint, 256, 50, 100)).max() == 255


def test_invert_inverts_at_the_pictures_size():
    picture = noise(40, 30)
    inverted = run_preprocessor("invert", picture, 512)
    assert inverted.size == (40, 30)
    assert np.array_equal(array(inverted), 255 - array(picture))


def test_threshold_is_binary_at_the_threshold():
    ramp = np.tile(np.arange(256, dtype=np.uint8), (64, 1))
    picture = Image.fromarray(np.dstack([ramp, ramp, np.full_like(ramp, 255)]))
    result = array(run_preprocessor("threshold", picture, 64, 100))  # 64 high: the ramp stays 256 wide
    assert result.shape == (64, 256, 3) and set(np.unique(result)) == {0, 255}
    assert np.array_equal(result[:, :, 0] == 255, ramp > 100)
    assert array(run_preprocessor("threshold", picture, 64, 200)).sum() < result.sum()


def test_scribble_xdog_draws_dark_lines_white_on_black():
    drawing = Image.new("RGB", (256, 256), "white")
    ImageDraw.Draw(drawing).line((40, 128, 216, 128), fill="black", width=6)
    line = array(drawing)[:, :, 0] == 0
    result = array(run_preprocessor("scribble_xdog", drawing, 256, 32))[:, :, 0]
    assert set(np.unique(result)) == {0, 255}
    inner = line.copy()
    inner[:, :45] = inner[:, 212:] = False  # line ends are rounder
    assert (result[inner] == 255).all()  # the whole width of the line, no hole in its middle
    rows = np.nonzero(line.any(axis=1))[0]
    drawn_rows = np.nonzero(result.any(axis=1))[0]
    assert rows.min() - 3 <= drawn_rows.min() and drawn_rows.max() <= rows.max() + 3  # nothing far from it


def test_blur_is_at_the_processor_resolution_and_blurrier():
    picture = noise(512, 384)
    blurred = run_preprocessor("blur_gaussian", picture, 192, 4.0)
    assert blurred.size == (256, 192)
    assert sharpness(blurred) < 0.5 * sharpness(picture.resize((256, 192), Image.BILINEAR))
    assert sharpness(run_preprocessor("blur_gaussian", picture, 192, 1.0)) > sharpness(blurred)


def test_tile_resample_divides_the_size_by_the_rate():
    picture = noise(300, 200)
    assert run_preprocessor("tile_resample", picture, 512, 1.0).size == (300, 200)
    smaller = run_preprocessor("tile_resample", picture, 512, 2.5)
    assert smaller.size == (120, 80)
    assert sharpness(smaller.resize((300, 200), Image.BILINEAR)) < sharpness(picture)
    assert np.array_equal(array(run_preprocessor("tile_colorfix", picture, 512, 8)), array(picture))


def test_shuffle_is_repeatable_per_seed_and_keeps_the_colours():
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)]
    blocks = np.zeros((256, 256, 3), np.uint8)
    for i, colour in enumerate(colours):
        blocks[(i // 2) * 128:(i // 2 + 1) * 128, (i % 2) * 128:(i % 2 + 1) * 128] = colour
    picture = Image.fromarray(blocks)
    first = array(run_preprocessor("shuffle", picture, 256, seed=7))
    assert first.shape == (256, 256, 3)
    assert np.array_equal(first, array(run_preprocessor("shuffle", picture, 256, seed=7)))
    assert not np.array_equal(first, array(run_preprocessor("shuffle", picture, 256, seed=8)))
    assert not np.array_equal(first, blocks)  # moved around
    pure = sum((first == colour).all(axis=2) for colour in colours)
    assert pure.mean() > 0.8  # read from the picture, blended only where two blocks meet
    shares = [((first == colour).all(axis=2)).mean() for colour in colours]
    assert sum(share > 0.02 for share in shares) >= 2


def test_color_grid_is_made_of_blocks_of_the_pictures_colours():
    picture = noise(256, 256).resize((512, 512), Image.BILINEAR)
    grid = array(run_preprocessor("t2ia_color_grid", picture, 512))
    assert grid.shape == (512, 512, 3)
    cells = grid.reshape(8, 64, 8, 64, 3)
    assert (cells == cells[:, :1, :, :1]).all()  # every 64x64 cell is one colour
    assert len(np.unique(grid.reshape(-1, 3), axis=0)) > 8


def test_inpaint_only_marks_the_mask_and_the_hint_is_minus_one_there():
    picture = noise(64, 64)
    mask = Image.new("L", (64, 64), 0)
    ImageDraw.Draw(mask).rectangle((16, 16, 47, 47), fill=255)
    detected = run_preprocessor("inpaint_only", picture, 512, mask=mask)
    assert detected.mode == "RGBA"
    rgba = array(detected)
    assert np.array_equal(rgba[:, :, :3], array(picture))
    assert np.array_equal(rgba[:, :, 3] == 255, np.asarray(mask) > 127)
    assert (array(visible_map(detected))[16:48, 16:48, 3] == 128).all()
    hint = hint_tensor(detected, 64, 64, "Just Resize")
    assert (hint[0, :, 16:48, 16:48] == -1).all()
    assert torch.allclose(hint[0, :, :16], torch.from_numpy(rgba[:16, :, :3] / 255).permute(2, 0, 1).float())
    filled = hint_tensor(detected, 128, 64, "Resize and Fill")  # the filled margins are generated too
    assert (filled[0, :, :, :32] == -1).all() and (filled[0, :, :, 96:] == -1).all()
    assert run_preprocessor("inpaint_only", picture, 512).mode == "RGB"  # no mask: nothing marked
    assert run_preprocessor("canny", picture, 64, mask=mask).mode == "RGB"


@pytest.mark.parametrize(("picture", "target", "mode", "expected"), [
    ((1024, 768), (512, 512), "Crop and Resize", 512),
    ((1024, 768), (512, 512), "Resize and Fill", 384),
    ((1024, 768), (512, 512), "Just Resize", 512),
    ((640, 480), (512, 768), 0, 768),
    ((640, 480), (512, 768), 2, 384),
    ((300, 200), (768, 512), 1, 512),
    ((333, 777), (512, 512), 1, 512),
    ((333, 777), (512, 512), 2, 219),
])
def test_pixel_perfect_resolution_is_the_extensions_formula(picture, target, mode, expected):
    assert pixel_perfect_resolution(picture, target, mode) == expected


def test_hint_shapes_and_ranges_in_each_resize_mode():
    detected = run_preprocessor("none", noise(200, 100))
    for mode in ("Just Resize", "Crop and Resize", "Resize and Fill", 0, 1, 2, 3, "Inner Fit (Scale to Fit)"):
        hint = hint_tensor(detected, 96, 64, mode)
        assert hint.shape == (1, 3, 64, 96) and hint.dtype == torch.float32
        assert 0.0 <= float(hint.min()) and float(hint.max()) <= 1.0


def test_crop_keeps_the_middle_and_fill_pads_with_the_border_colour():
    picture = Image.new("RGB", (200, 100), (0, 0, 255))
    ImageDraw.Draw(picture).rectangle((50, 0, 149, 99), fill=(255, 0, 0))  # red middle, blue sides
    cropped = array(resized_map(picture, 64, 64, "Crop and Resize"))
    assert (cropped[:, :, 0] == 255).all()  # only the red middle is left
    filled = array(resized_map(picture, 64, 64, "Resize and Fill"))
    assert filled.shape == (64, 64, 3)
    assert (filled[:16] == (0, 0, 255)).all() and (filled[-16:] == (0, 0, 255)).all()  # bands: border median
    stretched = array(resized_map(picture, 64, 64, "Just Resize"))
    assert (stretched[:, 20:44, 0] == 255).all() and (stretched[:, :12, 2] == 255).all()


def test_one_pixel_edges_stay_thin_and_binary_when_scaled_up():
    edges = run_preprocessor("canny", square(), 256)
    big = array(resized_map(edges, 768, 768, "Just Resize"))[:, :, 0]
    assert set(np.unique(big)) == {0, 255}
    row = big[384]  # crosses the left and right sides of the square
    assert 0 < np.count_nonzero(row) <= 4  # a line or two per side; plain scaling gives three per side


def test_names_labels_and_case_are_accepted_and_unknown_names_listed():
    assert find_preprocessor("invert (from white bg & black line)").name == "invert"
    assert find_preprocessor("  CANNY ").name == "canny"
    assert find_preprocessor("t2ia_color_grid").name == "color"
    assert find_preprocessor("inpaint_global_harmonious").name == "inpaint"
    assert find_preprocessor(None).name == "none"
    with pytest.raises(ValueError, match="canny") as error:
        find_preprocessor("cany")
    assert "'cany'" in str(error.value) and "tile_resample" in str(error.value)
    with pytest.raises(ValueError, match="Crop and Resize"):
        resize_mode_index("stretch")


def test_sliders_and_defaults_follow_the_extension():
    canny = PREPROCESSORS["canny"]
    assert [s.label for s in canny.sliders] == ["Preprocessor Resolution", "Canny Low Threshold",
                                                "Canny High Threshold"]
    assert canny.params(-1, -1, -1) == canny.params(512, 100, 200)
    assert PREPROCESSORS["tile_resample"].api_sliders() == [
        None, {"name": "Down Sampling Rate", "value": 1.0, "min": 1.0, "max": 8.0, "step": 0.01}]
    assert PREPROCESSORS["none"].api_sliders() == []
    assert PREPROCESSORS["threshold"].params(512, 0, None).threshold_a == 0  # 0 is a threshold, not "missing"
    assert list(PREPROCESSORS)[:2] == ["none", "invert"]


@pytest.mark.parametrize("size", [(1, 1), (7, 4000), (4000, 7), (3000, 2000)])
def test_odd_and_huge_pictures_do_not_break_anything(size):
    picture = Image.new("RGBA", size, (20, 200, 30, 128))
    mask = Image.new("L", size, 255)
    for index, name in enumerate(PREPROCESSORS):
        detected = run_preprocessor(name, picture, 512, mask=mask, seed=-5)
        assert max(detected.size) <= 16384 and detected.width * detected.height <= 4096 * 4096
        assert hint_tensor(detected, 64, 48, index % 3).shape == (1, 3, 48, 64)
