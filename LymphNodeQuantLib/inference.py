"""Segment lymph nodes in a CT: the engine behind ``lnq segment`` and the Slicer module.

Pipeline (:func:`segment_volume`): check the CT -> crop to the mediastinum (lungs found by
intensity; optional) -> resample to the model's spacing -> clip + z-score -> sliding-window
inference (Gaussian blending, optional mirroring TTA) -> resample the node probability back to
the CT grid -> threshold -> connected components, small ones dropped -> label map on the
original grid (one id per node, or binary).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Optional, Union

import numpy as np

from .errors import InputError
from .geometry import Volume
from .models.model_folder import LoadedModel, ModelCard, load_model
from .postprocess import label_instances, threshold_probability
from .preprocessing import check_ct, crop_volume, find_mediastinum_box, normalize_ct, resample_volume
from .progress import CancelToken, ProgressCallback, StageProgress
from .sliding_window import WindowPredictor, sliding_window_probability

OUTPUT_KINDS = ("instances", "binary")


@dataclass
class SegmentationResult:
    """Output of :func:`segment_volume`."""

    #: label map on the CT's grid: uint16 one id per node ("instances") or uint8 0/1 ("binary")
    labels: Volume
    model_card: ModelCard
    #: device the network finally ran on ("cpu" or "cuda:0"...)
    device: str
    messages: list[str] = field(default_factory=list)
    node_count: int = 0
    #: (start_zyx, stop_zyx) of the region the network saw, in CT indices
    crop_box_zyx: Optional[tuple[tuple[int, int, int], tuple[int, int, int]]] = None
    timings_s: dict = field(default_factory=dict)


def resolve_device(device: str = "auto") -> str:
    """``"auto"`` -> ``"cuda"`` when a CUDA GPU is usable, else ``"cpu"``; refuse unavailable devices clearly."""
    import torch

    device = (device or "auto").lower()
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise InputError("--device cuda was requested but no CUDA GPU is usable here; use --device auto or cpu.")
        return device
    if device == "cpu":
        return device
    raise InputError(f"Unknown device '{device}'; use auto, cpu or cuda.")


def _model_input_array(card: ModelCard, array: np.ndarray) -> np.ndarray:
    """Apply the card's axis order for the network (nnU-Net's transpose_forward; identity for native models)."""
    order = card.data["input"].get("transpose_forward")
    return np.transpose(array, order) if order else array


def _from_model_axes(card: ModelCard, array: np.ndarray) -> np.ndarray:
    order = card.data["input"].get("transpose_forward")
    return np.transpose(array, np.argsort(order)) if order else array


def probability_to_mask(
    probability: Volume, geometry, threshold: float, cancel: Optional[CancelToken] = None, slab_slices: int = 32
) -> np.ndarray:
    """Resample a probability map onto ``geometry`` (linear) and threshold it, slab by slab.

    Slabs of ``slab_slices`` output slices keep the float copy small: a 600-slice CT never has a
    full-size float probability map, only the uint8 mask.
    """
    import SimpleITK as sitk

    source = probability.to_sitk()
    mask = np.zeros(geometry.shape_zyx, np.uint8)
    for z0 in range(0, geometry.shape_zyx[0], slab_slices):
        if cancel is not None:
            cancel.raise_if_cancelled()
        z1 = min(z0 + slab_slices, geometry.shape_zyx[0])
        slab = geometry.cropped((z0, 0, 0), (z1,) + tuple(geometry.shape_zyx[1:]))
        reference = sitk.Image([int(v) for v in reversed(slab.shape_zyx)], sitk.sitkFloat32)
        slab.apply_to_sitk(reference)
        resampled = sitk.Resample(source, reference, sitk.Transform(), sitk.sitkLinear, 0.0)
        mask[z0:z1] = threshold_probability(sitk.GetArrayViewFromImage(resampled), threshold)
    return mask


def segment_volume(
    ct: Volume,
    model: Union[str, "LoadedModel"] = "default",
    device: str = "auto",
    *,
    crop_to_mediastinum: bool = True,
    overlap: float = 0.5,
    tta: bool = False,
    min_node_volume_mm3: Optional[float] = None,
    threshold: Optional[float] = None,
    output: str = "instances",
    batch_size: int = 2,
    progress: Optional[ProgressCallback] = None,
    cancel: Optional[CancelToken] = None,
) -> SegmentationResult:
    """Segment the lymph nodes of ``ct`` with ``model`` (installed name, folder path, or a LoadedModel).

    ``min_node_volume_mm3`` and ``threshold`` default to the model card's postprocessing values.
    Progress is reported as (fraction, stage); ``cancel`` is checked between stages and windows.
    """
    if output not in OUTPUT_KINDS:
        raise InputError(f"output must be one of {OUTPUT_KINDS}, got '{output}'.")
    report = StageProgress(progress)
    timings: dict[str, float] = {}
    messages: list[str] = []
    started = time.perf_counter()

    report(0.0, "checking input")
    check_ct(ct)
    device_name = resolve_device(device)
    if isinstance(model, LoadedModel):
        loaded = model
        if str(loaded.device) != device_name:
            loaded.network.to(device_name)
            loaded.device = device_name
    else:
        report(0.01, "loading model")
        loaded = load_model(model, device=device_name)
    card = loaded.card
    postprocessing = card.postprocessing
    min_volume = float(postprocessing["min_node_volume_mm3"] if min_node_volume_mm3 is None else min_node_volume_mm3)
    threshold = float(postprocessing["threshold"] if threshold is None else threshold)
    if cancel is not None:
        cancel.raise_if_cancelled()

    # ---------------------------------------------------------------- crop and resample
    report(0.03, "cropping")
    if crop_to_mediastinum and card.crop == "mediastinum":
        margin_mm = float(card.data["input"].get("crop_margin_mm", 20.0))
        box = find_mediastinum_box(ct, margin_mm=margin_mm, messages=messages)
    else:
        box = ((0, 0, 0), ct.geometry.shape_zyx)
        messages.append("Mediastinum crop off: the network sees the whole volume.")
    region = crop_volume(ct, *box)
    report(0.06, "resampling")
    resampled = resample_volume(region, card.spacing_zyx_mm, "linear", default_value=float(np.min(region.array)))
    image = normalize_ct(resampled.array, card.normalization)
    model_geometry = resampled.geometry
    del resampled
    timings["preprocess"] = time.perf_counter() - started
    if cancel is not None:
        cancel.raise_if_cancelled()

    # ---------------------------------------------------------------- sliding window
    predictor = WindowPredictor(
        loaded.network, loaded.device, foreground_channel=card.foreground_channel, batch_size=batch_size, messages=messages
    )
    t0 = time.perf_counter()
    probability = sliding_window_probability(
        _model_input_array(card, image),
        predictor,
        card.patch_size_zyx,
        overlap=overlap,
        tta=tta,
        progress=report.sub(0.1, 0.9),
        cancel=cancel,
        pad_value=float(image.min()),
    )
    probability = _from_model_axes(card, probability)
    del image
    timings["inference"] = time.perf_counter() - t0
    if predictor.device.type != loaded.device.split(":")[0]:
        loaded.device = str(predictor.device)

    # ---------------------------------------------------------------- back to the CT grid
    report(0.9, "resampling back")
    t0 = time.perf_counter()
    region_mask = probability_to_mask(Volume(probability, model_geometry), region.geometry, threshold, cancel)
    del probability
    if cancel is not None:
        cancel.raise_if_cancelled()

    report(0.95, "postprocessing")
    # components inside the box only (nothing is found outside it): no full-size label copies
    region_instances, count = label_instances(region_mask, ct.geometry.spacing_zyx_mm, min_volume)
    del region_mask
    dtype = np.uint16 if output == "instances" else np.uint8
    labels = np.zeros(ct.geometry.shape_zyx, dtype)
    (z0, y0, x0), (z1, y1, x1) = box
    labels[z0:z1, y0:y1, x0:x1] = region_instances if output == "instances" else (region_instances > 0)
    del region_instances
    timings["postprocess"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - started
    messages.append(f"{count} lymph node(s) found (components under {min_volume:g} mm3 dropped).")
    report(1.0, "done")
    return SegmentationResult(
        labels=ct.with_array(labels),
        model_card=card,
        device=str(predictor.device),
        messages=messages,
        node_count=count,
        crop_box_zyx=(tuple(box[0]), tuple(box[1])),
        timings_s=timings,
    )
