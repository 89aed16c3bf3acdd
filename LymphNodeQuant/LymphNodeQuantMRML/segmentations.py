"""Label volumes <-> ``vtkMRMLSegmentationNode``.

* :func:`add_segmentation_node`: one segment per label value, named ``"Lymph node N"`` (N = the
  label value), with SNOMED terminology, a distinct colour, the model's name and version (node
  attributes, and segment tags so they survive a ``.seg.nrrd`` round trip) and the input volume as
  reference geometry.
* :func:`labels_from_segmentation_node`: the segments back as a label volume on a chosen grid.
  Segments named ``"Lymph node N"`` come back with value N, whatever their order, because the
  export goes through a colour table matched by segment name (``vtkSegment.SetLabelValue``
  would empty the segment instead).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

import numpy as np

from LymphNodeQuantLib.errors import InputError
from LymphNodeQuantLib.geometry import ImageGeometry, Volume

from . import terminology
from .transaction import SceneTransaction
from .volumes import _matrix_to_array, geometry_of_volume_node

SEGMENT_NAME_PREFIX = "Lymph node"
_SEGMENT_NAME = re.compile(rf"^{SEGMENT_NAME_PREFIX} (\d+)$")

#: node attributes / segment tags written on every segmentation the module creates
ATTRIBUTE_MODEL_NAME = "LymphNodeQuant.ModelName"
ATTRIBUTE_MODEL_VERSION = "LymphNodeQuant.ModelVersion"
ATTRIBUTE_ENGINE_VERSION = "LymphNodeQuant.EngineVersion"
ATTRIBUTE_DEVICE = "LymphNodeQuant.Device"


def segment_name(label_value: int) -> str:
    return f"{SEGMENT_NAME_PREFIX} {int(label_value)}"


def label_value_from_name(name: str) -> Optional[int]:
    """N for a segment named ``"Lymph node N"``, else None."""
    match = _SEGMENT_NAME.match(name.strip())
    return int(match.group(1)) if match else None


def _card_get(card: Any, key: str, default: Any = None) -> Any:
    if card is None:
        return default
    if isinstance(card, Mapping):
        return card.get(key, default)
    return getattr(card, key, default)


def _lymph_node_label_entry(model_card: Any) -> Optional[Mapping[str, Any]]:
    """The model card's label entry for lymph nodes (value 1), if any."""
    for label in _card_get(model_card, "labels", None) or []:
        if isinstance(label, Mapping) and int(label.get("value", -1)) == 1:
            return label
    return None


@dataclass
class ModelInfo:
    """What is recorded on a segmentation about the model that made it."""

    name: str = ""
    version: str = ""
    device: str = ""
    engine_version: str = ""
    label_entry: Optional[Mapping[str, Any]] = field(default=None, repr=False)

    @classmethod
    def from_card(cls, model_card: Any, device: str = "") -> "ModelInfo":
        from LymphNodeQuantLib import __version__

        return cls(
            name=str(_card_get(model_card, "name", "") or ""),
            version=str(_card_get(model_card, "version", "") or ""),
            device=str(device or ""),
            engine_version=__version__,
            label_entry=_lymph_node_label_entry(model_card),
        )

    def items(self) -> dict[str, str]:
        return {
            ATTRIBUTE_MODEL_NAME: self.name,
            ATTRIBUTE_MODEL_VERSION: self.version,
            ATTRIBUTE_ENGINE_VERSION: self.engine_version,
            ATTRIBUTE_DEVICE: self.device,
        }


def _oriented_image_from_labels(labels: Volume):
    """``vtkOrientedImageData`` (int) holding the label array on its RAS grid."""
    import slicer
    import slicer.util
    import vtk
    from vtk.util import numpy_support

    array = np.asarray(labels.array)
    if array.dtype.kind not in "biu":
        raise InputError(f"A label volume must hold integers; got {array.dtype}.")
    image = slicer.vtkOrientedImageData()
    image.SetDimensions(*reversed(array.shape))
    image.AllocateScalars(vtk.VTK_INT, 1)
    scalars = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())
    scalars[:] = np.ascontiguousarray(array, dtype=np.int32).ravel()
    image.GetPointData().GetScalars().Modified()
    image.SetImageToWorldMatrix(slicer.util.vtkMatrixFromArray(labels.geometry.ijk_to_ras_matrix()))
    return image


