"""Device and precision policy, decided once from the command line and the hardware.

Mirrors A1111: fp16 weights on CUDA by default, `--no-half` for fp32 everywhere, `--no-half-vae`
for an fp32 VAE, `--upcast-sampling` to keep fp16 weights but compute in fp32, fp32 on the CPU.
On top of that: bf16 (`--precision bf16`) where the GPU supports it, and fp8 (e4m3fn) storage for
UNet weights with fp16/bf16 compute, which halves the UNet's memory.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from enum import Enum

import torch

log = logging.getLogger(__name__)

FP8 = torch.float8_e4m3fn


class MemoryMode(str, Enum):
    NONE = "none"  # every component stays on the compute device
    MEDVRAM = "medvram"  # only the component at work sits on the GPU
    LOWVRAM = "lowvram"  # as medvram, and the UNet streams to the GPU block by block


@dataclass(frozen=True)
class ComponentPrecision:
    """How one model component is stored and computed."""
    compute: torch.dtype
    storage: torch.dtype  # differs from compute for fp8 storage or upcast sampling

    @property
    def casts_per_layer(self) -> bool:
        return self.storage != self.compute


@dataclass(frozen=True)
class DevicePolicy:
    device: torch.device
    unet: ComponentPrecision
    text_encoder: ComponentPrecision
    vae: ComponentPrecision
    memory_mode: MemoryMode = MemoryMode.NONE
    medvram_sdxl_only: bool = False
    autocast: bool = False
    offload_device: torch.device = torch.device("cpu")
    attention: str = "sdp"  # or "xformers"
    notes: tuple[str, ...] = ()

    @property
    def is_cpu(self) -> bool:
        return self.device.type == "cpu"

    def for_model(self, is_sdxl: bool, fp8_unet: bool) -> DevicePolicy:
        """The policy for one loaded model: --medvram-sdxl and the fp8 setting depend on the model."""
        policy = self
        if self.medvram_sdxl_only and is_sdxl and self.memory_mode == MemoryMode.NONE:
            policy = replace(policy, memory_mode=MemoryMode.MEDVRAM)
        if fp8_unet:
            policy = replace(policy, unet=ComponentPrecision(compute=self.unet.compute, storage=FP8))
        return policy

    def describe(self) -> str:
        def d(p: ComponentPrecision) -> str:
            name = str(p.compute).removeprefix("torch.")
            return name if not p.casts_per_layer else f"{str(p.storage).removeprefix('torch.')}->{name}"
        return (f"{self.device}, UNet {d(self.unet)}, text {d(self.text_encoder)}, VAE {d(self.vae)}, "
                f"memory {self.memory_mode.value}{' (SDXL: medvram)' if self.medvram_sdxl_only else ''}")


def pick_device(use_cpu: list[str], device_id: int | None) -> torch.device:
    if "all" in use_cpu or "sd" in use_cpu:
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda", device_id or 0)
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def bf16_supported(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu"


def make_policy(device: torch.device, *, no_half: bool = False, no_half_vae: bool = False,
                upcast_sampling: bool = False, precision: str = "autocast", medvram: bool = False,
                lowvram: bool = False, medvram_sdxl: bool = False) -> DevicePolicy:
    """Build the policy from A1111-style flags for `device`."""
    f32, f16 = torch.float32, torch.float16
    notes = []
    if device.type == "cpu":
        half = None
        if precision == "bf16":
            half = torch.bfloat16
            notes.append("bf16 on the CPU")
        if medvram or lowvram:
            notes.append("memory modes have no effect on the CPU")
    elif no_half or precision == "full":
        half = None
    elif precision == "bf16":
        if bf16_supported(device):
            half = torch.bfloat16
        else:
            half = f16
            notes.append(f"{device} does not support bf16; using fp16")
    else:
        half = f16

    if half is None:
        unet = text = vae = ComponentPrecision(f32, f32)
    else:
        unet = ComponentPrecision(f32, half) if upcast_sampling else ComponentPrecision(half, half)
        text = ComponentPrecision(half, half)
        vae = ComponentPrecision(f32, f32) if no_half_vae else ComponentPrecision(half, half)

    mode = MemoryMode.NONE
    if device.type != "cpu":
        mode = MemoryMode.LOWVRAM if lowvram else MemoryMode.MEDVRAM if medvram else MemoryMode.NONE
    policy = DevicePolicy(device=device, unet=unet, text_encoder=text, vae=vae, memory_mode=mode,
                          medvram_sdxl_only=medvram_sdxl and device.type != "cpu",
                          autocast=precision == "autocast" and half is not None and not upcast_sampling,
                          notes=tuple(notes))
    for n in notes:
        log.info(n)
    return policy


def xformers_available() -> bool:
    try:
        import xformers.ops  # noqa: F401
    except Exception:
        return False
    return True


def policy_from_args(args) -> DevicePolicy:
    device = pick_device(args.use_cpu or [], args.device_id)
    policy = make_policy(device, no_half=args.no_half, no_half_vae=args.no_half_vae,
                         upcast_sampling=args.upcast_sampling, precision=args.precision, medvram=args.medvram,
                         lowvram=args.lowvram, medvram_sdxl=args.medvram_sdxl)
    if getattr(args, "xformers", False):
        if device.type == "cuda" and xformers_available():
            return replace(policy, attention="xformers")
        log.warning("--xformers: xformers is not installed (or no CUDA GPU); using PyTorch's attention")
    return policy
