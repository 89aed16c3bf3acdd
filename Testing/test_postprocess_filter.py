"""Candidate filtering: which candidates cannot be mediastinal lymph nodes, and why."""

import numpy as np

from LymphNodeQuantLib.postprocess import DROP_REASONS, filter_candidates, label_instances


def _scene():
    """Six candidates in a (20, 40, 40) volume at 1 mm, with known HU and mediastinum membership."""
    shape = (20, 40, 40)
    hu = np.full(shape, -100.0, np.float32)  # fat
    mediastinum = np.zeros(shape, bool)
    mediastinum[:, :, :20] = True
    mask = np.zeros(shape, np.uint8)
    boxes = {  # name: (box, HU inside)
        "node": ((slice(2, 6), slice(2, 7), slice(2, 7)), 40.0),
        "bone": ((slice(2, 6), slice(10, 15), slice(2, 7)), 700.0),
        "lung": ((slice(2, 6), slice(20, 25), slice(2, 7)), -800.0),
        "outside": ((slice(10, 14), slice(2, 7), slice(25, 30)), 40.0),
        "tiny": ((slice(10, 11), slice(20, 21), slice(10, 12)), 40.0),
        "half_out": ((slice(10, 14), slice(30, 35), slice(17, 23)), 40.0),  # 3 of 6 columns inside
    }
    for box, value in boxes.values():
        mask[box] = 1
        hu[box] = value
    return mask, hu, mediastinum


def test_each_rule_drops_its_candidates_and_counts_them():
    mask, hu, mediastinum = _scene()
    candidates, count = label_instances(mask, (1.0, 1.0, 1.0))
    assert count == 6
    labels, kept, dropped = filter_candidates(candidates, hu, mediastinum, (1.0, 1.0, 1.0), min_volume_mm3=5.0, min_voxels=4)
    assert kept == 2  # the node, and the one half inside (at least half inside counts)
    assert dropped == {"too_small": 1, "air_or_lung": 1, "bone_or_contrast": 1, "outside_mediastinum": 1}
    assert set(dropped) == set(DROP_REASONS)
    # survivors renumbered 1..N in raster order of their first voxel
    assert labels[3, 4, 4] == 1 and labels[12, 32, 20] == 2 and labels.max() == 2
    assert labels[3, 12, 4] == 0 and labels[12, 4, 27] == 0


def test_without_ct_or_mediastinum_only_the_size_rules_apply():
    mask, _, _ = _scene()
    candidates, _ = label_instances(mask, (1.0, 1.0, 1.0))
    labels, kept, dropped = filter_candidates(candidates, None, None, (1.0, 1.0, 1.0), min_voxels=4)
    assert kept == 5 and dropped["too_small"] == 1 and sum(dropped.values()) == 1


def test_a_single_coarse_voxel_is_never_a_node_even_if_large_in_mm3():
    mask = np.zeros((5, 5, 5), np.uint8)
    mask[2, 2, 2] = 1
    candidates, _ = label_instances(mask, (40.0, 40.0, 40.0))
    _, kept, dropped = filter_candidates(candidates, None, None, (40.0, 40.0, 40.0), min_volume_mm3=65.0, min_voxels=4)
    assert kept == 0 and dropped["too_small"] == 1
