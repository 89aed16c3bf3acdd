"""Per-node measurements of a lymph-node label map: volume, centroid, RECIST axes, 3-D diameter, HU.

Nodes are the 3-D connected components (26-connectivity by default, cc3d) of the non-zero voxels,
numbered 1..N in raster order of the array (z, then y, then x of each node's first voxel), or,
with ``nodes_from="labels"``, the label values of an instance map as given (``node_id`` is then
the label value). RECIST axes follow
:mod:`LymphNodeQuantLib.recist` and are measured in the image's own slice plane (constant k);
``measurement_plane`` says whether that plane is axial.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from .components import CONNECTIVITIES, connected_nodes, instance_nodes, keep_nodes, nodes_at_least
from .errors import InputError
from .geometry import ImageGeometry, Volume
from .io import PathLike, atomic_write
from .recist import max_diameter_3d_mm, recist_axes
from .table_format import csv_text, json_safe

#: RECIST short-axis threshold (mm) for a node to count as enlarged.
ENLARGED_SHORT_AXIS_MM = 10.0

#: Table schema shared by CSV, JSON, README and the Slicer table: (column name, unit, description).
NODE_TABLE_COLUMNS: list[tuple[str, str, str]] = [
    ("node_id", "", "node number: 1..N over 3-D connected components in raster order, or the instance label value"),
    ("voxel_count", "voxels", "number of voxels in the node"),
    ("volume_mm3", "mm3", "voxel count x voxel volume"),
    ("volume_ml", "mL", "volume in millilitres (= cm3)"),
    ("centroid_r_mm", "mm", "centroid, RAS right coordinate (Slicer)"),
    ("centroid_a_mm", "mm", "centroid, RAS anterior coordinate (Slicer)"),
    ("centroid_s_mm", "mm", "centroid, RAS superior coordinate (Slicer)"),
    ("centroid_l_mm", "mm", "centroid, LPS left coordinate (ITK/DICOM)"),
    ("centroid_p_mm", "mm", "centroid, LPS posterior coordinate (ITK/DICOM)"),
    ("centroid_lps_s_mm", "mm", "centroid, LPS superior coordinate (ITK/DICOM)"),
    ("short_axis_mm", "mm", "RECIST short axis: longest chord perpendicular to the long axis, in the slice where it is largest"),
    ("long_axis_mm", "mm", "RECIST long axis (longest chord) in that same slice"),
    ("perpendicular_product_mm2", "mm2", "long_axis_mm x short_axis_mm in that same slice (Lugano 2014 PPD)"),
    ("measurement_slice_index", "", "slice index k (0-based, array axis 0) where the axes were measured"),
    ("max_diameter_3d_mm", "mm", "largest 3-D distance across the node (voxel face centres)"),
    ("mean_hu", "HU", "mean CT value inside the node (empty without a CT)"),
    ("std_hu", "HU", "standard deviation of the CT values inside the node (empty without a CT)"),
    ("enlarged", "", f"true when short_axis_mm >= {ENLARGED_SHORT_AXIS_MM:g} mm"),
    ("measurement_plane", "", "'axial', or the image's own slice plane when the direction matrix is not axial"),
]


@dataclass
class NodeMeasurement:
    """Measurements of one node. Positions in mm, LPS and RAS both given; HU fields are None without a CT."""

    node_id: int
    voxel_count: int
    volume_mm3: float
    volume_ml: float
    centroid_lps_mm: tuple[float, float, float]
    centroid_ras_mm: tuple[float, float, float]
    short_axis_mm: float
    long_axis_mm: float
    perpendicular_product_mm2: float  # long x short axis in the measurement slice (Lugano's PPD)
    measurement_slice_index: int
    max_diameter_3d_mm: float
    mean_hu: Optional[float]
    std_hu: Optional[float]
    enlarged: bool
    measurement_plane: str


def measurement_plane_name(geometry: ImageGeometry) -> str:
    """'axial' or a description of the image's own slice plane (k constant) when it is not axial."""
    if geometry.is_axial:
        return "axial"
    normal = np.abs(np.asarray(geometry.direction_lps)[:, 2])
    closest = ("sagittal", "coronal", "axial")[int(np.argmax(normal))]
    return f"image slice plane (k), not axial; closest to {closest}"


