"""Face restoration, A1111's "Restore faces": GFPGAN and CodeFormer, entirely offline.

Models are files in A1111's folders models/GFPGAN and models/Codeformer (the caller passes the folders), read with
the app's safe readers (`checkpoint_io`: safetensors, or the weights-only unpickler) and recognised by spandrel:
GFPGAN (v1.3/v1.4, the "clean" architecture) and RestoreFormer by spandrel itself, CodeFormer by the
spandrel_extra_arches package, whose CodeFormer entry is added to spandrel's MAIN_REGISTRY on first use (only that
one, so that the upscaler library does not start accepting the other extra architectures as a side effect).

A1111 shows one restorer per kind, named "CodeFormer" and "GFPGAN", and picks the file itself: the first file in
natural order (a folder's own files, then its subfolders). So do we; a RestoreFormer file in models/GFPGAN adds a
third restorer, "RestoreFormer". facexlib's own files there (detection_*.pth, parsing_*.pth) are no restorers: a
RetinaFace-ResNet50 detection file is used to find faces, as in A1111 (see `face_detection`); without one, OpenCV's
bundled cascades find them. A file that is none of these is listed nowhere and reported once, with its name and why.

Per face, as A1111 (facexlib's FaceRestoreHelper) does it: five landmarks, a similarity transform to the 512x512
FFHQ-aligned face, the model (input and output in [-1, 1]; CodeFormer with its fidelity weight), then back through
the inverse transform, blended in with a feathered mask, and optionally mixed with the original by `visibility`.
Faces are cut from the original picture and pasted one after the other; `should_stop` is asked before each face.
"""
from __future__ import annotations

import functools
import gc
import logging
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from modules.postprocessing.face_detection import (
    FFHQ_LANDMARKS_512,
    Face,
    FaceDetectorError,
    HaarFaceDetector,
    RetinaFaceDetector,
    apply_transform,
    read_retinaface_weights,
    similarity_transform,
)
from modules.postprocessing.upscalers import read_spandrel_model

log = logging.getLogger(__name__)

GFPGAN, CODEFORMER, RESTOREFORMER = "GFPGAN", "CodeFormer", "RestoreFormer"
RESTORER_ORDER = (CODEFORMER, GFPGAN, RESTOREFORMER)  # A1111 sets up CodeFormer first, then GFPGAN
FACE_SIZE = 512  # A1111 restores every face at 512x512
MODEL_SUFFIXES = (".pth", ".pt", ".safetensors")
# BasicSR's training wrappers: GFPGAN and CodeFormer releases keep their weights under params_ema.
_WRAPPER_KEYS = ("params_ema", "params", "state_dict")
_CROP_BORDER_RGB = (132, 133, 135)  # facexlib fills outside the picture with this grey (BGR 135, 133, 132)


class RestorerError(Exception):
    """A model file or a request that cannot be used; the message is for the user (it names the file)."""


class RestoreInterruptedError(Exception):
    """`should_stop` answered True between two faces."""


@dataclass(frozen=True)
class RestorerModel:
    """The file behind one restorer: `name` is what A1111 shows, `architecture` spandrel's id."""

    name: str
    path: Path
    architecture: str


@dataclass
class Discovery:
    restorers: dict[str, RestorerModel] = field(default_factory=dict)  # in A1111's order
    detector: Path | None = None  # a RetinaFace-ResNet50 file; None: OpenCV's cascades find the faces
    problems: list[str] = field(default_factory=list)  # "file name: why", one per unusable file

    def names(self) -> list[str]:
        return list(self.restorers)


@dataclass(frozen=True)
class _Verdict:
    """What one file is: a restorer's architecture, the detector, a helper file not used, or unusable."""

    architecture: str | None = None
    detector: bool = False
    note: str | None = None
    problem: str | None = None


def _natural_key(text: str) -> list:
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", text)]


