"""Training cases from real CTs: synthetic nodes implanted into real anatomy (:mod:`.implant`).

Each real CT becomes several cases ``real-<name>-v<seed>`` in the LNQ2023 layout
(``-ct.nrrd`` with the nodes, ``-seg.nrrd`` = implanted nodes only, ``-instances.nrrd`` one id per
node). The scan's own, unlabelled nodes make them partially annotated, as LNQ2023's training
set is; a CT without a mediastinum (an abdominal scan) gets no nodes and teaches background.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from ..io import read_volume, write_volume
from .dataset import MANIFEST_NAME
from .implant import IMPLANT_VERSION, implant_nodes

#: Real CTs in the project's shared fixtures (``shared/data/real``): case name -> path below it.
REAL_CHEST_CTS: dict[str, str] = {
    "lidc-0001": "lidc-idri/LIDC-IDRI-0001_ct.nrrd",
    "lidc-0002": "lidc-idri/LIDC-IDRI-0002_ct.nrrd",
    "lidc-0314": "lidc-idri/LIDC-IDRI-0314_ct_3mm.nrrd",
    "cip-chest": "cip-chest/ct-64.nrrd",
    "totalseg-mediastinum": "totalseg-mediastinum/ct_cropped.nii.gz",
    "totalseg-abdomen": "totalseg-example/example_ct_sm.nii.gz",
}


def write_implanted_cases(
    folder: Path,
    real_root: Path,
    names: Sequence[str],
    variant_seeds: Sequence[int],
    n_nodes: int = 8,
    short_axis_range_mm: tuple[float, float] = (5.0, 35.0),
    split: str = "train",
) -> dict[str, dict]:
    """Write ``real-<name>-v<seed>`` cases into ``folder`` and add them to its manifest; returns the new entries.

    Cases whose recipe is already in the manifest (and whose CT exists) are kept as they are.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    manifest_path = folder / MANIFEST_NAME
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {"cases": {}}
    recipes = manifest.setdefault("implanted", {})
    entries = {}
    for name in names:
        source = Path(real_root) / REAL_CHEST_CTS[name]
        ct = None
        for seed in variant_seeds:
            case_id = f"real-{name}-v{seed}"
            recipe = {
                "source": REAL_CHEST_CTS[name],
                "seed": int(seed),
                "n_nodes": n_nodes,
                "short_axis_range_mm": list(short_axis_range_mm),
                "implant_version": IMPLANT_VERSION,
            }
            entries[case_id] = {"split": split, "annotation": "partial"}
            if recipes.get(case_id) == recipe and (folder / f"{case_id}-ct.nrrd").exists():
                continue
            ct = ct if ct is not None else read_volume(source)
            result = implant_nodes(ct, seed=int(seed), n_nodes=n_nodes, short_axis_range_mm=short_axis_range_mm)
            write_volume(folder / f"{case_id}-ct.nrrd", result.ct, overwrite=True)
            write_volume(
                folder / f"{case_id}-seg.nrrd",
                result.labels.with_array((result.labels.array > 0).astype(np.uint8)),
                overwrite=True,
            )
            write_volume(folder / f"{case_id}-instances.nrrd", result.labels, overwrite=True)
            recipes[case_id] = recipe
            manifest["cases"][case_id] = entries[case_id]
            manifest_path.write_text(json.dumps(manifest, indent=1))
    manifest["cases"].update(entries)
    manifest_path.write_text(json.dumps(manifest, indent=1))
    return entries


def link_subset(source: Path, target: Path, cases: Mapping[str, dict]) -> Path:
    """A dataset folder ``target`` holding only ``cases`` of ``source`` (symbolic links + its own manifest)."""
    source, target = Path(source).resolve(), Path(target)
    target.mkdir(parents=True, exist_ok=True)
    for case_id in cases:
        for path in source.glob(f"{case_id}-*"):
            link = target / path.name
            if not link.exists():
                link.symlink_to(path)
    (target / MANIFEST_NAME).write_text(json.dumps({"cases": dict(cases)}, indent=1))
    return target
