"""Poor man's outpainting (A1111's built-in img2img script): the picture grows in the chosen directions on a black
canvas (its total size rounded up to a multiple of 64, as A1111's), and every tile of the width and height set that
reaches into the new area is inpainted under a mask of that area, the tiles then blended back together.

A1111 also draws a second, less blurred "latent mask"; our inpainting has one mask, blurred by twice "Mask blur".
"""

import gradio as gr
from PIL import Image, ImageDraw

from modules import images, processing, scripts
from modules.generation import GenerationError
from modules.generation.requests import MASKED_CONTENT
from modules.shared import opts, state

DIRECTIONS = images.OUTPAINTING_DIRECTIONS


def masked_content_index(choice) -> int:
    """The radio's index (the page) or its text (an API client's default or choice)."""
    if isinstance(choice, str) and not choice.isdigit():
        if choice.lower() not in MASKED_CONTENT:
            raise GenerationError(f"Poor man's outpainting: unknown masked content {choice!r}; give one of "
                                  f"{', '.join(MASKED_CONTENT)}")
        return MASKED_CONTENT.index(choice.lower())
    if not 0 <= int(choice) < len(MASKED_CONTENT):
        raise GenerationError(f"Poor man's outpainting: masked content {choice!r} is out of range")
    return int(choice)


class Script(scripts.Script):
    def title(self):
        return "Poor man's outpainting"

    def show(self, is_img2img):
        return is_img2img

    def ui(self, is_img2img):
        pixels = gr.Slider(label="Pixels to expand", minimum=8, maximum=256, step=8, value=128,
                           elem_id=self.elem_id("pixels"))
        mask_blur = gr.Slider(label="Mask blur", minimum=0, maximum=64, step=1, value=4,
                              elem_id=self.elem_id("mask_blur"))
        inpainting_fill = gr.Radio(label="Masked content", choices=list(MASKED_CONTENT), value="fill", type="index",
                                   elem_id=self.elem_id("inpainting_fill"))
        direction = gr.CheckboxGroup(label="Outpainting direction", choices=list(DIRECTIONS), value=list(DIRECTIONS),
                                     elem_id=self.elem_id("direction"))
        return [pixels, mask_blur, inpainting_fill, direction]

    def run(self, p, pixels, mask_blur, inpainting_fill, direction):
        pixels, mask_blur = int(pixels), int(mask_blur)
        save_samples = opts.samples_save and not p.do_not_save_samples
        p.mask_blur = mask_blur * 2
        p.inpainting_fill = masked_content_index(inpainting_fill)
        p.inpaint_full_res = False

        init = p.init_images[0]
        left, right, up, down = images.outpainting_expansion(init.width, init.height, pixels, direction or ())
        canvas = Image.new("RGB", (init.width + left + right, init.height + up + down))
        canvas.paste(init.convert("RGB"), (left, up))
        mask = Image.new("L", canvas.size, "white")
        margin = mask_blur * 2  # the picture's edge is repainted too, so that the new part joins it
        ImageDraw.Draw(mask).rectangle((left + (margin if left else 0), up + (margin if up else 0),
                                        mask.width - right - (margin if right else 0),
                                        mask.height - down - (margin if down else 0)), fill="black")
        try:
            grid = images.split_grid(canvas, tile_w=p.width, tile_h=p.height, overlap=pixels)
            mask_grid = images.split_grid(mask, tile_w=p.width, tile_h=p.height, overlap=pixels)
        except ValueError as e:
            raise GenerationError(f"Poor man's outpainting: {e}") from e

        p.n_iter = p.batch_size = 1
        p.do_not_save_grid = p.do_not_save_samples = True
        work = []  # (tile of the canvas, its mask) reaching into the new area
        for (y, h, row), (_, _, mask_row) in zip(grid.tiles, mask_grid.tiles):
            for tile, mask_tile in zip(row, mask_row):
                x, w = tile[0], tile[1]
                inside = x >= left and x + w <= canvas.width - right and y >= up and y + h <= canvas.height - down
                if not inside:
                    work.append((tile, mask_tile[2]))
        state.job_count = len(work)

        first_seed, first_info, warnings = None, None, []
        for tile, mask_tile in work:
            if state.interrupted:
                break
            p.init_images = [tile[2]]
            p.image_mask = mask_tile
            processed = processing.process_images(p)
            warnings += processed.warnings
            if not processed.images:
                break
            if first_seed is None:
                first_seed, first_info = processed.seed, processed.info
            p.seed = processed.seed + 1
            tile[2] = processed.images[0]

        combined = images.combine_grid(grid)
        if save_samples:
            images.save_image(combined, p.outpath_samples, "", first_seed, p.prompt, opts.samples_format,
                              info=first_info, p=p)
        processed = processing.Processed(p, [combined], first_seed, first_info)
        processed.warnings = warnings
        processed.interrupted = state.interrupted
        return processed
