"""Training settings: one JSON-able dataclass, saved with every checkpoint and exported model."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Optional

from ..errors import InputError

STRATEGIES = ("full", "noisy", "masking", "coating", "totalseg", "anatomy", "dbdmp")


def default_architecture() -> dict:
    """Compact PlainConvUNet (features 8-64; first stage in-plane (1, 3, 3) kernels and the first
    down-sampling in-plane only, because CT slices (3 mm) are thicker than the pixels)."""
    from ..models.networks import plain_unet_architecture

    return plain_unet_architecture(features_per_stage=(8, 16, 32, 64))


class _Settings:
    """A nested group of settings: read from and written to JSON by field name (``JSON_NAMES`` renames)."""

    JSON_NAMES: dict = {}

    def __post_init__(self) -> None:
        for setting in fields(self):  # JSON lists become the tuples the defaults are, so equal settings compare equal
            if isinstance(getattr(self, setting.name), list):
                setattr(self, setting.name, tuple(getattr(self, setting.name)))

    @classmethod
    def from_dict(cls, values: Any) -> "_Settings":
        if isinstance(values, cls):
            return values
        if not isinstance(values, dict):
            raise InputError(f"{cls.__name__} must be a JSON object, got {values!r}.")
        python_names = {json_name: name for name, json_name in cls.JSON_NAMES.items()}
        renamed = {python_names.get(key, key): value for key, value in values.items()}
        known = {f.name for f in fields(cls)}
        unknown = set(renamed) - known
        if unknown:
            spelled = sorted(cls.JSON_NAMES.get(name, name) for name in known)
            raise InputError(f"Unknown {cls.__name__} setting(s) {sorted(unknown)}; known: {spelled}.")
        return cls(**renamed)

    def to_dict(self) -> dict:
        return {self.JSON_NAMES.get(f.name, f.name): _plain(getattr(self, f.name)) for f in fields(self)}


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


@dataclass
class NormalizationSettings(_Settings):
    """CT intensity normalisation: clip to ``clip_hu``, then (HU - mean) / std."""

    clip_hu: tuple = (-250.0, 450.0)
    mean: float = 0.0
    std: float = 150.0


@dataclass
class AugmentationSettings(_Settings):
    """Patch augmentation (:class:`.augmentation.PatchAugmenter`)."""

    spatial_probability: float = 0.3
    rotation_deg: float = 15.0  # in-plane only
    scale_range: tuple = (0.85, 1.2)
    elastic_probability: float = 0.0
    intensity_probability: float = 0.15
    mirror_axes: tuple = (1, 2)


@dataclass
class DBDMPSettings(_Settings):
    """The dual-branch pseudo-label method (:mod:`.dbdmp`); ``pseudo_weight`` is the paper's lambda."""

    JSON_NAMES = {"pseudo_weight": "lambda"}

    gamma: float = 0.8
    alpha: float = 0.4
    tau: float = 0.3
    pseudo_weight: float = 2.0
    rampup_fraction: float = 0.4
    aux_dropout: float = 0.3


#: nested settings of :class:`TrainingConfig`: field name -> its settings class
NESTED_SETTINGS = {"normalization": NormalizationSettings, "augmentation": AugmentationSettings, "dbdmp": DBDMPSettings}


