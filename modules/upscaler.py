"""A1111's `modules.upscaler`: `shared.sd_upscalers` entries, each with an `upscale(img, scale, path)`."""
from __future__ import annotations

from PIL import Image

from modules import shared_services

LANCZOS = Image.Resampling.LANCZOS
NEAREST = Image.Resampling.NEAREST


class Upscaler:
    """What A1111 calls the scaler of an entry: runs our upscaler of that name, in the job's turn."""

    def __init__(self, name: str):
        self.name = name
        self.scale = 1

    def upscale(self, img: Image.Image, scale: float, selected_model: str | None = None) -> Image.Image:
        size = (int(img.width * scale) // 8 * 8, int(img.height * scale) // 8 * 8)
        opts = shared_services.current_context().options
        state = shared_services.current_context().state
        return shared_services.current_context().upscalers.upscale(
            self.name, img, size, tile_size=opts.ESRGAN_tile, tile_overlap=opts.ESRGAN_tile_overlap,
            should_stop=lambda: state.interrupted)


class UpscalerData:
    def __init__(self, name: str, path: str | None, upscaler: Upscaler, scale: int = 4, model=None):
        self.name = name
        self.data_path = path
        self.local_data_path = path
        self.scaler = upscaler
        self.scale = scale
        self.model = model


def sd_upscalers() -> list[UpscalerData]:
    """Every upscaler of the program, resamplers first, as A1111's list."""
    ctx = shared_services.current_context()
    return [UpscalerData(e.name, str(e.model.path) if e.model is not None else None, Upscaler(e.name), e.scale)
            for e in ctx.upscalers.entries()]
