"""SNOMED CT terminology of lymph-node segments, serialized by Slicer itself (codes: ``LymphNodeQuantLib.codes``)."""

from __future__ import annotations

# one definition of the codes and colours, shared with the engine's .seg.nrrd writer
from LymphNodeQuantLib.codes import (  # noqa: E402,F401  (re-exported for the module)
    ANATOMIC_CONTEXT,
    LYMPH_NODE,
    MEDIASTINUM,
    NODE_COLORS_RGB,
    TERMINOLOGY_CONTEXT,
    TISSUE,
    Code,
    codes_from_model_label,
    node_color,
    parse_terminology_entry,
)


def terminology_entry(category: Code = TISSUE, type_: Code = LYMPH_NODE, region: Code = MEDIASTINUM) -> str:
    """Slicer's serialized terminology entry (``vtkSegment.SetTerminology``), built by Slicer itself."""
    from slicer import vtkSlicerTerminologiesModuleLogic

    return vtkSlicerTerminologiesModuleLogic.SerializeTerminologyEntry(
        TERMINOLOGY_CONTEXT,
        category.value, category.scheme, category.meaning,
        type_.value, type_.scheme, type_.meaning,
        "", "", "",
        ANATOMIC_CONTEXT,
        region.value, region.scheme, region.meaning,
        "", "", "",
    )  # fmt: skip


def set_segment_terminology(segment, entry: str) -> None:
    """Store ``entry`` on a ``vtkSegment``; the tag works on every Slicer (``SetTerminology`` only from 5.10)."""
    segment.SetTag(segment.GetTerminologyEntryTagName(), entry)


def segment_terminology(segment) -> str:
    """The serialized terminology entry of a ``vtkSegment`` ("" when it has none), on every Slicer version."""
    import vtk

    value = vtk.reference("")
    return str(value) if segment.GetTag(segment.GetTerminologyEntryTagName(), value) else ""
