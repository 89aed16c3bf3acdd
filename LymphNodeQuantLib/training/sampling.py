"""Random training patches with foreground oversampling (nnU-Net style), reproducible per iteration."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .cache import IGNORE

_MAX_FOREGROUND_LOCATIONS = 20000


class PatchSampler:
    """Draw (image, target) patches from whole preprocessed cases.

    With probability ``foreground_fraction`` a patch is placed so that it contains a random
    labelled node voxel (at a random position inside the patch); otherwise anywhere. Regions
    outside the volume are padded (image: its minimum; target: IGNORE).
    """

    def __init__(self, images: Sequence[np.ndarray], targets: Sequence[np.ndarray], foreground_fraction: float, seed: int = 0):
        if len(images) != len(targets) or not images:
            raise ValueError("PatchSampler needs as many targets as images (at least one).")
        self.images, self.targets = list(images), list(targets)
        self.foreground_fraction = float(foreground_fraction)
        rng = np.random.default_rng(seed)
        self.foreground = []
        for target in self.targets:
            locations = np.argwhere(target == 1)
            if len(locations) > _MAX_FOREGROUND_LOCATIONS:
                locations = locations[rng.choice(len(locations), _MAX_FOREGROUND_LOCATIONS, replace=False)]
            self.foreground.append(locations)
        self.cases_with_foreground = [i for i, f in enumerate(self.foreground) if len(f)]

    def sample(
        self, rng: np.random.Generator, size_zyx: Sequence[int], centre_size_zyx: Sequence[int] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """A patch of ``size_zyx``; a foreground voxel, when drawn, lies in its central ``centre_size_zyx``
        part (the part a later centre crop, e.g. the augmentation's, keeps)."""
        size = np.asarray(size_zyx, dtype=int)
        centre = size if centre_size_zyx is None else np.minimum(np.asarray(centre_size_zyx, dtype=int), size)
        border = (size - centre) // 2
        use_foreground = rng.random() < self.foreground_fraction and self.cases_with_foreground
        if use_foreground:
            index = int(rng.choice(self.cases_with_foreground))
            voxel = self.foreground[index][rng.integers(len(self.foreground[index]))]
            start = voxel - border - rng.integers(0, centre)
        else:
            index = int(rng.integers(len(self.images)))
            shape = np.asarray(self.images[index].shape)
            start = np.array([rng.integers(min(0, s - p), max(0, s - p) + 1) for s, p in zip(shape, size)])
        image, target = self.images[index], self.targets[index]
        return (extract_patch(image, start, size, float(image.min())), extract_patch(target, start, size, IGNORE))


def extract_patch(array: np.ndarray, start_zyx: np.ndarray, size_zyx: np.ndarray, pad_value) -> np.ndarray:
    """``array[start:start+size]`` with out-of-volume parts filled with ``pad_value``."""
    start = np.asarray(start_zyx, dtype=int)
    stop = start + np.asarray(size_zyx, dtype=int)
    out = np.full(tuple(size_zyx), pad_value, dtype=array.dtype)
    low = np.maximum(start, 0)
    high = np.minimum(stop, array.shape)
    if np.all(high > low):
        source = tuple(slice(a, b) for a, b in zip(low, high))
        destination = tuple(slice(a - s, b - s) for a, b, s in zip(low, high, start))
        out[destination] = array[source]
    return out
