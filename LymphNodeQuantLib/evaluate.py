"""Score a segmentation against a reference exactly as the LNQ2023 challenge did, fast.

LNQ2023 rules, implemented here and cross-checked against a SimpleITK re-implementation in the
tests and in ``benchmarks/metrics_bench.py``:

* foreground: every non-zero voxel (``foreground="nonzero"``, the default: binary maps, instance maps
  and Slicer ``.seg.nrrd`` files alike) or label value 1 only (``"label1"``; the same on LNQ2023's
  0/1 files); a map holding other labels than 0/1 gets a note saying what was scored;
* Dice = 2|P n R| / (|P| + |R|);
* surface = foreground voxels with at least one face (6-)neighbour outside the mask; voxels on
  the image border are *not* surface because of the border (what SimpleITK's contour filters do);
* distances are Euclidean, voxel centre to voxel centre, in mm (spacing applied per axis);
* ASSD = 0.5 * mean(d(pred surface -> ref surface)) + 0.5 * mean(d(ref -> pred)): the mean of the
  two directed means (medpy and MONAI instead pool both distance sets, which weighs the larger
  surface more);
* an empty prediction or an empty reference (or both) gives Dice 0 and ASSD NaN.

HD95 (not an LNQ2023 metric) is the larger of the two directed 95th percentiles (linear
interpolation), as MONAI's ``compute_hausdorff_distance(percentile=95)``.

Speed: nothing is computed on the full volume except the foreground test and its bounding box.
Everything else runs on the union bounding box of both masks (plus one voxel), and distances come
from a KD-tree over the surface voxels (scipy.spatial.cKDTree), which is exact and needs memory
proportional to the surface, not the volume.

Detection: predicted and reference nodes are the 26-connected components of each side's foreground
(or, with ``detection_nodes="labels"``, the instance ids as given; a side whose map holds a
single label value falls back to its components). A predicted and a reference node
*match* when their IoU exceeds ``min_iou`` (default 0: any shared voxel). A reference node is a TP
when it matches any predicted node, else an FN; a predicted node that matches no reference node is
an FP. Sensitivity = TP / reference nodes, precision = matched predicted nodes / predicted nodes.
Both are also reported per RECIST short-axis bin of 2.5 mm (reference short axis for sensitivity,
predicted short axis for precision), as in Fischer et al.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from .components import connected_nodes, instance_nodes
from .errors import InputError
from .geometry import ImageGeometry, Volume
from .io import (
    VOLUME_SUFFIXES,
    PathLike,
    as_label_array,
    atomic_write,
    check_label_map,
    foreground_note,
    read_label_map,
)
from .progress import ProgressCallback
from .table_format import csv_text, json_safe

#: Short-axis bin edges in mm for per-node detection (2.5 mm bins; the last bin is open).
SHORT_AXIS_BIN_EDGES_MM: tuple[float, ...] = (0.0, 2.5, 5.0, 7.5, 10.0, 12.5, 15.0, 17.5, 20.0, math.inf)

#: How NaN ASSD/HD95 values (empty prediction or reference) enter the summary's mean and median.
NAN_POLICIES = ("worst", "omit")


def short_axis_bin_labels(edges: Sequence[float] = SHORT_AXIS_BIN_EDGES_MM) -> list[str]:
    return [f">={low:g}" if math.isinf(high) else f"{low:g}-{high:g}" for low, high in zip(edges[:-1], edges[1:])]


# ---------------------------------------------------------------------------------------- voxel metrics
def foreground_bounding_box(*masks: np.ndarray, margin: int = 1) -> Optional[tuple[slice, slice, slice]]:
    """Union bounding box of the ``True`` voxels of ``masks`` grown by ``margin`` voxels (clipped to the image)."""
    shape = masks[0].shape
    box = []
    for axis in range(3):
        others = tuple(a for a in range(3) if a != axis)
        present = np.zeros(shape[axis], dtype=bool)
        for mask in masks:
            present |= mask.any(axis=others)
        indices = np.flatnonzero(present)
        if indices.size == 0:
            return None
        box.append(slice(max(int(indices[0]) - margin, 0), min(int(indices[-1]) + 1 + margin, shape[axis])))
    return tuple(box)  # type: ignore[return-value]


def surface_voxels(mask: np.ndarray) -> np.ndarray:
    """Voxels of ``mask`` with a face-neighbour outside it; beyond the array border counts as inside.

    Hand-written with shifted views (instead of ``ndimage.binary_erosion``) because it is several
    times faster and makes the border rule explicit.
    """
    mask = np.asarray(mask, dtype=bool)
    interior = mask.copy()
    interior[1:] &= mask[:-1]
    interior[:-1] &= mask[1:]
    interior[:, 1:] &= mask[:, :-1]
    interior[:, :-1] &= mask[:, 1:]
    interior[:, :, 1:] &= mask[:, :, :-1]
    interior[:, :, :-1] &= mask[:, :, 1:]
    return mask & ~interior


@dataclass(frozen=True)
class SurfaceDistanceResult:
    """Directed surface distances (mm) and the metrics made from them; NaN when either surface is empty."""

    assd_mm: float
    hd95_mm: float
    mean_prediction_to_reference_mm: float
    mean_reference_to_prediction_mm: float
    prediction_surface_voxels: int
    reference_surface_voxels: int


def surface_distances(
    prediction_mask: np.ndarray, reference_mask: np.ndarray, spacing_zyx_mm: Sequence[float]
) -> SurfaceDistanceResult:
    """LNQ2023 ASSD (mean of the two directed means) and HD95 for two boolean masks on the same (z, y, x) grid."""
    from scipy.spatial import cKDTree

    prediction_mask = np.asarray(prediction_mask, dtype=bool)
    reference_mask = np.asarray(reference_mask, dtype=bool)
    if prediction_mask.shape != reference_mask.shape:
        raise InputError(f"Masks differ in shape: {prediction_mask.shape} vs {reference_mask.shape} (z, y, x).")
    box = foreground_bounding_box(prediction_mask, reference_mask)
    nan = float("nan")
    if box is None:
        return SurfaceDistanceResult(nan, nan, nan, nan, 0, 0)
    spacing = np.asarray(spacing_zyx_mm, dtype=float)
    offset = np.array([s.start for s in box])
    points = []
    for mask in (prediction_mask, reference_mask):
        points.append((np.argwhere(surface_voxels(mask[box])) + offset) * spacing)
    prediction_points, reference_points = points
    if len(prediction_points) == 0 or len(reference_points) == 0:
        return SurfaceDistanceResult(nan, nan, nan, nan, len(prediction_points), len(reference_points))
    to_reference, _ = cKDTree(reference_points).query(prediction_points, k=1)
    to_prediction, _ = cKDTree(prediction_points).query(reference_points, k=1)
    mean_p2r, mean_r2p = float(to_reference.mean()), float(to_prediction.mean())
    hd95 = max(float(np.percentile(to_reference, 95)), float(np.percentile(to_prediction, 95)))
    return SurfaceDistanceResult(
        0.5 * mean_p2r + 0.5 * mean_r2p, hd95, mean_p2r, mean_r2p, len(prediction_points), len(reference_points)
    )


def dice_coefficient(prediction_mask: np.ndarray, reference_mask: np.ndarray) -> float:
    """Dice of two boolean masks; 0 when either is empty (LNQ2023 convention, also when both are)."""
    box = foreground_bounding_box(prediction_mask, reference_mask, margin=0)
    if box is None:
        return 0.0
    p, r = prediction_mask[box], reference_mask[box]
    size_p, size_r = int(np.count_nonzero(p)), int(np.count_nonzero(r))
    if size_p == 0 or size_r == 0:
        return 0.0
    return 2.0 * int(np.count_nonzero(p & r)) / (size_p + size_r)


# ---------------------------------------------------------------------------------------- detection
@dataclass
class NodeMatch:
    """One node of either side: its id (label value of an instance map, else component number), voxel count,
    RECIST short axis and whether it matched the other side."""

    node_id: int
    voxel_count: int
    short_axis_mm: float
    matched: bool
    best_iou: float


@dataclass
class DetectionResult:
    true_positives: int
    false_positives: int
    false_negatives: int
    sensitivity: float  # NaN without reference nodes
    precision: float  # NaN without predicted nodes
    reference_nodes: list[NodeMatch] = field(default_factory=list)
    prediction_nodes: list[NodeMatch] = field(default_factory=list)


def _node_ids(mask: np.ndarray, labels: Optional[np.ndarray], mode: str) -> tuple[np.ndarray, int, list[int]]:
    """Consecutive node ids 1..count over ``mask`` and, per id, the node's name (label value or component number)."""
    if mode == "components":
        ids, count = connected_nodes(mask, 26)
        return ids, count, list(range(1, count + 1))
    if mode == "labels":
        ids, values = instance_nodes(np.where(mask, labels, 0))  # on the cropped box only
        if len(values) <= 1:  # a binary map holds no instance ids: its nodes are its components
            return _node_ids(mask, None, "components")
        return ids, len(values), [int(v) for v in values]
    raise InputError(f"detection_nodes must be 'components' or 'labels', got '{mode}'.")


