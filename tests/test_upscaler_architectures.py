"""Upscaler architectures beyond ESRGAN 4x, Compact and SwinIR (tests/test_upscaler_models.py has those).

Each is a tiny random-weight model built with spandrel's own class, saved in the A1111 folder, wrapper and format of
its real releases. It must be listed with its scale and spandrel's architecture name, reach an exact size through
tiles that fit no window, and give tiled output that agrees with the untiled output away from the border.
run_tiled cuts tiles as they come: spandrel pads each one to the model's minimum side and multiple (Real-ESRGAN's
pixel unshuffle), and the transformers pad it to their window. Some also look at the whole input, so a tile sees
less than the picture: DAT, HAT, OmniSR and RealCUGAN average it for channel attention, OmniSR's grid attention and
ATD's token categories span it. With these weights that changes the tiled output little.
"""
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from modules.postprocessing import upscalers as up
from tests.upscaler_fixtures import _RRDB_NEW

TILE_OVERLAP = 8
# A multiple of neither the windows (8) nor Real-ESRGAN 2x's 4, and below SCUNet's and RealCUGAN's minimum side
# (40, 32): every tile gets padded.
UNFITTING_TILE_SIZE = 30
# Neither a multiple of 8 nor one whose step (22 - 8) is: tiles still start on multiples of 8 (upscalers.tile_spans),
# where window attention (Swin2SR, HAT, ATD, OmniSR) and SCUNet's downsampling see the same grid as in the whole
# picture; off that grid their output differs throughout, not only at the seams (Swin2SR 5x, SCUNet 20x more).
ALIGNED_TILE_SIZE = 22
BORDER = 4  # input pixels at the picture's edge left out of the comparison


@dataclass(frozen=True)
class Release:
    """A model file as it is published: where A1111 keeps it, its name, wrapper and spandrel's view of it."""

    folder: str
    file: str
    architecture: str
    scale: int
    build: Callable[[], dict[str, torch.Tensor]]  # the state dict of a tiny model with random weights
    wrapper: str | None = None  # BasicSR's "params_ema" / "params" around the weights
    listed_as: str | None = None  # A1111's own name, where it has one; otherwise the file stem

    @property
    def name(self) -> str:
        return self.listed_as or Path(self.file).stem


def _swin2sr():
    from spandrel.architectures.Swin2SR import Swin2SR

    return Swin2SR(img_size=16, embed_dim=12, depths=[2], num_heads=[2], window_size=8, upscale=2,
                   upsampler="pixelshuffledirect").state_dict()


def _hat():
    from spandrel.architectures.HAT import HAT

    return HAT(img_size=16, embed_dim=12, depths=[2], num_heads=[2], window_size=8, squeeze_factor=6, num_feat=8,
               upscale=2).state_dict()


def _dat():
    from spandrel.architectures.DAT import DAT

    # its dynamic position bias has embed_dim // 32 channels: 32 is the least that has one
    return DAT(img_size=16, embed_dim=32, depth=[2], num_heads=[2], split_size=[2, 4], upscale=2,
               upsampler="pixelshuffledirect").state_dict()


def _atd():
    from spandrel.architectures.ATD import ATD

    return ATD(embed_dim=12, depths=[2], num_heads=[2], window_size=8, num_tokens=8, reducted_dim=4, upscale=2,
               upsampler="pixelshuffledirect").state_dict()


def _span():
    from spandrel.architectures.SPAN import SPAN

    return SPAN(num_in_ch=3, num_out_ch=3, feature_channels=8, upscale=2).state_dict()


def _omnisr():
    from spandrel.architectures.OmniSR import OmniSR

    return OmniSR(num_feat=8, block_num=1, window_size=8, res_num=1, up_scale=2).state_dict()


def _plksr():
    from spandrel.architectures.PLKSR import PLKSR

    return PLKSR(dim=8, n_blocks=1, upscaling_factor=2).state_dict()


def _realcugan():
    from spandrel.architectures.RealCUGAN import UpCunet2x

    return UpCunet2x().state_dict()  # its channel counts are fixed


def _scunet():
    from spandrel.architectures.SCUNet import SCUNet

    return SCUNet(config=[1] * 7, dim=64).state_dict()  # 32-channel attention heads on dim // 2: 64 at least


