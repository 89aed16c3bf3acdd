"""Preprocess each case once (crop to mediastinum, resample, normalise) into a fingerprinted cache.

The steps are the inference pipeline's own functions (:mod:`LymphNodeQuantLib.preprocessing`),
so a model sees at training time exactly what it sees in ``lnq segment``. Each case folder holds
``image.npy`` (normalised float32), ``hu.npy`` (resampled HU, int16), ``label.npy`` (0 background,
1 node, :data:`IGNORE` never-train), ``mediastinum.npy`` (the mediastinum found from the full CT,
:mod:`LymphNodeQuantLib.anatomy`), optionally ``totalseg.npy``, and ``meta.json`` with the
geometry of the preprocessed grid and the fingerprint (settings + source files' size and mtime +
:data:`CACHE_VERSION` + the source of the preprocessing code, :data:`PREPROCESSING_CODE`). A rerun
with the same fingerprint loads the arrays; anything else rebuilds.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ..errors import InputError
from ..geometry import ImageGeometry, Volume
from .dataset import TrainingCase

CACHE_VERSION = 5
logger = logging.getLogger(__name__)

IGNORE = 255  # label value excluded from every loss


@dataclass
class CachedCase:
    case_id: str
    split: str
    annotation: str
    image: np.ndarray  # float32 (z, y, x), normalised
    hu: np.ndarray  # int16 HU on the same grid
    label: np.ndarray  # uint8: 0, 1, IGNORE
    totalseg: Optional[np.ndarray]  # uint8 TotalSegmentator v2 ids, or None
    geometry: ImageGeometry  # of the preprocessed grid (LPS)
    #: uint8 1 inside the mediastinum found from the CT (anatomy.find_chest_anatomy), or None (old caches)
    mediastinum: Optional[np.ndarray] = None

    def label_volume(self) -> Volume:
        return Volume((self.label == 1).astype(np.uint8), self.geometry)


#: engine modules whose code decides what a cached case holds (reading, cropping, resampling, normalising,
#: the mediastinum map); their source is part of the fingerprint, so changed code never reuses a stale cache
PREPROCESSING_CODE = ("io.py", "file_integrity.py", "geometry.py", "preprocessing.py", "anatomy.py", "training/cache.py")


def preprocessing_code_digest() -> str:
    package = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for name in PREPROCESSING_CODE:
        digest.update(name.encode() + b"\0" + (package / name).read_bytes())
    return digest.hexdigest()


def case_fingerprint(case: TrainingCase, settings: dict) -> str:
    files = []
    for path in case.source_files:
        path = Path(path)
        members = sorted(path.rglob("*")) if path.is_dir() else [path]
        for member in members:
            stat = member.stat()
            files.append([str(member.name), stat.st_size, stat.st_mtime_ns])
    payload = {
        "version": CACHE_VERSION,
        "code": preprocessing_code_digest(),
        "settings": settings,
        "files": files,
        "ignore": case.ignore_label,
        "annotation": case.annotation,
        "split": case.split,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _geometry_to_dict(geometry: ImageGeometry) -> dict:
    return {
        "shape_zyx": list(map(int, geometry.shape_zyx)),
        "spacing_zyx_mm": list(map(float, geometry.spacing_zyx_mm)),
        "origin_lps_mm": list(map(float, geometry.origin_lps_mm)),
        "direction_lps": np.asarray(geometry.direction_lps, dtype=float).tolist(),
    }


def _geometry_from_dict(values: dict) -> ImageGeometry:
    return ImageGeometry(
        tuple(values["shape_zyx"]),
        tuple(values["spacing_zyx_mm"]),
        tuple(values["origin_lps_mm"]),
        np.asarray(values["direction_lps"]),
    )


def preprocess_case(case: TrainingCase, settings: dict) -> dict[str, object]:
    """Read, crop, resample and normalise one case (arrays + geometry)."""
    from .. import preprocessing as pre
    from ..io import read_volume
    from .totalsegmentator import read_totalseg_map

    ct = read_volume(case.ct_path)
    label = read_volume(case.label_path)
    if not ct.geometry.same_grid(label.geometry):
        if label.array.shape != ct.array.shape:
            label = pre.resample_to_geometry(label, ct.geometry, interpolation="nearest")
        else:  # same voxels, slightly different header (LNQ2023 had such labels): keep voxels
            label = Volume(label.array, ct.geometry)
    totalseg = None
    if case.totalseg_path is not None:
        totalseg = read_totalseg_map(case.totalseg_path)
        if not totalseg.geometry.same_grid(ct.geometry):
            totalseg = pre.resample_to_geometry(totalseg, ct.geometry, interpolation="nearest")
    from ..anatomy import find_chest_anatomy

    anatomy = find_chest_anatomy(ct)  # on the whole CT, before any crop
    start, stop = (0, 0, 0), ct.geometry.shape_zyx
    if settings["crop"] == "mediastinum":
        start, stop = pre.find_mediastinum_box(ct, margin_mm=settings["crop_margin_mm"], anatomy=anatomy)
        ct, label = pre.crop_volume(ct, start, stop), pre.crop_volume(label, start, stop)
        totalseg = None if totalseg is None else pre.crop_volume(totalseg, start, stop)
    mediastinum = ct.with_array(anatomy.mediastinum_in_box(start, stop).astype(np.uint8))
    region_geometry = ct.geometry
    spacing = tuple(settings["spacing_zyx_mm"])
    ct = pre.resample_volume(ct, spacing, interpolation="linear")
    # every map onto the CT's new grid (a map read from NIfTI carries float32-rounded geometry, so its own
    # resampled grid could differ from the CT's by a voxel)
    label = pre.resample_to_geometry(Volume(label.array, region_geometry), ct.geometry, interpolation="nearest")
    if totalseg is not None:
        totalseg = pre.resample_to_geometry(Volume(totalseg.array, region_geometry), ct.geometry, interpolation="nearest")
    mediastinum = pre.resample_to_geometry(mediastinum, ct.geometry, interpolation="nearest")
    raw = label.array
    target = (raw == 1).astype(np.uint8)
    if case.ignore_label is not None:
        target[raw == case.ignore_label] = IGNORE
    return {
        "image": pre.normalize_ct(ct.array, settings["normalization"]).astype(np.float32),
        "hu": np.clip(np.rint(ct.array), -32768, 32767).astype(np.int16),
        "label": target,
        "totalseg": None if totalseg is None else totalseg.array.astype(np.uint8),
        "mediastinum": mediastinum.array.astype(np.uint8),
        "geometry": ct.geometry,
    }


def _atomic_save(path: Path, array: np.ndarray) -> None:
    temporary = path.with_name(f".{path.name}.tmp.npy")
    np.save(temporary, array)
    os.replace(temporary, path)


def load_or_build_case(case: TrainingCase, cache_dir: Path, settings: dict) -> tuple[CachedCase, bool]:
    """The cached case, building it if absent or stale. Returns (case, reused)."""
    folder = Path(cache_dir) / case.case_id
    fingerprint = case_fingerprint(case, settings)
    meta_path = folder / "meta.json"
    reused = False
    if meta_path.exists():
        try:
            meta = json.loads(meta_path.read_text())
            reused = meta.get("fingerprint") == fingerprint
        except json.JSONDecodeError:
            reused = False
    if not reused:
        arrays = preprocess_case(case, settings)
        folder.mkdir(parents=True, exist_ok=True)
        meta_path.unlink(missing_ok=True)  # the arrays are replaced first, the meta (the seal) last
        for name in ("image", "hu", "label", "totalseg", "mediastinum"):
            if arrays[name] is not None:
                _atomic_save(folder / f"{name}.npy", arrays[name])
            else:
                (folder / f"{name}.npy").unlink(missing_ok=True)
        meta = {
            "fingerprint": fingerprint,
            "case_id": case.case_id,
            "split": case.split,
            "annotation": case.annotation,
            "geometry": _geometry_to_dict(arrays["geometry"]),
            "settings": settings,
        }
        meta_path.write_text(json.dumps(meta, indent=1))
    totalseg_path, mediastinum_path = folder / "totalseg.npy", folder / "mediastinum.npy"
    cached = CachedCase(
        case.case_id,
        case.split,
        case.annotation,
        np.load(folder / "image.npy"),
        np.load(folder / "hu.npy"),
        np.load(folder / "label.npy"),
        np.load(totalseg_path) if totalseg_path.exists() else None,
        _geometry_from_dict(meta["geometry"]),
        np.load(mediastinum_path) if mediastinum_path.exists() else None,
    )
    return cached, reused


def build_cache(cases: Sequence[TrainingCase], cache_dir: Path, settings: dict, verbose: bool = False) -> list[CachedCase]:
    """Load every case from the cache, preprocessing the new or changed ones (``verbose``: log each case)."""
    if not cases:
        raise InputError("No cases to preprocess.")
    out = []
    for index, case in enumerate(cases):
        cached, reused = load_or_build_case(case, cache_dir, settings)
        if verbose:
            logger.info(
                f"[{index + 1}/{len(cases)}] {case.case_id}: {'cached' if reused else 'preprocessed'} {cached.image.shape}"
            )
        out.append(cached)
    return out
