"""Start the web UI: python webui.py [A1111-style flags]."""
from __future__ import annotations

import os

# Nothing may reach a model hub or analytics server, whatever the user's environment says.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"

import logging  # noqa: E402
import sys  # noqa: E402

from modules.checkpoint_io import CheckpointError  # noqa: E402
from modules.cmd_args import parse_args  # noqa: E402

log = logging.getLogger("webui")


def build_app(args):
    """Everything but the server: settings, device policy, models, the generation worker and the page."""
    from modules.devices import policy_from_args
    from modules.hashes import HashCache
    from modules.lora import LoraApplier
    from modules.model_manager import ModelManager
    from modules.options import Options
    from modules.paths import Paths
    from modules.processing import ProcessingContext
    from modules.progress import GenerationState
    from modules.styles import StyleDatabase
    from modules.textual_inversion import EmbeddingDatabase
    from modules.ui.app import create_ui
    from modules.worker import GenerationWorker

    paths = Paths.from_args(args)
    paths.ensure()
    options = Options.load(paths.config_file)
    policy = policy_from_args(args)
    log.info("device: %s", policy.describe())
    if policy.is_cpu and not (args.use_cpu or args.skip_torch_cuda_test):
        log.warning("No CUDA GPU found: running on the CPU, which is much slower. "
                    "(--skip-torch-cuda-test hides this note.)")
    manager = ModelManager(paths, policy, options, HashCache(paths.cache_file),
                           allow_unsafe_pickle=args.disable_safe_unpickle)
    load_initial_checkpoint(manager, args.ckpt)
    ctx = ProcessingContext(
        models=manager, options=options, outputs_dir=paths.outputs_dir, state=GenerationState(),
        embeddings=EmbeddingDatabase(paths.embeddings_dir, allow_unsafe_pickle=args.disable_safe_unpickle),
        loras=LoraApplier([paths.lora_dir, paths.models_dir / "LyCORIS"],
                          allow_unsafe_pickle=args.disable_safe_unpickle),
        styles=StyleDatabase(args.styles_file or paths.data_dir / "styles.csv"))
    worker = GenerationWorker(ctx)
    demo = create_ui(manager, worker, save_settings=lambda: options.save(paths.config_file),
                     show_dir_fields=not args.hide_ui_dir_config, freeze_settings=args.freeze_settings)
    return demo, worker


def load_initial_checkpoint(manager, requested: str | None) -> None:
    """--ckpt, else the checkpoint chosen last time, else the first one found; failures are logged."""
    candidates = [requested] if requested else []
    if manager.options.sd_model_checkpoint:
        candidates.append(manager.options.sd_model_checkpoint)
    candidates += [c.title for c in manager.checkpoints]
    for query in candidates:
        try:
            manager.load(query)
            return
        except CheckpointError as e:
            log.error("%s", e)
    if not manager.checkpoints:
        log.warning("no checkpoints found in %s", ", ".join(map(str, manager.paths.checkpoint_dirs)))


def parse_auth(args) -> list[tuple[str, str]] | None:
    """--gradio-auth "u:p,u2:p2" and --gradio-auth-path FILE (lines or commas) -> [(user, password)]."""
    entries = []
    if args.gradio_auth:
        entries += args.gradio_auth.split(",")
    if args.gradio_auth_path:
        with open(args.gradio_auth_path, encoding="utf-8") as f:
            entries += [e for line in f for e in line.strip().split(",")]
    pairs = []
    for entry in (e.strip() for e in entries):
        if not entry:
            continue
        user, sep, password = entry.partition(":")
        if not sep or not user:
            raise SystemExit(f"--gradio-auth: expected USER:PASSWORD, got {entry!r}")
        pairs.append((user, password))
    return pairs or None


def theme_head(theme: str | None) -> str:
    """Gradio picks light/dark from the URL's __theme; force it when --theme is given."""
    if not theme:
        return ""
    return ("<script>(() => { const u = new URL(location.href);"
            f" if (u.searchParams.get('__theme') !== '{theme}') {{ u.searchParams.set('__theme', '{theme}');"
            " location.replace(u.href); } })();</script>")


def share_possible() -> bool:
    """Gradio's share tunnel needs its frpc program; we never download it (nothing is fetched at run time)."""
    from pathlib import Path

    import gradio.tunneling
    if Path(gradio.tunneling.BINARY_PATH).is_file():
        return True
    log.warning("--share: no public link, because Gradio's tunnel program is not installed at %s and this program "
                "downloads nothing. Serving on your computer (and LAN with --listen) only.",
                gradio.tunneling.BINARY_PATH)
    return False


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    args = parse_args(argv)
    auth = parse_auth(args)
    demo, _ = build_app(args)
    host = args.server_name or ("0.0.0.0" if args.listen else "127.0.0.1")
    port = args.port or 7860
    from modules.ui.app import CSS, HEAD
    demo.queue(default_concurrency_limit=1)
    try:
        demo.launch(server_name=host, server_port=port, show_error=True, css=CSS, head=HEAD + theme_head(args.theme),
                    auth=auth, share=args.share and share_possible(), inbrowser=args.autolaunch, ssl_keyfile=args.tls_keyfile,
                    ssl_certfile=args.tls_certfile, ssl_verify=False)
    except OSError as e:
        print(f"Cannot serve on {host}:{port}: {e}. Is another program using the port? "
              f"Start with --port to choose another.", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
