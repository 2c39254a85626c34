"""Finding faces and five landmarks on each (both eye centres, nose tip, both mouth corners), offline.

A1111 finds faces with facexlib's RetinaFace-ResNet50, whose weights it downloads into models/GFPGAN at first use
(`detection_Resnet50_Final.pth`). Nothing may be downloaded here, so there are two detectors:

- `RetinaFaceDetector`: that same file, when the user already has it, run by a network of our own in facexlib's
  key layout, with A1111's settings (picture scaled up to a short side of 640, score above 0.8, NMS at 0.4).
- `HaarFaceDetector`: OpenCV's Haar cascades, which ship inside the opencv-python-headless 4.x wheels (frontal
  faces, then eyes inside each face). A cascade gives a box and perhaps two eyes, not five landmarks: the five are
  placed where they fall in an average frontal-face box, then turned, moved and scaled to the eyes when both are
  found.

Landmarks are in picture pixels, in the order of the FFHQ template the restoration models were trained on.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from modules.models.checkpoint_io import CheckpointError, read_state_dict

# Where the five landmarks sit in a 512x512 aligned face (FFHQ alignment, as facexlib and GFPGAN/CodeFormer use it).
FFHQ_LANDMARKS_512 = np.array([[192.98138, 239.94708], [318.90277, 240.1936], [256.63416, 314.01935],
                               [201.26117, 371.41043], [313.08905, 371.15118]], dtype=np.float64)
DETECTION_SHORT_SIDE = 640  # A1111: pictures with a shorter short side are scaled up to it for detection
DETECTION_MAX_PIXELS = 4096 * 4096  # the scaling up stops there
MIN_EYE_DISTANCE = 5.0  # A1111: faces whose eyes are closer than this (in picture pixels) are skipped


class FaceDetectorError(Exception):
    """A detector file that cannot be used; the message names the file and says why."""


@dataclass(frozen=True)
class Face:
    box: tuple[float, float, float, float]  # left, top, right, bottom in picture pixels
    landmarks: np.ndarray  # (5, 2): eye on the picture's left, other eye, nose tip, left and right mouth corner

    @property
    def eye_distance(self) -> float:
        return float(np.linalg.norm(self.landmarks[1] - self.landmarks[0]))


def similarity_transform(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The 2x3 rotation + uniform scale + translation that maps `source` points closest to `target` (least squares).
    Points are (N, 2), N >= 2."""
    source, target = np.asarray(source, np.float64), np.asarray(target, np.float64)
    # x' = a x - b y + tx,  y' = b x + a y + ty: linear in (a, b, tx, ty)
    rows = []
    for (x, y) in source:
        rows.append([x, -y, 1.0, 0.0])
        rows.append([y, x, 0.0, 1.0])
    (a, b, tx, ty), *_ = np.linalg.lstsq(np.array(rows), target.reshape(-1), rcond=None)
    return np.array([[a, -b, tx], [b, a, ty]])


def apply_transform(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    points = np.asarray(points, np.float64)
    return points @ matrix[:, :2].T + matrix[:, 2]


def _detection_scale(height: int, width: int) -> float:
    """A1111 scales small pictures up (never down) before detection, so that small faces are found; here never
    beyond DETECTION_MAX_PIXELS (a 10000x1 picture must not become gigapixels)."""
    scale = max(1.0, DETECTION_SHORT_SIDE / min(height, width))
    return min(scale, max(1.0, (DETECTION_MAX_PIXELS / (height * width)) ** 0.5))


def _scaled_for_detection(rgb: np.ndarray) -> tuple[np.ndarray, float]:
    import cv2

    height, width = rgb.shape[:2]
    scale = _detection_scale(height, width)
    if scale == 1.0:
        return rgb, scale
    size = (round(width * scale), round(height * scale))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_LINEAR), scale


def _keep_separate_eyes(faces: list[Face]) -> list[Face]:
    return [face for face in faces if face.eye_distance >= MIN_EYE_DISTANCE]


# Where a Haar frontal-face box falls in the 512x512 aligned face (measured on scikit-image's astronaut, whose eyes
# the eye cascade finds): left, top and side. Box-only faces are aligned by this; eyes refine it.
_HAAR_BOX_IN_ALIGNED_FACE = (128.0, 144.0, 256.0)


