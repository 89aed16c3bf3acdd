"""Implanting synthetic nodes into a real CT: size, attenuation, partial volume, never over lung or bone."""

import numpy as np
import pytest

from LymphNodeQuantLib.anatomy import find_chest_anatomy
from LymphNodeQuantLib.io import read_volume
from LymphNodeQuantLib.measure import measure_nodes
from LymphNodeQuantLib.training.implant import (
    FORBIDDEN_HIGH_HU,
    FORBIDDEN_LOW_HU,
    MIN_CENTRE_DEPTH_MM,
    NODE_HU_RANGE,
    UPPER_STATIONS_SHARE,
    candidate_centres,
    implant_nodes,
    in_upper_mediastinum,
    node_occupancy,
)


@pytest.fixture(scope="module")
def implanted(shared_data):
    ct = read_volume(shared_data / "totalseg-mediastinum" / "ct_cropped.nii.gz")
    return ct, implant_nodes(ct, seed=3, n_nodes=6, short_axis_range_mm=(8.0, 25.0))


def test_nodes_are_placed_in_the_mediastinum_with_the_requested_size(implanted):
    ct, result = implanted
    assert len(result.nodes) == 6
    anatomy = find_chest_anatomy(ct)
    inside = anatomy.mediastinum_in_box((0, 0, 0), ct.geometry.shape_zyx)
    labels = result.labels.array
    spacing = np.asarray(ct.geometry.spacing_zyx_mm)
    for node in result.nodes:  # every centre inside (a large node may reach past the mask's edge)
        assert inside[tuple(np.round(np.asarray(node.center_zyx_mm) / spacing).astype(int))]
    assert inside[labels > 0].mean() > 0.6
    measured = {m.node_id: m for m in measure_nodes(result.labels, result.ct, nodes_from="labels")}
    for node in result.nodes:
        # RECIST short axis of the rasterised node vs its nominal short axis (irregular surface +-8%,
        # clipping at lung/bone, 1.5 mm voxels)
        assert abs(measured[node.label].short_axis_mm - node.nominal_short_axis_mm) < 0.25 * node.nominal_short_axis_mm + 3.0


def test_nodes_sit_where_the_stations_are_not_against_chest_wall_or_diaphragm(shared_data):
    """LIDC-IDRI-0002 (whole chest, feet-first z): centres deep in the mediastinum, most in its upper two thirds."""
    from scipy import ndimage

    ct = read_volume(shared_data / "lidc-idri" / "LIDC-IDRI-0002_ct.nrrd")
    anatomy = find_chest_anatomy(ct)
    step = np.asarray(anatomy.step_zyx)
    coarse_spacing = np.asarray(ct.geometry.spacing_zyx_mm) * step
    depth_mm = ndimage.distance_transform_edt(anatomy.mediastinum, sampling=coarse_spacing)
    deep = candidate_centres(ct, anatomy, MIN_CENTRE_DEPTH_MM)
    every = candidate_centres(ct, anatomy)
    assert 0 < len(deep) < len(every)
    assert depth_mm[tuple((deep // step).T)].min() >= MIN_CENTRE_DEPTH_MM
    # "upper" follows the patient's head whatever the array order: flipping z flips the answer
    heights = np.argwhere(anatomy.mediastinum)[:, 0]
    upper = in_upper_mediastinum(every, ct, anatomy)
    superior_is_up = float(np.asarray(ct.geometry.direction_lps)[2, 2]) > 0
    z_coarse = every[:, 0] // step[0]
    third = heights.min() + (heights.max() - heights.min()) / 3.0
    expected = z_coarse >= third if superior_is_up else z_coarse <= heights.max() - (heights.max() - heights.min()) / 3.0
    assert np.mean(upper == expected) > 0.97
    result = implant_nodes(ct, seed=5, n_nodes=12)
    spacing = np.asarray(ct.geometry.spacing_zyx_mm)
    centres = np.array([np.round(np.asarray(n.center_zyx_mm) / spacing).astype(int) for n in result.nodes])
    first_of_cluster = [i for i, n in enumerate(result.nodes) if i == 0 or n.cluster != result.nodes[i - 1].cluster]
    assert depth_mm[tuple((centres[first_of_cluster] // step).T)].min() >= MIN_CENTRE_DEPTH_MM - coarse_spacing.max()
    assert in_upper_mediastinum(centres[first_of_cluster], ct, anatomy).mean() >= UPPER_STATIONS_SHARE - 0.3


def test_attenuation_is_soft_tissue_with_the_scans_noise(implanted):
    ct, result = implanted
    labels, after, before = result.labels.array, result.ct.array.astype(float), ct.array.astype(float)
    for node in result.nodes:
        core = labels == node.label
        assert NODE_HU_RANGE[0] - 25 < np.median(after[core]) < NODE_HU_RANGE[1] + 25
        assert after[core].std() > 3.0  # textured and noisy, not a flat fill
    changed = after != before
    assert not changed[labels == 0].all()  # only near the nodes
    assert np.count_nonzero(changed & (labels == 0)) < 4 * np.count_nonzero(labels)


def test_partial_volume_at_the_boundary(implanted):
    """Fat just outside a node is partly covered: it rises, less than the node's own voxels rose."""
    from scipy import ndimage

    ct, result = implanted
    labels, delta = result.labels.array, result.ct.array.astype(float) - ct.array.astype(float)
    fat = ct.array < -60
    node = labels > 0
    shell = ndimage.binary_dilation(node) & ~node & fat
    core = ndimage.binary_erosion(node) & fat
    assert 0 < np.median(delta[shell]) < 0.8 * np.median(delta[core])


def test_lung_and_bone_voxels_are_never_changed(implanted):
    ct, result = implanted
    before, after = ct.array, result.ct.array
    forbidden = (before < FORBIDDEN_LOW_HU) | (before > FORBIDDEN_HIGH_HU)
    assert np.array_equal(before[forbidden], after[forbidden])
    assert not (result.labels.array[forbidden] > 0).any()


def test_same_seed_same_result_and_no_mediastinum_no_nodes(shared_data, implanted):
    ct, result = implanted
    again = implant_nodes(ct, seed=3, n_nodes=6, short_axis_range_mm=(8.0, 25.0))
    assert np.array_equal(again.ct.array, result.ct.array) and np.array_equal(again.labels.array, result.labels.array)
    abdomen = read_volume(shared_data / "totalseg-example" / "example_ct_sm.nii.gz")
    empty = implant_nodes(abdomen, seed=1)
    assert empty.nodes == [] and not empty.labels.array.any() and np.array_equal(empty.ct.array, abdomen.array)


def test_occupancy_integrates_to_the_ellipsoid_volume():
    spacing = np.array([3.0, 0.8, 0.8])
    semi = np.array([4.0, 5.0, 9.0])
    box, occupancy = node_occupancy((40, 80, 80), spacing, np.array([60.0, 32.0, 32.0]), semi, np.eye(3), ())
    volume_mm3 = occupancy.sum() * spacing.prod()
    assert volume_mm3 == pytest.approx(4 / 3 * np.pi * semi.prod(), rel=0.03)
    assert ((occupancy > 0.05) & (occupancy < 0.95)).any()  # partial voxels at the surface
