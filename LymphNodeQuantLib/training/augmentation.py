"""Patch augmentation with MONAI transforms: rotation, scaling, elastic deformation, intensity, mirroring.

Spatial transforms resample an enlarged patch down to the training patch size (so rotations do
not pull in padding); labels use nearest-neighbour interpolation so IGNORE stays IGNORE. Every
random choice comes from the seed passed to :meth:`PatchAugmenter.__call__`, so a batch is a
pure function of (seed, rank, iteration): resuming reproduces the data exactly.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from .cache import IGNORE
from .config import AugmentationSettings


class PatchAugmenter:
    def __init__(self, patch_size_zyx: Sequence[int], settings: AugmentationSettings):
        from monai.transforms import (
            Compose,
            Rand3DElasticd,
            RandAdjustContrastd,
            RandAffined,
            RandFlipd,
            RandGaussianNoised,
            RandGaussianSmoothd,
            RandScaleIntensityd,
        )

        self.patch_size = tuple(int(s) for s in patch_size_zyx)
        rotation = math.radians(float(settings.rotation_deg))
        low, high = settings.scale_range
        spatial_probability = float(settings.spatial_probability)
        elastic_probability = float(settings.elastic_probability)
        intensity_probability = float(settings.intensity_probability)
        keys, modes = ["image", "target"], ("bilinear", "nearest")
        # in-plane rotation only (axis 0 = z is the thick-slice axis); scale factors 1 + U(low-1, high-1)
        self.affine = RandAffined(
            keys,
            prob=spatial_probability,
            spatial_size=self.patch_size,
            rotate_range=(rotation, 0.0, 0.0),
            scale_range=((low - 1, high - 1),) * 3,
            mode=modes,
            padding_mode="border",
        )
        self.elastic = Rand3DElasticd(
            keys,
            sigma_range=(5.0, 8.0),
            magnitude_range=(30.0, 100.0),
            prob=1.0,
            spatial_size=self.patch_size,
            rotate_range=(rotation, 0.0, 0.0),
            scale_range=((low - 1, high - 1),) * 3,
            mode=modes,
            padding_mode="border",
        )
        self.elastic_probability = elastic_probability
        mirror_axes = settings.mirror_axes
        self.intensity = Compose(
            [
                RandGaussianNoised(["image"], prob=intensity_probability, std=0.1),
                RandGaussianSmoothd(
                    ["image"], prob=intensity_probability, sigma_x=(0.5, 1.0), sigma_y=(0.5, 1.0), sigma_z=(0.0, 0.3)
                ),
                RandScaleIntensityd(["image"], prob=intensity_probability, factors=0.25),
                RandAdjustContrastd(["image"], prob=intensity_probability, gamma=(0.7, 1.5)),
            ]
            + [RandFlipd(keys, prob=0.5, spatial_axis=axis) for axis in mirror_axes]
        )

    def input_size(self) -> tuple[int, ...]:
        """Size of the patch to cut before augmentation (larger in-plane, for rotations)."""
        z, y, x = self.patch_size
        return (z + 4, int(math.ceil(y * 1.25)), int(math.ceil(x * 1.25)))

    def __call__(self, image: np.ndarray, target: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(seed)
        data = {"image": image[None].astype(np.float32), "target": target[None].astype(np.float32)}
        spatial = self.elastic if rng.random() < self.elastic_probability else self.affine
        spatial.set_random_state(seed=int(rng.integers(2**31)))
        data = spatial(data)
        self.intensity.set_random_state(seed=int(rng.integers(2**31)))
        data = self.intensity(data)
        image_out = np.asarray(data["image"], dtype=np.float32)[0]
        target_out = np.rint(np.asarray(data["target"], dtype=np.float32)[0])
        target_out = np.where((target_out == 0) | (target_out == 1), target_out, IGNORE).astype(np.uint8)
        return image_out, target_out
