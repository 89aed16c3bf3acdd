"""Find training cases on disk: LNQ2023 layout or nnU-Net raw layout.

LNQ2023 layout: a folder of ``<case>-ct.nrrd`` + ``<case>-seg.nrrd`` pairs (label 1 = lymph node).
An optional manifest ``lnq-dataset.json`` flags each case::

    {"cases": {"case_001": {"split": "train", "annotation": "partial"},
               "case_101": {"split": "validation", "annotation": "full"}}}

Without it every case is a partially annotated training case (like LNQ2023's training set).
A TotalSegmentator map per case is picked up from ``<case>-totalseg.nii.gz`` (or ``.nrrd``) or a
``<case>-totalseg/`` folder beside the CT, or from ``totalseg_dir/<case>(.nii.gz|/)``.

nnU-Net raw layout: ``dataset.json``, ``imagesTr/<case>_0000.nii.gz``, ``labelsTr/<case>.nii.gz``;
its labels are taken as partial annotations (the LNQ setting) unless ``annotation="full"``; an
nnU-Net ``"ignore"`` label is honoured (never trained on).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from ..errors import InputError

MANIFEST_NAME = "lnq-dataset.json"
_IMAGE_SUFFIXES = (".nrrd", ".nii.gz", ".nii", ".mha")


@dataclass
class TrainingCase:
    case_id: str
    ct_path: Path
    label_path: Path
    split: str = "train"  # "train" or "validation"
    annotation: str = "partial"  # "partial" or "full"
    totalseg_path: Optional[Path] = None
    ignore_label: Optional[int] = None  # nnU-Net "ignore" label value, if any
    source_files: list = field(default_factory=list)

    def __post_init__(self) -> None:
        self.source_files = [p for p in (self.ct_path, self.label_path, self.totalseg_path) if p is not None]


def _find_totalseg(case_id: str, folder: Path, totalseg_dir: Optional[Path]) -> Optional[Path]:
    candidates = [folder / f"{case_id}-totalseg{suffix}" for suffix in _IMAGE_SUFFIXES] + [folder / f"{case_id}-totalseg"]
    if totalseg_dir is not None:
        candidates += [totalseg_dir / f"{case_id}{suffix}" for suffix in _IMAGE_SUFFIXES] + [totalseg_dir / case_id]
    return next((c for c in candidates if c.exists()), None)


def find_lnq_cases(folder: Path, totalseg_dir: Optional[Path] = None) -> list[TrainingCase]:
    folder = Path(folder)
    cts = sorted(folder.glob("*-ct.nrrd"))
    manifest_path = folder / MANIFEST_NAME
    manifest = {}
    if manifest_path.exists():
        try:
            manifest = json.loads(manifest_path.read_text()).get("cases", {})
        except json.JSONDecodeError as error:
            raise InputError(f"'{manifest_path}' is not valid JSON ({error}); fix or delete it.") from error
    cases = []
    for ct_path in cts:
        case_id = ct_path.name[: -len("-ct.nrrd")]
        label_path = folder / f"{case_id}-seg.nrrd"
        entry = manifest.get(case_id, {})
        if manifest and not entry:
            continue  # a manifest lists the cases to use
        if not label_path.exists():
            raise InputError(f"'{ct_path.name}' has no label '{label_path.name}' in {folder}; add it or remove the CT.")
        split = entry.get("split", "train")
        annotation = entry.get("annotation", "partial" if split == "train" else "full")
        if split not in ("train", "validation") or annotation not in ("partial", "full"):
            raise InputError(f"{manifest_path}: case '{case_id}' needs split train|validation and annotation partial|full.")
        cases.append(TrainingCase(case_id, ct_path, label_path, split, annotation, _find_totalseg(case_id, folder, totalseg_dir)))
    missing = set(manifest) - {c.case_id for c in cases}
    if missing:
        raise InputError(f"{manifest_path} lists case(s) without files: {sorted(missing)[:5]}.")
    return cases


def find_nnunet_cases(folder: Path, totalseg_dir: Optional[Path] = None, annotation: str = "partial") -> list[TrainingCase]:
    folder = Path(folder)
    try:
        dataset = json.loads((folder / "dataset.json").read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise InputError(f"'{folder}/dataset.json' is missing or invalid ({error}).") from error
    suffix = dataset.get("file_ending", ".nii.gz")
    channels = dataset.get("channel_names", dataset.get("modality", {"0": "CT"}))
    if len(channels) != 1:
        raise InputError(f"{folder}: {len(channels)} input channels; LymphNodeQuant trains on CT only (1 channel).")
    ignore_label = dataset.get("labels", {}).get("ignore")
    cases = []
    for label_path in sorted((folder / "labelsTr").glob(f"*{suffix}")):
        case_id = label_path.name[: -len(suffix)]
        ct_path = folder / "imagesTr" / f"{case_id}_0000{suffix}"
        if not ct_path.exists():
            raise InputError(f"nnU-Net dataset {folder}: label '{label_path.name}' has no image '{ct_path.name}'.")
        cases.append(
            TrainingCase(
                case_id,
                ct_path,
                label_path,
                "train",
                annotation,
                _find_totalseg(case_id, folder / "totalsegTr", totalseg_dir),
                ignore_label,
            )
        )
    return cases


def find_cases(folder: Path, totalseg_dir: Optional[Path] = None) -> list[TrainingCase]:
    """Cases of a dataset folder in either layout; a clear error when none are found."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"Dataset folder '{folder}' does not exist.")
    cases = (
        find_nnunet_cases(folder, totalseg_dir) if (folder / "dataset.json").exists() else find_lnq_cases(folder, totalseg_dir)
    )
    if not cases:
        raise InputError(
            f"No cases in '{folder}': expected '<case>-ct.nrrd' + '<case>-seg.nrrd' pairs (LNQ2023 layout) "
            "or an nnU-Net raw folder (dataset.json, imagesTr/, labelsTr/)."
        )
    return cases
