"""DICOM Segmentation (highdicom, BINARY) of the lymph nodes: one segment per node, on the source CT's instances.

Segment ``s`` is node ``node_ids[s - 1]`` (increasing node id), labelled and tracked as
``"Lymph node N"`` with N the node id of the node table; it carries the SNOMED CT category/type
(Tissue / Lymph node), the anatomic region (Mediastinum), the model as Algorithm Identification
and the node's display colour of :func:`LymphNodeQuantLib.codes.node_color` as CIELab. Frame
``k`` of the label array is written against source instance ``source.datasets[k]``
(:mod:`.source_series` places each instance on its slice), so each SEG frame references the CT
image it outlines; empty frames are left out.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ..codes import Code, node_color
from ..errors import InputError
from ..geometry import Volume
from ..io import PathLike, atomic_write
from .algorithm import MANUFACTURER, SOFTWARE_NAME, SegmentationAlgorithm, coded_concept
from .source_series import SourceSeries, source_attributes_as_given

SEG_SERIES_NUMBER = 900
SEG_CONTENT_LABEL = "LYMPH_NODES"
TRACKING_ID_FORMAT = "Lymph node {node_id}"
_TRACKING_ID_PATTERN = re.compile(r"^Lymph node (\d+)$")
NO_NODE_LABEL = "No lymph node found"
#: Algorithm Family (CID 7162)
ARTIFICIAL_INTELLIGENCE = Code("DCM", "123110", "Artificial Intelligence")


def tracking_id(node_id: int) -> str:
    """Tracking ID (and segment label) of node ``node_id``, shared by the SEG segment and its SR measurements."""
    return TRACKING_ID_FORMAT.format(node_id=int(node_id))


def node_segment_numbers(segmentation) -> dict[int, tuple[int, str]]:
    """{node id: (segment number, tracking UID)} of a SEG written by :func:`build_dicom_seg`."""
    numbers = {}
    for segment in segmentation.SegmentSequence:
        match = _TRACKING_ID_PATTERN.match(str(segment.get("TrackingID", "")))
        if match:
            numbers[int(match.group(1))] = (int(segment.SegmentNumber), str(segment.TrackingUID))
    return numbers


def _segment_description(segment_number: int, node_id: int | None, algorithm: SegmentationAlgorithm):
    """Segment ``segment_number`` for node ``node_id`` (None: the one empty segment of a SEG without nodes)."""
    import highdicom as hd

    red, green, blue = (255.0 * c for c in node_color(node_id or 1))  # the colour node N has in Slicer and .seg.nrrd
    tracking = {} if node_id is None else {"tracking_uid": hd.UID(), "tracking_id": tracking_id(node_id)}
    return hd.seg.SegmentDescription(
        segment_number=segment_number,
        segment_label=NO_NODE_LABEL if node_id is None else tracking_id(node_id),
        segmented_property_category=coded_concept(algorithm.category),
        segmented_property_type=coded_concept(algorithm.type),
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=hd.AlgorithmIdentificationSequence(
            name=algorithm.name, family=coded_concept(ARTIFICIAL_INTELLIGENCE), version=algorithm.version, source=MANUFACTURER
        ),
        anatomic_regions=[coded_concept(algorithm.region)],
        display_color=hd.color.CIELabColor.from_rgb(red, green, blue),
        **tracking,
    )


def _segment_numbers(node_labels: Volume, source: SourceSeries) -> tuple[np.ndarray, list[int]]:
    """The label array with node ids replaced by segment numbers 1..N, and the node ids in segment order."""
    if not node_labels.geometry.same_grid(source.geometry):
        raise InputError(
            "The node label map is not on the DICOM series' grid "
            f"(labels {node_labels.geometry.describe()}; series {source.geometry.describe()}); use the map lnq segment wrote."
        )
    array = np.asarray(node_labels.array)
    if array.dtype.kind not in "biu" or array.min(initial=0) < 0:
        raise InputError(f"A node label map must hold non-negative integers (0 = background), got {array.dtype}.")
    node_ids = [int(v) for v in np.unique(array) if v != 0]
    lookup = np.zeros(int(array.max(initial=0)) + 1, dtype=np.uint16)
    lookup[node_ids] = np.arange(1, len(node_ids) + 1)
    return lookup[array], node_ids


def build_dicom_seg(node_labels: Volume, source: SourceSeries, algorithm: SegmentationAlgorithm):
    """A highdicom ``Segmentation`` of ``node_labels`` (one value per node, 0 = background) on ``source``'s grid.

    With no node at all the SEG holds one empty segment (DICOM requires at least one) labelled
    :data:`NO_NODE_LABEL`, without a tracking ID, and keeps its (empty) frames.
    """
    import highdicom as hd

    segment_array, node_ids = _segment_numbers(node_labels, source)
    descriptions = [_segment_description(number, node, algorithm) for number, node in enumerate(node_ids, start=1)]
    if not descriptions:
        descriptions = [_segment_description(1, None, algorithm)]
    with source_attributes_as_given():
        return hd.seg.Segmentation(
            source_images=list(source.datasets),
            pixel_array=segment_array.astype(np.uint16),
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=descriptions,
            series_instance_uid=hd.UID(),
            series_number=SEG_SERIES_NUMBER,
            sop_instance_uid=hd.UID(),
            instance_number=1,
            manufacturer=MANUFACTURER,
            manufacturer_model_name=SOFTWARE_NAME,
            software_versions=algorithm.software_versions,
            device_serial_number="0",
            content_label=SEG_CONTENT_LABEL,
            content_description=f"Mediastinal lymph nodes, {algorithm.title}"[:64],
            series_description=f"Lymph nodes ({algorithm.title})"[:64],
            omit_empty_frames=bool(node_ids),
        )


def save_dicom(dataset, path: PathLike, overwrite: bool = False) -> Path:
    """Write a DICOM dataset as a DICOM file (preamble + meta header), atomically; refuses to overwrite unless asked."""
    return atomic_write(path, lambda temporary: dataset.save_as(str(temporary), enforce_file_format=True), overwrite)


def write_dicom_seg(
    path: PathLike, node_labels: Volume, source: SourceSeries, algorithm: SegmentationAlgorithm, overwrite: bool = False
):
    """Build the SEG (see :func:`build_dicom_seg`) and write it to ``path``; returns the highdicom dataset."""
    segmentation = build_dicom_seg(node_labels, source, algorithm)
    save_dicom(segmentation, path, overwrite)
    return segmentation
