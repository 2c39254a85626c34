"""Command-line flags, with A1111's names and meanings."""
from __future__ import annotations

import argparse
import re
import sys

from modules.extensions import extensions_to_preload, run_preloads

SIZE_UNITS = {"": 1, "b": 1, "kb": 1024, "mb": 1024 ** 2, "gb": 1024 ** 3}


# A1111's flags for the upscaler and face-restoration folders (SwinIR's and ScuNET's come from its built-in
# extensions), and the folder under models/ each goes with: an upscaler flag's folder is searched besides it, a
# face-restoration flag's folder replaces it (as in A1111).
MODEL_PATH_FLAGS = {"esrgan-models-path": "ESRGAN", "bsrgan-models-path": "BSRGAN",
                    "realesrgan-models-path": "RealESRGAN", "swinir-models-path": "SwinIR",
                    "scunet-models-path": "ScuNET", "dat-models-path": "DAT", "gfpgan-models-path": "GFPGAN",
                    "codeformer-models-path": "Codeformer"}


def file_size(text: str) -> int:
    """"50mb", "1 GB", "4096" -> bytes."""
    match = re.fullmatch(r"\s*(\d+)\s*([kmg]?b?)\s*", text.lower())
    if not match or match[2] not in SIZE_UNITS:
        raise argparse.ArgumentTypeError(f"expected a size such as 50mb or 1gb, got {text!r}")
    return int(match[1]) * SIZE_UNITS[match[2]]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="webui.py",
        description="Local Stable Diffusion web UI (A1111-compatible flags).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    net = p.add_argument_group("server")
    net.add_argument("--listen", action="store_true",
                     help="serve on 0.0.0.0 so other computers on your network can connect")
    net.add_argument("--server-name", default=None, help="host name or address to bind to (overrides --listen)")
    net.add_argument("--port", type=int, default=None, help="port to serve on (default 7860; 7861 with --nowebui)")
    net.add_argument("--share", action="store_true",
                     help="also make a public gradio.live link (needs internet; without it the UI stays local)")
    net.add_argument("--gradio-auth", default=None, metavar="USER:PASS[,USER2:PASS2]",
                     help="ask for a user name and password")
    net.add_argument("--gradio-auth-path", default=None, metavar="FILE",
                     help="file with USER:PASS entries (one per line or comma-separated)")
    net.add_argument("--autolaunch", action="store_true", help="open the UI in the default browser")
    net.add_argument("--theme", choices=["light", "dark"], default=None, help="force the light or dark theme")
    net.add_argument("--tls-keyfile", default=None, help="TLS private key file (to serve https)")
    net.add_argument("--tls-certfile", default=None, help="TLS certificate file (to serve https)")
    net.add_argument("--cors-allow-origins", default=None, metavar="ORIGINS",
                     help="comma-separated origins (e.g. http://localhost:3000) whose web pages may call this server")
    net.add_argument("--cors-allow-origins-regex", default=None, metavar="REGEX",
                     help="origins matching this regular expression may call this server")
    net.add_argument("--api", action="store_true", help="also serve the HTTP API at /sdapi/v1 (docs at /docs)")
    net.add_argument("--api-auth", default=None, metavar="USER:PASS[,USER2:PASS2]",
                     help="password for the API (default: the --gradio-auth ones, if any)")
    net.add_argument("--nowebui", action="store_true", help="serve only the API, no page (port 7861 by default)")
    net.add_argument("--api-server-stop", action="store_true",
                     help="let API clients stop the program (POST /sdapi/v1/server-stop, server-kill)")
    net.add_argument("--ui-config-file", default=None, metavar="FILE",
                     help="default values, ranges and visibility of the page's controls (default ui-config.json)")
    net.add_argument("--hide-ui-dir-config", action="store_true",
                     help="hide the page's folder fields and refuse folder access from the page (for servers shared "
                          "with others; implied by --listen, --share and --server-name)")
    net.add_argument("--enable-insecure-extension-access", action="store_true",
                     help="keep the page's folder fields and folder access with --listen, --share or --server-name "
                          "(anyone who reaches the page can then read and write folders of this computer)")
    net.add_argument("--max-upload-size", type=file_size, default="256mb", metavar="SIZE",
                     help="largest file the page accepts in one upload, e.g. 50mb or 1gb (256mb: an 8192x8192 "
                          "picture, the largest the Extras tab makes)")
    net.add_argument("--freeze-settings", action="store_true", help="show the settings but do not let them change")

    paths = p.add_argument_group("folders")
    paths.add_argument("--data-dir", default=None,
                       help="base folder for models/, embeddings/, outputs/ and config.json (default: this folder)")
    paths.add_argument("--ckpt", default=None, help="checkpoint file to list and load at start")
    paths.add_argument("--ckpt-dir", default=None, help="extra folder with Stable Diffusion checkpoints")
    paths.add_argument("--vae-dir", default=None, help="extra folder with VAE files")
    paths.add_argument("--lora-dir", default=None, help="folder with LoRA files (default models/Lora)")
    paths.add_argument("--embeddings-dir", default=None,
                       help="folder with textual-inversion embeddings (default embeddings/)")
    for flag, folder in MODEL_PATH_FLAGS.items():
        paths.add_argument(f"--{flag}", default=None, metavar="DIR", help=f"folder with {folder} models (besides "
                           f"or instead of models/{folder})")
    paths.add_argument("--ui-settings-file", default=None, help="settings file (default config.json)")
    paths.add_argument("--styles-file", default=None, help="prompt styles file (default styles.csv)")

    dev = p.add_argument_group("device and memory")
    dev.add_argument("--medvram", action="store_true",
                     help="keep only the model part at work on the GPU (for 6-8 GB cards)")
    dev.add_argument("--medvram-sdxl", action="store_true", help="--medvram for SDXL models only")
    dev.add_argument("--lowvram", action="store_true",
                     help="stream the UNet to the GPU block by block (for 4 GB cards; slower)")
    dev.add_argument("--no-half", action="store_true", help="use 32-bit floats everywhere (more VRAM)")
    dev.add_argument("--no-half-vae", action="store_true", help="run the VAE in 32-bit floats")
    dev.add_argument("--upcast-sampling", action="store_true",
                     help="keep 16-bit UNet weights but compute in 32-bit (for cards without fast fp16)")
    dev.add_argument("--precision", choices=["full", "half", "autocast", "bf16"], default="autocast",
                     help="full: fp32; half/autocast: fp16; bf16: bfloat16 where the GPU supports it")
    dev.add_argument("--use-cpu", nargs="+", default=[], metavar="MODULE",
                     help="run these on the CPU; 'all' (or 'sd') for everything")
    dev.add_argument("--device-id", type=int, default=None, help="CUDA device number to use")

    dev.add_argument("--skip-torch-cuda-test", action="store_true",
                     help="do not mention it when no CUDA GPU is found (the CPU is used then)")
    dev.add_argument("--opt-sdp-attention", action="store_true",
                     help="PyTorch's scaled-dot-product attention (the default here; accepted for A1111 scripts)")
    dev.add_argument("--xformers", action="store_true", help="use xformers attention if it is installed")

    launcher = p.add_argument_group("launcher (webui.sh / webui.bat)")
    launcher.add_argument("--skip-install", action="store_true", help="do not install or update requirements")
    launcher.add_argument("--skip-prepare-environment", action="store_true",
                          help="do not create or check the Python environment at all")

    ext = p.add_argument_group("extensions")
    ext.add_argument("--disable-extra-extensions", action="store_true",
                     help="do not load the extensions in extensions/ (the built-in ones still load)")
    ext.add_argument("--disable-all-extensions", action="store_true",
                     help="do not load any extension, built-in ones included")

    sec = p.add_argument_group("safety")
    sec.add_argument("--disable-safe-unpickle", action="store_true",
                     help="load .ckpt files even if they contain code (only for files you trust)")
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Our flags and those the extensions' preload.py add (`preload_extensions`)."""
    parser = build_parser()
    preload_errors = preload_extensions(parser, argv)
    args = parser.parse_args(argv)
    args.extension_preload_errors = preload_errors  # shown in the Extensions tab
    # A1111's name: installing, updating, enabling and disabling extensions from the page is off
    args.disable_extension_access = serves_beyond_this_computer(args) and not args.enable_insecure_extension_access
    args.hide_ui_dir_config = args.hide_ui_dir_config or args.disable_extension_access
    return args


def preload_extensions(parser: argparse.ArgumentParser, argv: list[str] | None) -> dict[str, str]:
    """Let extensions add their flags to `parser` (their preload.py), as A1111 does before parsing: which ones and
    where extensions/ is come from a first look at the command line (--data-dir, --ui-settings-file,
    --disable-extra/all-extensions). Returns {extension name: error} for the preloads that failed."""
    without_help = [a for a in (argv if argv is not None else sys.argv[1:]) if a not in ("-h", "--help")]
    first_look, _ = build_parser().parse_known_args(without_help)
    return run_preloads(extensions_to_preload(first_look), parser)


def serves_beyond_this_computer(args: argparse.Namespace) -> bool:
    """A1111's rule (webui_is_non_local): --share, --listen or --server-name may let others reach the page."""
    return bool(args.share or args.listen or args.server_name)
