"""Segment lymph nodes in a CT: the engine behind ``lnq segment`` and the Slicer module.

Pipeline (:func:`segment_volume`): check the CT -> find the lungs and the mediastinum
(:mod:`.anatomy`) -> crop to the mediastinum (optional) -> resample to the model's spacing ->
clip + z-score -> sliding-window inference (Gaussian blending, optional mirroring TTA) -> resample
the node probability back to the CT grid -> threshold -> connected components -> drop candidates
that cannot be nodes (too small; with the anatomy filter also mostly air/lung, mostly bone or
contrast, outside the mediastinum; :func:`.postprocess.filter_candidates`) -> label map on the
original grid (one id per node, or binary). A scan without a mediastinum is reported as such and
not segmented while the anatomy filter is on.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Optional, Union

import numpy as np

from .anatomy import find_chest_anatomy
from .errors import InputError
from .geometry import Volume
from .log import collected_messages
from .models.model_folder import LoadedModel, ModelCard, load_model
from .postprocess import DROP_REASONS, filter_candidates, label_instances, threshold_probability
from .preprocessing import check_chest_ct, check_ct, crop_volume, find_mediastinum_box, normalize_ct, resample_volume
from .progress import CancelToken, ProgressCallback, StageProgress
from .sliding_window import WindowPredictor, sliding_window_probability

logger = logging.getLogger(__name__)

OUTPUT_KINDS = ("instances", "binary")


@dataclass
class SegmentationResult:
    """Output of :func:`segment_volume`."""

    #: label map on the CT's grid: uint16 one id per node ("instances") or uint8 0/1 ("binary")
    labels: Volume
    model_card: ModelCard
    #: device the network finally ran on ("cpu" or "cuda:0"...)
    device: str
    #: what the engine logged during the run (validation note, crop, nodes found and dropped), in order
    messages: list[str] = field(default_factory=list)
    node_count: int = 0
    #: (start_zyx, stop_zyx) of the region the network saw, in CT indices
    crop_box_zyx: Optional[tuple[tuple[int, int, int], tuple[int, int, int]]] = None
    timings_s: dict = field(default_factory=dict)
    #: candidates dropped by the post-processing rules: {reason: count} (postprocess.DROP_REASONS)
    dropped_candidates: dict = field(default_factory=dict)
    #: False when the CT shows no mediastinum (then no node is reported while the anatomy filter is on)
    has_mediastinum: bool = True
    anatomy_filter: bool = True


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
    anatomy_filter: Optional[bool] = None,
    overlap: float = 0.5,
    tta: bool = False,
    min_node_volume_mm3: Optional[float] = None,
    threshold: Optional[float] = None,
    output: str = "instances",
    batch_size: int = 2,
    allow_unusual_input: bool = False,
    progress: Optional[ProgressCallback] = None,
    cancel: Optional[CancelToken] = None,
) -> SegmentationResult:
    """Segment the lymph nodes of ``ct`` with ``model`` (installed name, folder path, or a LoadedModel).

    ``min_node_volume_mm3``, ``threshold`` and ``anatomy_filter`` default to the model card's
    postprocessing values. A CT whose spacing, field of view or content cannot be a chest CT is
    refused unless ``allow_unusual_input`` (:func:`.preprocessing.check_chest_ct`). Progress is
    reported as (fraction, stage); ``cancel`` is checked between stages and windows.
    """
    if output not in OUTPUT_KINDS:
        raise InputError(f"output must be one of {OUTPUT_KINDS}, got '{output}'.")
    options = dict(
        crop_to_mediastinum=crop_to_mediastinum,
        anatomy_filter=anatomy_filter,
        overlap=overlap,
        tta=tta,
        min_node_volume_mm3=min_node_volume_mm3,
        threshold=threshold,
        output=output,
        batch_size=batch_size,
        allow_unusual_input=allow_unusual_input,
    )
    with collected_messages() as messages:  # what the engine logs on the way becomes the result's messages
        result = _segment(ct, model, device, StageProgress(progress), cancel, **options)
    result.messages = list(messages)
    return result


def _segment(
    ct: Volume,
    model,
    device: str,
    report: StageProgress,
    cancel,
    *,
    crop_to_mediastinum,
    anatomy_filter,
    overlap,
    tta,
    min_node_volume_mm3,
    threshold,
    output,
    batch_size,
    allow_unusual_input,
) -> SegmentationResult:
    timings: dict[str, float] = {}
    started = time.perf_counter()

    report(0.0, "checking input")
    check_ct(ct)
    check_chest_ct(ct, allow_unusual_input)
    loaded = _load(model, resolve_device(device), report)
    card = loaded.card
    post = card.postprocessing
    min_volume = float(post["min_node_volume_mm3"] if min_node_volume_mm3 is None else min_node_volume_mm3)
    threshold = float(post["threshold"] if threshold is None else threshold)
    anatomy_filter = bool(post.get("anatomy_filter", True) if anatomy_filter is None else anatomy_filter)
    if not card.validated_on_patient_data:
        logger.warning(
            f"Model {card.title} is not validated on annotated patient CT (see its MODEL_CARD.md): "
            "check every outline; not for diagnosis."
        )
    _check_cancel(cancel)

    report(0.02, "finding the mediastinum")
    use_crop = crop_to_mediastinum and card.crop == "mediastinum"
    anatomy = find_chest_anatomy(ct) if (use_crop or anatomy_filter) else None
    dtype = np.uint16 if output == "instances" else np.uint8
    if anatomy_filter and not anatomy.has_mediastinum:
        for message in anatomy.messages:
            logger.warning(message)
        logger.warning(
            "No mediastinal lymph nodes reported, because this scan has no mediastinum; to segment it anyway "
            "turn the anatomy filter off (lnq segment --no-anatomy-filter)."
        )
        report(1.0, "done")
        return SegmentationResult(
            ct.with_array(np.zeros(ct.geometry.shape_zyx, dtype)),
            card,
            str(loaded.device),
            [],
            0,
            None,
            {"total": time.perf_counter() - started},
            {r: 0 for r in DROP_REASONS},
            False,
            True,
        )
    if use_crop:
        box = find_mediastinum_box(ct, margin_mm=float(card.data["input"].get("crop_margin_mm", 20.0)), anatomy=anatomy)
    else:
        box = ((0, 0, 0), ct.geometry.shape_zyx)
        logger.info("Mediastinum crop off: the network sees the whole volume.")
    region = crop_volume(ct, *box)
    probability, model_geometry, device_name = _network_probability(
        region, loaded, overlap, tta, batch_size, report, cancel, timings
    )

    report(0.9, "resampling back")
    t0 = time.perf_counter()
    labels, count, dropped = _candidates_to_nodes(
        probability,
        model_geometry,
        region,
        box,
        ct,
        anatomy if anatomy_filter else None,
        threshold,
        min_volume,
        int(post.get("min_node_voxels", 1)),
        dtype,
        output,
        cancel,
        report,
    )
    del probability
    timings["postprocess"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - started
    logger.info(describe_dropped(count, dropped, min_volume, anatomy_filter))
    report(1.0, "done")
    return SegmentationResult(
        ct.with_array(labels),
        card,
        device_name,
        [],
        count,
        (tuple(box[0]), tuple(box[1])),
        timings,
        dropped,
        True,
        anatomy_filter,
    )


def _candidates_to_nodes(
    probability,
    model_geometry,
    region: Volume,
    box,
    ct: Volume,
    anatomy,
    threshold: float,
    min_volume: float,
    min_voxels: int,
    dtype,
    output: str,
    cancel,
    report,
):
    """Probability on the model grid -> mask on the CT grid -> candidates -> filtered nodes in the whole CT."""
    region_mask = probability_to_mask(Volume(probability, model_geometry), region.geometry, threshold, cancel)
    _check_cancel(cancel)
    report(0.95, "postprocessing")
    candidates, _ = label_instances(region_mask, ct.geometry.spacing_zyx_mm)
    del region_mask
    inside = anatomy.mediastinum_in_box(*box) if anatomy is not None else None
    region_instances, count, dropped = filter_candidates(
        candidates, region.array if anatomy is not None else None, inside, ct.geometry.spacing_zyx_mm, min_volume, min_voxels
    )
    del candidates, inside
    labels = np.zeros(ct.geometry.shape_zyx, dtype)
    (z0, y0, x0), (z1, y1, x1) = box
    labels[z0:z1, y0:y1, x0:x1] = region_instances if output == "instances" else (region_instances > 0)
    return labels, count, dropped


def describe_dropped(count: int, dropped: dict, min_volume_mm3: float, anatomy_filter: bool) -> str:
    """One line: nodes found and candidates dropped per reason."""
    parts = [f"{n} {reason.replace('_', ' ')}" for reason, n in dropped.items() if n]
    text = f"{count} lymph node(s) found"
    if parts:
        text += f"; candidates dropped: {', '.join(parts)}"
    text += f" (minimum node {min_volume_mm3:g} mm3; anatomy filter {'on' if anatomy_filter else 'off'})."
    return text


def _check_cancel(cancel: Optional[CancelToken]) -> None:
    if cancel is not None:
        cancel.raise_if_cancelled()


def _load(model, device_name: str, report) -> LoadedModel:
    if isinstance(model, LoadedModel):
        if str(model.device) != device_name:
            model.network.to(device_name)
            model.device = device_name
        return model
    report(0.01, "loading model")
    return load_model(model, device=device_name)


def _network_probability(region: Volume, loaded: LoadedModel, overlap, tta, batch_size, report, cancel, timings):
    """Resample + normalise ``region`` and run the sliding window: (probability, its geometry, device used)."""
    card = loaded.card
    t0 = time.perf_counter()
    report(0.06, "resampling")
    resampled = resample_volume(region, card.spacing_zyx_mm, "linear", default_value=float(np.min(region.array)))
    image = normalize_ct(resampled.array, card.normalization)
    model_geometry = resampled.geometry
    del resampled
    timings["preprocess"] = time.perf_counter() - t0
    _check_cancel(cancel)
    predictor = WindowPredictor(loaded.network, loaded.device, foreground_channel=card.foreground_channel, batch_size=batch_size)
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
    timings["inference"] = time.perf_counter() - t0
    if predictor.device.type != loaded.device.split(":")[0]:
        loaded.device = str(predictor.device)
    return _from_model_axes(card, probability), model_geometry, str(predictor.device)
