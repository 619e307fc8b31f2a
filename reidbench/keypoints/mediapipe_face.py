"""The 5 ArcFace landmarks: MediaPipe's face detector + face mesh with iris refinement.

The graph is MediaPipe's own ``face_landmark_front_cpu`` (what ``FaceMesh(static_image_mode=True,
refine_landmarks=True)`` runs: the short-range face detector, then the 478-point mesh with the
attention model), run on every image from scratch. Of the faces found (up to ``max_faces``) the
one whose landmarks are nearest the image centre is kept: face benchmarks (LFW, IJB crops)
centre the labelled face. The five points are picked from the mesh as ``schemas`` documents
(iris centres, nose tip 1, mouth corners 61 / 291), in insightface's order, so
``reidbench.data.alignment`` maps them onto the ArcFace template exactly as insightface's
``norm_crop`` does with its detectors' landmarks.

Confidence: the face mesh gives no per-point score, so each of the five points carries the
face detector's score for that face (the same value five times). Only bundled models are used.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from reidbench.keypoints.detector import (
    Detection,
    DetectorEntry,
    check_image,
    mediapipe_graph,
    register_detector,
    require_mediapipe,
)
from reidbench.keypoints.schemas import ARCFACE5_KEYPOINTS, FACE_MESH_TO_ARCFACE5

NAME = "facemesh"
GRAPH_FILE = "mediapipe/modules/face_landmark/face_landmark_front_cpu.binarypb"
MODELS = (
    "modules/face_landmark/face_landmark_front_cpu.binarypb",
    "modules/face_detection/face_detection_short_range.tflite",
    "modules/face_landmark/face_landmark_with_attention.tflite",
)
DETECTION_OPTION = (
    "facedetectionshortrangecpu__facedetectionshortrange__facedetection__"
    "TensorsToDetectionsCalculator.min_score_thresh"
)
PRESENCE_OPTION = "facelandmarkcpu__ThresholdingCalculator.threshold"


class FaceMeshDetector:
    """The 5 ArcFace landmarks of the most central face (module docstring).

    Args:
        max_faces: faces the mesh is run on before the central one is kept.
        min_detection: the face detector's score threshold (MediaPipe's default 0.5).
        min_presence: the mesh's face-presence threshold (MediaPipe's default 0.5).
    """

    name = NAME
    schema = ARCFACE5_KEYPOINTS

    def __init__(self, max_faces: int = 4, min_detection: float = 0.5, min_presence: float = 0.5) -> None:
        if max_faces < 1 or not (0 <= min_detection <= 1 and 0 <= min_presence <= 1):
            raise ValueError(f"{NAME}: max_faces must be >= 1 and thresholds in [0, 1], got "
                             f"{max_faces}, {min_detection}, {min_presence}")
        mp = require_mediapipe(NAME, MODELS)
        self.max_faces = int(max_faces)
        self.min_detection, self.min_presence = float(min_detection), float(min_presence)
        from mediapipe.python.solution_base import SolutionBase

        self._graph = mediapipe_graph(NAME, lambda: SolutionBase(
            binary_graph_path=GRAPH_FILE,
            side_inputs={"num_faces": self.max_faces, "with_attention": True, "use_prev_landmarks": False},
            calculator_params={DETECTION_OPTION: self.min_detection, PRESENCE_OPTION: self.min_presence},
            outputs=["multi_face_landmarks", "face_detections"],
        ))
        self._version = getattr(mp, "__version__", "unknown")

    def detect(self, image: np.ndarray) -> Detection | None:
        """The 5 landmarks of the most central face in ``image`` (H, W, 3) uint8 RGB, or None."""
        image = check_image(image, NAME)
        out = self._graph.process({"image": image})
        faces = out.multi_face_landmarks or []
        if not faces:
            return None
        candidates = [
            np.array([[face.landmark[i].x, face.landmark[i].y] for i in FACE_MESH_TO_ARCFACE5],
                     dtype=np.float32)
            for face in faces
        ]
        centre = np.array([0.5, 0.5], dtype=np.float32)
        points = min(candidates, key=lambda p: float(np.linalg.norm(p.mean(0) - centre)))
        score = _detection_score(out.face_detections or [], points.mean(0))
        return Detection(points, np.full(len(points), score, dtype=np.float32))

    def settings(self) -> dict[str, Any]:
        return {"mediapipe": self._version, "graph": GRAPH_FILE, "max_faces": self.max_faces,
                "min_detection": self.min_detection, "min_presence": self.min_presence,
                "mesh_indices": list(FACE_MESH_TO_ARCFACE5), "confidence": "face detection score"}

    def close(self) -> None:
        if self._graph is not None:
            self._graph.close()
            self._graph = None


def _detection_score(detections: list[Any], centre: np.ndarray) -> float:
    """The score of the detection whose box centre is nearest ``centre`` (normalised x, y): the
    mesh's faces and the detector's boxes come in separate lists with no index between them."""
    best, best_d = 0.0, np.inf
    for det in detections:
        box = det.location_data.relative_bounding_box
        d = float(np.hypot(box.xmin + box.width / 2 - centre[0], box.ymin + box.height / 2 - centre[1]))
        if d < best_d and len(det.score):
            best, best_d = float(det.score[0]), d
    return best


register_detector(DetectorEntry(
    name=NAME,
    kind="face",
    schema=ARCFACE5_KEYPOINTS,
    build=FaceMeshDetector,
    description="5 ArcFace landmarks (eye centres, nose tip, mouth corners), MediaPipe 0.10.21 face mesh",
))