@dataclass
class TrainingConfig:
    """Everything that determines a training run (with the data and the seed, the result)."""

    # preprocessing (part of the cache fingerprint)
    spacing_zyx_mm: tuple = (3.0, 1.2, 1.2)
    normalization: NormalizationSettings = field(default_factory=NormalizationSettings)
    crop: str = "mediastinum"  # or "none"
    crop_margin_mm: float = 20.0
    # network
    architecture: dict = field(default_factory=default_architecture)
    patch_size_zyx: tuple = (24, 112, 112)
    # strategy for unlabelled voxels
    strategy: str = "totalseg"
    masking_hu_window: tuple = (-50.0, 170.0)  # unlabelled voxels in this window are "unknown"
    coating_margin_mm: float = 6.0
    totalseg_background_classes: Optional[list] = None  # None: DEFAULT_BACKGROUND_CLASSES
    # totalseg: unlabelled voxels farther than this outside the lungs' per-slice convex hull (the
    # chest wall) are background; None: no such rule (strategies.mediastinum_region)
    mediastinum_margin_mm: Optional[float] = 5.0
    # anatomy: unlabelled soft tissue deeper than this (mm) inside the soft-tissue window is background
    thick_tissue_depth_mm: float = 20.0
    dbdmp_base: str = "masking"  # target the DBDMP supervised loss uses ("masking" or "totalseg")
    dbdmp: DBDMPSettings = field(default_factory=DBDMPSettings)
    # optimisation
    optimizer: str = "adamw"  # or "sgd"
    learning_rate: float = 3e-3
    weight_decay: float = 3e-5
    poly_exponent: float = 0.9
    batch_size: int = 2
    epochs: int = 10
    iterations_per_epoch: int = 50
    foreground_fraction: float = 0.4
    augmentation: AugmentationSettings = field(default_factory=AugmentationSettings)
    mixed_precision: bool = True  # used on CUDA only
    num_threads: int = 0  # 0: leave torch's default
    # start from these network weights instead of random ones (fine-tuning, as nnU-Net's
    # -pretrained_weights): an 'lnq train' checkpoint (.pt or run folder) or an exported model folder
    initial_weights: Optional[str] = None
    # validation
    validate_every: int = 1
    sliding_window_overlap: float = 0.25
    seed: int = 0

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise InputError(f"Unknown strategy '{self.strategy}'; choose one of {', '.join(STRATEGIES)}.")
        if self.dbdmp_base not in ("masking", "totalseg", "anatomy"):
            raise InputError(f"dbdmp_base must be 'masking', 'totalseg' or 'anatomy', got '{self.dbdmp_base}'.")
        if self.optimizer not in ("adamw", "sgd"):
            raise InputError(f"optimizer must be 'adamw' or 'sgd', got '{self.optimizer}'.")
        if self.crop not in ("mediastinum", "none"):
            raise InputError(f"crop must be 'mediastinum' or 'none', got '{self.crop}'.")
        self.spacing_zyx_mm = tuple(float(v) for v in self.spacing_zyx_mm)
        self.patch_size_zyx = tuple(int(v) for v in self.patch_size_zyx)
        self.masking_hu_window = tuple(float(v) for v in self.masking_hu_window)
        for name, settings_class in NESTED_SETTINGS.items():
            setattr(self, name, settings_class.from_dict(getattr(self, name)))

    @property
    def total_iterations(self) -> int:
        return self.epochs * self.iterations_per_epoch

    def preprocessing_settings(self) -> dict:
        return {
            "spacing_zyx_mm": list(self.spacing_zyx_mm),
            "normalization": self.normalization.to_dict(),
            "crop": self.crop,
            "crop_margin_mm": self.crop_margin_mm,
        }

    def to_dict(self) -> dict:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values.update({name: getattr(self, name).to_dict() for name in NESTED_SETTINGS})
        return json.loads(json.dumps(values))

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainingConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise InputError(f"Unknown training setting(s) {sorted(unknown)}; known: {sorted(known)}.")
        return cls(**values)

    @classmethod
    def from_file(cls, path: Path) -> "TrainingConfig":
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except (OSError, json.JSONDecodeError) as error:
            raise InputError(f"Cannot read training config '{path}': {error}.") from error


def default_model_config() -> TrainingConfig:
    """Stage 1 of the packaged default model (phantoms only; see ``benchmarks/train_default_model.py``)."""
    return TrainingConfig(
        strategy="totalseg",
        epochs=36,
        iterations_per_epoch=50,
        validate_every=6,
        num_threads=2,
        foreground_fraction=0.5,
        seed=2024,
    )


def default_model_finetune_config(initial_weights: str) -> TrainingConfig:
    """Stage 2 of the packaged default model: :func:`default_model_config` continued from its final
    weights (``initial_weights``) with a fresh poly schedule from a lower learning rate (a warm
    restart) and another seed, so it sees new patches."""
    from dataclasses import replace

    return replace(default_model_config(), learning_rate=1e-3, seed=2025, initial_weights=str(initial_weights))


#: LNQ2023-like CT grid and smaller grids (so the model also sees coarse / small-field scans)
_LNQ_GRID = ((110, 512, 512), (3.0, 0.8, 0.8))


