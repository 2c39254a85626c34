"""Where each model component's weights live, per memory mode.

- none: all components sit on the compute device.
- medvram: components wait in system RAM; `use(name)` brings one to the GPU and sends the others
  back, so only the component at work occupies VRAM. It stays there until another is needed, so
  repeated use of one component costs no transfers.
- lowvram: like medvram for the text encoders and VAE; the UNet never moves as a whole but
  streams to the GPU one block at a time (diffusers' group offloading, prefetching the next block on
  a side CUDA stream).
"""
from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import torch
from torch import nn

from modules.models.devices import DevicePolicy, MemoryMode


def home_device(policy: DevicePolicy) -> torch.device:
    """Where a component rests between uses."""
    if policy.memory_mode == MemoryMode.NONE:
        return policy.device
    return policy.offload_device


class Placement:
    """Moves a model's components between the compute device and system RAM as the policy says."""

    def __init__(self, policy: DevicePolicy, components: dict[str, nn.Module]):
        self.policy = policy
        self.components = components
        self._lock = threading.RLock()
        self._active: str | None = None  # the component now on the compute device (medvram/lowvram)
        self.streaming = False
        for module in components.values():
            module.to(home_device(policy))
        unet = components.get("unet")
        if policy.memory_mode == MemoryMode.LOWVRAM and unet is not None and policy.device.type == "cuda":
            unet.enable_group_offload(onload_device=policy.device, offload_device=policy.offload_device,
                                      offload_type="block_level", num_blocks_per_group=1, use_stream=True)
            self.streaming = True

    def park(self) -> None:
        """Free the compute device (another model is about to load); `unpark` undoes it."""
        for name, module in self.components.items():
            if not (name == "unet" and self.streaming):
                module.to(self.policy.offload_device)
        self._active = None
        if self.policy.device.type == "cuda":
            torch.cuda.empty_cache()

    def unpark(self) -> None:
        for name, module in self.components.items():
            if not (name == "unet" and self.streaming):
                module.to(home_device(self.policy))

    def where(self) -> dict[str, str]:
        """Device of each component's first parameter, for display and checks."""
        return {name: str(next(m.parameters()).device) for name, m in self.components.items()}

    @contextlib.contextmanager
    def use(self, name: str) -> Iterator[nn.Module]:
        """Make component `name` ready to compute; in medvram/lowvram evict the others first."""
        with self._lock:
            module = self.components[name]
            if self.policy.memory_mode != MemoryMode.NONE and self._active != name:
                for other, m in self.components.items():
                    if other != name and not (other == "unet" and self.streaming):
                        m.to(self.policy.offload_device)
                if self.policy.device.type == "cuda":
                    torch.cuda.empty_cache()
                if not (name == "unet" and self.streaming):
                    module.to(self.policy.device)
                self._active = name
            yield module


def memory_report() -> dict:
    """RAM and CUDA memory in A1111's /sdapi/v1/memory shape (bytes)."""
    import psutil
    vm = psutil.virtual_memory()
    report: dict = {"ram": {"free": vm.available, "used": vm.total - vm.available, "total": vm.total}}
    if torch.cuda.is_available():
        free, total = torch.cuda.mem_get_info()
        report["cuda"] = {"system": {"free": free, "used": total - free, "total": total},
                          "active": {"peak": torch.cuda.max_memory_allocated()}}
    else:
        report["cuda"] = {"error": "no CUDA GPU"}
    return report
