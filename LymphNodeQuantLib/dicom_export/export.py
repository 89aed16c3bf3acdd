"""Both DICOM outputs of one segmentation in one call: the SEG and, referencing it, the SR.

:func:`write_dicom_outputs` is what ``lnq segment --dicom-seg/--dicom-sr`` and the Slicer module
call. The SEG gets one segment per node of the node table: the instance labels as they are
(``nodes_from="labels"``), or, for a binary map, its connected components numbered as
:func:`LymphNodeQuantLib.measure.measure_nodes` numbers them (``nodes_from="components"``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

from ..errors import InputError
from ..geometry import Volume
from ..io import PathLike
from ..measure import NodeMeasurement, label_nodes
from ..output_files import written_together
from .algorithm import SegmentationAlgorithm
from .measurement_report import build_dicom_sr
from .segmentation import build_dicom_seg, save_dicom
from .source_series import SourceSeries


def node_map(labels: Volume, nodes_from: str = "labels") -> Volume:
    """One value per node, numbered as the node table numbers them (see :func:`LymphNodeQuantLib.measure.label_nodes`)."""
    if nodes_from == "labels":
        return labels
    node_ids, _ = label_nodes(labels, nodes_from=nodes_from)
    return labels.with_array(node_ids)


def write_dicom_outputs(
    source: SourceSeries,
    labels: Volume,
    measurements: Sequence[NodeMeasurement],
    algorithm: SegmentationAlgorithm,
    seg_path: PathLike,
    sr_path: Optional[PathLike] = None,
    *,
    nodes_from: str = "labels",
    overwrite: bool = False,
) -> dict[str, Path]:
    """Write the DICOM SEG to ``seg_path`` and, with ``sr_path``, the SR that references it; both or neither appear.

    ``measurements`` is the node table of ``labels`` (``measure_nodes(labels, ct, nodes_from=...)``);
    every node must be in both. Returns ``{"dicom_seg": path, "dicom_sr": path}``.
    """
    nodes = node_map(labels, nodes_from)
    segmentation = build_dicom_seg(nodes, source, algorithm)
    report = build_dicom_sr(measurements, segmentation, source, algorithm) if sr_path is not None else None
    if sr_path is not None and Path(sr_path).resolve() == Path(seg_path).resolve():
        raise InputError("The DICOM SEG and SR would be the same file; give them different names.")
    written = {}
    with written_together():
        written["dicom_seg"] = save_dicom(segmentation, seg_path, overwrite)
        if report is not None:
            written["dicom_sr"] = save_dicom(report, sr_path, overwrite)
    return written
