"""SD upscale (A1111's built-in img2img script): the input enlarged by the chosen upscaler, cut into tiles of the
width and height set (overlapping by "Tile overlap" pixels), each tile redrawn by img2img and the tiles blended back
into one picture. Batch count makes that many upscales, the n-th starting from seed + n.

Seeds as A1111's: tiles go in batches of the batch size, batch b of an upscale starting at its seed + b and the
tiles within a batch counting up from there. Our img2img takes one input picture per job, so each tile is its own
job with the seed A1111's batch would give it.
"""
import gradio as gr

from modules import images, processing, scripts, shared
from modules.generation import GenerationError
from modules.shared import opts, state

BACKGROUND = "#ffffff"  # A1111's img2img background colour (its default) for transparent parts of the input


def find_upscaler(choice):
    """An entry of shared.sd_upscalers by index (the page's radio) or by name, any case (API clients send both)."""
    upscalers = shared.sd_upscalers
    names = [u.name for u in upscalers]
    if isinstance(choice, str) and not choice.lstrip("-").isdigit():
        lowered = [name.lower() for name in names]
        if choice.lower() in lowered:
            return upscalers[lowered.index(choice.lower())]
    elif 0 <= int(choice) < len(upscalers):
        return upscalers[int(choice)]
    raise GenerationError(f"SD upscale: unknown upscaler {choice!r}; give one of {', '.join(names)}")


def tile_seeds(start_seed: int, tile_count: int, batch_size: int) -> list[int]:
    """The seed of each tile: batch b starts at start_seed + b, its tiles count up from there."""
    return [start_seed + i // batch_size + i % batch_size for i in range(tile_count)]


class Script(scripts.Script):
    def title(self):
        return "SD upscale"

    def show(self, is_img2img):
        return is_img2img

    def ui(self, is_img2img):
        info = gr.HTML("<p style=\"margin-bottom:0.75em\">Will upscale the image by the selected scale factor; use "
                       "width and height sliders to set tile size</p>")
        overlap = gr.Slider(minimum=0, maximum=256, step=16, label="Tile overlap", value=64,
                            elem_id=self.elem_id("overlap"))
        scale_factor = gr.Slider(minimum=1.0, maximum=4.0, step=0.05, label="Scale Factor", value=2.0,
                                 elem_id=self.elem_id("scale_factor"))
        names = [u.name for u in shared.sd_upscalers]
        upscaler_index = gr.Radio(label="Upscaler", choices=names, value=names[0], type="index",
                                  elem_id=self.elem_id("upscaler_index"))
        return [info, overlap, upscaler_index, scale_factor]

    def run(self, p, _, overlap, upscaler_index, scale_factor):
        upscaler = find_upscaler(upscaler_index)
        overlap = int(overlap)
        processing.fix_seed(p)
        save_samples = opts.samples_save and not p.do_not_save_samples
        p.extra_generation_params["SD upscale overlap"] = overlap
        p.extra_generation_params["SD upscale upscaler"] = upscaler.name

        picture = images.flatten(p.init_images[0], BACKGROUND)
        if upscaler.name != "None":  # as A1111: "None" keeps the input's size whatever the scale factor
            picture = upscaler.scaler.upscale(picture, float(scale_factor), upscaler.data_path)
        try:
            grid = images.split_grid(picture, tile_w=p.width, tile_h=p.height, overlap=overlap)
        except ValueError as e:
            raise GenerationError(f"SD upscale: {e}") from e
        tiles = [tile for _, _, row in grid.tiles for tile in row]  # [x, w, picture]: combine_grid reads the pictures
        sources = [tile[2] for tile in tiles]

        batch_size, upscale_count, seed = p.batch_size, p.n_iter, p.seed
        p.batch_size = p.n_iter = 1
        p.do_not_save_grid = p.do_not_save_samples = True
        state.job_count = len(tiles) * upscale_count
        first_info = None
        results, texts, seeds, warnings = [], [], [], []
        for n in range(upscale_count):
            redrawn = []  # (picture, infotext) of each tile
            for i, tile_seed in enumerate(tile_seeds(seed + n, len(tiles), batch_size)):
                if state.interrupted:
                    break
                state.textinfo = f"Tile {i + 1} of {len(tiles)}, upscale {n + 1} of {upscale_count}"
                p.seed = tile_seed
                p.init_images = [sources[i]]
                processed = processing.process_images(p)
                warnings += processed.warnings
                if not processed.images:
                    break
                redrawn.append((processed.images[0], processed.info))
            if len(redrawn) < len(tiles):  # stopped: no picture from a partly redrawn grid
                break
            for tile, (tile_picture, _) in zip(tiles, redrawn):
                tile[2] = tile_picture
            combined = images.combine_grid(grid)
            upscale_info = redrawn[0][1]
            first_info = first_info or upscale_info
            results.append(combined)
            texts.append(upscale_info)
            seeds.append(seed + n)
            if save_samples:
                images.save_image(combined, p.outpath_samples, "", seed + n, p.prompt, opts.samples_format,
                                  info=upscale_info, p=p)
        processed = processing.Processed(p, results, seed, first_info, all_seeds=seeds, infotexts=texts)
        processed.warnings = warnings
        processed.interrupted = state.interrupted
        return processed