def default_model_dataset() -> dict:
    """The synthetic phantoms the default model is trained on: seeds and grid per seed.

    Training (partial labels, half the nodes annotated): seeds 100-111 at the LNQ2023 grid
    (512 x 512 x 110 at 0.8 x 0.8 x 3 mm), 112-119 at 340 x 340 x 100 / 1.2 mm, 120-125 at
    128 x 128 x 48 / 2.4 mm (``lnq demo --small``'s grid), 126-129 at 96 x 96 x 40 / 3.5 mm.
    Validation (full labels): seeds 900-901 at the LNQ2023 grid. The demo seed (2023) is not used.
    """
    geometries = {}
    for seed in range(100, 112):
        geometries[seed] = _LNQ_GRID
    for seed in range(112, 120):
        geometries[seed] = ((100, 340, 340), (3.0, 1.2, 1.2))
    for seed in range(120, 126):
        geometries[seed] = ((48, 128, 128), (3.0, 2.4, 2.4))
    for seed in range(126, 130):
        geometries[seed] = ((40, 96, 96), (3.0, 3.5, 3.5))
    for seed in (900, 901):
        geometries[seed] = _LNQ_GRID
    return {
        "train_seeds": list(range(100, 130)),
        "validation_seeds": [900, 901],
        "geometries": geometries,
        "annotated_fraction": 0.5,
    }


def default_model_real_config(initial_weights: str, seed: int = 2026) -> TrainingConfig:
    """Stage 3 of the packaged default model: real CTs with implanted nodes mixed with phantoms.

    Continues from the phantom-trained weights (``initial_weights``) with the ``anatomy`` strategy
    (background outside the mediastinum found from the CT, in thick soft tissue and in
    TotalSegmentator structures where a map exists; unlabelled mediastinal soft tissue, where the
    scans' own nodes are, is left out of the loss)."""
    from dataclasses import replace

    return replace(
        default_model_config(),
        strategy="anatomy",
        learning_rate=3e-3,
        epochs=20,
        validate_every=10,
        seed=seed,
        initial_weights=str(initial_weights),
    )


def default_model_real_finetune_config(initial_weights: str) -> TrainingConfig:
    """Stage 4: stage 3 continued from its final weights (a warm restart at 1e-3) on the same data,
    with more patches centred on labelled nodes (0.7), because the implanted real nodes are learnt
    slowly next to the phantoms' easy ones."""
    from dataclasses import replace

    return replace(default_model_real_config(initial_weights, seed=2027), learning_rate=1e-3, epochs=10, foreground_fraction=0.7)


def default_model_real_dataset() -> dict:
    """Stage 3's data: every real CT of the shared fixtures with implanted nodes, plus phantoms.

    Five implant variants per real CT (seeds 11-15, 8 nodes each); 6 training phantoms of
    :func:`default_model_dataset` (three at the LNQ2023 grid, one of each smaller grid) so what
    stages 1-2 learnt is not forgotten; 8 phantoms with the extended anatomy (ribs, sternum,
    clavicles, upper abdomen, neck, random scan range) on clinical grids from 0.65 to 0.9 mm
    in-plane and 1.25 to 5 mm slices (seeds 200-207); the two validation phantoms of stages 1-2.
    """
    from .real_dataset import REAL_CHEST_CTS

    phantoms = default_model_dataset()
    geometries = dict(phantoms["geometries"])
    extended_grids = (
        ((110, 512, 512), (3.0, 0.7, 0.7)),
        ((64, 448, 448), (5.0, 0.8, 0.8)),
        ((200, 400, 400), (1.5, 0.9, 0.9)),
        ((240, 512, 512), (1.25, 0.65, 0.65)),
    )
    extended_seeds = list(range(200, 208))
    for index, seed in enumerate(extended_seeds):
        geometries[seed] = extended_grids[index % len(extended_grids)]
    return {
        "real_cts": list(REAL_CHEST_CTS),
        "implant_seeds": [11, 12, 13, 14, 15],
        "nodes_per_case": 8,
        "phantom_train_seeds": [100, 101, 102, 112, 120, 126] + extended_seeds,
        "extended_phantom_seeds": extended_seeds,
        "phantom_validation_seeds": phantoms["validation_seeds"],
        "geometries": geometries,
        "annotated_fraction": phantoms["annotated_fraction"],
    }
