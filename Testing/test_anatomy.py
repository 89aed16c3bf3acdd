"""Lungs and mediastinum found from the CT itself (LymphNodeQuantLib.anatomy), on real CT fixtures."""

import numpy as np
import pytest

from LymphNodeQuantLib.anatomy import find_chest_anatomy
from LymphNodeQuantLib.geometry import ImageGeometry, Volume
from LymphNodeQuantLib.io import read_volume
from LymphNodeQuantLib.preprocessing import crop_volume


def _full(anatomy, mask_name: str) -> np.ndarray:
    box = ((0, 0, 0), anatomy.shape_zyx)
    return anatomy.mediastinum_in_box(*box) if mask_name == "mediastinum" else anatomy.lungs_in_box(*box)


def test_lungs_that_touch_the_image_edge_are_lungs(shared_data):
    """totalseg-mediastinum is cropped through both lungs: they touch the left and right edges."""
    ct = read_volume(shared_data / "totalseg-mediastinum" / "ct_cropped.nii.gz")
    anatomy = find_chest_anatomy(ct)
    lungs = _full(anatomy, "lungs")
    assert lungs[:, :, 0].any() and lungs[:, :, -1].any()  # touching both edges...
    assert anatomy.lung_volume_ml > 1500 and anatomy.has_mediastinum  # ...and still found as lungs
    # the mediastinum lies between them: its voxels are soft tissue / fat / vessels, not lung
    inside = ct.array[_full(anatomy, "mediastinum") & ~lungs]
    assert np.median(inside) > -200


def test_whole_lung_mask_agrees_with_the_reference(shared_data):
    """cip-chest ships a lung mask: ours overlaps it well, and outside air is never lung."""
    ct = read_volume(shared_data / "cip-chest" / "ct-64.nrrd")
    reference = read_volume(shared_data / "cip-chest" / "wholeLung-64.nrrd").array > 0
    lungs = _full(find_chest_anatomy(ct), "lungs")
    dice = 2 * np.count_nonzero(lungs & reference) / (lungs.sum() + reference.sum())
    assert dice > 0.9, dice
    outside_air = (ct.array < -990) & ~reference
    assert np.count_nonzero(lungs & outside_air) < 0.01 * outside_air.sum()


def test_bowel_gas_is_not_lung_and_an_abdominal_scan_has_no_mediastinum(shared_data):
    ct = read_volume(shared_data / "totalseg-example" / "example_ct_sm.nii.gz")
    anatomy = find_chest_anatomy(ct)
    lungs = _full(anatomy, "lungs")
    gas = (ct.array < -900) & (np.arange(ct.array.shape[0]) < 10)[:, None, None]  # lower slices: bowel only
    assert gas.sum() > 1000 and not (lungs & gas).any()
    assert not anatomy.has_mediastinum and not anatomy.mediastinum.any()
    assert "No mediastinum in this scan" in anatomy.messages[-1]


def test_orientation_does_not_change_the_result(shared_data):
    """The same scan stored with flipped x and y axes (direction diag(-1, -1, 1)) gives the same masks."""
    ct = read_volume(shared_data / "cip-chest" / "ct-64.nrrd")
    geometry = ct.geometry
    flipped = Volume(
        np.ascontiguousarray(ct.array[:, ::-1, ::-1]),
        ImageGeometry(geometry.shape_zyx, geometry.spacing_zyx_mm, geometry.origin_lps_mm, np.diag([-1.0, -1.0, 1.0])),
    )
    a, b = find_chest_anatomy(ct), find_chest_anatomy(flipped)
    assert np.array_equal(_full(a, "mediastinum"), _full(b, "mediastinum")[:, ::-1, ::-1])


def test_a_scan_without_lungs_has_no_mediastinum(shared_data):
    ct = read_volume(shared_data / "totalseg-mediastinum" / "ct_cropped.nii.gz")
    anatomy = find_chest_anatomy(crop_volume(ct, (60, 40, 40), (120, 86, 80)))
    assert not anatomy.has_mediastinum


@pytest.mark.slow
def test_lidc_chest_ct_mediastinum(shared_data, full_size):
    """A full-FOV chest CT with values below -1024 outside the scan field (LIDC-IDRI-0001)."""
    ct = read_volume(shared_data / "lidc-idri" / "LIDC-IDRI-0001_ct.nrrd")
    assert ct.array.min() < -1024
    anatomy = find_chest_anatomy(ct)
    assert anatomy.has_mediastinum and 2000 < anatomy.lung_volume_ml < 8000
    mediastinum = _full(anatomy, "mediastinum")
    lungs = _full(anatomy, "lungs")
    # between the lungs: soft tissue, fat, vessels (not lung, not outside air); never the lateral chest wall
    assert np.median(ct.array[mediastinum & ~lungs]) > -200
    for z in (60, 80, 100):
        assert mediastinum[z, 200:300, 230:290].mean() > 0.5, z
        assert not mediastinum[z, :, :60].any() and not mediastinum[z, :, -60:].any()