def label_nodes(
    labels: Volume,
    *,
    connectivity: int = 26,
    min_volume_mm3: float = 0.0,
    nodes_from: str = "components",
) -> tuple[np.ndarray, int]:
    """One id per node (uint32 array on the same grid, ids 1..N consecutive) and N.

    ``nodes_from="components"``: 3-D connected components of the non-zero voxels, numbered in
    raster order of their first voxel; ``"labels"``: each non-zero label value is one node,
    numbered in increasing label value. Nodes smaller than ``min_volume_mm3`` are dropped.
    """
    node_ids, reported = _label_nodes(labels, connectivity, min_volume_mm3, nodes_from)
    return node_ids, len(reported)


def _label_nodes(labels: Volume, connectivity: int, min_volume_mm3: float, nodes_from: str) -> tuple[np.ndarray, np.ndarray]:
    """Consecutive node ids 1..N and, for each, the id to report (its label value with ``nodes_from="labels"``)."""
    if nodes_from == "components":
        node_ids, count = connected_nodes(np.asarray(labels.array) != 0, connectivity)
        reported = np.arange(1, count + 1, dtype=np.int64)
    elif nodes_from == "labels":
        if connectivity not in CONNECTIVITIES:
            raise InputError(f"connectivity must be 6, 18 or 26 (3-D neighbourhoods), got {connectivity}.")
        node_ids, reported = instance_nodes(labels.array)
        count = len(reported)
    else:
        raise InputError(f"nodes_from must be 'components' or 'labels', got '{nodes_from}'.")
    if count and min_volume_mm3 > 0:
        keep = nodes_at_least(node_ids, count, labels.geometry.spacing_zyx_mm, min_volume_mm3)
        node_ids, _ = keep_nodes(node_ids, keep)
        reported = reported[keep[1:]] if nodes_from == "labels" else np.arange(1, int(keep[1:].sum()) + 1, dtype=np.int64)
    return node_ids, reported


def measure_nodes(
    labels: Volume,
    ct: Volume | None = None,
    *,
    min_volume_mm3: float = 0.0,
    connectivity: int = 26,
    nodes_from: str = "components",
) -> list[NodeMeasurement]:
    """Measure every node of ``labels`` (3-D connected components of its non-zero voxels).

    ``ct`` (same grid) adds mean/std HU. Spacing and direction come from ``labels.geometry``.
    """
    geometry = labels.geometry
    if ct is not None and not ct.geometry.same_grid(geometry):
        raise InputError(
            "The CT and the label map are on different voxel grids "
            f"(CT {ct.geometry.describe()}; labels {geometry.describe()}); resample the label map onto the CT first."
        )
    node_ids, reported_ids = _label_nodes(labels, connectivity, min_volume_mm3, nodes_from)
    count = len(reported_ids)
    if count == 0:
        return []
    import cc3d

    statistics = cc3d.statistics(node_ids)
    voxel_counts = np.asarray(statistics["voxel_counts"], dtype=np.int64)
    centroids_lps = geometry.index_zyx_to_lps(np.asarray(statistics["centroids"], dtype=float)[1:])
    mean_hu = std_hu = None
    if ct is not None:
        inside = np.flatnonzero(node_ids)  # only node voxels: no full-volume float copies
        ids = node_ids.ravel()[inside]
        values = ct.array.ravel()[inside].astype(np.float64)
        mean_hu = np.bincount(ids, weights=values, minlength=count + 1) / np.maximum(voxel_counts, 1)
        # two-pass variance: numerically safe for large HU offsets
        squares = np.bincount(ids, weights=(values - mean_hu[ids]) ** 2, minlength=count + 1)
        std_hu = np.sqrt(squares / np.maximum(voxel_counts, 1))
    plane = measurement_plane_name(geometry)
    voxel_volume = geometry.voxel_volume_mm3
    measurements = []
    for node, box in enumerate(statistics["bounding_boxes"][1:], start=1):
        if voxel_counts[node] == 0:
            continue
        mask = node_ids[box] == node
        recist = recist_axes(mask, geometry.spacing_zyx_mm)
        short = round(recist.short_axis_mm, 6)
        long = round(recist.long_axis_mm, 6)
        volume = float(voxel_counts[node] * voxel_volume)
        lps = tuple(float(v) for v in centroids_lps[node - 1])
        measurements.append(
            NodeMeasurement(
                node_id=int(reported_ids[node - 1]),
                voxel_count=int(voxel_counts[node]),
                volume_mm3=volume,
                volume_ml=volume / 1000.0,
                centroid_lps_mm=lps,
                centroid_ras_mm=tuple(float(v) for v in ImageGeometry.lps_to_ras(np.asarray(lps))),
                short_axis_mm=short,
                long_axis_mm=long,
                perpendicular_product_mm2=round(long * short, 6),
                measurement_slice_index=int(box[0].start + recist.slice_index),
                max_diameter_3d_mm=round(max_diameter_3d_mm(mask, geometry.spacing_zyx_mm), 6),
                mean_hu=None if mean_hu is None else float(mean_hu[node]),
                std_hu=None if std_hu is None else float(std_hu[node]),
                enlarged=bool(short >= ENLARGED_SHORT_AXIS_MM),
                measurement_plane=plane,
            )
        )
    return measurements