def detect_nodes(
    prediction_mask: np.ndarray,
    reference_mask: np.ndarray,
    spacing_zyx_mm: Sequence[float],
    *,
    prediction_labels: Optional[np.ndarray] = None,
    reference_labels: Optional[np.ndarray] = None,
    detection_nodes: str = "components",
    min_iou: float = 0.0,
) -> DetectionResult:
    """Per-node detection (see the module docstring for the matching rule); works on the union bounding box."""
    import cc3d

    from .recist import recist_axes

    box = foreground_bounding_box(prediction_mask, reference_mask, margin=0)
    if box is None:
        return DetectionResult(0, 0, 0, float("nan"), float("nan"))
    crop = lambda array: None if array is None else np.asarray(array)[box]  # noqa: E731
    pred_ids, n_pred, pred_names = _node_ids(
        prediction_mask[box], crop(prediction_labels), "components" if prediction_labels is None else detection_nodes
    )
    ref_ids, n_ref, ref_names = _node_ids(
        reference_mask[box], crop(reference_labels), "components" if reference_labels is None else detection_nodes
    )
    pred_sizes = np.bincount(pred_ids.ravel(), minlength=n_pred + 1)
    ref_sizes = np.bincount(ref_ids.ravel(), minlength=n_ref + 1)
    both = (pred_ids > 0) & (ref_ids > 0)
    pairs, overlap = np.unique(pred_ids[both].astype(np.int64) * (n_ref + 1) + ref_ids[both], return_counts=True)
    pair_pred, pair_ref = pairs // (n_ref + 1), pairs % (n_ref + 1)
    iou = overlap / (pred_sizes[pair_pred] + ref_sizes[pair_ref] - overlap)
    matching = iou > min_iou
    best_pred_iou = np.zeros(n_pred + 1)
    best_ref_iou = np.zeros(n_ref + 1)
    np.maximum.at(best_pred_iou, pair_pred, iou)
    np.maximum.at(best_ref_iou, pair_ref, iou)
    pred_matched = np.zeros(n_pred + 1, dtype=bool)
    ref_matched = np.zeros(n_ref + 1, dtype=bool)
    pred_matched[pair_pred[matching]] = True
    ref_matched[pair_ref[matching]] = True

    def nodes(ids: np.ndarray, count: int, names, sizes, matched, best) -> list[NodeMatch]:
        boxes = cc3d.statistics(ids)["bounding_boxes"] if count else []
        out = []
        for node in range(1, count + 1):
            short = recist_axes(ids[boxes[node]] == node, spacing_zyx_mm).short_axis_mm
            out.append(NodeMatch(names[node - 1], int(sizes[node]), round(short, 6), bool(matched[node]), float(best[node])))
        return out

    reference_nodes = nodes(ref_ids, n_ref, ref_names, ref_sizes, ref_matched, best_ref_iou)
    prediction_nodes = nodes(pred_ids, n_pred, pred_names, pred_sizes, pred_matched, best_pred_iou)
    tp = int(ref_matched[1:].sum())
    matched_predictions = int(pred_matched[1:].sum())
    return DetectionResult(
        true_positives=tp,
        false_positives=n_pred - matched_predictions,
        false_negatives=n_ref - tp,
        sensitivity=tp / n_ref if n_ref else float("nan"),
        precision=matched_predictions / n_pred if n_pred else float("nan"),
        reference_nodes=reference_nodes,
        prediction_nodes=prediction_nodes,
    )


