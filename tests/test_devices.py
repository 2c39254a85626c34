"""Precision and memory policy from A1111's flags; where weights live in each memory mode."""
import pytest
import torch

from modules.cmd_args import parse_args
from modules.models import devices
from modules.models.devices import FP8, MemoryMode, make_policy, policy_from_args
from modules.models.memory import Placement

CUDA = torch.device("cuda", 0)
f16, f32, bf16 = torch.float16, torch.float32, torch.bfloat16


def test_cuda_defaults_to_fp16_everywhere():
    p = make_policy(CUDA)
    assert (p.unet.compute, p.unet.storage, p.text_encoder.compute, p.vae.compute) == (f16, f16, f16, f16)
    assert p.memory_mode == MemoryMode.NONE


def test_no_half_and_precision_full_mean_fp32():
    for p in (make_policy(CUDA, no_half=True), make_policy(CUDA, precision="full")):
        assert {p.unet.compute, p.unet.storage, p.text_encoder.compute, p.vae.compute} == {f32}


def test_no_half_vae_only_changes_the_vae():
    p = make_policy(CUDA, no_half_vae=True)
    assert p.vae.compute == f32 and p.unet.compute == f16


def test_upcast_sampling_stores_half_and_computes_full():
    p = make_policy(CUDA, upcast_sampling=True)
    assert p.unet.storage == f16 and p.unet.compute == f32 and p.unet.casts_per_layer


def test_bf16_where_supported_else_fp16(monkeypatch):
    monkeypatch.setattr(devices, "bf16_supported", lambda _device: True)
    assert make_policy(CUDA, precision="bf16").unet.compute == bf16
    monkeypatch.setattr(devices, "bf16_supported", lambda _device: False)
    p = make_policy(CUDA, precision="bf16")
    assert p.unet.compute == f16 and any("bf16" in n for n in p.notes)


def test_cpu_is_fp32_and_ignores_vram_modes():
    p = make_policy(torch.device("cpu"), lowvram=True)
    assert p.unet.compute == f32 and p.memory_mode == MemoryMode.NONE
    assert any("no effect" in n for n in p.notes)


def test_use_cpu_all_forces_the_cpu():
    assert policy_from_args(parse_args(["--use-cpu", "all"])).device.type == "cpu"


def test_vram_modes_and_medvram_sdxl():
    assert make_policy(CUDA, medvram=True).memory_mode == MemoryMode.MEDVRAM
    assert make_policy(CUDA, lowvram=True).memory_mode == MemoryMode.LOWVRAM
    p = make_policy(CUDA, medvram_sdxl=True)
    assert p.for_model(is_sdxl=True, fp8_unet=False).memory_mode == MemoryMode.MEDVRAM
    assert p.for_model(is_sdxl=False, fp8_unet=False).memory_mode == MemoryMode.NONE


def test_fp8_storage_keeps_the_compute_dtype():
    p = make_policy(CUDA).for_model(is_sdxl=True, fp8_unet=True)
    assert p.unet.storage == FP8 and p.unet.compute == f16


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _components():
    return {"unet": torch.nn.Linear(8, 8), "vae": torch.nn.Linear(8, 8), "text_encoder_0": torch.nn.Linear(8, 8)}


@needs_cuda
def test_medvram_keeps_only_the_working_component_on_the_gpu():
    placement = Placement(make_policy(CUDA, medvram=True), _components())
    assert set(placement.where().values()) == {"cpu"}
    with placement.use("text_encoder_0"):
        where = placement.where()
        assert where["text_encoder_0"].startswith("cuda") and where["unet"] == "cpu" and where["vae"] == "cpu"
    with placement.use("unet"):
        where = placement.where()
        assert where["unet"].startswith("cuda") and where["text_encoder_0"] == "cpu"


@needs_cuda
def test_no_memory_mode_keeps_everything_on_the_gpu():
    placement = Placement(make_policy(CUDA), _components())
    assert all(d.startswith("cuda") for d in placement.where().values())
