"""Test extension: a selectable img2img script in the way of SD upscale. It enlarges the picture with an upscaler
from shared.sd_upscalers, cuts it into tiles, redraws each tile with processing.process_images(p), puts them back
together and saves the result with images.save_image."""
import copy

import gradio as gr

from modules import images, processing, scripts, shared


class TileRedraw(scripts.Script):
    def title(self):
        return "Tile redraw"

    def show(self, is_img2img):
        return is_img2img

    def ui(self, is_img2img):
        names = [x.name for x in shared.sd_upscalers]
        upscaler = gr.Dropdown(names, value=names[0], label="Upscaler", elem_id=self.elem_id("upscaler"))
        scale = gr.Slider(1, 4, value=2, step=1, label="Scale", elem_id=self.elem_id("scale"))
        tile = gr.Slider(32, 512, value=64, step=8, label="Tile size", elem_id=self.elem_id("tile"))
        return [upscaler, scale, tile]

    def run(self, p, upscaler, scale, tile):
        chosen = next(x for x in shared.sd_upscalers if x.name == upscaler)
        picture = chosen.scaler.upscale(p.init_images[0], scale, chosen.data_path)
        grid = images.split_grid(picture, tile_w=int(tile), tile_h=int(tile), overlap=0)
        p.width, p.height = int(tile), int(tile)
        p.do_not_save_samples = True
        seeds = []
        for row in grid.tiles:
            for column in row[2]:
                job = copy.copy(p)
                job.init_images = [column[2]]
                processed = processing.process_images(job)
                seeds.append(processed.seed)
                column[2] = processed.images[0]
        combined = images.combine_grid(grid)
        info = processing.create_infotext(p, [p.prompt], [seeds[0]], [p.subseed])
        images.save_image(combined, p.outpath_samples, "", seeds[0], p.prompt, "png", info=info, p=p)
        return processing.Processed(p, [combined], seeds[0], info)