def detection_by_short_axis(
    reference_nodes: Sequence[NodeMatch], prediction_nodes: Sequence[NodeMatch], edges: Sequence[float] = SHORT_AXIS_BIN_EDGES_MM
) -> list[dict]:
    """Counts per short-axis bin: reference nodes / detected (TP), predicted nodes / matched; sensitivity, precision."""
    rows = []
    for label, low, high in zip(short_axis_bin_labels(edges), edges[:-1], edges[1:]):
        refs = [n for n in reference_nodes if low <= n.short_axis_mm < high]
        preds = [n for n in prediction_nodes if low <= n.short_axis_mm < high]
        tp = sum(n.matched for n in refs)
        matched = sum(n.matched for n in preds)
        rows.append(
            {
                "short_axis_bin_mm": label,
                "reference_nodes": len(refs),
                "true_positives": tp,
                "false_negatives": len(refs) - tp,
                "predicted_nodes": len(preds),
                "false_positives": len(preds) - matched,
                "sensitivity": tp / len(refs) if refs else float("nan"),
                "precision": matched / len(preds) if preds else float("nan"),
            }
        )
    return rows


# ---------------------------------------------------------------------------------------- one case
@dataclass
class CaseEvaluation:
    """Scores of one case. NaN means "not defined" (e.g. ASSD with an empty side); see ``empty_*``."""

    case_id: str
    dice: float
    assd_mm: float
    hd95_mm: float
    mean_prediction_to_reference_mm: float
    mean_reference_to_prediction_mm: float
    prediction_volume_ml: float
    reference_volume_ml: float
    empty_prediction: bool
    empty_reference: bool
    true_positives: int
    false_positives: int
    false_negatives: int
    sensitivity: float
    precision: float
    reference_nodes: int
    predicted_nodes: int
    detection_bins: list[dict] = field(default_factory=list)
    resampled_prediction: bool = False
    notes: list[str] = field(default_factory=list)
    reference_node_matches: list[NodeMatch] = field(default_factory=list)  # per reference node: short axis, matched
    prediction_node_matches: list[NodeMatch] = field(default_factory=list)  # per predicted node

    def to_dict(self) -> dict:
        return json_safe(asdict(self))


