import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

from tests import ldm_layout as L  # noqa: E402

V_YAML = 'model:\n  params:\n    parameterization: "v"\n'


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> Path:
    """Tiny checkpoints in the real LDM key layout, as a user's models/Stable-diffusion folder holds them."""
    root = tmp_path_factory.mktemp("tiny") / "models" / "Stable-diffusion"
    L.write_checkpoint(root / "tiny-sd1.safetensors", L.TINY_SD1, seed=1)
    L.write_checkpoint(root / "sd2" / "tiny-sd2-v.safetensors", L.TINY_SD2, seed=2, yaml_text=V_YAML)
    L.write_checkpoint(root / "tiny-sdxl.safetensors", L.TINY_SDXL, seed=3, dtype=torch.float16)
    L.write_checkpoint(root / "tiny-sd1-inpainting.ckpt", L.inpainting(L.TINY_SD1), seed=4)
    L.write_checkpoint(root / "tiny-sdxl-refiner.safetensors", L.TINY_SDXL_REFINER, seed=5)
    return root


@pytest.fixture(scope="session")
def cpu_policy():
    from modules.models.devices import make_policy
    return make_policy(torch.device("cpu"))
