"""Where things are on disk, resolved once from the command line (A1111 folder names)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from modules.cmd_args import MODEL_PATH_FLAGS

REPO_ROOT = Path(__file__).resolve().parent.parent
DEMO_CHECKPOINT = REPO_ROOT / "models" / "Stable-diffusion" / "demo-shapes.safetensors"  # tools/train_demo_model.py
# The shipped demo LoRA and embedding, found with any --data-dir as the demo checkpoint is.
BUILTIN_LORA_DIR = REPO_ROOT / "models" / "Lora"
BUILTIN_EMBEDDINGS_DIR = REPO_ROOT / "embeddings"
BUILTIN_UPSCALER_DIR = REPO_ROOT / "models" / "ESRGAN"  # the shipped upscaler (tools/train_upscaler.py)
UPSCALER_FOLDERS = ("ESRGAN", "BSRGAN", "RealESRGAN", "SwinIR", "ScuNET", "DAT", "HAT")  # A1111's, under models/
# A1111's module-level names, for extensions (`from modules.paths import models_path`)
script_path = str(REPO_ROOT)
extensions_builtin_dir = str(REPO_ROOT / "extensions-builtin")


def __getattr__(name: str):
    """A1111's data folders (`models_path`, `data_path`, `extensions_dir`): they follow --data-dir, which is known
    once the running program has bound the extension modules (modules.shared_services)."""
    from modules import shared_services
    data = shared_services.services().paths.data_dir if shared_services.bound() else REPO_ROOT
    found = {"data_path": data, "models_path": data / "models", "extensions_dir": data / "extensions"}
    if name in found:
        return str(found[name])
    raise AttributeError(f"module 'modules.paths' has no attribute {name!r}")


def _flag_folder(args, name: str) -> Path | None:
    """The folder A1111's flag for models/<name> gives (--esrgan-models-path & co.), if given."""
    flag = next((f for f, folder in MODEL_PATH_FLAGS.items() if folder == name), None)
    given = getattr(args, flag.replace("-", "_"), None) if flag else None
    return Path(given).expanduser().resolve() if given else None


def _model_folders(args, models: Path, name: str) -> list[Path]:
    """Where upscalers of one kind are searched: the flag's folder first, then models/<name> (A1111 looks in both)."""
    return list(dict.fromkeys([f for f in (_flag_folder(args, name), models / name) if f is not None]))


@dataclass(frozen=True)
class Paths:
    data_dir: Path
    checkpoint_dirs: tuple[Path, ...]
    checkpoint_files: tuple[Path, ...]  # --ckpt: listed even if outside the folders
    vae_dirs: tuple[Path, ...]
    lora_dir: Path
    embeddings_dir: Path
    lora_dirs: tuple[Path, ...]  # the user's (lora_dir, LyCORIS) and the built-in one, searched in this order
    embeddings_dirs: tuple[Path, ...]
    upscaler_dirs: tuple[Path, ...]  # A1111's upscaler folders, then the built-in one
    realesrgan_dirs: tuple[Path, ...]  # some of them: Real-ESRGAN's releases there get A1111's names
    gfpgan_dir: Path
    codeformer_dir: Path
    outputs_dir: Path
    config_file: Path
    ui_config_file: Path
    cache_file: Path

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    @classmethod
    def from_args(cls, args) -> Paths:
        data = Path(args.data_dir).expanduser().resolve() if args.data_dir else REPO_ROOT
        models = data / "models"
        ckpt_dirs = [models / "Stable-diffusion"]
        if args.ckpt_dir:
            ckpt_dirs.append(Path(args.ckpt_dir).expanduser().resolve())
        builtin = REPO_ROOT / "models" / "Stable-diffusion"
        if builtin not in ckpt_dirs:
            ckpt_dirs.append(builtin)  # the shipped demo model stays available with any --data-dir
        vae_dirs = [models / "VAE"]
        if args.vae_dir:
            vae_dirs.insert(0, Path(args.vae_dir).expanduser().resolve())
        lora_dir = Path(args.lora_dir).expanduser().resolve() if args.lora_dir else models / "Lora"
        embeddings_dir = (Path(args.embeddings_dir).expanduser().resolve() if args.embeddings_dir
                          else data / "embeddings")
        return cls(
            data_dir=data,
            checkpoint_dirs=tuple(ckpt_dirs),
            checkpoint_files=(Path(args.ckpt).expanduser().resolve(),) if args.ckpt else (),
            vae_dirs=tuple(vae_dirs),
            lora_dir=lora_dir,
            embeddings_dir=embeddings_dir,
            lora_dirs=tuple(dict.fromkeys([lora_dir, models / "LyCORIS", BUILTIN_LORA_DIR])),
            embeddings_dirs=tuple(dict.fromkeys([embeddings_dir, BUILTIN_EMBEDDINGS_DIR])),
            upscaler_dirs=tuple(dict.fromkeys([*(folder for name in UPSCALER_FOLDERS
                                                 for folder in _model_folders(args, models, name)),
                                               BUILTIN_UPSCALER_DIR])),
            realesrgan_dirs=tuple(_model_folders(args, models, "RealESRGAN")),
            gfpgan_dir=_flag_folder(args, "GFPGAN") or models / "GFPGAN",
            codeformer_dir=_flag_folder(args, "Codeformer") or models / "Codeformer",
            outputs_dir=data / "outputs",
            config_file=Path(args.ui_settings_file).expanduser().resolve() if args.ui_settings_file
            else data / "config.json",
            ui_config_file=Path(args.ui_config_file).expanduser().resolve() if args.ui_config_file
            else data / "ui-config.json",
            cache_file=data / "cache.json",
        )

    def ensure(self) -> None:
        """Create the standard folders so users see where to drop files."""
        for d in (self.checkpoint_dirs[0], self.vae_dirs[-1], self.lora_dir, self.embeddings_dir):
            d.mkdir(parents=True, exist_ok=True)
