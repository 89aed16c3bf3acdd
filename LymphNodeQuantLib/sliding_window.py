"""Sliding-window inference with Gaussian blending, mirroring TTA and GPU out-of-memory fallback.

Hand-written rather than MONAI's ``sliding_window_inference`` because this loop

* keeps only the lymph-node probability (one channel) in a preallocated float32 accumulator
  on the CPU instead of a full ``(classes, z, y, x)`` output on the compute device, so memory is
  bounded for large CTs and a GPU only ever holds a batch of windows;
* checks a cancel flag and reports progress between batches of windows;
* recovers from CUDA out-of-memory by halving the batch, then moving to the CPU.

The window placement (MONAI's scan interval, last window flush with the border) and the Gaussian
importance map (sigma = patch/8, MONAI's ``compute_importance_map``) match MONAI and nnU-Net, so
results agree with MONAI's function within floating-point tolerance (``Testing/test_inference.py``).
"""

from __future__ import annotations

import itertools
import logging
import math
from typing import Optional, Sequence

import numpy as np

from .errors import InputError
from .progress import CancelToken, ProgressCallback

logger = logging.getLogger(__name__)


def window_starts(size: int, patch: int, overlap: float) -> list[int]:
    """Start indices along one axis, placed as MONAI does: every ``int(patch * (1 - overlap))``
    voxels, the last window flush with the end."""
    if size <= patch:
        return [0]
    interval = max(1, int(patch * (1.0 - overlap)))
    count = int(math.ceil((size - patch) / interval)) + 1
    return sorted({min(i * interval, size - patch) for i in range(count)})


def gaussian_importance(patch_size_zyx: Sequence[int], sigma_scale: float = 0.125):
    """Gaussian weights over a patch (peak 1, floor > 0), as MONAI's ``compute_importance_map``."""
    from monai.inferers.utils import compute_importance_map

    return compute_importance_map(tuple(int(p) for p in patch_size_zyx), mode="gaussian", sigma_scale=sigma_scale, device="cpu")


def mirror_axes_sets(tta: bool) -> list[tuple[int, ...]]:
    """Spatial axes (0=z, 1=y, 2=x) to flip for each test-time-augmentation pass (identity first)."""
    if not tta:
        return [()]
    return [axes for r in range(4) for axes in itertools.combinations((0, 1, 2), r)]


def is_out_of_memory(error: BaseException) -> bool:
    import torch

    return isinstance(error, torch.cuda.OutOfMemoryError) or "out of memory" in str(error).lower()