#: Columns of the per-case CSV written by :func:`write_case_table`.
CASE_TABLE_COLUMNS = (
    "case_id",
    "dice",
    "assd_mm",
    "hd95_mm",
    "mean_prediction_to_reference_mm",
    "mean_reference_to_prediction_mm",
    "prediction_volume_ml",
    "reference_volume_ml",
    "empty_prediction",
    "empty_reference",
    "reference_nodes",
    "predicted_nodes",
    "true_positives",
    "false_positives",
    "false_negatives",
    "sensitivity",
    "precision",
    "resampled_prediction",
    "notes",
)


def resample_labels_onto(labels: Volume, geometry: ImageGeometry) -> Volume:
    """Nearest-neighbour resampling of a label map onto another grid (label values kept; outside = 0)."""
    import SimpleITK as sitk

    source = labels.to_sitk()
    target = sitk.Image([int(v) for v in reversed(geometry.shape_zyx)], source.GetPixelID())
    geometry.apply_to_sitk(target)
    resampled = sitk.Resample(source, target, sitk.Transform(), sitk.sitkNearestNeighbor, 0, source.GetPixelID())
    return Volume(sitk.GetArrayFromImage(resampled), geometry)


def evaluate_case(
    prediction: Volume,
    reference: Volume,
    *,
    foreground: str = "nonzero",
    resample_prediction: bool = False,
    detection: bool = True,
    detection_nodes: str = "components",
    min_iou: float = 0.0,
    case_id: str = "",
) -> CaseEvaluation:
    """Dice, ASSD and HD95 (LNQ2023 rules) and per-node detection of ``prediction`` against ``reference``.

    Both must be on the same voxel grid, or pass ``resample_prediction=True`` to resample the
    prediction onto the reference grid (nearest neighbour). ``foreground``: ``"nonzero"`` (every
    node; binary, instance and ``.seg.nrrd`` maps) or ``"label1"`` (label 1 only). ``detection_nodes``:
    ``"components"`` (26-connected components of each side) or ``"labels"`` (each side's label
    values are node ids, useful for instance maps where nodes touch).
    """
    notes: list[str] = []
    prediction, reference = check_label_map(prediction, "the prediction"), check_label_map(reference, "the reference")
    for volume, name in ((prediction, "the prediction"), (reference, "the reference")):
        note = foreground_note(volume, foreground, name)
        if note:
            notes.append(note)
    resampled = False
    if not prediction.geometry.same_grid(reference.geometry):
        if not resample_prediction:
            raise InputError(
                "The prediction and the reference are on different voxel grids (prediction "
                f"{prediction.geometry.describe()}; reference {reference.geometry.describe()}). Resample the "
                "prediction onto the reference: resample_prediction=True (CLI: --resample-prediction)."
            )
        prediction = resample_labels_onto(prediction, reference.geometry)
        resampled = True
        notes.append("prediction resampled onto the reference grid (nearest neighbour)")
    prediction_mask = as_label_array(prediction, foreground)
    reference_mask = as_label_array(reference, foreground)
    spacing = reference.geometry.spacing_zyx_mm
    voxel_ml = reference.geometry.voxel_volume_mm3 / 1000.0
    box = foreground_bounding_box(prediction_mask, reference_mask, margin=0)
    size_p = int(np.count_nonzero(prediction_mask[box])) if box else 0
    size_r = int(np.count_nonzero(reference_mask[box])) if box else 0
    dice = dice_coefficient(prediction_mask, reference_mask)
    distances = surface_distances(prediction_mask, reference_mask, spacing)
    if size_p == 0:
        notes.append("empty prediction: Dice 0, ASSD/HD95 NaN")
    if size_r == 0:
        notes.append("empty reference: Dice 0, ASSD/HD95 NaN")
    found, bins = _detection(prediction, reference, prediction_mask, reference_mask, detection, detection_nodes, min_iou)
    return CaseEvaluation(
        case_id=case_id,
        dice=dice,
        assd_mm=distances.assd_mm,
        hd95_mm=distances.hd95_mm,
        mean_prediction_to_reference_mm=distances.mean_prediction_to_reference_mm,
        mean_reference_to_prediction_mm=distances.mean_reference_to_prediction_mm,
        prediction_volume_ml=size_p * voxel_ml,
        reference_volume_ml=size_r * voxel_ml,
        empty_prediction=size_p == 0,
        empty_reference=size_r == 0,
        true_positives=found.true_positives,
        false_positives=found.false_positives,
        false_negatives=found.false_negatives,
        sensitivity=found.sensitivity,
        precision=found.precision,
        reference_nodes=len(found.reference_nodes),
        predicted_nodes=len(found.prediction_nodes),
        detection_bins=bins,
        resampled_prediction=resampled,
        notes=notes,
        reference_node_matches=found.reference_nodes,
        prediction_node_matches=found.prediction_nodes,
    )


