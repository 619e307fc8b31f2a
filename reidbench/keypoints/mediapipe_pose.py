"""Body keypoints for re-ID crops: BlazePose's landmark model run on the whole crop.

MediaPipe's Pose solution first runs a person detector that locates the body from the FACE
(BlazePose's detector predicts the hip centre and body size from a face-anchored box), then the
landmark model on the box it found. Re-ID crops are already person boxes, small (Market-1501:
128 x 64) and often seen from behind, where that detector fails: on the 96 real Market-1501
crops in ``shared/data`` it found a body on 36 (34 padded into a 512 square canvas, 31 upscaled
x4). Here the detector is skipped: the landmark model (``PoseLandmarkByRoiCpu``, the same
subgraph, model and thresholds as the Pose solution with ``model_complexity=1``) is given the
crop itself as its region of interest, a square of side ``roi_scale`` x the crop height centred
on the crop (BlazePose enlarges its own boxes by 1.25 the same way). It found a body on 92 of
the 96 crops; its own presence score (below ``min_presence``) decides when there is none.

Points are COCO-17 (``schemas.COCO17_KEYPOINTS``) normalised to the crop as given (MediaPipe
projects them back from the region of interest), confidence = BlazePose's ``visibility``, the
likelihood that the point is inside the image and not occluded. Only the bundled full model
(``pose_landmark_full.tflite``) is used; nothing is downloaded. MediaPipe logs that projecting
landmarks from a NORM_RECT "is only supported for the square ROI": the region given here is a
square in pixels with no rotation, for which the projection is exact.
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
from reidbench.keypoints.schemas import BLAZEPOSE_TO_COCO17, COCO17_KEYPOINTS

NAME = "blazepose"
MODELS = ("modules/pose_landmark/pose_landmark_full.tflite",)

# The landmark subgraph on a given region of interest (what pose_landmark_cpu.pbtxt runs after
# its detector); model_complexity 1 = the full model, the one the wheel bundles.
GRAPH = """
input_stream: "image"
input_stream: "roi"
output_stream: "landmarks"
node {
  calculator: "PoseLandmarkByRoiCpu"
  input_side_packet: "MODEL_COMPLEXITY:model_complexity"
  input_side_packet: "ENABLE_SEGMENTATION:enable_segmentation"
  input_stream: "IMAGE:image"
  input_stream: "ROI:roi"
  output_stream: "LANDMARKS:landmarks"
}
"""
PRESENCE_OPTION = (
    "poselandmarkbyroicpu__tensorstoposelandmarksandsegmentation__ThresholdingCalculator.threshold"
)


class BlazePoseDetector:
    """COCO-17 body keypoints of the person filling a crop (module docstring).

    Args:
        roi_scale: side of the square region given to the landmark model, in crop heights
            (1.25 found 92 of 96 Market crops, 1.0 found 80; 1.5 and 1.75 found 92).
        min_presence: the landmark model's pose-presence threshold (MediaPipe's default 0.5).
    """

    name = NAME
    schema = COCO17_KEYPOINTS

    def __init__(self, roi_scale: float = 1.25, min_presence: float = 0.5) -> None:
        if not roi_scale > 0 or not 0 <= min_presence <= 1:
            raise ValueError(f"{NAME}: roi_scale must be > 0 and min_presence in [0, 1], got "
                             f"{roi_scale} and {min_presence}")
        mp = require_mediapipe(NAME, MODELS)
        self.roi_scale, self.min_presence = float(roi_scale), float(min_presence)
        from google.protobuf import text_format
        from mediapipe.framework import calculator_pb2
        from mediapipe.framework.formats import rect_pb2
        from mediapipe.python.solution_base import SolutionBase

        self._rect = rect_pb2.NormalizedRect
        config = text_format.Parse(GRAPH, calculator_pb2.CalculatorGraphConfig())
        self._graph = mediapipe_graph(NAME, lambda: SolutionBase(
            graph_config=config,
            side_inputs={"model_complexity": 1, "enable_segmentation": False},
            calculator_params={PRESENCE_OPTION: self.min_presence},
            outputs=["landmarks"],
        ))
        self._version = getattr(mp, "__version__", "unknown")

    def detect(self, image: np.ndarray) -> Detection | None:
        """The person's 17 keypoints in ``image`` (H, W, 3) uint8 RGB, or None."""
        image = check_image(image, NAME)
        h, w = image.shape[:2]
        side = self.roi_scale * h  # pixels: a square in the image, centred on the crop
        roi = self._rect(x_center=0.5, y_center=0.5, height=side / h, width=side / w, rotation=0.0)
        found = self._graph.process({"image": image, "roi": roi}).landmarks
        if found is None:
            return None
        marks = [found.landmark[i] for i in BLAZEPOSE_TO_COCO17]
        points = np.array([[m.x, m.y] for m in marks], dtype=np.float32)
        return Detection(points, np.array([m.visibility for m in marks], dtype=np.float32))

    def settings(self) -> dict[str, Any]:
        return {"mediapipe": self._version, "model": MODELS[0], "roi_scale": self.roi_scale,
                "min_presence": self.min_presence, "confidence": "visibility"}

    def close(self) -> None:
        if self._graph is not None:
            self._graph.close()
            self._graph = None


register_detector(DetectorEntry(
    name=NAME,
    kind="body",
    schema=COCO17_KEYPOINTS,
    build=BlazePoseDetector,
    description="COCO-17 body keypoints, BlazePose (MediaPipe 0.10.21) on the whole person crop",
))