def measurements_to_rows(measurements: Sequence[NodeMeasurement]) -> list[dict]:
    """One dict per node with exactly the keys of :data:`NODE_TABLE_COLUMNS`, in that order (None = no value)."""
    rows = []
    for m in measurements:
        values = {
            "node_id": m.node_id,
            "voxel_count": m.voxel_count,
            "volume_mm3": m.volume_mm3,
            "volume_ml": m.volume_ml,
            "centroid_r_mm": m.centroid_ras_mm[0],
            "centroid_a_mm": m.centroid_ras_mm[1],
            "centroid_s_mm": m.centroid_ras_mm[2],
            "centroid_l_mm": m.centroid_lps_mm[0],
            "centroid_p_mm": m.centroid_lps_mm[1],
            "centroid_lps_s_mm": m.centroid_lps_mm[2],
            "short_axis_mm": m.short_axis_mm,
            "long_axis_mm": m.long_axis_mm,
            "perpendicular_product_mm2": m.perpendicular_product_mm2,
            "measurement_slice_index": m.measurement_slice_index,
            "max_diameter_3d_mm": m.max_diameter_3d_mm,
            "mean_hu": m.mean_hu,
            "std_hu": m.std_hu,
            "enlarged": m.enlarged,
            "measurement_plane": m.measurement_plane,
        }
        rows.append({name: values[name] for name, _, _ in NODE_TABLE_COLUMNS})
    return rows


def node_table_json(measurements: Sequence[NodeMeasurement], metadata: dict | None = None) -> dict:
    """JSON-able table: ``{"columns": [{name, unit, description}], "nodes": [rows], **metadata}``."""
    rows = [json_safe(row) for row in measurements_to_rows(measurements)]
    document = {
        "columns": [{"name": n, "unit": u, "description": d} for n, u, d in NODE_TABLE_COLUMNS],
        "nodes": rows,
    }
    document.update(metadata or {})
    return document


def write_node_table(
    path: PathLike, measurements: Sequence[NodeMeasurement], overwrite: bool = False, metadata: dict | None = None
) -> Path:
    """Write the node table as CSV (``.csv``) or JSON (``.json``); refuses to replace a file unless ``overwrite``."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        text = csv_text([name for name, _, _ in NODE_TABLE_COLUMNS], measurements_to_rows(measurements))
    elif suffix == ".json":
        text = json.dumps(node_table_json(measurements, metadata), indent=2) + "\n"
    else:
        raise InputError(f"Cannot write a node table to '{path}': use a .csv or .json file name.")
    return atomic_write(path, lambda temporary: Path(temporary).write_text(text), overwrite)


def measurement_as_dict(measurement: NodeMeasurement) -> dict:
    """The dataclass as a plain dict (tuples kept), e.g. for logging."""
    return asdict(measurement)
