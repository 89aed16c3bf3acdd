"""DICOM Structured Report (Comprehensive 3D SR, TID 1500 Measurement Report) of the node table.

One TID 1411 Volumetric ROI group per node: it references the node's segment in the SEG
(Referenced Segment, with the source images), carries the same tracking ID and UID as that
segment, the finding (category/type of :mod:`LymphNodeQuantLib.codes`) at the Mediastinum, the
model as Algorithm Name/Version, and the node table's numbers (:data:`MEASUREMENTS`): RECIST
short and long axis (mm, method RECIST 1.1, with the CT image they were measured on as source
of measurement), volume (mm3), and mean and standard deviation of the CT values (HU) when the
table has them. Values are written exactly (Floating Point Value beside the decimal string).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

from ..codes import (
    ABSENT,
    ATTENUATION_COEFFICIENT,
    CUBIC_MILLIMETRE,
    HOUNSFIELD_UNIT,
    LONG_AXIS,
    MEAN,
    MILLIMETRE,
    RECIST_1_1,
    SHORT_AXIS,
    STANDARD_DEVIATION,
    VOLUME,
    Code,
)
from ..errors import InputError
from ..io import PathLike
from ..measure import NodeMeasurement
from .algorithm import MANUFACTURER, SegmentationAlgorithm, coded_concept
from .segmentation import NO_NODE_LABEL, node_segment_numbers, save_dicom, tracking_id
from .source_series import SourceSeries, source_attributes_as_given

SR_SERIES_NUMBER = 901
#: Procedure reported (CID 100): the standard has no chest-specific entry
PROCEDURE_REPORTED = Code("LN", "25045-6", "CT unspecified body region")

#: node table column -> (concept name, UCUM unit, derivation, method, measured on the measurement slice)
MEASUREMENTS: dict[str, tuple[Code, Code, Optional[Code], Optional[Code], bool]] = {
    "short_axis_mm": (SHORT_AXIS, MILLIMETRE, None, RECIST_1_1, True),
    "long_axis_mm": (LONG_AXIS, MILLIMETRE, None, RECIST_1_1, True),
    "volume_mm3": (VOLUME, CUBIC_MILLIMETRE, None, None, False),
    "mean_hu": (ATTENUATION_COEFFICIENT, HOUNSFIELD_UNIT, MEAN, None, False),
    "std_hu": (ATTENUATION_COEFFICIENT, HOUNSFIELD_UNIT, STANDARD_DEVIATION, None, False),
}


def _measurements(node: NodeMeasurement, source: SourceSeries) -> list:
    import highdicom as hd

    slice_image = source.dataset_of_slice(node.measurement_slice_index)
    on_slice = [hd.sr.SourceImageForMeasurement(str(slice_image.SOPClassUID), str(slice_image.SOPInstanceUID))]
    items = []
    for column, (name, unit, derivation, method, measured_on_slice) in MEASUREMENTS.items():
        value = getattr(node, column)
        if value is None:  # HU columns without a CT
            continue
        items.append(
            hd.sr.Measurement(
                name=coded_concept(name),
                value=float(value),
                unit=coded_concept(unit),
                derivation=None if derivation is None else coded_concept(derivation),
                method=None if method is None else coded_concept(method),
                referenced_images=on_slice if measured_on_slice else None,
            )
        )
    return items


def _node_group(node: NodeMeasurement, segmentation, segments: dict, source: SourceSeries, algorithm: SegmentationAlgorithm):
    import highdicom as hd

    segment_number, tracking_uid = segments[node.node_id]
    return hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=tracking_uid, identifier=tracking_id(node.node_id)),
        referenced_segment=hd.sr.ReferencedSegment.from_segmentation(segmentation, segment_number),
        finding_category=coded_concept(algorithm.category),
        finding_type=coded_concept(algorithm.type),
        finding_sites=[hd.sr.FindingSite(coded_concept(algorithm.region))],
        algorithm_id=hd.sr.AlgorithmIdentification(name=algorithm.name, version=algorithm.version),
        measurements=_measurements(node, source),
    )


def _no_node_group(algorithm: SegmentationAlgorithm):
    """The one group of a report without nodes (TID 1500 needs one): a TID 1501 group saying "Lymph node: Absent"."""
    import highdicom as hd

    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=NO_NODE_LABEL),
        finding_category=coded_concept(algorithm.category),
        finding_type=coded_concept(algorithm.type),
        finding_sites=[hd.sr.FindingSite(coded_concept(algorithm.region))],
        algorithm_id=hd.sr.AlgorithmIdentification(name=algorithm.name, version=algorithm.version),
        qualitative_evaluations=[hd.sr.QualitativeEvaluation(coded_concept(algorithm.type), coded_concept(ABSENT))],
    )


def build_dicom_sr(measurements: Sequence[NodeMeasurement], segmentation, source: SourceSeries, algorithm: SegmentationAlgorithm):
    """A highdicom ``Comprehensive3DSR`` (TID 1500) with one measurement group per node of ``measurements``.

    ``segmentation`` is the SEG of :func:`.segmentation.build_dicom_seg` (a dataset) on the same
    ``source`` series; node N refers to its segment "Lymph node N". Without nodes the report holds
    one group saying "Lymph node: Absent".
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes
    from pydicom.uid import generate_uid

    segments = node_segment_numbers(segmentation)
    table_ids = sorted(node.node_id for node in measurements)
    if table_ids != sorted(segments):
        raise InputError(
            f"The node table (nodes {table_ids[:8]}) and the DICOM SEG (segments of nodes {sorted(segments)[:8]}) "
            "disagree; measure and export the same label map."
        )
    groups = [_node_group(node, segmentation, segments, source, algorithm) for node in measurements]
    device = hd.sr.DeviceObserverIdentifyingAttributes(
        uid=generate_uid(entropy_srcs=[MANUFACTURER, algorithm.title]),  # one stable UID per model version
        name=MANUFACTURER,
        manufacturer_name=MANUFACTURER,
        model_name=algorithm.title[:64],
    )
    observer = hd.sr.ObserverContext(observer_type=codes.DCM.Device, observer_identifying_attributes=device)
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=coded_concept(PROCEDURE_REPORTED),
        imaging_measurements=groups or [_no_node_group(algorithm)],
    )
    with source_attributes_as_given():
        return hd.sr.Comprehensive3DSR(
            evidence=[*source.datasets, segmentation],
            content=report,
            series_instance_uid=hd.UID(),
            series_number=SR_SERIES_NUMBER,
            sop_instance_uid=hd.UID(),
            instance_number=1,
            manufacturer=MANUFACTURER,
            is_complete=True,
            series_description=f"Lymph node measurements ({algorithm.title})"[:64],
        )


def write_dicom_sr(
    path: PathLike,
    measurements: Sequence[NodeMeasurement],
    segmentation,
    source: SourceSeries,
    algorithm: SegmentationAlgorithm,
    overwrite: bool = False,
):
    """Build the SR (see :func:`build_dicom_sr`) and write it to ``path``; returns the highdicom dataset."""
    report = build_dicom_sr(measurements, segmentation, source, algorithm)
    save_dicom(report, Path(path), overwrite)
    return report
