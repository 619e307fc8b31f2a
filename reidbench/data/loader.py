"""Dataset over ImageRecords and the loaders built from a config."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import DataLoader, Dataset

from reidbench.data.alignment import load_aligned
from reidbench.data.records import ImageRecord
from reidbench.data.transforms import Transform
from reidbench.errors import DatasetError

log = logging.getLogger(__name__)


def load_rgb(path: str) -> np.ndarray:
    """Decode an image file to (H, W, 3) uint8; a DatasetError names an unreadable file.

    Every failure inside PIL for this file is reported with its path: a missing or unreadable
    file, an unknown format, a truncated or corrupt stream, and an image larger than PIL's
    decompression-bomb limit (``Image.MAX_IMAGE_PIXELS`` x 2), which PIL raises without a path.
    """
    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"))
    except PermissionError as exc:
        raise DatasetError(f"cannot read image {path}: permission denied ({exc.strerror})") from None
    except Image.DecompressionBombError as exc:
        raise DatasetError(
            f"cannot read image {path}: refused as a possible decompression bomb ({exc})"
        ) from None
    except (OSError, UnidentifiedImageError) as exc:
        raise DatasetError(f"cannot read image {path}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - PIL's decoders raise many types for a bad file
        detail = str(exc).splitlines()[0] if str(exc) else ""
        raise DatasetError(
            f"cannot read image {path}: {type(exc).__name__}{': ' + detail if detail else ''} "
            "(corrupt or unsupported file)"
        ) from None


def load_sample(record: ImageRecord) -> tuple[np.ndarray, np.ndarray | None]:
    """The image and keypoints the model should see for ``record``: decoded, and aligned when
    the record says how (faces with landmarks; ``data.alignment``)."""
    return load_aligned(record, load_rgb(record.path))


class ImageDataset(Dataset):
    """Records -> dicts with ``image`` (3, H, W), ``pid``, ``camid``, ``keypoints`` (K, 2),
    ``has_keypoints`` and ``index``.

    Items are addressed by an int, or by ``(index, seed)`` pairs from ``PKSampler``, which seed
    that sample's augmentation. Records without keypoints get an all-NaN row and
    ``has_keypoints=False`` (``batch_keypoints`` hands models one per-sample tensor).
    """

    def __init__(
        self, records: list[ImageRecord], transform: Transform, num_keypoints: int = 0,
        cache: bool = False,
    ) -> None:
        self.records, self.transform = records, transform
        self.num_keypoints = num_keypoints
        self._cache: dict[int, tuple[np.ndarray, np.ndarray | None]] | None = {} if cache else None

    def __len__(self) -> int:
        return len(self.records)

    def sample(self, index: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Record ``index``'s image and keypoints before the transform (``load_sample``)."""
        if self._cache is not None and index in self._cache:
            return self._cache[index]
        sample = load_sample(self.records[index])
        if self._cache is not None:
            self._cache[index] = sample
        return sample

    def image(self, index: int) -> np.ndarray:
        return self.sample(index)[0]

    def __getitem__(self, item: int | tuple[int, int]) -> dict[str, Any]:
        index, seed = item if isinstance(item, tuple) else (item, None)
        record = self.records[index]
        rng = np.random.default_rng(seed) if seed is not None else None
        image, kps_in = self.sample(index)
        image, kps = self.transform(image, kps_in if self.num_keypoints else None, rng)
        return sample_dict(record, index, image, kps, self.num_keypoints)


def sample_dict(
    record: ImageRecord, index: int, image: torch.Tensor, kps: np.ndarray | None, num_keypoints: int,
) -> dict[str, Any]:
    """One loader item; missing keypoints are an explicit all-NaN (K, 2) row with
    ``has_keypoints=False`` (never zeros, never an invented point)."""
    has = kps is not None
    if kps is None:
        kps = np.full((num_keypoints, 2), np.nan, dtype=np.float32)
    return {
        "image": image,
        "pid": record.pid,
        "camid": record.camid,
        "keypoints": torch.from_numpy(np.ascontiguousarray(kps, dtype=np.float32)),
        "has_keypoints": has,
        "index": index,
    }


def batch_keypoints(batch: dict[str, Any], device: torch.device) -> torch.Tensor | None:
    """The batch's (B, K, 2) keypoints, per sample: None when no sample has any (or K = 0),
    else the keypoints with an all-NaN row for every sample without them.

    A sample has no keypoints when its sidecar has no row for it, an explicit empty row, or a
    row dropped as invalid (``datasets.keypoints``). Models that use keypoints take such a row
    as "this sample has none" and run their documented no-keypoint fallback for that sample
    alone (KP-RPE: the static bias; POSTER: its learned default keypoints); the other samples
    of the batch use their keypoints. Zeros are never passed off as keypoints.
    """
    has = torch.as_tensor(batch["has_keypoints"], dtype=torch.bool)
    kps = batch["keypoints"]
    if kps.shape[1] == 0 or not bool(has.any()):
        return None
    if not bool(has.all()):
        kps = kps.masked_fill(~has[:, None, None], float("nan"))
    return kps.to(device)


def make_loader(
    dataset: ImageDataset, batch_size: int, sampler: Any = None, num_workers: int = 0,
    shuffle: bool = False, pin_memory: bool = False,
) -> DataLoader:
    """Batches of ``dataset``; ``pin_memory`` (for CUDA) puts them in page-locked memory so that
    ``.to(device, non_blocking=True)`` overlaps the copy. Workers, when there are any, live
    across epochs. The order and the augmentation do not depend on the workers: the sampler
    yields ``(index, seed)`` pairs (``data.sampler``)."""
    return DataLoader(
        dataset, batch_size=batch_size, sampler=sampler, shuffle=shuffle,
        num_workers=num_workers, drop_last=sampler is not None,
        persistent_workers=num_workers > 0, pin_memory=pin_memory,
    )
