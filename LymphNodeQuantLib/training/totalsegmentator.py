"""Read TotalSegmentator v2 ("total" task) label maps and turn chosen structures into definite background.

The user runs TotalSegmentator themselves (``TotalSegmentator -i ct.nii.gz -o seg.nii.gz --ml``);
this module only reads the result: a multilabel file with the v2 "total" class ids, or a folder of
per-structure binary masks named ``<class_name>.nii.gz`` (TotalSegmentator's default output).
The id table below is TotalSegmentator v2's published "total" class map (117 classes).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Optional, Sequence

import numpy as np

from ..errors import InputError
from ..geometry import Volume

_VERTEBRAE = (
    ["vertebrae_S1", "vertebrae_L5", "vertebrae_L4", "vertebrae_L3", "vertebrae_L2", "vertebrae_L1"]
    + [f"vertebrae_T{n}" for n in range(12, 0, -1)]
    + [f"vertebrae_C{n}" for n in range(7, 0, -1)]
)

#: TotalSegmentator v2, task "total": class id -> name.
TOTALSEG_V2_TOTAL_CLASSES: dict[int, str] = {
    1: "spleen",
    2: "kidney_right",
    3: "kidney_left",
    4: "gallbladder",
    5: "liver",
    6: "stomach",
    7: "pancreas",
    8: "adrenal_gland_right",
    9: "adrenal_gland_left",
    10: "lung_upper_lobe_left",
    11: "lung_lower_lobe_left",
    12: "lung_upper_lobe_right",
    13: "lung_middle_lobe_right",
    14: "lung_lower_lobe_right",
    15: "esophagus",
    16: "trachea",
    17: "thyroid_gland",
    18: "small_bowel",
    19: "duodenum",
    20: "colon",
    21: "urinary_bladder",
    22: "prostate",
    23: "kidney_cyst_left",
    24: "kidney_cyst_right",
    25: "sacrum",
    **{26 + i: name for i, name in enumerate(_VERTEBRAE)},
    51: "heart",
    52: "aorta",
    53: "pulmonary_vein",
    54: "brachiocephalic_trunk",
    55: "subclavian_artery_right",
    56: "subclavian_artery_left",
    57: "common_carotid_artery_right",
    58: "common_carotid_artery_left",
    59: "brachiocephalic_vein_left",
    60: "brachiocephalic_vein_right",
    61: "atrial_appendage_left",
    62: "superior_vena_cava",
    63: "inferior_vena_cava",
    64: "portal_vein_and_splenic_vein",
    65: "iliac_artery_left",
    66: "iliac_artery_right",
    67: "iliac_vena_left",
    68: "iliac_vena_right",
    69: "humerus_left",
    70: "humerus_right",
    71: "scapula_left",
    72: "scapula_right",
    73: "clavicula_left",
    74: "clavicula_right",
    75: "femur_left",
    76: "femur_right",
    77: "hip_left",
    78: "hip_right",
    79: "spinal_cord",
    80: "gluteus_maximus_left",
    81: "gluteus_maximus_right",
    82: "gluteus_medius_left",
    83: "gluteus_medius_right",
    84: "gluteus_minimus_left",
    85: "gluteus_minimus_right",
    86: "autochthon_left",
    87: "autochthon_right",
    88: "iliopsoas_left",
    89: "iliopsoas_right",
    90: "brain",
    91: "skull",
    **{92 + i: f"rib_left_{i + 1}" for i in range(12)},
    **{104 + i: f"rib_right_{i + 1}" for i in range(12)},
    116: "sternum",
    117: "costal_cartilages",
}
TOTALSEG_V2_TOTAL_IDS: dict[str, int] = {name: value for value, name in TOTALSEG_V2_TOTAL_CLASSES.items()}

#: Structures that can never contain a mediastinal lymph node: organs, vessels, airways, bones
#: of the chest. Thyroid, muscles and abdominal organs are left out on purpose (nodes abut them and
#: TotalSegmentator's borders there are loose); users can pass their own list.
DEFAULT_BACKGROUND_CLASSES: tuple[str, ...] = tuple(
    [
        "lung_upper_lobe_left",
        "lung_lower_lobe_left",
        "lung_upper_lobe_right",
        "lung_middle_lobe_right",
        "lung_lower_lobe_right",
        "esophagus",
        "trachea",
        "heart",
        "aorta",
        "pulmonary_vein",
        "brachiocephalic_trunk",
        "subclavian_artery_right",
        "subclavian_artery_left",
        "common_carotid_artery_right",
        "common_carotid_artery_left",
        "brachiocephalic_vein_left",
        "brachiocephalic_vein_right",
        "atrial_appendage_left",
        "superior_vena_cava",
        "inferior_vena_cava",
        "spinal_cord",
        "sternum",
        "costal_cartilages",
        "clavicula_left",
        "clavicula_right",
        "scapula_left",
        "scapula_right",
        "humerus_left",
        "humerus_right",
    ]
    + [name for name in _VERTEBRAE if name[11] in "TC"]
    + [f"rib_{side}_{n}" for side in ("left", "right") for n in range(1, 13)]
)

#: Phantom anatomy name (``synthetic.ANATOMY_LABELS``) -> TotalSegmentator v2 class name.
#: v2 "total" has no pulmonary-artery class (it is in the "heartchambers_highres" task), so the
#: phantom's pulmonary trunk is written as the nearest v2 vessel class, "pulmonary_vein".
PHANTOM_TO_TOTALSEG = {
    "lung_left": "lung_upper_lobe_left",
    "lung_right": "lung_upper_lobe_right",
    "heart": "heart",
    "aorta": "aorta",
    "pulmonary_artery": "pulmonary_vein",
    "superior_vena_cava": "superior_vena_cava",
    "trachea": "trachea",
    "esophagus": "esophagus",
    "vertebrae": "vertebrae_T6",
    "rib": "rib_left_5",
    "sternum": "sternum",
    "costal_cartilage": "costal_cartilages",
    "clavicle": "clavicula_left",
    "liver": "liver",
    "stomach": "stomach",
    "bowel": "colon",
    "thyroid": "thyroid_gland",
}


def class_ids_for(names: Iterable[str]) -> list[int]:
    """v2 "total" ids of class ``names``; unknown names raise :class:`InputError` listing close ones."""
    ids = []
    for name in names:
        if name not in TOTALSEG_V2_TOTAL_IDS:
            close = [known for known in TOTALSEG_V2_TOTAL_IDS if name.split("_")[0] in known][:8]
            raise InputError(f"'{name}' is not a TotalSegmentator v2 'total' class; similar names: {close or 'none'}.")
        ids.append(TOTALSEG_V2_TOTAL_IDS[name])
    return ids


def phantom_anatomy_to_totalseg(anatomy: np.ndarray) -> np.ndarray:
    """Recode a phantom's ``anatomy_labels`` array into a TotalSegmentator v2 multilabel array (uint8).

    Lungs are written as one lobe per side; vertebral bodies as one vertebra, ribs as one rib,
    clavicles as the left one, bowel as colon. Body and lymph nodes
    have no TotalSegmentator class and become 0.
    """
    from ..synthetic import ANATOMY_IDS

    out = np.zeros(anatomy.shape, dtype=np.uint8)
    for phantom_name, totalseg_name in PHANTOM_TO_TOTALSEG.items():
        out[anatomy == ANATOMY_IDS[phantom_name]] = TOTALSEG_V2_TOTAL_IDS[totalseg_name]
    return out


def read_totalseg_map(path: Path) -> Volume:
    """A TotalSegmentator output as one multilabel Volume (v2 "total" ids).

    ``path`` is a multilabel image, or a folder of ``<class_name>.nii.gz`` binary masks.
    """
    from ..io import read_volume

    path = Path(path)
    if path.is_dir():
        masks = sorted(path.glob("*.nii.gz"))
        known = [(m, m.name[: -len(".nii.gz")]) for m in masks if m.name[: -len(".nii.gz")] in TOTALSEG_V2_TOTAL_IDS]
        if not known:
            raise InputError(
                f"'{path}' holds no TotalSegmentator masks named like 'aorta.nii.gz'; "
                "pass the --ml multilabel file or TotalSegmentator's output folder."
            )
        first = read_volume(known[0][0])
        out = np.zeros(first.array.shape, dtype=np.uint8)
        for mask_path, name in known:
            mask = read_volume(mask_path)
            if mask.array.shape != out.shape:
                raise InputError(f"'{mask_path}' has shape {mask.array.shape}, the other masks {out.shape}.")
            out[mask.array > 0] = TOTALSEG_V2_TOTAL_IDS[name]
        return first.with_array(out)
    volume = read_volume(path)
    values = np.unique(volume.array)
    if values.min() < 0 or values.max() > max(TOTALSEG_V2_TOTAL_CLASSES):
        raise InputError(f"'{path}' has values {values.min()}..{values.max()}, outside TotalSegmentator v2 'total' ids 0..117.")
    return volume.with_array(volume.array.astype(np.uint8))


LEFT_LUNG_CLASSES = ("lung_upper_lobe_left", "lung_lower_lobe_left")
RIGHT_LUNG_CLASSES = ("lung_upper_lobe_right", "lung_middle_lobe_right", "lung_lower_lobe_right")


def lung_masks(totalseg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(left, right) lung masks: the union of each side's TotalSegmentator lobes."""
    return tuple(
        np.isin(totalseg, np.asarray(class_ids_for(names), dtype=totalseg.dtype))  # type: ignore[return-value]
        for names in (LEFT_LUNG_CLASSES, RIGHT_LUNG_CLASSES)
    )


def background_mask(totalseg: np.ndarray, class_names: Optional[Sequence[str]] = None) -> np.ndarray:
    """Boolean mask of voxels inside the chosen (default: :data:`DEFAULT_BACKGROUND_CLASSES`) structures."""
    ids = class_ids_for(DEFAULT_BACKGROUND_CLASSES if class_names is None else class_names)
    return np.isin(totalseg, np.asarray(ids, dtype=totalseg.dtype))