class HaarFaceDetector:
    """Frontal faces with OpenCV's bundled cascades (`haarcascade_frontalface_alt.xml`, which found no face in
    any of scikit-image's sample pictures without one), then eyes inside the upper part of each face."""

    name = "OpenCV Haar cascades"
    FACE_CASCADE = "haarcascade_frontalface_alt.xml"
    EYE_CASCADE = "haarcascade_eye.xml"

    def __init__(self):
        import cv2

        self._faces = self._cascade(cv2, self.FACE_CASCADE)
        self._eyes = self._cascade(cv2, self.EYE_CASCADE)

    @staticmethod
    def _cascade(cv2, file_name: str):
        path = Path(cv2.data.haarcascades) / file_name
        cascade = cv2.CascadeClassifier(str(path))
        if cascade.empty():
            raise FaceDetectorError(f"{file_name}: OpenCV could not read its own face cascade at {path} "
                                    "(is opencv-python-headless 4.x installed? 5.x no longer ships the cascades)")
        return cascade

    def detect(self, rgb: np.ndarray) -> list[Face]:
        import cv2

        scaled, scale = _scaled_for_detection(rgb)
        gray = cv2.equalizeHist(cv2.cvtColor(scaled, cv2.COLOR_RGB2GRAY))
        boxes = self._faces.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5, minSize=(24, 24))
        faces = []
        for x, y, w, h in boxes:
            landmarks = self._landmarks(gray, float(x), float(y), float(w), float(h)) / scale
            box = tuple(float(v) / scale for v in (x, y, x + w, y + h))
            faces.append(Face(box=box, landmarks=landmarks))
        return _keep_separate_eyes(faces)

    def _landmarks(self, gray: np.ndarray, x: float, y: float, w: float, h: float) -> np.ndarray:
        left, top, side = _HAAR_BOX_IN_ALIGNED_FACE
        from_box = (FFHQ_LANDMARKS_512 - (left, top)) * (w / side) + (x, y)
        eyes = self._find_eyes(gray, x, y, w, h)
        if eyes is None:
            return from_box
        return _turn_to_eyes(from_box, eyes)

    def _find_eyes(self, gray: np.ndarray, x: float, y: float, w: float, h: float) -> np.ndarray | None:
        """The two eye centres, one in each half of the face's upper part, or None when they are not both found
        where eyes can be."""
        x0, y0 = int(x), int(y)
        upper = gray[y0:y0 + int(h * 0.6), x0:x0 + int(w)]
        smallest, largest = max(4, int(w / 12)), max(5, int(w / 3))
        found = self._eyes.detectMultiScale(upper, scaleFactor=1.1, minNeighbors=3, minSize=(smallest, smallest),
                                            maxSize=(largest, largest))
        centres = [(ex + ew / 2, ey + eh / 2) for ex, ey, ew, eh in found]
        centres = [(cx, cy) for cx, cy in centres if 0.2 * h <= cy <= 0.55 * h]
        expected = {"left": (0.27 * w, 0.37 * h), "right": (0.73 * w, 0.37 * h)}
        picked = {}
        for side, (ex, ey) in expected.items():
            candidates = [c for c in centres if (c[0] < w / 2) == (side == "left")]
            if candidates:
                picked[side] = min(candidates, key=lambda c: (c[0] - ex) ** 2 + (c[1] - ey) ** 2)
        if len(picked) < 2:
            return None
        eyes = np.array([picked["left"], picked["right"]], dtype=np.float64) + (x0, y0)
        dx, dy = eyes[1] - eyes[0]
        if not 0.3 * w <= math.hypot(dx, dy) <= 0.7 * w or abs(math.degrees(math.atan2(dy, dx))) > 25:
            return None
        return eyes


def _turn_to_eyes(from_box: np.ndarray, eyes: np.ndarray) -> np.ndarray:
    """Landmarks placed from the box, turned and moved so that their eyes line up with the found eyes; the size is
    the geometric mean of the box's and the eyes' (eye distance alone shrinks with a turned head)."""
    box_centre, eye_centre = from_box[:2].mean(axis=0), eyes.mean(axis=0)
    box_line, eye_line = from_box[1] - from_box[0], eyes[1] - eyes[0]
    scale = math.sqrt(np.linalg.norm(eye_line) / np.linalg.norm(box_line))
    angle = math.atan2(eye_line[1], eye_line[0]) - math.atan2(box_line[1], box_line[0])
    rotation = scale * np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    return (from_box - box_centre) @ rotation.T + eye_centre


