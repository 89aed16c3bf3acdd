"""Who made the segmentation: the model's name and version and the codes of what it segments.

Both DICOM objects say the same: the SEG in each segment's Algorithm Identification Sequence,
the SR in each measurement group's Algorithm Name/Version. The codes default to
:mod:`LymphNodeQuantLib.codes` (Tissue / Lymph node / Mediastinum) and follow the model card's
label terminology when it has one, exactly as the ``.seg.nrrd`` writer does.
"""

from __future__ import annotations

from dataclasses import dataclass

from .. import __version__
from ..codes import LYMPH_NODE, MEDIASTINUM, TISSUE, Code, codes_from_model_label

#: Manufacturer and model name written into the SEG/SR equipment modules
MANUFACTURER = "LymphNodeQuant"
SOFTWARE_NAME = "LymphNodeQuantLib"


@dataclass(frozen=True)
class SegmentationAlgorithm:
    """Model name and version (from model.json) and the category/type/region codes of its label."""

    name: str
    version: str
    category: Code = TISSUE
    type: Code = LYMPH_NODE
    region: Code = MEDIASTINUM

    @classmethod
    def from_model_card(cls, card) -> "SegmentationAlgorithm":
        """From a :class:`~LymphNodeQuantLib.models.model_folder.ModelCard` (name, version, labels[0] terminology)."""
        label = card.labels[0] if card.labels else None
        category, type_, region = codes_from_model_label(label)
        return cls(card.name, card.version, category, type_, region)

    @property
    def title(self) -> str:
        return f"{self.name} {self.version}"

    @property
    def software_versions(self) -> list[str]:
        return [f"{SOFTWARE_NAME} {__version__}", f"model {self.title}"]


def coded_concept(code: Code):
    """A :mod:`codes` entry as a highdicom ``CodedConcept``."""
    import highdicom as hd

    return hd.sr.CodedConcept(code.value, code.scheme, code.meaning)