def _detection(
    prediction: Volume, reference: Volume, prediction_mask, reference_mask, detection: bool, detection_nodes: str, min_iou: float
) -> tuple[DetectionResult, list[dict]]:
    """Per-node detection and its short-axis bins (NaN and no bins when ``detection`` is off)."""
    if not detection:
        nan = float("nan")
        return DetectionResult(0, 0, 0, nan, nan), []
    use_labels = detection_nodes == "labels"
    found = detect_nodes(
        prediction_mask,
        reference_mask,
        reference.geometry.spacing_zyx_mm,
        prediction_labels=prediction.array if use_labels else None,
        reference_labels=reference.array if use_labels else None,
        detection_nodes=detection_nodes,
        min_iou=min_iou,
    )
    return found, detection_by_short_axis(found.reference_nodes, found.prediction_nodes)


# ---------------------------------------------------------------------------------------- many cases
def _finite(values: Sequence[float]) -> np.ndarray:
    array = np.asarray(values, dtype=float)
    return array[np.isfinite(array)]


def _with_nan_policy(values: Sequence[float], nan_policy: str) -> np.ndarray:
    array = np.asarray(values, dtype=float)
    if nan_policy == "omit":
        return array[np.isfinite(array)]
    if nan_policy == "worst":
        finite = array[np.isfinite(array)]
        return np.where(np.isfinite(array), array, finite.max()) if finite.size else array[:0]
    raise InputError(f"Unknown NaN policy '{nan_policy}'; use one of {NAN_POLICIES}.")


