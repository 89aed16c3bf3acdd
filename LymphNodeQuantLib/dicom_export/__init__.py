"""DICOM outputs for radiology: a DICOM Segmentation (SEG) of the nodes and a TID 1500 Structured Report (SR).

Both are written with highdicom from a CT read from a DICOM series folder and reference its
instances. ``source_series`` maps each array slice to its source instance, ``segmentation`` writes
the SEG (one segment per node), ``measurement_report`` the SR (one measurement group per node,
referencing its segment), ``export`` both together. highdicom is imported only when writing.
"""

from .algorithm import SegmentationAlgorithm
from .export import node_map, write_dicom_outputs
from .measurement_report import build_dicom_sr, write_dicom_sr
from .segmentation import build_dicom_seg, node_segment_numbers, tracking_id, write_dicom_seg
from .source_series import SourceSeries, read_source_series, require_dicom_folder

__all__ = [
    "SegmentationAlgorithm",
    "SourceSeries",
    "build_dicom_seg",
    "build_dicom_sr",
    "node_map",
    "node_segment_numbers",
    "read_source_series",
    "require_dicom_folder",
    "tracking_id",
    "write_dicom_outputs",
    "write_dicom_seg",
    "write_dicom_sr",
]