# RetinaFace-ResNet50 as facexlib builds it (configuration "Resnet50"): anchors per pyramid level and the
# variances its box and landmark offsets are encoded with.
_ANCHOR_SIZES = ((16, 32), (64, 128), (256, 512))
_STRIDES = (8, 16, 32)
_VARIANCES = (0.1, 0.2)
_BGR_MEAN = (104.0, 117.0, 123.0)
SCORE_THRESHOLD = 0.8
NMS_THRESHOLD = 0.4


def _conv_bn(in_channels: int, out_channels: int, kernel: int, relu: bool) -> nn.Sequential:
    layers = [nn.Conv2d(in_channels, out_channels, kernel, 1, kernel // 2, bias=False), nn.BatchNorm2d(out_channels)]
    if relu:  # facexlib's LeakyReLU has slope 0 at 256 channels: a ReLU
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class _FeaturePyramid(nn.Module):
    def __init__(self, in_channels: tuple[int, int, int], channels: int):
        super().__init__()
        self.output1 = _conv_bn(in_channels[0], channels, 1, relu=True)
        self.output2 = _conv_bn(in_channels[1], channels, 1, relu=True)
        self.output3 = _conv_bn(in_channels[2], channels, 1, relu=True)
        self.merge1 = _conv_bn(channels, channels, 3, relu=True)
        self.merge2 = _conv_bn(channels, channels, 3, relu=True)

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        fine, middle, coarse = self.output1(features[0]), self.output2(features[1]), self.output3(features[2])
        middle = self.merge2(middle + nn.functional.interpolate(coarse, size=middle.shape[2:], mode="nearest"))
        fine = self.merge1(fine + nn.functional.interpolate(middle, size=fine.shape[2:], mode="nearest"))
        return [fine, middle, coarse]


class _ContextModule(nn.Module):
    """SSH: 3x3, 5x5 and 7x7 receptive fields side by side (the larger ones as stacked 3x3 convolutions)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv3X3 = _conv_bn(channels, channels // 2, 3, relu=False)
        self.conv5X5_1 = _conv_bn(channels, channels // 4, 3, relu=True)
        self.conv5X5_2 = _conv_bn(channels // 4, channels // 4, 3, relu=False)
        self.conv7X7_2 = _conv_bn(channels // 4, channels // 4, 3, relu=True)
        self.conv7x7_3 = _conv_bn(channels // 4, channels // 4, 3, relu=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        five_first = self.conv5X5_1(x)
        seven = self.conv7x7_3(self.conv7X7_2(five_first))
        return torch.relu(torch.cat([self.conv3X3(x), self.conv5X5_2(five_first), seven], dim=1))


class _Head(nn.Module):
    def __init__(self, channels: int, values_per_anchor: int):
        super().__init__()
        self.values_per_anchor = values_per_anchor
        self.conv1x1 = nn.Conv2d(channels, 2 * values_per_anchor, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv1x1(x).permute(0, 2, 3, 1).reshape(x.shape[0], -1, self.values_per_anchor)


class RetinaFaceNet(nn.Module):
    """The network, with facexlib's module names so that its state dict loads as it is."""

    def __init__(self):
        super().__init__()
        from torchvision.models import resnet50
        from torchvision.models._utils import IntermediateLayerGetter

        self.body = IntermediateLayerGetter(resnet50(weights=None), {"layer2": 1, "layer3": 2, "layer4": 3})
        self.fpn = _FeaturePyramid((512, 1024, 2048), 256)
        self.ssh1, self.ssh2, self.ssh3 = _ContextModule(256), _ContextModule(256), _ContextModule(256)
        self.ClassHead = nn.ModuleList(_Head(256, 2) for _ in range(3))
        self.BboxHead = nn.ModuleList(_Head(256, 4) for _ in range(3))
        self.LandmarkHead = nn.ModuleList(_Head(256, 10) for _ in range(3))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        pyramid = self.fpn(list(self.body(x).values()))
        features = [self.ssh1(pyramid[0]), self.ssh2(pyramid[1]), self.ssh3(pyramid[2])]
        boxes = torch.cat([head(f) for head, f in zip(self.BboxHead, features)], dim=1)
        scores = torch.cat([head(f) for head, f in zip(self.ClassHead, features)], dim=1).softmax(dim=-1)
        landmarks = torch.cat([head(f) for head, f in zip(self.LandmarkHead, features)], dim=1)
        return boxes, scores, landmarks


def anchors(height: int, width: int) -> torch.Tensor:
    """(N, 4) anchor centres and sizes in pixels, in the order of the heads' outputs (level, row, column, size)."""
    rows = []
    for sizes, stride in zip(_ANCHOR_SIZES, _STRIDES):
        ys, xs = torch.meshgrid(torch.arange(math.ceil(height / stride)), torch.arange(math.ceil(width / stride)),
                                indexing="ij")
        centres = torch.stack([(xs + 0.5) * stride, (ys + 0.5) * stride], dim=-1).reshape(-1, 1, 2)
        sides = torch.tensor(sizes, dtype=torch.float32).reshape(1, -1, 1).expand(centres.shape[0], -1, 2)
        rows.append(torch.cat([centres.expand(-1, len(sizes), -1), sides], dim=-1).reshape(-1, 4))
    return torch.cat(rows).float()


def _layout_problem(state_dict: Mapping[str, torch.Tensor]) -> str | None:
    """Why a state dict does not fit RetinaFaceNet, or None. BatchNorm batch counters may be absent."""
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in RetinaFaceNet().state_dict().items()}
    missing = [k for k in expected if k not in state_dict and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state_dict if k not in expected]
    if missing or unexpected:
        detail = f"{len(missing)} tensors missing (such as {missing[0]!r})" if missing else \
            f"{len(unexpected)} unknown tensors (such as {unexpected[0]!r})"
        return f"not RetinaFace-ResNet50 weights in facexlib's layout: {detail}"
    for key, value in state_dict.items():
        if tuple(value.shape) != expected[key]:
            return f"not RetinaFace-ResNet50 weights: {key} has shape {tuple(value.shape)}, not {expected[key]}"
    return None


def read_retinaface_weights(path: Path, allow_unsafe_pickle: bool = False) -> dict[str, torch.Tensor]:
    """facexlib's detection_Resnet50_Final.pth (saved from DataParallel, so maybe with 'module.' before each key).
    Raises FaceDetectorError."""
    try:
        raw = read_state_dict(path, allow_unsafe_pickle)
        state_dict = {k.removeprefix("module."): raw[k] for k in raw}
    except CheckpointError as e:
        raise FaceDetectorError(str(e)) from e
    problem = _layout_problem(state_dict)
    if problem:
        raise FaceDetectorError(f"{Path(path).name}: {problem}")
    return state_dict


class RetinaFaceDetector:
    name = "RetinaFace-ResNet50"

    def __init__(self, state_dict: Mapping[str, torch.Tensor], device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        net = RetinaFaceNet()
        net.load_state_dict(dict(state_dict), strict=False)  # only BatchNorm batch counters may be missing
        self.net = net.float().eval().to(self.device)

    @classmethod
    def from_file(cls, path: Path, allow_unsafe_pickle: bool = False, device: torch.device | str = "cpu"):
        return cls(read_retinaface_weights(path, allow_unsafe_pickle), device)

    def detect(self, rgb: np.ndarray) -> list[Face]:
        from torchvision.ops import nms

        scaled, scale = _scaled_for_detection(rgb)
        bgr = torch.from_numpy(np.ascontiguousarray(scaled[:, :, ::-1])).float() - torch.tensor(_BGR_MEAN)
        with torch.inference_mode():
            offsets, scores, landmark_offsets = self.net(bgr.permute(2, 0, 1).unsqueeze(0).to(self.device))
        offsets, scores, landmark_offsets = offsets[0].float().cpu(), scores[0, :, 1].float().cpu(), \
            landmark_offsets[0].float().cpu()
        priors = anchors(*scaled.shape[:2])
        centres = priors[:, :2] + offsets[:, :2] * _VARIANCES[0] * priors[:, 2:]
        sizes = priors[:, 2:] * torch.exp(offsets[:, 2:] * _VARIANCES[1])
        boxes = torch.cat([centres - sizes / 2, centres + sizes / 2], dim=1)
        points = priors[:, None, :2] + landmark_offsets.reshape(-1, 5, 2) * _VARIANCES[0] * priors[:, None, 2:]
        confident = scores > SCORE_THRESHOLD
        boxes, scores, points = boxes[confident], scores[confident], points[confident]
        keep = nms(boxes, scores, NMS_THRESHOLD)
        faces = [Face(box=tuple(float(v) / scale for v in boxes[i]), landmarks=points[i].double().numpy() / scale)
                 for i in keep.tolist()]
        return _keep_separate_eyes(faces)