def model_files(folder: Path) -> list[Path]:
    """Model files in A1111's order: the folder's own files, then each subfolder's, all in natural order; hidden
    files and folders left out."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = []
    directories = sorted([folder, *(p for p in folder.rglob("*") if p.is_dir())], key=lambda p: _natural_key(str(p)))
    for directory in directories:
        if any(part.startswith(".") for part in directory.relative_to(folder).parts):
            continue
        for path in sorted(directory.iterdir(), key=lambda p: _natural_key(p.name)):
            if path.suffix.lower() in MODEL_SUFFIXES and path.is_file() and not path.name.startswith("."):
                found.append(path)
    return found


def _install_codeformer() -> None:
    """Add spandrel_extra_arches' CodeFormer to spandrel's MAIN_REGISTRY (once; later calls change nothing)."""
    from spandrel import MAIN_REGISTRY
    from spandrel_extra_arches import EXTRA_REGISTRY

    MAIN_REGISTRY.add(EXTRA_REGISTRY[CODEFORMER], ignore_duplicates=True)


def load_descriptor(path: Path, allow_unsafe_pickle: bool = False):
    """Read a file and let spandrel build its face model (on the CPU, fp32, eval mode). Raises RestorerError."""
    _install_codeformer()
    path = Path(path)
    desc = read_spandrel_model(path, allow_unsafe_pickle, _WRAPPER_KEYS, RestorerError)
    architecture = desc.architecture.id
    if architecture not in RESTORER_ORDER:
        raise RestorerError(f"{path.name}: not a face restoration model but {architecture} ({desc.purpose}); "
                            f"face restorers are {', '.join(RESTORER_ORDER)}")
    return desc.float().eval()


def _run_model(net: torch.nn.Module, architecture: str, faces: torch.Tensor, codeformer_weight: float) -> torch.Tensor:
    """The networks' own call conventions, as A1111 calls them; all take and give pictures in [-1, 1]."""
    if architecture == CODEFORMER:
        return net(faces, weight=codeformer_weight, adain=True)[0]
    if architecture == GFPGAN:
        return net(faces, return_rgb=False)[0]
    return net(faces)[0]


@functools.cache
def feather_mask(side: int = FACE_SIZE) -> np.ndarray:
    """1 over the aligned face, fading to 0 towards its edge: the square eroded by 1/20 of its side and blurred
    over 1/10 (facexlib's soft mask when it has no face parsing, worked out in the aligned face's pixels)."""
    import cv2

    margin = side // 20
    mask = np.zeros((side, side), np.float32)
    mask[margin:side - margin, margin:side - margin] = 1.0
    mask = cv2.GaussianBlur(mask, (2 * margin + 1, 2 * margin + 1), 0)
    mask.setflags(write=False)  # shared by every call
    return mask


def align_face(rgb: np.ndarray, face: Face) -> tuple[np.ndarray, np.ndarray]:
    """The 512x512 FFHQ-aligned crop of one face (uint8 RGB) and the 2x3 transform from picture to crop."""
    import cv2

    to_aligned = similarity_transform(face.landmarks, FFHQ_LANDMARKS_512 * (FACE_SIZE / 512))
    crop = cv2.warpAffine(rgb, to_aligned, (FACE_SIZE, FACE_SIZE), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=_CROP_BORDER_RGB)
    return crop, to_aligned


def paste_face(canvas: np.ndarray, restored: np.ndarray, to_aligned: np.ndarray, mask: np.ndarray) -> None:
    """Blend a restored aligned face (float32 RGB) into `canvas` (float32 RGB, changed in place) through the
    inverse transform; only the region the face covers is touched."""
    import cv2

    to_picture = cv2.invertAffineTransform(to_aligned)
    corners = apply_transform(to_picture, [[0, 0], [FACE_SIZE, 0], [0, FACE_SIZE], [FACE_SIZE, FACE_SIZE]])
    height, width = canvas.shape[:2]
    left, top = max(0, math.floor(corners[:, 0].min())), max(0, math.floor(corners[:, 1].min()))
    right, bottom = min(width, math.ceil(corners[:, 0].max())), min(height, math.ceil(corners[:, 1].max()))
    if right <= left or bottom <= top:
        return
    to_region = to_picture.copy()
    to_region[:, 2] -= (left, top)
    size = (right - left, bottom - top)
    face = cv2.warpAffine(restored, to_region, size, flags=cv2.INTER_LINEAR)
    weight = cv2.warpAffine(mask, to_region, size, flags=cv2.INTER_LINEAR)[:, :, None]
    region = canvas[top:bottom, left:right]
    region += weight * (face - region)


def _stamp(path: Path) -> tuple[int, int]:
    try:
        stat = path.stat()
    except OSError as e:
        raise RestorerError(f"{path.name}: cannot be read any more ({e.strerror}); refresh the list of models") from e
    return stat.st_size, stat.st_mtime_ns


