"""A1111's `modules.images` for scripts and extensions: grids, tiles, legends, resizing, saving and reading
pictures with their infotext.

A thin face over our own pieces: names and folders come from `modules.generation.filenames` and
`modules.generation.saving` (so a name from extension code can never point outside the output folder), the resize
modes from `modules.generation.img2img`, the settings from `shared.opts`.
"""
from __future__ import annotations

import io
import math
from collections import namedtuple
from pathlib import Path

import numpy as np
from PIL import Image, ImageColor, ImageDraw, ImageFont, PngImagePlugin

from modules import script_callbacks, shared, user_files
from modules.generation import filenames, saving
from modules.generation import img2img as img2img_modes
from modules.generation.filenames import NameInfo
from modules.generation.requests import MAX_INPUT_PIXELS

LANCZOS = Image.Resampling.LANCZOS
NEAREST = Image.Resampling.NEAREST

# what PIL puts in `image.info` about the file itself, not text an extension wrote (A1111 leaves these out too)
IGNORED_INFO_KEYS = {"jfif", "jfif_version", "jfif_unit", "jfif_density", "dpi", "exif", "loop", "background",
                     "timestamp", "duration", "progressive", "progression", "icc_profile", "chromaticity", "photoshop"}

sanitize_filename_part = filenames.sanitize_part


# ---- grids of pictures

