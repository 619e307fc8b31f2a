"""Dataset over ImageRecords and the loaders built from a config."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import DataLoader, Dataset

from reidbench.data.transforms import Transform
from reidbench.datasets.alignment import load_aligned
from reidbench.datasets.base import ImageRecord
from reidbench.errors import DatasetError


def load_rgb(path: str) -> np.ndarray:
    """Decode an image file to (H, W, 3) uint8; a DatasetError names an unreadable file."""
    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"))
    except (OSError, UnidentifiedImageError) as exc:
        raise DatasetError(f"cannot read image {path}: {exc}") from None


def load_sample(record: ImageRecord) -> tuple[np.ndarray, np.ndarray | None]:
    """The image and keypoints the model should see for ``record``: decoded, and aligned when
    the record says how (faces with landmarks; ``datasets.alignment``)."""
    return load_aligned(record, load_rgb(record.path))


class ImageDataset(Dataset):
    """Records -> dicts with ``image`` (3, H, W), ``pid``, ``camid``, ``keypoints`` (K, 2),
    ``has_keypoints`` and ``index``.

    Items are addressed by an int, or by ``(index, seed)`` pairs from ``PKSampler``, which seed
    that sample's augmentation. Records without keypoints get zeros and ``has_keypoints=False``.
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
    """One loader item; missing keypoints become zeros with ``has_keypoints=False``."""
    has = kps is not None
    if kps is None:
        kps = np.zeros((num_keypoints, 2), dtype=np.float32)
    return {
        "image": image,
        "pid": record.pid,
        "camid": record.camid,
        "keypoints": torch.from_numpy(np.ascontiguousarray(kps, dtype=np.float32)),
        "has_keypoints": has,
        "index": index,
    }


def batch_keypoints(batch: dict[str, Any], device: torch.device) -> torch.Tensor | None:
    """The batch's (B, K, 2) keypoints when every sample has them, else None."""
    if batch["keypoints"].shape[1] == 0 or not bool(batch["has_keypoints"].all()):
        return None
    return batch["keypoints"].to(device)


def make_loader(
    dataset: ImageDataset, batch_size: int, sampler: Any = None, num_workers: int = 0,
    shuffle: bool = False,
) -> DataLoader:
    return DataLoader(
        dataset, batch_size=batch_size, sampler=sampler, shuffle=shuffle,
        num_workers=num_workers, drop_last=sampler is not None,
        persistent_workers=num_workers > 0,
    )
