"""Misalignment perturbations for the robustness sweep, and their severity levels.

A perturbation at a severity draws, per sample, a ``Misalignment``: one 3x3 matrix in the pixel
frame of the model's input image (applied after the resize, to image and keypoints together, so
KP-RPE receives the keypoints where the body or face now is) and optional keypoint noise
(normalised units, added to the keypoints only: a landmark detector's error, image untouched).

Levels (severity 0 is the identity; ``h, w`` is the model input, 128x64 for re-ID crops and
112x112 for faces; all rotations and scalings are about the image centre):

=========  ==========================================================  ===  ===  ===  ===  ===
name       what, per sample                                            1    2    3    4    5
=========  ==========================================================  ===  ===  ===  ===  ===
scale      scale by exactly 1 + d or 1 - d (sign drawn)            d:  .08  .16  .24  .32  .40
rotate     rotate by exactly +a or -a degrees (sign drawn)         a:  8    16   24   32   40
translate  shift by exactly t of the size in a drawn direction     t:  .05  .10  .15  .20  .25
           (dx, dy) = (t w cos phi, t h sin phi)
affine     random similarity: rotation U(-a, a), scale U(1-d, 1+d),    the a, d, t of the
           shift U(-t, t) x (w, h) per axis (``random_similarity``)    same severity
kpnoise    keypoints + N(0, s^2) per coordinate, in [0, 1] units   s:  .02  .04  .06  .08  .10
           (s of the width in x, of the height in y); image as is
affine_    ``affine``, then keypoint noise as ``kpnoise``: the image   the a, d, t and s of the
kpnoise    is misaligned and its landmarks are detected with an        same severity
           error, as on a real low-quality image (opt-in: not in the
           default set, see below)
=========  ==========================================================  ===  ===  ===  ===  ===

So at severity 5 faces are scaled to 0.6 or 1.4, turned by 40 degrees, shifted by a quarter of
the image, or their landmarks are off by 10 % of the image (11 pixels at 112) per coordinate.
Uncovered canvas is black (zero before normalisation). Keypoints are not clipped: a keypoint
moved out of the image stays where the matrix puts it.

The default set (``parse_names(None)``, what ``reidbench robustness`` and ``bench`` sweep without
``--perturb``) is the five single perturbations, so that a mean over perturbations means the same
in every record; ``--perturb all`` adds ``affine_kpnoise`` (and any plugin's perturbation whose
class sets ``default = False``).

Seeding: the draw of sample ``index`` comes from ``numpy.random.default_rng([seed, crc32(name),
crc32(stream), index])`` and does not depend on the severity, batch order or model: every model
sees the same perturbed images, and one sample keeps the same sign, direction or noise pattern
at every severity (only the magnitude grows), which makes the severity curves smooth.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

import numpy as np

from reidbench.data import geometry
from reidbench.errors import ConfigError
from reidbench.registry import PERTURBATIONS, load_builtins

MAX_SEVERITY = 5
# reports list them in this order
ORDER = ("scale", "rotate", "translate", "affine", "kpnoise", "affine_kpnoise")
SEVERITIES = tuple(range(MAX_SEVERITY + 1))

# magnitude per severity 0..5 (see the module docstring)
SCALE_LEVELS = (0.0, 0.08, 0.16, 0.24, 0.32, 0.40)  # |scale - 1|
ROTATE_LEVELS = (0.0, 8.0, 16.0, 24.0, 32.0, 40.0)  # degrees
TRANSLATE_LEVELS = (0.0, 0.05, 0.10, 0.15, 0.20, 0.25)  # fraction of the image size
KPNOISE_LEVELS = (0.0, 0.02, 0.04, 0.06, 0.08, 0.10)  # std, fraction of the image size


@dataclass(frozen=True)
class Misalignment:
    """What one sample undergoes: ``matrix`` (3, 3) in the output pixel frame, moving image and
    keypoints; ``keypoint_noise`` (K, 2) in normalised units added to the keypoints only."""

    matrix: np.ndarray
    keypoint_noise: np.ndarray | None = None

    @property
    def is_identity(self) -> bool:
        return bool(np.array_equal(self.matrix, np.eye(3))) and (
            self.keypoint_noise is None or not self.keypoint_noise.any()
        )


IDENTITY = Misalignment(np.eye(3))


def check_severity(severity: int) -> int:
    if not isinstance(severity, (int, np.integer)) or not 0 <= severity <= MAX_SEVERITY:
        raise ConfigError(f"severity must be an integer in 0..{MAX_SEVERITY}, got {severity!r}")
    return int(severity)


class Perturbation:
    """Base class: ``draw`` one sample's misalignment at a severity; ``describe`` the level.

    Subclasses set ``name``, ``kind`` ("geometric"; "keypoints" when it needs keypoints to change
    anything, or to differ from another perturbation, on a dataset without them), optionally
    ``default`` (module docstring), and implement ``_draw``,
    which must consume the generator the same way at every severity.
    """

    name = ""
    kind = "geometric"
    default = True  # in the default set of parse_names (False: only by name or "all")

    def draw(
        self, severity: int, rng: np.random.Generator, hw: tuple[int, int], num_keypoints: int = 0,
    ) -> Misalignment:
        """The misalignment of one sample of an ``hw`` = (height, width) input image."""
        if check_severity(severity) == 0:
            return IDENTITY
        return self._draw(severity, rng, hw, num_keypoints)

    def _draw(
        self, severity: int, rng: np.random.Generator, hw: tuple[int, int], num_keypoints: int,
    ) -> Misalignment:
        raise NotImplementedError

    def describe(self, severity: int) -> str:
        """The parameters of a severity level, in words."""
        raise NotImplementedError


def _centre(hw: tuple[int, int]) -> tuple[float, float]:
    return hw[1] / 2.0, hw[0] / 2.0


def _sign(rng: np.random.Generator) -> float:
    return 1.0 if rng.random() < 0.5 else -1.0


@PERTURBATIONS.register("scale")
class Scale(Perturbation):
    """Zoom in or out about the centre by exactly 1 +- SCALE_LEVELS[severity]."""

    name = "scale"

    def _draw(self, severity: int, rng: np.random.Generator, hw: tuple[int, int], num_keypoints: int,
              ) -> Misalignment:
        factor = 1.0 + _sign(rng) * SCALE_LEVELS[severity]
        return Misalignment(geometry.about(_centre(hw), geometry.scaling(factor)))

    def describe(self, severity: int) -> str:
        d = SCALE_LEVELS[check_severity(severity)]
        return "none" if d == 0 else f"x{1 - d:.2f} or x{1 + d:.2f}"


@PERTURBATIONS.register("rotate")
class Rotate(Perturbation):
    """Rotate about the centre by exactly +- ROTATE_LEVELS[severity] degrees."""

    name = "rotate"

    def _draw(self, severity: int, rng: np.random.Generator, hw: tuple[int, int], num_keypoints: int,
              ) -> Misalignment:
        degrees = _sign(rng) * ROTATE_LEVELS[severity]
        return Misalignment(geometry.about(_centre(hw), geometry.rotation(degrees)))

    def describe(self, severity: int) -> str:
        a = ROTATE_LEVELS[check_severity(severity)]
        return "none" if a == 0 else f"+-{a:g} deg"


@PERTURBATIONS.register("translate")
class Translate(Perturbation):
    """Shift by TRANSLATE_LEVELS[severity] of the image size in a uniformly drawn direction."""

    name = "translate"

    def _draw(self, severity: int, rng: np.random.Generator, hw: tuple[int, int], num_keypoints: int,
              ) -> Misalignment:
        t = TRANSLATE_LEVELS[severity]
        phi = rng.uniform(0.0, 2.0 * math.pi)
        return Misalignment(geometry.translation(t * hw[1] * math.cos(phi), t * hw[0] * math.sin(phi)))

    def describe(self, severity: int) -> str:
        t = TRANSLATE_LEVELS[check_severity(severity)]
        return "none" if t == 0 else f"{t:.0%} of size"


def affine_range(severity: int) -> tuple[float, float, float] | None:
    """(max_degrees, max_scale, max_shift) of the "affine" perturbation at ``severity``; None at 0.

    Also the training augmentation's range (``data.aug_affine``), so training can cover exactly
    the misalignment the sweep measures.
    """
    s = check_severity(severity)
    if s == 0:
        return None
    return ROTATE_LEVELS[s], SCALE_LEVELS[s], TRANSLATE_LEVELS[s]


@PERTURBATIONS.register("affine")
class Affine(Perturbation):
    """A random similarity (rotation, scale, shift drawn uniformly within the severity's ranges)."""

    name = "affine"

    def _draw(self, severity: int, rng: np.random.Generator, hw: tuple[int, int], num_keypoints: int,
              ) -> Misalignment:
        ranges = affine_range(severity)
        assert ranges is not None
        return Misalignment(geometry.random_similarity(rng, hw, *ranges))

    def describe(self, severity: int) -> str:
        ranges = affine_range(severity)
        if ranges is None:
            return "none"
        a, d, t = ranges
        return f"rot U(+-{a:g} deg), scale U(1+-{d:.2f}), shift U(+-{t:.0%})"


@PERTURBATIONS.register("kpnoise")
class KeypointNoise(Perturbation):
    """Gaussian keypoint noise with std KPNOISE_LEVELS[severity] (normalised units); image untouched."""

    name = "kpnoise"
    kind = "keypoints"

    def _draw(self, severity: int, rng: np.random.Generator, hw: tuple[int, int], num_keypoints: int,
              ) -> Misalignment:
        noise = rng.standard_normal((num_keypoints, 2)) * KPNOISE_LEVELS[severity]
        return Misalignment(np.eye(3), noise.astype(np.float32))

    def describe(self, severity: int) -> str:
        s = KPNOISE_LEVELS[check_severity(severity)]
        return "none" if s == 0 else f"sigma {s:.0%} of size"


@PERTURBATIONS.register("affine_kpnoise")
class AffineKeypointNoise(Perturbation):
    """``affine`` then ``kpnoise`` at the same severity: the keypoints move with the image and
    then carry a detector's error. A landmark-aligned model undoes the misalignment only up to that
    error; a model that ignores keypoints suffers the whole misalignment. Without keypoints it
    would equal ``affine``, so it is skipped there (kind "keypoints")."""

    name = "affine_kpnoise"
    kind = "keypoints"
    default = False

    def _draw(self, severity: int, rng: np.random.Generator, hw: tuple[int, int], num_keypoints: int,
              ) -> Misalignment:
        matrix = Affine()._draw(severity, rng, hw, num_keypoints).matrix
        noise = KeypointNoise()._draw(severity, rng, hw, num_keypoints).keypoint_noise
        return Misalignment(matrix, noise)

    def describe(self, severity: int) -> str:
        if check_severity(severity) == 0:
            return "none"
        return f"{Affine().describe(severity)}; keypoints {KeypointNoise().describe(severity)}"


def build_perturbation(name: str) -> Perturbation:
    """The registered perturbation ``name`` (a ReidbenchError lists the known ones)."""
    load_builtins()
    return PERTURBATIONS.get(name)()  # type: ignore[return-value]


def sample_rng(seed: int, name: str, stream: str, index: int) -> np.random.Generator:
    """The generator of sample ``index`` of ``stream`` ("query", "gallery", "pairs", ...) under
    perturbation ``name``; independent of the severity (see the module docstring)."""
    return np.random.default_rng(
        [int(seed), zlib.crc32(name.encode()), zlib.crc32(stream.encode()), int(index)]
    )


def parse_names(text: str | None) -> tuple[str, ...]:
    """``"scale,rotate"`` -> ("scale", "rotate"); None or "" -> the default set (every registered
    perturbation whose class has ``default``); "all" -> every registered perturbation.

    Unknown names raise the registry's one-line error.
    """
    load_builtins()
    if text is None or text.strip() in ("", "all"):
        known = PERTURBATIONS.names()
        if text is None or not text.strip():
            known = [n for n in known if getattr(PERTURBATIONS.get(n), "default", True)]
        return tuple(n for n in ORDER if n in known) + tuple(n for n in known if n not in ORDER)
    names = tuple(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    for name in names:
        PERTURBATIONS.get(name)
    return names


def parse_severities(text: str | None) -> tuple[int, ...]:
    """``"0-5"``, ``"1,3,5"`` or ``"0-2,4"`` -> sorted severities; None -> 0..5. 0 (clean) is
    always included, since every score is relative to it."""
    if text is None or not text.strip():
        return SEVERITIES
    out: set[int] = {0}
    for part in text.split(","):
        part = part.strip()
        try:
            if "-" in part:
                lo, hi = (int(v) for v in part.split("-", 1))
                values = range(lo, hi + 1)
            else:
                values = range(int(part), int(part) + 1)
        except ValueError:
            raise ConfigError(f"malformed severities {text!r}: expected e.g. 0-5 or 1,3,5") from None
        if not values:
            raise ConfigError(f"empty severity range {part!r} in {text!r}")
        out.update(check_severity(v) for v in values)
    return tuple(sorted(out))
