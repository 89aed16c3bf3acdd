"""CT checks, mediastinum crop (phantom and real CT), resampling and normalisation."""

import numpy as np
import pytest

from LymphNodeQuantLib.errors import InputError
from LymphNodeQuantLib.geometry import ImageGeometry, Volume
from LymphNodeQuantLib.io import read_volume
from LymphNodeQuantLib.log import collected_messages
from LymphNodeQuantLib.preprocessing import (
    check_ct,
    crop_volume,
    find_mediastinum_box,
    normalize_ct,
    resample_to_geometry,
    resample_volume,
)
from LymphNodeQuantLib.synthetic import make_phantom


@pytest.fixture(scope="module")
def phantom():
    return make_phantom((40, 96, 96), (3.0, 3.5, 3.5), seed=1)


def test_check_ct_accepts_ct_and_refuses_bad_input(phantom):
    check_ct(phantom.ct)
    geometry = phantom.ct.geometry
    mr = phantom.ct.with_array(np.random.default_rng(0).uniform(0, 4000, geometry.shape_zyx).astype(np.float32))
    with pytest.raises(InputError, match="do not look like CT"):
        check_ct(mr)
    with_nan = phantom.ct.with_array(phantom.ct.array.astype(np.float32))
    with_nan.array[3, 4, 5] = np.nan
    with pytest.raises(InputError, match="NaN"):
        check_ct(with_nan)
    flat = Volume(np.full((1, 32, 32), -1000, np.int16), ImageGeometry((1, 32, 32), (1, 1, 1)))
    with pytest.raises(InputError, match="2-D"):
        check_ct(flat)


def test_mediastinum_box_contains_all_phantom_nodes(phantom):
    with collected_messages() as messages:
        start, stop = find_mediastinum_box(phantom.ct)
    nodes = np.nonzero(phantom.node_labels.array)
    for axis in range(3):
        assert start[axis] <= nodes[axis].min() and nodes[axis].max() < stop[axis]
    # it really crops: the box is smaller than the image in-plane
    assert (stop[1] - start[1]) * (stop[2] - start[2]) < 0.8 * 96 * 96
    assert "Cropped" in messages[0]
    cropped = crop_volume(phantom.ct, start, stop)
    assert cropped.array.shape == tuple(b - a for a, b in zip(start, stop))
    assert np.allclose(cropped.geometry.origin_lps_mm, phantom.ct.geometry.index_zyx_to_lps(np.array(start, float)))


def test_mediastinum_box_on_real_ct(shared_data):
    ct = read_volume(shared_data / "cip-chest" / "ct-64.nrrd")
    lungs = read_volume(shared_data / "cip-chest" / "wholeLung-64.nrrd").array > 0
    start, stop = find_mediastinum_box(ct, margin_mm=0.0)
    box = np.zeros(lungs.shape, bool)
    box[start[0] : stop[0], start[1] : stop[1], start[2] : stop[2]] = True
    # the mediastinum: between the lungs' medial edges in every slice that holds both lungs well
    middle = lungs.shape[2] // 2
    areas = lungs[:, :, :middle].sum(axis=(1, 2)), lungs[:, :, middle:].sum(axis=(1, 2))
    for z in range(lungs.shape[0]):
        right, left = np.nonzero(lungs[z, :, :middle].any(axis=0))[0], np.nonzero(lungs[z, :, middle:].any(axis=0))[0]
        if all(area[z] > 0.5 * area.max() for area in areas):  # well above the bases (liver dome) and apices
            rows = np.nonzero(lungs[z].any(axis=1))[0]
            between = box[z][rows.min() : rows.max() + 1, right.max() + 1 : middle + left.min()]
            assert between.any(axis=0).all(), z


def test_mediastinum_box_falls_back_without_lungs(shared_data):
    ct = read_volume(shared_data / "totalseg-mediastinum" / "ct_cropped.nii.gz")
    centre = crop_volume(ct, (60, 40, 40), (120, 86, 80))  # heart and great vessels, no lung
    with collected_messages() as messages:
        assert find_mediastinum_box(centre) == ((0, 0, 0), centre.array.shape)
    assert ("No lungs found" in messages[0] or "No mediastinum" in messages[0]) and "whole volume" in messages[-1]


def test_resample_round_trip_keeps_extent(phantom):
    fine = resample_volume(phantom.ct, (3.0, 1.75, 1.75))
    assert fine.array.shape == (40, 192, 192) and fine.array.dtype == np.float32
    # physical centre of the volume is preserved

    def centre(volume):
        return volume.geometry.index_zyx_to_lps((np.array(volume.array.shape) - 1) / 2.0)

    assert np.allclose(centre(fine), centre(phantom.ct), atol=1e-3)
    back = resample_to_geometry(fine, phantom.ct.geometry, "linear")
    assert back.geometry.same_grid(phantom.ct.geometry)
    difference = np.abs(back.array - phantom.ct.array)[2:-2, 4:-4, 4:-4]
    assert np.median(difference) < 15
    labels = resample_volume(phantom.node_labels, (3.0, 1.75, 1.75), "nearest", default_value=0)
    assert labels.array.dtype == phantom.node_labels.array.dtype
    assert set(np.unique(labels.array)) <= set(np.unique(phantom.node_labels.array))


def test_normalize_ct_clips_then_zscores():
    array = np.array([[[-1000, -150, 100, 350, 3000]]], dtype=np.int16)
    result = normalize_ct(array, {"clip_hu": [-150, 350], "mean": 100.0, "std": 50.0})
    assert result.dtype == np.float32
    assert np.allclose(result.ravel(), [-5, -5, 0, 5, 5])
    with pytest.raises(InputError, match="mean"):
        normalize_ct(array, {"clip_hu": [0, 1]})


def test_check_ct_accepts_tight_mediastinal_crop(phantom):
    # no air at all, only mediastinal fat and soft tissue: still CT
    fat_and_tissue = phantom.ct.array.copy()
    fat_and_tissue[fat_and_tissue < -150] = -100
    check_ct(phantom.ct.with_array(fat_and_tissue))
    unrescaled = phantom.ct.with_array((phantom.ct.array.astype(np.int32) + 1024).astype(np.int16))
    with pytest.raises(InputError, match="value - 1024"):
        check_ct(unrescaled)
