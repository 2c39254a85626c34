"""Tiny random-weight upscaler models in the real key layouts, written into A1111's folders."""
import re
from pathlib import Path

import torch
from safetensors.torch import save_file

from modules.paths import UPSCALER_FOLDERS

_RRDB_NEW = [  # spandrel's (old ESRGAN) keys -> Real-ESRGAN / BasicSR RRDBNet keys, for a 4x model
    (r"model\.0\.", "conv_first."),
    (r"model\.1\.sub\.(\d+)\.RDB(\d)\.conv(\d)\.0\.", r"body.\1.rdb\2.conv\3."),
    (r"model\.1\.sub\.\d+\.", "conv_body."),
    (r"model\.3\.", "conv_up1."),
    (r"model\.6\.", "conv_up2."),
    (r"model\.8\.", "conv_hr."),
    (r"model\.10\.", "conv_last."),
]


def tiny_models():
    from spandrel.architectures.Compact import Compact
    from spandrel.architectures.ESRGAN import ESRGAN
    from spandrel.architectures.SwinIR import SwinIR

    torch.manual_seed(0)
    esrgan = ESRGAN(num_filters=8, num_blocks=1, scale=4).state_dict()  # old ESRGAN layout (4x-UltraSharp & co.)
    new = {}
    for key, value in ESRGAN(num_filters=8, num_blocks=1, scale=4).state_dict().items():
        for pattern, repl in _RRDB_NEW:
            if re.match(pattern, key):
                key = re.sub(pattern, repl, key, count=1)
                break
        new[key] = value
    compact = Compact(num_feat=8, num_conv=2, upscale=2).state_dict()
    swinir = SwinIR(img_size=16, embed_dim=12, depths=[2], num_heads=[2], window_size=8, upscale=2,
                    upsampler="pixelshuffledirect").state_dict()
    return esrgan, new, compact, swinir


def write_tiny_upscalers(root: Path) -> Path:
    """Usable models in ESRGAN, RealESRGAN and SwinIR (one in a subfolder), and two files that are not models;
    returns `root`."""
    esrgan, rrdb_new, compact, swinir = tiny_models()
    folders = {name: root / name for name in UPSCALER_FOLDERS}
    for folder in folders.values():
        folder.mkdir()
    torch.save(esrgan, folders["ESRGAN"] / "4x-Tiny.pth")
    save_file({k: v.contiguous() for k, v in esrgan.items()}, folders["ESRGAN"] / "4x-TinySafe.safetensors")
    torch.save({"params_ema": rrdb_new}, folders["RealESRGAN"] / "RealESRGAN_x4plus_tiny.pth")
    torch.save({"params": compact}, folders["RealESRGAN"] / "realesr-tiny-x2.pth")
    (folders["SwinIR"] / "sub").mkdir()
    torch.save({"params": swinir}, folders["SwinIR"] / "sub" / "SwinIR_x2_tiny.pth")
    save_file({"foo.weight": torch.randn(4, 4), "bar": torch.randn(3)}, folders["DAT"] / "random.safetensors")
    (folders["HAT"] / "notes.txt").write_text("not a model")
    return root
