"""ControlNets guiding the sampler: their residuals reach the UNet with the unit's weight, only between its start
and end, summed over units, and kept from the negative prompt when ControlNet is more important. The ControlNet
here is made from the tiny SD1 UNet (diffusers' from_unet), its zero convolutions given random weights."""
from dataclasses import replace

import numpy as np
import pytest
import torch
from diffusers import ControlNetModel

from modules.generation import Txt2ImgRequest, process_txt2img
from modules.generation.job import JobHooks
from modules.options import Options
from modules.sampling.denoiser import CONTROL_MODES, ControlSet, ControlUnit
from tests.helpers import job_context


@pytest.fixture(scope="module")
def services(make_services, tiny_dir):
    return make_services(Options(randn_source="CPU"), "--ckpt-dir", str(tiny_dir))


@pytest.fixture
def ctx(services, tmp_path):
    return job_context(services, tmp_path)


class Counted(torch.nn.Module):
    """A ControlNet that counts its calls."""

    def __init__(self, net):
        super().__init__()
        self.net, self.calls = net, 0

    def forward(self, *args, **kwargs):
        self.calls += 1
        return self.net(*args, **kwargs)


def random_controlnet(unet, seed: int) -> ControlNetModel:
    torch.manual_seed(seed)
    net = ControlNetModel.from_unet(unet).eval()
    with torch.no_grad():  # from_unet leaves the output convolutions at zero: no effect to test
        for module in [*net.controlnet_down_blocks, net.controlnet_mid_block]:
            module.weight.normal_(0, 0.3)
    return net


def hint(size: int = 32) -> torch.Tensor:
    picture = torch.zeros(1, 3, size, size)
    picture[:, :, 4:16, 4:16] = 1.0  # a white square top left
    return picture


class Units(JobHooks):
    def __init__(self, units):
        self.units = units

    def prepared(self, job):
        job.control_units = list(self.units)


def generate(ctx, units=(), **fields) -> np.ndarray:
    req = Txt2ImgRequest(**{**dict(prompt="a red circle", width=32, height=32, steps=4, seed=77,
                                   sampler_name="Euler", cfg_scale=5.0, save_images=False), **fields})
    result = process_txt2img(req, replace(ctx, hooks=Units(units)))
    return np.asarray(result.images[0], dtype=np.int16)


def test_a_controlnet_changes_the_picture_and_weight_zero_changes_nothing(ctx):
    net = random_controlnet(ctx.models.current.unet, 1)
    plain = generate(ctx)
    assert np.array_equal(plain, generate(ctx, [ControlUnit(net, hint(), weight=0.0)]))
    assert np.abs(generate(ctx, [ControlUnit(net, hint(), weight=1.0)]) - plain).mean() > 1


def test_a_unit_acts_only_between_its_start_and_end(ctx):
    net = Counted(random_controlnet(ctx.models.current.unet, 2))
    generate(ctx, [ControlUnit(net, hint(), start=0.5, end=1.0)], steps=4)
    assert net.calls == 2  # steps 3 and 4 of 4 (cond and uncond in one call each)
    net.calls = 0
    plain = generate(ctx)
    never = generate(ctx, [ControlUnit(net, hint(), start=1.0, end=1.0)], steps=4)  # no step starts at 100 %
    assert net.calls == 0 and np.array_equal(plain, never)


def control_call(units, rows: int = 2, uncond_from: int = 1):
    net = units[0].model
    torch.manual_seed(0)  # the same model input for every call
    x = torch.randn(rows, 4, 4, 4)
    t = torch.full((rows,), 500.0)
    context = torch.randn(rows, 77, net.config.cross_attention_dim)
    return ControlSet(units, torch.tensor([10.0, 5.0, 0.0])).for_call(10.0, torch.arange(rows) >= uncond_from)(
        x, t, context, None)


def test_two_units_add_up_and_the_modes_weigh_the_residuals(ctx):
    unet = ctx.models.current.unet
    a, b = random_controlnet(unet, 3), random_controlnet(unet, 4)
    with torch.no_grad():
        first = control_call([ControlUnit(a, hint(), weight=0.7)])
        second = control_call([ControlUnit(b, hint(), weight=0.4)])
        both = control_call([ControlUnit(a, hint(), weight=0.7), ControlUnit(b, hint(), weight=0.4)])
        for one, two, summed in zip(first["down_block_additional_residuals"], second["down_block_additional_residuals"],
                                    both["down_block_additional_residuals"]):
            assert torch.allclose(one + two, summed, atol=1e-5)

        balanced = control_call([ControlUnit(a, hint())])
        prompt = control_call([ControlUnit(a, hint(), mode=CONTROL_MODES[1])])
        control = control_call([ControlUnit(a, hint(), mode=CONTROL_MODES[2])])
    downs = balanced["down_block_additional_residuals"]
    count = len(downs) + 1
    for i, (full, soft) in enumerate(zip(downs, prompt["down_block_additional_residuals"])):
        assert torch.allclose(soft, full * 0.825 ** (count - 1 - i), atol=1e-5)  # shallow layers weigh less
    assert torch.allclose(prompt["mid_block_additional_residual"], balanced["mid_block_additional_residual"])
    for full, cond_only in zip(downs, control["down_block_additional_residuals"]):
        assert torch.allclose(cond_only[0], full[0]) and not cond_only[1].any()  # the negative row goes without


def test_the_hires_pass_uses_the_hint_at_its_own_size(ctx):
    net = Counted(random_controlnet(ctx.models.current.unet, 5))
    picture = generate(ctx, [ControlUnit(net, hint())], enable_hr=True, hr_scale=2, hr_second_pass_steps=2,
                       denoising_strength=0.5)
    assert picture.shape[:2] == (64, 64) and net.calls >= 4 + 1  # both passes were guided