class WindowPredictor:
    """Runs the network on batches of windows, returning the foreground probability on the CPU.

    ``foreground_channel`` selects the class (softmax over channels; a single-channel network is
    read through a sigmoid). What happens (out-of-memory fallbacks) is logged as warnings.
    """

    def __init__(
        self,
        network,
        device: str = "cpu",
        *,
        foreground_channel: int = 1,
        batch_size: int = 2,
        mixed_precision: Optional[str] = "auto",
    ) -> None:
        import torch

        self.network = network
        self.device = torch.device(device)
        self.foreground_channel = int(foreground_channel)
        self.batch_size = max(1, int(batch_size))
        self.mixed_precision = mixed_precision

    def _autocast(self):
        import contextlib

        import torch

        if self.device.type != "cuda" or self.mixed_precision in (None, "none", "fp32"):
            return contextlib.nullcontext()
        if self.mixed_precision == "auto":
            dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        else:
            dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}[self.mixed_precision]
        return torch.autocast("cuda", dtype=dtype)

    def _forward(self, batch, mirror_sets):
        import torch

        with torch.inference_mode(), self._autocast():
            x = batch.to(self.device, non_blocking=True)
            probability = None
            for axes in mirror_sets:
                flip_dims = [a + 2 for a in axes]
                xi = torch.flip(x, flip_dims) if flip_dims else x
                logits = self.network(xi)
                if isinstance(logits, (list, tuple)):  # deep supervision: full resolution first
                    logits = logits[0]
                logits = logits.float()
                if logits.shape[1] == 1:
                    p = torch.sigmoid(logits[:, 0])
                else:
                    p = torch.softmax(logits, dim=1)[:, self.foreground_channel]
                if flip_dims:
                    p = torch.flip(p, [a + 1 for a in axes])
                probability = p if probability is None else probability + p
            return (probability / len(mirror_sets)).to("cpu")

    def move_to_cpu(self) -> None:
        self.network.to("cpu")
        self.device = __import__("torch").device("cpu")

    def predict(self, windows, mirror_sets) -> "np.ndarray":
        """Foreground probability for a (n, 1, z, y, x) tensor of windows, splitting on OOM."""
        import torch

        results = []
        start = 0
        while start < windows.shape[0]:
            chunk = windows[start : start + self.batch_size]
            try:
                results.append(self._forward(chunk, mirror_sets))
                start += chunk.shape[0]
            except (torch.cuda.OutOfMemoryError, RuntimeError) as error:
                if not is_out_of_memory(error):
                    raise
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                if self.batch_size > 1:
                    self.batch_size //= 2
                    logger.warning(f"Out of memory on {self.device.type}: retrying with {self.batch_size} window(s) per batch.")
                elif self.device.type != "cpu":
                    logger.warning(f"Out of memory on {self.device.type} even with one window per batch: continuing on the CPU.")
                    self.move_to_cpu()
                else:
                    raise InputError(
                        "Out of memory on the CPU with one window per batch; close other programs or use a smaller model."
                    ) from error
        return torch.cat(results).numpy()


def sliding_window_probability(
    image: np.ndarray,
    predictor: WindowPredictor,
    patch_size_zyx: Sequence[int],
    *,
    overlap: float = 0.5,
    tta: bool = False,
    progress: Optional[ProgressCallback] = None,
    cancel: Optional[CancelToken] = None,
    pad_value: float = 0.0,
) -> np.ndarray:
    """Gaussian-blended foreground probability (float32, shape of ``image``) of a normalised 3-D image."""
    import torch

    if not 0.0 <= overlap < 1.0:
        raise InputError(f"overlap must be in [0, 1), got {overlap}.")
    patch = tuple(int(p) for p in patch_size_zyx)
    original_shape = image.shape
    padding = [(0, max(0, p - s)) for p, s in zip(patch, image.shape)]
    if any(after for _, after in padding):  # smaller than a patch: pad at the end
        image = np.pad(image, padding, constant_values=pad_value)
    shape = image.shape
    starts = [window_starts(s, p, overlap) for s, p in zip(shape, patch)]
    positions = list(itertools.product(*starts))
    weight = gaussian_importance(patch).numpy().astype(np.float32)
    accumulated = np.zeros(shape, np.float32)
    weight_sum = np.zeros(shape, np.float32)
    mirror_sets = mirror_axes_sets(tta)
    batch_windows = max(1, predictor.batch_size)
    done = 0
    for first in range(0, len(positions), batch_windows):
        if cancel is not None:
            cancel.raise_if_cancelled()
        batch_positions = positions[first : first + batch_windows]
        windows = np.stack([image[z : z + patch[0], y : y + patch[1], x : x + patch[2]] for z, y, x in batch_positions])
        probabilities = predictor.predict(torch.from_numpy(np.ascontiguousarray(windows[:, None], dtype=np.float32)), mirror_sets)
        for (z, y, x), probability in zip(batch_positions, probabilities):
            box = (slice(z, z + patch[0]), slice(y, y + patch[1]), slice(x, x + patch[2]))
            accumulated[box] += probability * weight
            weight_sum[box] += weight
        done += len(batch_positions)
        if progress is not None:
            progress(done / len(positions), "inference")
    np.divide(accumulated, weight_sum, out=accumulated, where=weight_sum > 0)
    return accumulated[: original_shape[0], : original_shape[1], : original_shape[2]]
