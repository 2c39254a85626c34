"""Live previews without decoding: each latent pixel mapped to a colour by a linear map.

The map is fitted once per model and VAE: a few flat-coloured and gradient pictures are encoded,
and least squares finds the 4->3 matrix (plus offset) that best turns their latents back into
their colours. It costs one small VAE encode and no extra weights, and fits any VAE.
"""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image

_SIZE = 64


def _calibration_images() -> list[Image.Image]:
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255), (255, 0, 255),
               (255, 255, 255), (0, 0, 0), (128, 128, 128), (200, 120, 60)]
    pics = [Image.new("RGB", (_SIZE, _SIZE), c) for c in colours]
    ramp = np.linspace(0, 255, _SIZE, dtype=np.float32)
    grad = np.stack([np.tile(ramp, (_SIZE, 1)), np.tile(ramp[:, None], (1, _SIZE)),
                     np.full((_SIZE, _SIZE), 128.0)], axis=-1)
    pics.append(Image.fromarray(grad.astype(np.uint8)))
    return pics


def fit_latent_to_rgb(model) -> torch.Tensor:
    """[channels + 1, 3] matrix: rgb(-1..1) = [latent, 1] @ matrix."""
    pics = _calibration_images()
    latents = model.encode_images(pics)  # [N, C, s, s]
    scale = _SIZE // latents.shape[-1]
    targets = torch.stack([torch.from_numpy(np.asarray(p, dtype=np.float32) / 127.5 - 1)[::scale, ::scale]
                           for p in pics])  # [N, s, s, 3]
    x = latents.permute(0, 2, 3, 1).reshape(-1, latents.shape[1])
    x = torch.cat([x, torch.ones(x.shape[0], 1)], dim=1)
    y = targets.reshape(-1, 3)
    return torch.linalg.lstsq(x, y).solution


def preview_image(model, latent: torch.Tensor) -> Image.Image:
    """A small picture of the first latent of the batch (1/8 of the output size, upscaled x2)."""
    if model.latent_rgb is None:
        model.latent_rgb = fit_latent_to_rgb(model)
    z = latent[0].float().cpu().permute(1, 2, 0)
    rgb = torch.cat([z, torch.ones(*z.shape[:2], 1)], dim=-1) @ model.latent_rgb
    arr = ((rgb.clamp(-1, 1) + 1) * 127.5).round().byte().numpy()
    image = Image.fromarray(arr)
    return image.resize((image.width * 2, image.height * 2), Image.NEAREST)
