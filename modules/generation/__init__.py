"""Typed requests in, pictures with their infotext out: the job loop, txt2img, img2img, the worker, saving."""
from modules.generation.img2img import process_img2img, process_img2img_folder, resize_image
from modules.generation.job import ProcessingContext
from modules.generation.requests import (
                                         LATENT_UPSCALE_MODES,
                                         MASKED_CONTENT,
                                         RESIZE_MODES,
                                         VERSION,
                                         GenerationError,
                                         GenerationRequest,
                                         GenerationResult,
                                         Img2ImgRequest,
                                         Txt2ImgRequest,
)
from modules.generation.txt2img import process_txt2img

__all__ = ["LATENT_UPSCALE_MODES", "MASKED_CONTENT", "RESIZE_MODES", "VERSION", "GenerationError",
           "GenerationRequest", "GenerationResult", "Img2ImgRequest", "ProcessingContext", "Txt2ImgRequest",
           "process_img2img", "process_img2img_folder", "process_txt2img", "resize_image"]
