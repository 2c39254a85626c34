"""A1111's `modules.devices`: the device and precision the program runs with, and memory clean-up."""
from __future__ import annotations

import contextlib
import gc

import torch

cpu = torch.device("cpu")


def _policy():
    from modules import shared_services
    return shared_services.services().models.policy


def __getattr__(name: str):
    """`device`, `dtype`, `dtype_vae`, `dtype_unet` follow the program's device policy (known once started)."""
    if name in ("device", "device_interrogate", "device_gfpgan", "device_esrgan", "device_codeformer"):
        return _policy().device
    if name in ("dtype", "dtype_unet"):
        return _policy().unet.compute
    if name == "dtype_vae":
        return _policy().vae.compute
    raise AttributeError(f"module 'modules.devices' has no attribute {name!r}")


def get_optimal_device():
    return _policy().device


def get_device_for(task: str):
    return _policy().device


def torch_gc() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def autocast(disable: bool = False):
    """Our models run in their own precision; nothing to switch here."""
    return contextlib.nullcontext()


def without_autocast(disable: bool = False):
    return contextlib.nullcontext()


def cond_cast_unet(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.to(_policy().unet.compute)


def cond_cast_float(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.float()


def randn(seed: int, shape, generator=None) -> torch.Tensor:
    g = torch.Generator(device="cpu").manual_seed(int(seed))
    return torch.randn(shape, generator=g).to(_policy().device)


has_mps = torch.backends.mps.is_available() if hasattr(torch.backends, "mps") else False
