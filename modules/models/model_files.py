"""Finding checkpoint and VAE files in the model folders and naming them as A1111 does."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from modules.models.hashes import HashCache

CHECKPOINT_SUFFIXES = (".safetensors", ".ckpt")
VAE_SUFFIXES = (".safetensors", ".pt", ".ckpt")
VAE_AUTOMATIC = "Automatic"
VAE_NONE = "None"
PREVIEW_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


def preview_image(path: Path) -> Path | None:
    """The picture shown on a model's card: name.png or name.preview.png (or .jpg/.jpeg/.webp) beside it."""
    stem = str(path.with_suffix(""))
    for candidate in (stem, stem + ".preview"):
        for suffix in PREVIEW_SUFFIXES:
            image = Path(candidate + suffix)
            if image.is_file():
                return image
    return None


@dataclass(frozen=True)
class ModelFile:
    path: Path
    name: str  # relative to the folder it was found in, with "/" separators: "sub/model.safetensors"
    sha256: str | None = None

    @property
    def shorthash(self) -> str | None:
        return self.sha256[:10] if self.sha256 else None

    @property
    def title(self) -> str:
        """What the checkpoint dropdown shows: 'sub/name.safetensors [6ce0161689]'."""
        return f"{self.name} [{self.shorthash}]" if self.sha256 else self.name

    @property
    def model_name(self) -> str:
        """The 'Model:' value of the infotext: the name without extension, folders joined by '_'."""
        return Path(self.name.replace("/", "_")).stem

    def with_hash(self, sha256: str) -> ModelFile:
        return ModelFile(self.path, self.name, sha256)

    def matches(self, query: str) -> bool:
        """A user may name a checkpoint by title, relative name, stem, short hash or full hash, or by A1111's
        short title "stem [shorthash]" (what "Hires checkpoint" in an infotext holds)."""
        q = query.strip()
        if not q:
            return False
        candidates = {self.title, self.name, self.model_name, Path(self.name).stem, str(self.path)}
        if self.sha256:
            candidates |= {self.sha256, self.shorthash, f"{Path(self.name).stem} [{self.shorthash}]"}
        elif q.endswith("]") and " [" in q and q.rsplit(" [", 1)[0] == Path(self.name).stem:
            return True  # A1111's short title of a file not hashed yet
        return q in candidates


def _scan(folder: Path, suffixes: tuple[str, ...], exclude_vae: bool) -> list[tuple[Path, str]]:
    if not folder.is_dir():
        return []
    found = []
    for p in sorted(folder.rglob("*")):
        if not p.is_file() or p.suffix.lower() not in suffixes:
            continue
        if exclude_vae and ".vae." in p.name.lower():
            continue
        found.append((p, p.relative_to(folder).as_posix()))
    return found


def list_checkpoints(folders: list[Path], extra_files: list[Path], hashes: HashCache) -> list[ModelFile]:
    """All checkpoints in `folders` (recursively) plus explicitly named files, without duplicates."""
    seen: set[Path] = set()
    out = []
    entries = [(f, f.name) for f in extra_files if f.is_file()]
    for folder in folders:
        entries += _scan(folder, CHECKPOINT_SUFFIXES, exclude_vae=True)
    for path, name in entries:
        real = path.resolve()
        if real in seen:
            continue
        seen.add(real)
        out.append(ModelFile(path, name, hashes.cached(path)))
    return out


def list_vaes(vae_folders: list[Path], checkpoint_folders: list[Path]) -> list[ModelFile]:
    """VAE files in the VAE folders, and `*.vae.*` files that sit beside checkpoints."""
    out: list[ModelFile] = []
    names: set[str] = set()
    candidates = [(p, n) for folder in vae_folders for p, n in _scan(folder, VAE_SUFFIXES, exclude_vae=False)]
    candidates += [(p, n) for folder in checkpoint_folders for p, n in _scan(folder, VAE_SUFFIXES, exclude_vae=False)
                   if ".vae." in p.name.lower()]
    for p, n in candidates:
        if n not in names:
            out.append(ModelFile(p, n))
            names.add(n)
    return out


def automatic_vae_for(checkpoint: Path, vaes: list[ModelFile]) -> ModelFile | None:
    """A1111's "Automatic": `name.vae.{pt,ckpt,safetensors}` beside the checkpoint, else a VAE file
    with the checkpoint's name in the VAE folder; None means the checkpoint's own VAE."""
    stem = checkpoint.name[: -len(checkpoint.suffix)]
    for suffix in (".vae.pt", ".vae.ckpt", ".vae.safetensors"):
        beside = checkpoint.with_name(stem + suffix)
        if beside.is_file():
            return ModelFile(beside, beside.name)
    for vae in vaes:
        vae_stem = Path(vae.name).name
        vae_stem = vae_stem[: -len(Path(vae_stem).suffix)]
        if vae_stem == stem:
            return vae
    return None
