"""Write a training dataset of synthetic phantoms in the LNQ2023 layout (with TotalSegmentator-style maps)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from ..geometry import Volume
from ..io import write_volume
from ..synthetic import make_phantom, write_lnq_case
from .dataset import MANIFEST_NAME
from .totalsegmentator import phantom_anatomy_to_totalseg


def write_phantom_dataset(
    folder: Path,
    train_seeds: Sequence[int],
    validation_seeds: Sequence[int] = (),
    shape_zyx: Sequence[int] = (40, 96, 96),
    spacing_zyx_mm: Sequence[float] = (3.0, 3.5, 3.5),
    annotated_fraction: float = 0.5,
    geometries: dict | None = None,
    extended_seeds: Sequence[int] = (),
) -> dict:
    """Phantoms ``train-<seed>`` (partial labels) and ``val-<seed>`` (full labels) plus ``lnq-dataset.json``.

    Each case also gets ``<case>-totalseg.nii.gz``: the phantom anatomy in TotalSegmentator v2 ids.
    ``geometries`` optionally maps a seed to its own ``(shape_zyx, spacing_zyx_mm)``; seeds in
    ``extended_seeds`` get ``make_phantom(extended_anatomy=True)`` (ribs, abdomen, neck...). Existing
    cases with the same manifest entry are reused (generation is seeded, so they are identical).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    manifest_path = folder / MANIFEST_NAME
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {"cases": {}, "phantoms": {}}
    geometries = geometries or {}
    for split, seeds in (("train", train_seeds), ("validation", validation_seeds)):
        for seed in seeds:
            case_id = f"{'train' if split == 'train' else 'val'}-{seed}"
            shape, spacing = geometries.get(seed, (shape_zyx, spacing_zyx_mm))
            extended = int(seed) in set(map(int, extended_seeds))
            recipe = {
                "seed": int(seed),
                "shape_zyx": list(shape),
                "spacing_zyx_mm": list(spacing),
                "annotated_fraction": annotated_fraction,
                **({"extended_anatomy": True} if extended else {}),
            }
            annotation = "partial" if split == "train" else "full"
            if manifest["phantoms"].get(case_id) == recipe and (folder / f"{case_id}-ct.nrrd").exists():
                continue
            phantom = make_phantom(
                shape, spacing, seed=int(seed), annotated_fraction=annotated_fraction, extended_anatomy=extended
            )
            write_lnq_case(phantom, folder, case_id, annotation=annotation, overwrite=True)
            totalseg = Volume(phantom_anatomy_to_totalseg(phantom.anatomy_labels.array), phantom.ct.geometry)
            write_volume(folder / f"{case_id}-totalseg.nii.gz", totalseg, overwrite=True)
            manifest["cases"][case_id] = {"split": split, "annotation": annotation}
            manifest["phantoms"][case_id] = recipe
            manifest_path.write_text(json.dumps(manifest, indent=1))
    return manifest
