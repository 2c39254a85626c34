"""Random-weight face restorers (GFPGAN, CodeFormer, RestoreFormer) in their real key layouts, a RetinaFace file in
facexlib's layout, and face pictures that ship inside the scikit-image wheel."""
import os
from pathlib import Path

import skimage
import torch
from PIL import Image

SAMPLES = Path(skimage.__file__).parent / "data"
# Scikit-image's astronaut (512x512): where her face and eye centres are, measured by hand.
FACE_REGION = (165, 55, 285, 175)  # left, top, right, bottom
EYES = ((202, 101), (247, 102))


def astronaut() -> Image.Image:
    return Image.open(SAMPLES / "astronaut.png").convert("RGB")


def gfpgan_weights() -> dict:
    from spandrel.architectures.GFPGAN import GFPGAN

    model = GFPGAN(out_size=512, num_style_feat=512, channel_multiplier=2, decoder_load_path=None, fix_decoder=False,
                   num_mlp=8, input_is_latent=True, different_w=True, narrow=1, sft_half=True)
    return model.state_dict()


def codeformer_weights() -> dict:
    from spandrel_extra_arches.architectures.CodeFormer import CodeFormer

    return CodeFormer(dim_embd=64, n_head=8, n_layers=1, codebook_size=64,
                      connect_list=["32", "64", "128", "256"]).state_dict()


def restoreformer_weights() -> dict:
    from spandrel.architectures.RestoreFormer import RestoreFormer

    return RestoreFormer(n_embed=64, embed_dim=32, ch=32, out_ch=3, ch_mult=(1, 1, 2, 2, 4, 4), num_res_blocks=1,
                         attn_resolutions=(16,), dropout=0.0, in_channels=3, resolution=512, z_channels=32,
                         double_z=False, enable_mid=True, head_size=8).state_dict()


def tiny_esrgan_weights() -> dict:
    from spandrel.architectures.ESRGAN import ESRGAN

    return ESRGAN(num_filters=8, num_blocks=1, scale=4).state_dict()


def half(state_dict: dict) -> dict:
    return {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in state_dict.items()}


def facexlib_retinaface_weights() -> dict:
    """Random RetinaFace-ResNet50 weights under facexlib's key names and shapes, built here without the app's
    network: torchvision's ResNet-50 as `body`, then conv+BatchNorm pairs and 1x1 heads."""
    from torchvision.models import resnet50

    sd = {f"body.{k}": v for k, v in resnet50(weights=None).state_dict().items() if not k.startswith("fc.")}

    def conv_bn(prefix, in_channels, out_channels, kernel):
        sd[f"{prefix}.0.weight"] = torch.randn(out_channels, in_channels, kernel, kernel) * 0.01
        sd[f"{prefix}.1.weight"], sd[f"{prefix}.1.bias"] = torch.ones(out_channels), torch.zeros(out_channels)
        sd[f"{prefix}.1.running_mean"] = torch.zeros(out_channels)
        sd[f"{prefix}.1.running_var"] = torch.ones(out_channels)
        sd[f"{prefix}.1.num_batches_tracked"] = torch.tensor(0)

    for level, in_channels in enumerate((512, 1024, 2048), start=1):
        conv_bn(f"fpn.output{level}", in_channels, 256, 1)
    conv_bn("fpn.merge1", 256, 256, 3)
    conv_bn("fpn.merge2", 256, 256, 3)
    for level in (1, 2, 3):
        conv_bn(f"ssh{level}.conv3X3", 256, 128, 3)
        conv_bn(f"ssh{level}.conv5X5_1", 256, 64, 3)
        conv_bn(f"ssh{level}.conv5X5_2", 64, 64, 3)
        conv_bn(f"ssh{level}.conv7X7_2", 64, 64, 3)
        conv_bn(f"ssh{level}.conv7x7_3", 64, 64, 3)
    for head, outputs in (("ClassHead", 4), ("BboxHead", 8), ("LandmarkHead", 20)):
        for level in range(3):
            sd[f"{head}.{level}.conv1x1.weight"] = torch.randn(outputs, 256, 1, 1) * 0.01
            sd[f"{head}.{level}.conv1x1.bias"] = torch.zeros(outputs)
    return sd


def write_face_models(root: Path) -> Path:
    """A1111's folders: GFPGAN v1.3 and v1.4 (.pth, BasicSR's params_ema), RestoreFormer, facexlib's helper files,
    an upscaler that does not belong there; CodeFormer in models/Codeformer."""
    gfpgan, codeformer = root / "GFPGAN", root / "Codeformer"
    gfpgan.mkdir()
    codeformer.mkdir()
    torch.manual_seed(0)
    torch.save({"params_ema": gfpgan_weights()}, gfpgan / "GFPGANv1.4.pth")
    os.link(gfpgan / "GFPGANv1.4.pth", gfpgan / "GFPGANv1.3.pth")  # A1111 takes the first: v1.3
    torch.save({"params_ema": restoreformer_weights()}, gfpgan / "RestoreFormer.pth")
    torch.save({"params_ema": codeformer_weights()}, codeformer / "codeformer-v0.1.0.pth")
    torch.save({"params_ema": tiny_esrgan_weights()}, gfpgan / "4x-tiny-esrgan.pth")
    torch.save({"conv.weight": torch.randn(4, 3, 3, 3)}, gfpgan / "detection_mobilenet0.25_Final.pth")
    torch.save({"conv.weight": torch.randn(4, 3, 3, 3)}, gfpgan / "parsing_parsenet.pth")
    return root