def image_grid(imgs: list[Image.Image], batch_size: int = 1, rows: int | None = None) -> Image.Image:
    """The pictures in a grid of `rows` rows; None: as the n_rows and grid_prevent_empty_spots settings say.
    on_image_grid callbacks may change the pictures, rows and columns before they are pasted."""
    if rows is None:
        opts = shared.opts
        rows = saving.grid_rows(len(imgs), opts.n_rows, batch_size, opts.grid_prevent_empty_spots)
    rows = max(1, min(rows, len(imgs)))
    params = script_callbacks.ImageGridLoopParams(imgs, math.ceil(len(imgs) / rows), rows)
    script_callbacks.image_grid_callback(params)
    w, h = params.imgs[0].size
    grid = Image.new("RGB", (params.cols * w, params.rows * h), "black")
    for i, img in enumerate(params.imgs):
        grid.paste(img, (i % params.cols * w, i // params.cols * h))
    return grid


Grid = namedtuple("Grid", ["tiles", "tile_w", "tile_h", "image_w", "image_h", "overlap"])
"""A picture cut into tiles: `tiles` is a list of rows `[y, tile_h, [[x, tile_w, tile], ...]]`; scripts replace
the tile of each `[x, tile_w, tile]` with their processed one before `combine_grid`."""


def _tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Where tiles of `tile` pixels start so that they cover `length` with at least `overlap` in common, spread
    evenly, the last one ending at the edge (A1111's layout). A picture smaller than a tile has one, at 0."""
    if length <= tile:
        return [0]
    count = math.ceil((length - overlap) / (tile - overlap))
    step = (length - tile) / (count - 1)
    return [min(int(i * step), length - tile) for i in range(count)]


def split_grid(image: Image.Image, tile_w: int = 512, tile_h: int = 512, overlap: int = 64) -> Grid:
    """Cut `image` into tiles of tile_w x tile_h that overlap by at least `overlap` pixels (SD upscale's tiles)."""
    if not 0 <= overlap < min(tile_w, tile_h):
        raise ValueError(f"overlap {overlap} must be at least 0 and less than the tile size {tile_w}x{tile_h}")
    grid = Grid([], tile_w, tile_h, image.width, image.height, overlap)
    for y in _tile_starts(image.height, tile_h, overlap):
        row = [[x, tile_w, image.crop((x, y, x + tile_w, y + tile_h))]
               for x in _tile_starts(image.width, tile_w, overlap)]
        grid.tiles.append([y, tile_h, row])
    return grid


def _ramp(overlap: int, length: int, across_x: bool) -> Image.Image:
    """A mask rising from 0 to nearly 255 over `overlap` pixels, `length` pixels long the other way."""
    ramp = (np.arange(overlap, dtype=np.float32) * 255 / overlap).astype(np.uint8)
    values = np.tile(ramp, (length, 1)) if across_x else np.tile(ramp[:, None], (1, length))
    return Image.fromarray(values, "L")


def combine_grid(grid: Grid) -> Image.Image:
    """The tiles pasted back into one picture; where a tile overlaps the one before it, the first `overlap` pixels
    fade from the earlier tile into the later one, so processed tiles join without a seam."""
    overlap = grid.overlap
    if overlap:
        fade_x, fade_y = _ramp(overlap, grid.tile_h, across_x=True), _ramp(overlap, grid.image_w, across_x=False)
    combined = Image.new("RGB", (grid.image_w, grid.image_h))
    for y, h, row in grid.tiles:
        strip = Image.new("RGB", (grid.image_w, h))
        for x, w, tile in row:
            if x == 0 or not overlap:
                strip.paste(tile, (x, 0))
                continue
            strip.paste(tile.crop((0, 0, overlap, h)), (x, 0), mask=fade_x)
            strip.paste(tile.crop((overlap, 0, w, h)), (x + overlap, 0))
        if y == 0 or not overlap:
            combined.paste(strip, (0, y))
            continue
        combined.paste(strip.crop((0, 0, grid.image_w, overlap)), (0, y), mask=fade_y)
        combined.paste(strip.crop((0, overlap, grid.image_w, h)), (0, y + overlap))
    return combined


# ---- legends of grids (X/Y/Z plot, prompt matrix)

class GridAnnotation:
    """One legend text of a grid's column or row; an inactive one is drawn grey and struck through."""

    def __init__(self, text: str = "", is_active: bool = True):
        self.text = text
        self.is_active = is_active
        self.size = None


def get_font(fontsize: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """The legends' font at `fontsize` pixels: the `font` setting's TrueType file when one is set (an extension's
    setting in A1111), else Pillow's built-in scalable font, which ships with Pillow (nothing to download)."""
    fontsize = max(1, int(fontsize))
    path = getattr(shared.opts, "font", "")
    if path:
        try:
            return ImageFont.truetype(path, fontsize)
        except OSError:
            pass  # an unreadable font file: the built-in one, as A1111 falls back to its own
    return ImageFont.load_default(size=fontsize)


def _wrap(text: str, font, max_width: float) -> list[str]:
    """Words joined into lines no wider than `max_width` (a single longer word keeps a line of its own)."""
    lines: list[str] = []
    for word in text.split():
        if lines and font.getlength(f"{lines[-1]} {word}") <= max_width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    return lines


def _fitted_font(text: str, font, fontsize: int, max_width: float):
    """`font`, made smaller until `text` fits in `max_width` (a word too long for the cell)."""
    while fontsize > 1 and font.getlength(text) > max_width:
        fontsize = min(fontsize - 1, int(fontsize * max_width / font.getlength(text)))
        font = get_font(fontsize)
    return font


class _Line:
    def __init__(self, text: str, is_active: bool, font):
        self.text, self.is_active, self.font = text, is_active, font
        ascent, descent = font.getmetrics()
        self.width, self.height = font.getlength(text), ascent + descent


def _layout(annotations: list[GridAnnotation], font, fontsize: int, max_width: float) -> list[_Line]:
    lines = []
    for annotation in annotations:
        for text in _wrap(annotation.text, font, max_width):
            lines.append(_Line(text, annotation.is_active, _fitted_font(text, font, fontsize, max_width)))
    return lines


def _block_height(lines: list[_Line], spacing: int) -> int:
    return sum(line.height for line in lines) + spacing * max(0, len(lines) - 1)


MIN_LEGEND_FONT_SIZE = 14  # px: A1111's size is 4 % of a cell's sides, unreadable for small cells


def draw_grid_annotations(im: Image.Image, width: int, height: int, hor_texts: list[list[GridAnnotation]],
                          ver_texts: list[list[GridAnnotation]], margin: int = 0) -> Image.Image:
    """`im`, a grid of width x height cells, with each column's texts above it and each row's texts to its left,
    and `margin` pixels between the cells. The font is (width + height) / 25 pixels high (A1111's size: 40 for
    512x512 cells); a text wider than its place wraps, a word still too wide gets a smaller font."""
    cols, rows = im.width // width, im.height // height
    if len(hor_texts) != cols:
        raise ValueError(f"bad number of horizontal texts: {len(hor_texts)}; must be {cols}")
    if len(ver_texts) != rows:
        raise ValueError(f"bad number of vertical texts: {len(ver_texts)}; must be {rows}")
    opts = shared.opts
    active = ImageColor.getcolor(getattr(opts, "grid_text_active_color", "#000000"), "RGB")
    inactive = ImageColor.getcolor(getattr(opts, "grid_text_inactive_color", "#999999"), "RGB")
    background = ImageColor.getcolor(getattr(opts, "grid_background_color", "#ffffff"), "RGB")

    fontsize = max((width + height) // 25, MIN_LEGEND_FONT_SIZE)
    spacing = fontsize // 2
    font = get_font(fontsize)
    has_row_texts = any(annotation.text for annotations in ver_texts for annotation in annotations)
    pad_left = 0
    if has_row_texts:  # A1111's 3/4 of a cell, wider for small cells so that the row legends keep their size
        widest = max(font.getlength(a.text) for annotations in ver_texts for a in annotations)
        pad_left = max(width * 3 // 4, min(int(widest) + 2 * spacing, 3 * width))
    col_lines = [_layout(annotations, font, fontsize, width - spacing) for annotations in hor_texts]  # apart
    row_lines = [_layout(annotations, font, fontsize, pad_left) for annotations in ver_texts]
    col_heights = [_block_height(lines, spacing) for lines in col_lines]
    pad_top = max(col_heights) + spacing * 2 if any(col_heights) else 0

    result = Image.new("RGB", (im.width + pad_left + margin * (cols - 1), im.height + pad_top + margin * (rows - 1)),
                       background)
    for row in range(rows):
        for col in range(cols):
            cell = im.crop((width * col, height * row, width * (col + 1), height * (row + 1)))
            result.paste(cell, (pad_left + (width + margin) * col, pad_top + (height + margin) * row))

    draw = ImageDraw.Draw(result)
    strike = max(1, round(fontsize / 10))

    def draw_lines(center_x: float, top: float, lines: list[_Line]) -> None:
        for line in lines:
            middle = top + line.height / 2
            color = active if line.is_active else inactive
            draw.text((center_x, middle), line.text, font=line.font, fill=color, anchor="mm")
            if not line.is_active:
                draw.line((center_x - line.width / 2, middle, center_x + line.width / 2, middle), fill=color,
                          width=strike)
            top += line.height + spacing

    for col, lines in enumerate(col_lines):
        draw_lines(pad_left + (width + margin) * col + width / 2, (pad_top - col_heights[col]) / 2, lines)
    for row, lines in enumerate(row_lines):
        top = pad_top + (height + margin) * row + (height - _block_height(lines, spacing)) / 2
        draw_lines(pad_left / 2, top, lines)
    return result


def draw_prompt_matrix(im: Image.Image, width: int, height: int, all_prompts: list[str],
                       margin: int = 0) -> Image.Image:
    """The prompt matrix's legends: the parts after the first prompt, the first half across the columns and the
    rest down the rows, each cell showing which parts it used (the others struck through)."""
    parts = all_prompts[1:]
    boundary = math.ceil(len(parts) / 2)

    def combinations(texts: list[str]) -> list[list[GridAnnotation]]:
        return [[GridAnnotation(text, is_active=bool(pos & (1 << i))) for i, text in enumerate(texts)]
                for pos in range(1 << len(texts))]

    return draw_grid_annotations(im, width, height, combinations(parts[:boundary]), combinations(parts[boundary:]),
                                 margin)


# ---- resizing

def resize_image(resize_mode: int, im: Image.Image, width: int, height: int,
                 upscaler_name: str | None = None) -> Image.Image:
    """A1111's resize modes: 0 just resize, 1 crop and resize, 2 resize and fill. Enlarging goes through the
    upscaler named `upscaler_name` (None: the "Upscaler for img2img" setting; "None": Lanczos)."""
    name = upscaler_name or shared.opts.upscaler_for_img2img
    if name in (None, "", "None"):
        return img2img_modes.resize_image(resize_mode, im, width, height)

    def resize(picture: Image.Image, size: tuple[int, int]) -> Image.Image:
        if picture.mode == "L":
            return picture.resize(size, LANCZOS)
        scale = max(size[0] / picture.width, size[1] / picture.height)
        if scale > 1.0:
            upscaler = next((u for u in shared.sd_upscalers if u.name == name), None)
            if upscaler is None:
                raise ValueError(f"could not find upscaler named {name}")
            picture = upscaler.scaler.upscale(picture, scale, upscaler.data_path)
        return picture if picture.size == size else picture.resize(size, LANCZOS)

    return img2img_modes.resize_image(resize_mode, im, width, height, resize=resize)


def flatten(img: Image.Image, bgcolor) -> Image.Image:
    """`img` as RGB, its transparent parts filled with `bgcolor` ("#ffffff", a colour name or an RGB tuple)."""
    if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, bgcolor)
        background.alpha_composite(rgba)
        img = background
    return img.convert("RGB")


# ---- file names

def _name_info(p, seed, prompt, opts) -> NameInfo:
    """What the file name tags can tell from A1111's processing object `p` (any object with its field names)."""
    info = NameInfo(seed=seed, prompt=prompt, clip_skip=opts.CLIP_stop_at_last_layers)
    if p is None:
        return info

    def text(name: str) -> str | None:
        value = getattr(p, name, None)
        return value if isinstance(value, str) else None

    info.prompt_no_styles = text("prompt")  # A1111's p.prompt is the prompt as typed; styles go into all_prompts
    info.negative_prompt = text("negative_prompt")
    info.steps = getattr(p, "steps", None)
    info.cfg_scale = getattr(p, "cfg_scale", None)
    info.sampler = text("sampler_name")
    info.scheduler = text("scheduler")
    info.styles = list(getattr(p, "styles", None) or [])
    info.model_name = text("sd_model_name")
    info.model_hash = text("sd_model_hash")
    info.vae_file = text("sd_vae_name")
    info.denoising = getattr(p, "denoising_strength", None)
    info.job_timestamp = text("job_timestamp")
    info.batch_size = getattr(p, "batch_size", 1) or 1
    info.n_iter = getattr(p, "n_iter", 1) or 1
    info.batch_index = getattr(p, "batch_index", 0) or 0
    info.iteration = getattr(p, "iteration", 0) or 0
    info.all_seeds = list(getattr(p, "all_seeds", None) or [])
    return info


class FilenameGenerator(filenames.FilenameGenerator):
    """A1111's constructor over our pattern engine: `FilenameGenerator(p, seed, prompt, image).apply("[seed]")`,
    with A1111's [basename] tag (the basename given, else "img")."""

    def __init__(self, p, seed, prompt, image, zip=False, basename=""):
        opts = shared.opts
        super().__init__(_name_info(p, seed, prompt, opts), image,
                         max_prompt_words=opts.directories_max_prompt_words, zip=zip)
        self.p = p
        self.seed = seed
        self.prompt = prompt
        self.basename = basename

    def _value(self, tag: str, args: list[str]):
        if tag == "basename":
            return self.basename or "img"
        return super()._value(tag, args)


def get_next_sequence_number(path, basename: str) -> int:
    """The number the next file saved in `path` gets ("BASENAME-NNNN" files when a basename is given)."""
    return saving.next_sequence_number(Path(path), basename)


# ---- saving and reading pictures

def _png_bytes(image: Image.Image, chunks: dict) -> bytes:
    meta = PngImagePlugin.PngInfo()
    for key, value in chunks.items():
        if value is not None:
            meta.add_text(str(key), str(value))
    buf = io.BytesIO()
    image.save(buf, format="PNG", pnginfo=meta)
    return buf.getvalue()


def save_image_with_geninfo(image: Image.Image, geninfo: str | None, filename, extension: str | None = None,
                            existing_pnginfo: dict | None = None, pnginfo_section_name: str = "parameters") -> None:
    """Write `image` to `filename` with `geninfo`: a PNG text chunk named `pnginfo_section_name` beside the
    chunks of `existing_pnginfo`, or the EXIF user comment of a JPEG, WebP or AVIF (none at all when the
    enable_pnginfo setting is off). `extension` (".png" or "png"; None: the file name's) picks the format."""
    opts = shared.opts
    path = Path(filename)
    ext = (extension or path.suffix).lower().lstrip(".")
    if ext == "png":
        chunks = dict(existing_pnginfo or {}, **{pnginfo_section_name: geninfo}) if opts.enable_pnginfo else {}
        data = _png_bytes(image, chunks)
    elif ext in saving.FORMATS:
        if image.mode == "I;16":  # 16-bit greyscale: scaled to 8 bits, which these formats hold
            image = image.point(lambda v: v / 257).convert("L")
        data = saving.image_bytes(image, geninfo if opts.enable_pnginfo else None, ext, quality=opts.jpeg_quality,
                                  lossless=opts.webp_lossless)
    else:
        image_format = Image.registered_extensions().get(f".{ext}")
        if image_format is None:
            raise ValueError(f"unsupported image format {ext!r}")
        buf = io.BytesIO()
        extra = {"comment": geninfo} if ext == "gif" and geninfo and opts.enable_pnginfo else {}
        image.save(buf, format=image_format, **extra)
        data = buf.getvalue()
    user_files.write_atomically(path, data)


def save_image(image: Image.Image, path, basename: str, seed=None, prompt=None, extension: str = "png",
               info: str | None = None, short_filename: bool = False, no_prompt: bool = False, grid: bool = False,
               pnginfo_section_name: str = "parameters", p=None, existing_info: dict | None = None,
               forced_filename: str | None = None, suffix: str = "", save_to_dirs: bool | None = None,
               ) -> tuple[str, str | None]:
    """Save a picture into the folder `path` as A1111's save_image does and return (its file, its .txt file or
    None). The name follows the saving settings and file name patterns (filled from `p`, `seed` and `prompt`);
    `info` is stored in the picture (and its .txt with save_txt).

    Our saving picks the file's name and writes it first; on_before_image_saved callbacks then see that name and
    may change the picture, its text chunks or the name, and the file is written again with their changes (as
    it is for text chunks other than `parameters`). on_image_saved callbacks run last."""
    opts = shared.opts
    if save_to_dirs is None:
        save_to_dirs = opts.grid_save_to_dirs if grid else opts.save_to_dirs and not no_prompt
    chunks = dict(existing_info or {})
    if info is not None:
        chunks[pnginfo_section_name] = info
    geninfo = chunks.get(pnginfo_section_name)
    names = FilenameGenerator(p, seed, prompt, image, basename=basename)
    written = saving.save_image(image, Path(path), seed, geninfo, extension, suffix, opts=opts, names=names,
                                basename=basename, grid=grid, save_to_dirs=save_to_dirs,
                                short_filename=short_filename, forced_filename=forced_filename)

    params = script_callbacks.ImageSaveParams(image, p, str(written), dict(chunks))
    has_before_callbacks = bool(script_callbacks.ordered_callbacks("before_image_saved"))
    script_callbacks.before_image_saved_callback(params)
    final_info = params.pnginfo.get(pnginfo_section_name)
    # the file holds `geninfo` under "parameters": written again when anything else may belong in it
    if has_before_callbacks or set(chunks) - {"parameters"} or params.filename != str(written):
        save_image_with_geninfo(params.image, final_info, params.filename, existing_pnginfo=params.pnginfo,
                                pnginfo_section_name=pnginfo_section_name)
        if params.filename != str(written):
            written.unlink(missing_ok=True)
            written.with_suffix(".txt").unlink(missing_ok=True)
    fullfn = Path(params.filename)
    txt_fullfn = None
    if opts.save_txt and final_info is not None:
        txt_fullfn = fullfn.with_suffix(".txt")
        if final_info != geninfo or fullfn != written:
            user_files.write_atomically(txt_fullfn, f"{final_info}\n")
    params.image.already_saved_as = str(fullfn)
    script_callbacks.image_saved_callback(params)
    return str(fullfn), None if txt_fullfn is None else str(txt_fullfn)


def read_info_from_image(image: Image.Image) -> tuple[str | None, dict]:
    """(the infotext, the picture's other text items): the infotext from a PNG's `parameters` chunk, a JPEG's or
    WebP's EXIF user comment, or a GIF's comment."""
    items = dict(image.info or {})
    geninfo = saving.read_infotext(image) or None
    items.pop("parameters", None)
    comment = items.get("comment")
    if geninfo is None and comment is not None:
        geninfo = comment.decode("utf-8", errors="ignore") if isinstance(comment, bytes) else str(comment)
    for key in IGNORED_INFO_KEYS:
        items.pop(key, None)
    return geninfo, items


def image_data(data: bytes):
    """What A1111's prompt box does with a dropped file: (its infotext, None) for a picture, (the text, None) for a
    short text file, else (a Gradio update that changes nothing, None)."""
    try:
        with Image.open(io.BytesIO(data)) as picture:
            if picture.width * picture.height <= MAX_INPUT_PIXELS:
                picture.load()  # text chunks after the pixel data are read with them
                return read_info_from_image(picture)[0], None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        pass
    try:
        text = data.decode("utf-8")
        if len(text) < 10000:
            return text, None
    except UnicodeDecodeError:
        pass
    import gradio as gr  # only here: the rest of this module works without the page
    return gr.update(), None


# ---- outpainting (not A1111's module: the two outpainting scripts share it)

OUTPAINTING_DIRECTIONS = ("left", "right", "up", "down")


def outpainting_expansion(width: int, height: int, pixels: int, directions) -> tuple[int, int, int, int]:
    """(left, right, up, down) pixels added, as A1111 spreads them: each side asked gets `pixels`, then the sides
    share what rounds the new width and height up to multiples of 64 (both outpainting scripts use it)."""
    left, right, up, down = (pixels if side in directions else 0 for side in OUTPAINTING_DIRECTIONS)
    target_w = math.ceil((width + left + right) / 64) * 64
    target_h = math.ceil((height + up + down) / 64) * 64
    if left:
        left = left * (target_w - width) // (left + right)
    if right:
        right = target_w - width - left
    if up:
        up = up * (target_h - height) // (up + down)
    if down:
        down = target_h - height - up
    return left, right, up, down