def fill_segmentation_node(
    segmentation_node, labels: Volume, model_info: Optional[ModelInfo] = None, reference_volume_node=None
) -> list[str]:
    """Replace the content of ``segmentation_node`` with one segment per non-zero label value.

    Returns the new segment IDs in label order. An all-zero ``labels`` leaves no segments (an empty
    result, not an error).
    """
    import slicer

    model_info = model_info or ModelInfo()
    segmentation = segmentation_node.GetSegmentation()
    segmentation.RemoveAllSegments()
    if reference_volume_node is not None:
        segmentation_node.SetReferenceImageGeometryParameterFromVolumeNode(reference_volume_node)
    image = _oriented_image_from_labels(labels)
    if reference_volume_node is None:
        segmentation.SetConversionParameter(
            slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName(),
            slicer.vtkSegmentationConverter.SerializeImageGeometry(image),
        )
    for key, value in model_info.items().items():
        segmentation_node.SetAttribute(key, value)

    if not np.any(labels.array):
        return []
    if not slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(
        image, segmentation_node, SEGMENT_NAME_PREFIX
    ):
        raise RuntimeError(f"Slicer could not import the label map into '{segmentation_node.GetName()}'.")

    category, type_, region = terminology.codes_from_model_label(model_info.label_entry)
    entry = terminology.terminology_entry(category, type_, region)
    segment_ids = []
    for index in range(segmentation.GetNumberOfSegments()):
        segment_id = segmentation.GetNthSegmentID(index)
        segment = segmentation.GetSegment(segment_id)
        value = segment.GetLabelValue()
        segment.SetName(segment_name(value))
        segment.SetNameAutoGenerated(False)
        segment.SetColor(*terminology.node_color(value))
        segment.SetColorAutoGenerated(False)
        terminology.set_segment_terminology(segment, entry)
        for key, tag_value in model_info.items().items():
            segment.SetTag(key, tag_value)
        segment_ids.append((value, segment_id))
    return [segment_id for _, segment_id in sorted(segment_ids)]


def add_segmentation_node(
    scene, labels: Volume, name: str, *, model_info: Optional[ModelInfo] = None, reference_volume_node=None
):
    """Add a new ``vtkMRMLSegmentationNode`` holding ``labels`` (see :func:`fill_segmentation_node`)."""
    segmentation_node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", scene.GenerateUniqueName(name))
    segmentation_node.CreateDefaultDisplayNodes()
    fill_segmentation_node(segmentation_node, labels, model_info, reference_volume_node)
    if reference_volume_node is not None and reference_volume_node.GetParentTransformNode() is not None:
        segmentation_node.SetAndObserveTransformNodeID(reference_volume_node.GetParentTransformNode().GetID())
    return segmentation_node


def reference_geometry_of_segmentation(segmentation_node) -> Optional[ImageGeometry]:
    """The segmentation's reference image geometry (its master grid), or None when it has none."""
    import slicer
    import vtk

    segmentation = segmentation_node.GetSegmentation()
    text = segmentation.GetConversionParameter(slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName())
    if not text:
        return None
    matrix = vtk.vtkMatrix4x4()
    extent = [0, -1, 0, -1, 0, -1]
    if not slicer.vtkSegmentationConverter.DeserializeImageGeometry(text, matrix, extent):
        return None
    shape_zyx = (extent[5] - extent[4] + 1, extent[3] - extent[2] + 1, extent[1] - extent[0] + 1)
    if min(shape_zyx) < 1:
        return None
    ijk_to_ras = _matrix_to_array(matrix)
    ijk_to_ras[:3, 3] = (ijk_to_ras @ np.array([extent[0], extent[2], extent[4], 1.0]))[:3]
    return ImageGeometry.from_ijk_to_ras_matrix(ijk_to_ras, shape_zyx)


@dataclass
class LabelExport:
    """A segmentation exported to a label volume: the labels and which value is which segment."""

    labels: Volume
    segment_id_by_value: dict[int, str]
    segment_name_by_value: dict[int, str]


def _name_matched_color_table(scene, segmentation):
    """Temporary colour table: "Lymph node N" -> N; other segments get free values above them."""
    segment_ids = [segmentation.GetNthSegmentID(i) for i in range(segmentation.GetNumberOfSegments())]
    names = [segmentation.GetSegment(segment_id).GetName() for segment_id in segment_ids]
    duplicates = {name for name in names if names.count(name) > 1}
    if duplicates:
        raise InputError(f"Segment names must be unique to export label values; rename the duplicates: {sorted(duplicates)}.")
    value_by_id: dict[str, int] = {}
    for segment_id, name in zip(segment_ids, names):
        value = label_value_from_name(name)
        if value is not None and value > 0:
            value_by_id[segment_id] = value
    next_value = max(value_by_id.values(), default=0) + 1
    for segment_id in segment_ids:
        if segment_id not in value_by_id:
            value_by_id[segment_id] = next_value
            next_value += 1
    color_table = scene.AddNewNodeByClass("vtkMRMLColorTableNode", scene.GenerateUniqueName("LymphNodeQuantExportColors"))
    color_table.SetTypeToUser()
    color_table.SetHideFromEditors(True)
    color_table.SetNumberOfColors(next_value)
    color_table.SetColor(0, "Background", 0.0, 0.0, 0.0, 0.0)
    for value in range(1, next_value):
        color_table.SetColor(value, f"(unused {value})", 0.0, 0.0, 0.0, 0.0)
    for segment_id, value in value_by_id.items():
        segment = segmentation.GetSegment(segment_id)
        color_table.SetColor(value, segment.GetName(), *segment.GetColor(), 1.0)
    return color_table, value_by_id


