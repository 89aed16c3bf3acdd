"""What a lymph-node segment is called and how it looks: SNOMED CT codes and display colours.

Defined once here and used by the engine's ``.seg.nrrd`` writer, the model cards, and the Slicer
module (``LymphNodeQuantMRML``), so a file from ``lnq segment`` and a segmentation made in Slicer
carry the same codes and the same colour for node N.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Optional

#: Slicer terminology contexts the codes come from (both ship with Slicer)
TERMINOLOGY_CONTEXT = "Segmentation category and type - 3D Slicer General Anatomy list"
ANATOMIC_CONTEXT = "Anatomic codes - DICOM master list"


@dataclass(frozen=True)
class Code:
    """A coded concept: (coding scheme designator, code value, code meaning)."""

    scheme: str
    value: str
    meaning: str

    def as_card_entry(self) -> dict[str, str]:
        return {"scheme": self.scheme, "code": self.value, "meaning": self.meaning}


TISSUE = Code("SCT", "85756007", "Tissue")
LYMPH_NODE = Code("SCT", "59441001", "Lymph node")
MEDIASTINUM = Code("SCT", "72410000", "Mediastinum")

#: what the node table measures, as the DICOM SR (TID 1500) codes it: SNOMED CT / DICOM concepts and UCUM units
SHORT_AXIS = Code("SCT", "103340004", "Short axis")
LONG_AXIS = Code("SCT", "103339001", "Long axis")
VOLUME = Code("SCT", "118565006", "Volume")
ATTENUATION_COEFFICIENT = Code("DCM", "112031", "Attenuation Coefficient")
MEAN = Code("SCT", "373098007", "Mean")
STANDARD_DEVIATION = Code("SCT", "386136009", "Standard Deviation")
RECIST_1_1 = Code("DCM", "126081", "RECIST 1.1")
ABSENT = Code("SCT", "272519000", "Absent")  # a report without nodes: "Lymph node: Absent"
MILLIMETRE = Code("UCUM", "mm", "millimeter")
CUBIC_MILLIMETRE = Code("UCUM", "mm3", "cubic millimeter")
HOUNSFIELD_UNIT = Code("UCUM", "[hnsf'U]", "Hounsfield unit")

#: the terminology of a lymph-node label as model cards (model.json) store it
LYMPH_NODE_TERMINOLOGY = {
    "category": TISSUE.as_card_entry(),
    "type": LYMPH_NODE.as_card_entry(),
    "region": MEDIASTINUM.as_card_entry(),
}

#: Distinct, colour-blind-friendly colours (Okabe-Ito, then Tol's muted set) cycled over nodes so
#: neighbouring nodes are told apart in the slice views.
NODE_COLORS_RGB = (
    (0.902, 0.624, 0.000),
    (0.337, 0.706, 0.914),
    (0.000, 0.620, 0.451),
    (0.941, 0.894, 0.259),
    (0.000, 0.447, 0.698),
    (0.835, 0.369, 0.000),
    (0.800, 0.475, 0.655),
    (0.533, 0.800, 0.933),
    (0.267, 0.667, 0.600),
    (0.600, 0.600, 0.200),
    (0.867, 0.800, 0.467),
    (0.800, 0.400, 0.467),
)


def node_color(label_value: int) -> tuple[float, float, float]:
    """Display colour of node ``label_value`` (1-based); a binary "Lymph nodes" segment uses node 1's."""
    return NODE_COLORS_RGB[(int(label_value) - 1) % len(NODE_COLORS_RGB)]


def _code_from(entry: Any, default: Code) -> Code:
    """Read a code from a model card entry (dict with scheme/value/meaning in common spellings)."""
    if not isinstance(entry, Mapping):
        return default
    scheme = entry.get("scheme") or entry.get("scheme_designator") or entry.get("CodingSchemeDesignator") or default.scheme
    value = entry.get("value") or entry.get("code") or entry.get("code_value") or entry.get("CodeValue") or default.value
    meaning = entry.get("meaning") or entry.get("code_meaning") or entry.get("CodeMeaning") or default.meaning
    return Code(str(scheme), str(value), str(meaning))


def codes_from_model_label(label: Optional[Mapping[str, Any]]) -> tuple[Code, Code, Code]:
    """(category, type, region) of a model card's label entry; the SNOMED lymph-node codes by default."""
    terminology = (label or {}).get("terminology") or {}
    return (
        _code_from(terminology.get("category"), TISSUE),
        _code_from(terminology.get("type"), LYMPH_NODE),
        _code_from(terminology.get("region") or terminology.get("anatomic_region"), MEDIASTINUM),
    )


def terminology_entry_text(category: Code = TISSUE, type_: Code = LYMPH_NODE, region: Code = MEDIASTINUM) -> str:
    """Slicer's serialized terminology entry (7 ``~``-separated fields), as ``.seg.nrrd`` files store it.

    Written out here because the engine has no Slicer; the Slicer module builds the same string with
    Slicer's own ``SerializeTerminologyEntry`` and a test checks the two agree.
    """
    code = lambda c: f"{c.scheme}^{c.value}^{c.meaning}"  # noqa: E731
    return "~".join([TERMINOLOGY_CONTEXT, code(category), code(type_), "^^", ANATOMIC_CONTEXT, code(region), "^^"])


def parse_terminology_entry(entry: str) -> dict[str, Code]:
    """Split a serialized entry back into its category, type and region codes (for checks and tests)."""
    parts = entry.split("~")
    if len(parts) < 7:
        return {}

    def code(text: str) -> Code:
        scheme, value, meaning = (text.split("^") + ["", "", ""])[:3]
        return Code(scheme, value, meaning)

    return {"category": code(parts[1]), "type": code(parts[2]), "region": code(parts[5])}
