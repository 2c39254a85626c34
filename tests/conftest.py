import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

from tests import helpers  # noqa: E402
from tests import ldm_layout as ldm  # noqa: E402

V_YAML = 'model:\n  params:\n    parameterization: "v"\n'


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> Path:
    """Tiny checkpoints in the real LDM key layout, as a user's models/Stable-diffusion folder holds them."""
    root = tmp_path_factory.mktemp("tiny") / "models" / "Stable-diffusion"
    ldm.write_checkpoint(root / "tiny-sd1.safetensors", ldm.TINY_SD1, seed=1)
    ldm.write_checkpoint(root / "sd2" / "tiny-sd2-v.safetensors", ldm.TINY_SD2, seed=2, yaml_text=V_YAML)
    ldm.write_checkpoint(root / "tiny-sdxl.safetensors", ldm.TINY_SDXL, seed=3, dtype=torch.float16)
    ldm.write_checkpoint(root / "tiny-sd1-inpainting.ckpt", ldm.inpainting(ldm.TINY_SD1), seed=4)
    ldm.write_checkpoint(root / "tiny-sdxl-refiner.safetensors", ldm.TINY_SDXL_REFINER, seed=5)
    return root


@pytest.fixture(scope="session")
def cpu_policy():
    from modules.models.devices import make_policy
    return make_policy(torch.device("cpu"))


@pytest.fixture(scope="session")
def make_services(tmp_path_factory, cpu_policy):
    """make_services(options, *flags): the services webui.py builds, on the CPU, over a new temporary --data-dir;
    `flags` are further command-line flags."""
    from modules.cmd_args import parse_args
    from modules.generation.services import build_services
    from modules.paths import Paths

    def make(options, *flags: str):
        paths = Paths.from_args(parse_args(["--data-dir", str(tmp_path_factory.mktemp("data")), *flags]))
        return build_services(paths, cpu_policy, options, console_progress=False)
    return make


@pytest.fixture(scope="session")
def face_models_dir(tmp_path_factory) -> Path:
    """models/GFPGAN and models/Codeformer with random-weight restorers (full-size GFPGAN: about 350 MB)."""
    from tests.face_fixtures import write_face_models
    return write_face_models(tmp_path_factory.mktemp("face-models"))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport():
    """A failing test shows the end of the log of each server that was up while it ran."""
    report = yield
    if report.when == "call" and report.failed:
        for server in helpers.servers_to_report():
            report.sections.append((f"server log ({server.log_path}), last {helpers.LOG_TAIL} characters",
                                    server.log_tail()))
    if report.when == "teardown":
        helpers.forget_stopped_servers()
    return report
