"""The keypoint orders the detectors write, and where each point comes from in the detector.

Body: COCO-17 (the order of the COCO keypoint challenge and of most pose models), ``left`` and
``right`` from the person's view, as in BlazePose and ``BODY_KEYPOINTS``. Each COCO point is one
of BlazePose's 33 landmarks (no point is derived or averaged).

Face: the 5 ArcFace landmarks in insightface's order (``FACE_KEYPOINTS``: ``left`` is the
IMAGE's left, so ``left_eye`` is the subject's right eye), taken from MediaPipe's face mesh with
iris refinement (478 points): the two iris centres (the pupils, which is what the 5-point
detectors call the eye centre), the nose tip and the outer mouth corners.
"""

from __future__ import annotations

from reidbench.data.records import FACE_KEYPOINTS, KeypointSchema

COCO17_KEYPOINTS = KeypointSchema(
    names=(
        "nose",
        "left_eye",
        "right_eye",
        "left_ear",
        "right_ear",
        "left_shoulder",
        "right_shoulder",
        "left_elbow",
        "right_elbow",
        "left_wrist",
        "right_wrist",
        "left_hip",
        "right_hip",
        "left_knee",
        "right_knee",
        "left_ankle",
        "right_ankle",
    ),
    flip_pairs=((1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16)),
)

# BlazePose landmark index of each COCO-17 point (MediaPipe's PoseLandmark enum): nose 0,
# left/right eye 2/5 (the eye centres; 1, 3, 4, 6 are the inner and outer corners), ears 7/8,
# shoulders 11/12, elbows 13/14, wrists 15/16, hips 23/24, knees 25/26, ankles 27/28.
BLAZEPOSE_TO_COCO17 = (0, 2, 5, 7, 8, 11, 12, 13, 14, 15, 16, 23, 24, 25, 26, 27, 28)

ARCFACE5_KEYPOINTS = FACE_KEYPOINTS

# Face-mesh index of each ArcFace point (MediaPipe's canonical face model, refine_landmarks on):
# 468 = iris centre of the subject's right eye (image left), 473 = iris centre of the subject's
# left eye (image right), 1 = nose tip ("noseTip" in MediaPipe's mesh annotations), 61 / 291 =
# outer mouth corners on the image's left / right.
FACE_MESH_TO_ARCFACE5 = (468, 473, 1, 61, 291)