def _realesrgan_x2plus():
    """Real-ESRGAN's 2x RRDBNet: a 4x network on the pixel-unshuffled picture (12 channels), in BasicSR's keys."""
    from spandrel.architectures.ESRGAN import ESRGAN

    old = ESRGAN(in_nc=12, out_nc=3, num_filters=8, num_blocks=1, scale=4, shuffle_factor=2).state_dict()
    new = {}
    for key, value in old.items():
        for pattern, replacement in _RRDB_NEW:
            if re.match(pattern, key):
                key = re.sub(pattern, replacement, key, count=1)
                break
        new[key] = value
    return new


RELEASES = [
    Release("SwinIR", "Swin2SR_Lightweight_X2_64.pth", "Swin2SR", 2, _swin2sr, wrapper="params_ema"),
    Release("HAT", "HAT-S_SRx2.pth", "HAT", 2, _hat, wrapper="params_ema"),
    Release("DAT", "DAT_light_x2.pth", "DAT", 2, _dat, wrapper="params_ema"),
    Release("ESRGAN", "ATD_SRx2.pth", "ATD", 2, _atd),
    Release("ESRGAN", "2xNomosUni_span_multijpg.safetensors", "SPAN", 2, _span),
    Release("ESRGAN", "OmniSR_X2_DIV2K.pth", "OmniSR", 2, _omnisr),
    Release("ESRGAN", "PLKSR_X2_DIV2K.pth", "PLKSR", 2, _plksr),
    Release("ESRGAN", "up2x-latest-conservative.pth", "RealCUGAN", 2, _realcugan),
    Release("ScuNET", "scunet_color_real_psnr.pth", "SCUNet", 1, _scunet),
    Release("RealESRGAN", "RealESRGAN_x2plus.pth", "ESRGAN", 2, _realesrgan_x2plus, wrapper="params_ema",
            listed_as="R-ESRGAN 2x+"),
]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """For models this small torch's thread pool costs more than it saves, and far more when cores are busy."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def upscalers(tmp_path_factory):
    """The app's upscalers over A1111's folders holding every release above."""
    root = tmp_path_factory.mktemp("models")
    for release in RELEASES:
        torch.manual_seed(0)
        weights = release.build()
        path = root / release.folder / release.file
        path.parent.mkdir(exist_ok=True)
        if path.suffix == ".safetensors":
            save_file({k: v.contiguous() for k, v in weights.items()}, path)
        else:
            torch.save({release.wrapper: weights} if release.wrapper else weights, path)
    return up.Upscalers(up.model_folders(root), realesrgan_folders=[root / "RealESRGAN"])


def smooth_picture(width: int, height: int, seed: int = 0) -> Image.Image:
    """Random colours resized bicubic: smooth content, like a photo."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (height // 4 + 1, width // 4 + 1, 3), dtype=np.uint8)
    return Image.fromarray(coarse).resize((width, height), Image.BICUBIC)


by_architecture = pytest.mark.parametrize("release", RELEASES, ids=lambda release: release.architecture)


@by_architecture
def test_listed_by_name_with_scale_and_architecture(upscalers, release):
    assert upscalers.library.discovery.problems == []
    entry = upscalers.entry(release.name)
    assert (entry.scale, entry.model.scale, entry.model.architecture) == (release.scale, release.scale,
                                                                        release.architecture)


@by_architecture
def test_upscale_to_twice_the_model_scale_reaches_the_exact_size(upscalers, release):
    picture = smooth_picture(40, 28)
    size = (40 * 2 * release.scale, 28 * 2 * release.scale)
    result = upscalers.upscale(release.name, picture, size, tile_size=UNFITTING_TILE_SIZE, tile_overlap=TILE_OVERLAP)
    assert result.size == size and result.mode == "RGB"


@by_architecture
def test_tiled_output_matches_untiled_away_from_the_border(upscalers, release):
    picture = smooth_picture(48, 48, seed=3)  # 2 x 2 tiles side by side without overlap, 3 x 3 with it
    size = (48 * release.scale, 48 * release.scale)

    def interior(tile_size, tile_overlap=TILE_OVERLAP):
        result = upscalers.upscale(release.name, picture, size, tile_size=tile_size, tile_overlap=tile_overlap)
        b = BORDER * release.scale
        return np.asarray(result, dtype=np.float32)[b:-b, b:-b] / 255

    whole = interior(0)
    blended = np.abs(interior(ALIGNED_TILE_SIZE) - whole).mean()
    side_by_side = np.abs(interior(ALIGNED_TILE_SIZE, 0) - whole).mean()  # seams
    assert blended < side_by_side / 3, (blended, side_by_side)
