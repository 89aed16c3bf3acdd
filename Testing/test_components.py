"""The one definition of "a node" as voxels: components, instance ids, filtering, raster order."""

import numpy as np
import pytest

from LymphNodeQuantLib.components import connected_nodes, instance_nodes, keep_nodes, raster_order
from LymphNodeQuantLib.errors import InputError


def test_instance_ids_keep_label_values_on_both_code_paths():
    labels = np.zeros((4, 5, 6), np.int64)
    labels[0, 0, :2] = 7
    labels[3, 4, 5] = 2
    labels[1, 2, 3] = 40
    for offset in (0, 2**25):  # the lookup table and the sorting path
        shifted = np.where(labels > 0, labels + offset, 0)
        ids, values = instance_nodes(shifted)
        assert values.tolist() == [2 + offset, 7 + offset, 40 + offset]
        assert ids[0, 0, 0] == 2 and ids[3, 4, 5] == 1 and ids[1, 2, 3] == 3 and ids.max() == 3
    with pytest.raises(InputError, match="negative"):
        instance_nodes(-labels)


def test_keep_and_raster_order_renumber_without_gaps():
    mask = np.zeros((3, 6, 6), bool)
    mask[2, 0, 0] = True  # first in raster order only after the block below
    mask[0, 3:5, 3:5] = True
    mask[1, 0, 5] = True
    ids, count = connected_nodes(mask, connectivity=6)
    ordered = raster_order(ids, count)
    assert ordered[0, 3, 3] == 1 and ordered[1, 0, 5] == 2 and ordered[2, 0, 0] == 3
    kept, n = keep_nodes(ordered, np.array([False, True, False, True]))
    assert n == 2 and kept[0, 3, 3] == 1 and kept[1, 0, 5] == 0 and kept[2, 0, 0] == 2
    with pytest.raises(InputError, match="connectivity"):
        connected_nodes(mask, connectivity=8)