def summarize_scores(
    dice: Sequence[float], assd_mm: Sequence[float], hd95_mm: Sequence[float] | None = None, *, nan_policy: str = "worst"
) -> dict:
    """Medians and means over cases. NaN ASSD/HD95 are replaced by the worst (largest) finite value of the
    table (``"worst"``, what LNQ2023 did) or left out (``"omit"``); the summary says which and how many."""
    summary: dict = {"cases": len(dice), "nan_policy": nan_policy}
    dice_values = np.asarray(dice, dtype=float)
    summary["dice_median"] = float(np.median(dice_values)) if dice_values.size else float("nan")
    summary["dice_mean"] = float(np.mean(dice_values)) if dice_values.size else float("nan")
    for name, values in (("assd_mm", assd_mm), ("hd95_mm", hd95_mm)):
        if values is None:
            continue
        raw = np.asarray(values, dtype=float)
        used = _with_nan_policy(raw, nan_policy)
        summary[f"{name}_nan_cases"] = int(np.count_nonzero(~np.isfinite(raw)))
        if nan_policy == "worst" and summary[f"{name}_nan_cases"] and used.size:
            summary[f"{name}_nan_replaced_by"] = float(_finite(raw).max())
        summary[f"{name}_median"] = float(np.median(used)) if used.size else float("nan")
        summary[f"{name}_mean"] = float(np.mean(used)) if used.size else float("nan")
    return summary


def summarize(evaluations: Sequence[CaseEvaluation], *, nan_policy: str = "worst") -> dict:
    """Summary over cases: Dice/ASSD/HD95 medians and means, pooled and per-bin detection counts."""
    summary = summarize_scores(
        [e.dice for e in evaluations], [e.assd_mm for e in evaluations], [e.hd95_mm for e in evaluations], nan_policy=nan_policy
    )
    summary["nan_policy_description"] = (
        "NaN ASSD/HD95 (empty prediction or reference) replaced by the worst finite value over the cases, as LNQ2023 did"
        if nan_policy == "worst"
        else "cases with NaN ASSD/HD95 left out of their mean and median"
    )
    tp = sum(e.true_positives for e in evaluations)
    fp = sum(e.false_positives for e in evaluations)
    fn = sum(e.false_negatives for e in evaluations)
    summary.update(
        true_positives=tp,
        false_positives=fp,
        false_negatives=fn,
        sensitivity_pooled=tp / (tp + fn) if tp + fn else float("nan"),
        precision_pooled=(sum(e.predicted_nodes for e in evaluations) - fp) / sum(e.predicted_nodes for e in evaluations)
        if sum(e.predicted_nodes for e in evaluations)
        else float("nan"),
    )
    for name in ("sensitivity", "precision"):
        values = _finite([getattr(e, name) for e in evaluations])
        summary[f"{name}_median"] = float(np.median(values)) if values.size else float("nan")
        summary[f"{name}_mean"] = float(np.mean(values)) if values.size else float("nan")
    bins = []
    for index, label in enumerate(short_axis_bin_labels()):
        rows = [e.detection_bins[index] for e in evaluations if e.detection_bins]
        counts = {
            key: sum(r[key] for r in rows)
            for key in ("reference_nodes", "true_positives", "false_negatives", "predicted_nodes", "false_positives")
        }
        counts["sensitivity"] = (
            counts["true_positives"] / counts["reference_nodes"] if counts["reference_nodes"] else float("nan")
        )
        counts["precision"] = (
            (counts["predicted_nodes"] - counts["false_positives"]) / counts["predicted_nodes"]
            if counts["predicted_nodes"]
            else float("nan")
        )
        bins.append({"short_axis_bin_mm": label, **counts})
    summary["detection_bins"] = bins
    return json_safe(summary)