def _examine_file(path: Path, folder_kind: str, folders: dict[str, Path], allow_unsafe_pickle: bool) -> _Verdict:
    """What a file in the GFPGAN or CodeFormer folder (`folder_kind`) is; facexlib's own files are no restorers."""
    lower = path.name.lower()
    if lower.startswith("parsing_"):
        return _Verdict(note=f"{path.name}: facexlib's face parsing weights (the paste-back mask is feathered "
                             "instead)")
    if lower.startswith("detection_"):
        try:
            read_retinaface_weights(path, allow_unsafe_pickle)
        except FaceDetectorError as e:
            return _Verdict(note=f"{e}; OpenCV's face cascades are used instead")
        return _Verdict(detector=True)
    try:
        desc = load_descriptor(path, allow_unsafe_pickle)
    except RestorerError as e:
        return _Verdict(problem=str(e))
    architecture = desc.architecture.id
    home = CODEFORMER if architecture == CODEFORMER else GFPGAN
    if home != folder_kind:
        return _Verdict(problem=f"{path.name}: a {architecture} model, which belongs in {folders[home]}")
    return _Verdict(architecture=architecture)


class FaceRestorers:
    """The face restorers of A1111's two folders. `refresh` rescans (files are read again only when they changed,
    each unusable file is logged once); one restorer network is kept loaded, released when another is used."""

    def __init__(self, gfpgan_folder: Path, codeformer_folder: Path, *, device: torch.device | str = "cpu",
                 allow_unsafe_pickle: bool = False):
        self.folders = {GFPGAN: Path(gfpgan_folder), CODEFORMER: Path(codeformer_folder)}
        self.device = torch.device(device)
        self.allow_unsafe_pickle = allow_unsafe_pickle
        self._seen: dict[tuple[str, Path], tuple[tuple[int, int], _Verdict]] = {}
        self._discovery: Discovery | None = None
        self._loaded: tuple[tuple, torch.nn.Module] | None = None
        self._detector: tuple[tuple | None, HaarFaceDetector | RetinaFaceDetector] | None = None

    # ---- discovery ----

    def refresh(self) -> Discovery:
        result = Discovery()
        chosen: dict[str, RestorerModel] = {}
        seen = {}
        for folder_kind, folder in self.folders.items():
            for path in model_files(folder):
                try:
                    stat = path.stat()
                except OSError:  # removed while scanning
                    continue
                stamp = (stat.st_size, stat.st_mtime_ns)
                cached = self._seen.get((folder_kind, path))
                verdict = cached[1] if cached and cached[0] == stamp else self._examine(path, folder_kind)
                seen[(folder_kind, path)] = (stamp, verdict)
                if verdict.problem:
                    result.problems.append(verdict.problem)
                elif verdict.detector and result.detector is None:
                    result.detector = path
                elif verdict.architecture and verdict.architecture not in chosen:
                    # A1111's restorer names are the architectures' names
                    chosen[verdict.architecture] = RestorerModel(verdict.architecture, path, verdict.architecture)
        result.restorers = {name: chosen[name] for name in RESTORER_ORDER if name in chosen}
        self._seen = seen
        self._discovery = result
        gc.collect()
        return result

    def _examine(self, path: Path, folder_kind: str) -> _Verdict:
        verdict = _examine_file(path, folder_kind, self.folders, self.allow_unsafe_pickle)
        if verdict.problem:
            log.warning("Face restoration model not listed: %s", verdict.problem)
        elif verdict.note:
            log.info("Not used for face restoration: %s", verdict.note)
        return verdict

    @property
    def discovery(self) -> Discovery:
        return self._discovery if self._discovery is not None else self.refresh()

    def names(self) -> list[str]:
        """A1111's names of the restorers that have a usable file ("CodeFormer", "GFPGAN", maybe "RestoreFormer")."""
        return self.discovery.names()

    def folder_of(self, name: str) -> Path:
        """The folder a restorer's file goes in (RestoreFormer's: models/GFPGAN)."""
        return self.folders[CODEFORMER if name == CODEFORMER else GFPGAN]

    def model(self, name: str) -> RestorerModel:
        found = self.discovery.restorers.get(name)
        if found is not None:
            return found
        if name == GFPGAN:
            raise RestorerError(f"no GFPGAN model: put GFPGANv1.4.pth (or GFPGANv1.3.pth) in {self.folders[GFPGAN]}")
        if name == CODEFORMER:
            raise RestorerError(f"no CodeFormer model: put codeformer-v0.1.0.pth in {self.folders[CODEFORMER]}")
        if name == RESTOREFORMER:
            raise RestorerError(f"no RestoreFormer model: put RestoreFormer.pth in {self.folders[GFPGAN]}")
        available = ", ".join(self.names()) or "none"
        raise RestorerError(f"unknown face restorer {name!r} (available: {available})")

    # ---- loaded networks ----

    @property
    def loaded(self) -> Path | None:
        return self._loaded[0][0] if self._loaded else None

    def load(self, name: str) -> torch.nn.Module:
        """The restorer's network on the device (fp32; fp16 only on CUDA for a model that supports it)."""
        model = self.model(name)
        key = (model.path, *_stamp(model.path))
        if self._loaded is None or self._loaded[0] != key:
            self._release_restorer()
            desc = load_descriptor(model.path, self.allow_unsafe_pickle)
            half = self.device.type == "cuda" and desc.supports_half
            self._loaded = (key, (desc.half() if half else desc).to(self.device).model)
        return self._loaded[1].to(self.device)  # back from the CPU after `offload`

    def offload(self) -> None:
        """The setting face_restoration_unload: the loaded network waits in RAM, not VRAM, until used again."""
        if self._loaded is not None and self.device.type != "cpu":
            self._loaded[1].to("cpu")
            torch.cuda.empty_cache()

    def _release_restorer(self) -> None:
        if self._loaded is not None:
            self._loaded = None
            gc.collect()
            if self.device.type == "cuda":
                torch.cuda.empty_cache()

    def release(self) -> None:
        """Free the loaded restorer and detector."""
        self._detector = None
        self._release_restorer()

    def detector(self) -> HaarFaceDetector | RetinaFaceDetector:
        """RetinaFace when its file is there (as A1111 finds faces), OpenCV's cascades otherwise."""
        path = self.discovery.detector
        key = None if path is None else (path, *_stamp(path))
        if self._detector is None or self._detector[0] != key:
            self._detector = None
            try:
                detector = HaarFaceDetector() if path is None else \
                    RetinaFaceDetector.from_file(path, self.allow_unsafe_pickle, self.device)
            except FaceDetectorError as e:
                raise RestorerError(str(e)) from e
            self._detector = (key, detector)
        return self._detector[1]

    # ---- restoring ----

    def restore(self, name: str, picture: Image.Image, *, codeformer_weight: float = 0.5, visibility: float = 1.0,
                should_stop: Callable[[], bool] | None = None) -> Image.Image:
        """`picture` with every face found restored by the restorer `name`. `codeformer_weight` is CodeFormer's
        fidelity (0: the model's own face, 1: closest to the input); `visibility` mixes the result with the original
        (1: restored only). No face found: the picture comes back unchanged. An alpha channel is kept.
        Raises RestorerError, or RestoreInterruptedError when `should_stop()` turns True between faces."""
        for label, value in (("CodeFormer weight", codeformer_weight), ("visibility", visibility)):
            if not (isinstance(value, (int, float)) and math.isfinite(value) and 0 <= value <= 1):
                raise RestorerError(f"the {label} must be a number from 0 to 1, not {value!r}")
        model = self.model(name)
        if visibility == 0:
            return picture.copy()
        rgb = np.asarray(picture.convert("RGB"))
        detector = self.detector()
        faces = detector.detect(rgb)
        if not faces:
            log.info("Face restoration (%s): %s found no face in the %dx%d picture; it is left as it is",
                     name, detector.name, *picture.size)
            return picture.copy()
        net = self.load(name)
        canvas = rgb.astype(np.float32)
        for face in faces:
            if should_stop is not None and should_stop():
                raise RestoreInterruptedError("interrupted")
            crop, to_aligned = align_face(rgb, face)
            restored = self._restore_crop(net, model, crop, codeformer_weight)
            paste_face(canvas, restored, to_aligned, feather_mask())
        log.info("Face restoration (%s): %d face(s) found by %s, restored", name, len(faces), detector.name)
        if visibility < 1:
            canvas = rgb + (canvas - rgb) * np.float32(visibility)
        result = Image.fromarray(np.clip(np.rint(canvas), 0, 255).astype(np.uint8), "RGB")
        if picture.mode in ("RGBA", "LA"):
            result.putalpha(picture.getchannel("A"))
        return result

    def _restore_crop(self, net: torch.nn.Module, model: RestorerModel, crop: np.ndarray,
                      codeformer_weight: float) -> np.ndarray:
        param = next(net.parameters())
        faces = torch.from_numpy(crop).permute(2, 0, 1).unsqueeze(0).float().div(127.5).sub(1)
        try:
            with torch.inference_mode():
                output = _run_model(net, model.architecture, faces.to(param.device, param.dtype), codeformer_weight)
        except RuntimeError as e:
            raise RestorerError(f"{model.name} ({model.path.name}) failed on a face: {type(e).__name__}: {e}") from e
        return output[0].float().clamp(-1, 1).add(1).mul(127.5).permute(1, 2, 0).cpu().numpy()