def labels_from_segmentation_node(
    segmentation_node, reference_volume_node=None, geometry: Optional[ImageGeometry] = None
) -> LabelExport:
    """Export all segments to one label volume on the grid of ``reference_volume_node``.

    Or on ``geometry`` when given; without either, on the segmentation's own reference geometry
    (or, when it has none, the smallest box holding all segments). Overlapping segments are
    resolved by Slicer (later segments win).
    """
    if geometry is not None and reference_volume_node is None:
        from .volumes import add_volume_node

        scene = segmentation_node.GetScene() if segmentation_node is not None else None
        if scene is None:
            raise InputError("The segmentation is not in a scene.")
        grid_node = add_volume_node(
            scene, Volume(np.zeros(geometry.shape_zyx, np.uint8), geometry), scene.GenerateUniqueName("LymphNodeQuantGrid")
        )
        try:
            return labels_from_segmentation_node(segmentation_node, grid_node)
        finally:
            for index in reversed(range(grid_node.GetNumberOfDisplayNodes())):
                display_node = grid_node.GetNthDisplayNode(index)
                if display_node is not None:
                    scene.RemoveNode(display_node)
            scene.RemoveNode(grid_node)
    import slicer
    import slicer.util
    import vtk

    if segmentation_node is None:
        raise InputError("No segmentation selected: choose a segmentation node.")
    if not segmentation_node.IsA("vtkMRMLSegmentationNode"):
        raise InputError(f"'{segmentation_node.GetName()}' is a {segmentation_node.GetClassName()}, not a segmentation.")
    scene = segmentation_node.GetScene()
    if scene is None:
        raise InputError(f"Segmentation '{segmentation_node.GetName()}' is not in a scene.")
    segmentation = segmentation_node.GetSegmentation()
    geometry = (
        geometry_of_volume_node(reference_volume_node)
        if reference_volume_node is not None
        else reference_geometry_of_segmentation(segmentation_node)
    )

    if segmentation.GetNumberOfSegments() == 0:
        if geometry is None:
            raise InputError(f"Segmentation '{segmentation_node.GetName()}' is empty and has no reference geometry.")
        return LabelExport(Volume(np.zeros(geometry.shape_zyx, np.uint16), geometry), {}, {})

    temporary = SceneTransaction(scene).__enter__()  # every node the export adds is removed again, error or not
    try:
        color_table, value_by_id = _name_matched_color_table(scene, segmentation)
        labelmap_node = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", scene.GenerateUniqueName("LymphNodeQuantExport"))
        segment_ids = vtk.vtkStringArray()
        for segment_id in value_by_id:
            segment_ids.InsertNextValue(segment_id)
        extent_mode = slicer.vtkSegmentation.EXTENT_REFERENCE_GEOMETRY
        if not slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(
            segmentation_node, segment_ids, labelmap_node, reference_volume_node, extent_mode, color_table
        ):
            raise RuntimeError(f"Slicer could not export '{segmentation_node.GetName()}' to a label map.")
        array = np.array(slicer.util.arrayFromVolume(labelmap_node), copy=True)
        exported_geometry = geometry_of_volume_node(labelmap_node)
    finally:
        # our colour table and label map, its display node, and the "<segmentation>_ColorTable" Slicer adds for it
        temporary.rollback()
    dtype = np.uint8 if array.max(initial=0) < 256 else np.uint16
    labels = Volume(array.astype(dtype), exported_geometry)
    return LabelExport(
        labels,
        {value: segment_id for segment_id, value in value_by_id.items()},
        {value: segmentation.GetSegment(segment_id).GetName() for segment_id, value in value_by_id.items()},
    )


def segment_id_for_label(segmentation_node, label_value: int) -> Optional[str]:
    """ID of the segment named ``"Lymph node <label_value>"``, or None."""
    segmentation = segmentation_node.GetSegmentation()
    segment_id = segmentation.GetSegmentIdBySegmentName(segment_name(label_value))
    return segment_id or None