_TAG = re.compile(r"([-_.](seg|pred|prediction|label|labels|mask))$", re.I)


def case_id_from_path(path: Path) -> str:
    """Case id of a file: the name without its volume suffix and a trailing -seg/_pred/... tag."""
    name = path.name
    for suffix in sorted(VOLUME_SUFFIXES + (".seg.nrrd",), key=len, reverse=True):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    return _TAG.sub("", name)


def _volume_files(folder: Path, pattern: str) -> dict[str, Path]:
    files = {}
    for path in sorted(folder.glob(pattern)):
        if not path.is_file() or not any(path.name.lower().endswith(s) for s in VOLUME_SUFFIXES):
            continue
        case_id = case_id_from_path(path)
        if case_id in files:
            raise InputError(
                f"Two files in '{folder}' map to case '{case_id}' ({files[case_id].name}, {path.name}); narrow the file pattern."
            )
        files[case_id] = path
    return files


def evaluate_folder(
    prediction_folder: PathLike,
    reference_folder: PathLike,
    *,
    prediction_pattern: str = "*",
    reference_pattern: str = "*-seg.nrrd",
    foreground: str = "nonzero",
    resample_prediction: bool = False,
    detection: bool = True,
    detection_nodes: str = "components",
    min_iou: float = 0.0,
    progress: Optional[ProgressCallback] = None,
) -> list[CaseEvaluation]:
    """Evaluate every reference case; files pair up by case id (name minus suffix and -seg/-pred tags).

    A reference case without a prediction is scored as an empty prediction (Dice 0, ASSD NaN) with a
    note, as the challenge scored missing submissions; predictions without a reference are ignored.
    """
    prediction_folder, reference_folder = Path(prediction_folder), Path(reference_folder)
    for folder in (prediction_folder, reference_folder):
        if not folder.is_dir():
            raise InputError(f"'{folder}' is not a folder; pass folders of label maps for a cohort evaluation.")
    references = _volume_files(reference_folder, reference_pattern)
    if not references:
        raise InputError(
            f"No reference label maps matching '{reference_pattern}' in '{reference_folder}'; set the reference pattern."
        )
    predictions = _volume_files(prediction_folder, prediction_pattern)
    evaluations = []
    for number, (case_id, reference_path) in enumerate(sorted(references.items())):
        if progress:
            progress(number / len(references), f"evaluating {case_id}")
        reference = read_label_map(reference_path)
        if case_id in predictions:
            evaluation = evaluate_case(
                read_label_map(predictions[case_id]),
                reference,
                foreground=foreground,
                resample_prediction=resample_prediction,
                detection=detection,
                detection_nodes=detection_nodes,
                min_iou=min_iou,
                case_id=case_id,
            )
        else:
            evaluation = evaluate_case(
                reference.with_array(np.zeros(reference.array.shape, np.uint8)),
                reference,
                foreground=foreground,
                detection=detection,
                detection_nodes=detection_nodes,
                min_iou=min_iou,
                case_id=case_id,
            )
            evaluation.notes.insert(0, "missing prediction (scored as empty)")
        evaluations.append(evaluation)
    if progress:
        progress(1.0, "done")
    return evaluations


# ---------------------------------------------------------------------------------------- output
def case_table_csv(evaluations: Sequence[CaseEvaluation]) -> str:
    return csv_text(CASE_TABLE_COLUMNS, ({name: getattr(e, name) for name in CASE_TABLE_COLUMNS} for e in evaluations))


def write_case_table(path: PathLike, evaluations: Sequence[CaseEvaluation], overwrite: bool = False) -> Path:
    """Per-case CSV (no value, e.g. a NaN ASSD, is an empty cell: :mod:`.table_format`)."""
    text = case_table_csv(evaluations)
    return atomic_write(path, lambda temporary: Path(temporary).write_text(text), overwrite)


def write_json(path: PathLike, document: dict, overwrite: bool = False) -> Path:
    """JSON with NaN written as ``null``."""
    text = json.dumps(json_safe(document), indent=2) + "\n"
    return atomic_write(path, lambda temporary: Path(temporary).write_text(text), overwrite)
