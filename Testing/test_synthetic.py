"""The synthetic chest CT phantom."""

import numpy as np
import pytest

from LymphNodeQuantLib.io import read_volume
from LymphNodeQuantLib.synthetic import ANATOMY_IDS, make_phantom, write_lnq_case

SMALL = dict(shape_zyx=(40, 96, 96), spacing_zyx_mm=(3.0, 3.5, 3.5))


@pytest.fixture(scope="module")
def phantom():
    return make_phantom(seed=7, n_nodes=10, **SMALL)


def test_node_count_and_label_values(phantom):
    labels = phantom.node_labels.array
    values = set(np.unique(labels).tolist()) - {0}
    assert values == {node.label for node in phantom.nodes}
    assert values == set(range(1, len(phantom.nodes) + 1))
    assert 6 <= len(phantom.nodes) <= 10
    for node in phantom.nodes:
        assert node.voxel_count == int((labels == node.label).sum()) > 0


def test_partial_label_is_a_strict_subset(phantom):
    full = phantom.full_labels.array.astype(bool)
    partial = phantom.partial_labels.array.astype(bool)
    assert set(np.unique(phantom.partial_labels.array).tolist()) <= {0, 1}
    assert partial.any() and not np.any(partial & ~full) and (full & ~partial).any()
    annotated = {n.label for n in phantom.nodes if n.annotated}
    assert 0 < len(annotated) < len(phantom.nodes)
    # Annotation is per whole node: a node is either fully in the partial label or absent.
    for node in phantom.nodes:
        inside = partial[phantom.node_labels.array == node.label]
        assert inside.all() if node.annotated else not inside.any()


def test_intensities_match_anatomy(phantom):
    ct, anatomy = phantom.ct.array.astype(float), phantom.anatomy_labels.array
    lung = np.isin(anatomy, [ANATOMY_IDS["lung_left"], ANATOMY_IDS["lung_right"]])
    assert -950 < np.median(ct[lung]) < -750
    # Node cores (eroded, away from partial volume) are soft tissue.
    from scipy import ndimage

    core = ndimage.binary_erosion(phantom.node_labels.array > 0)
    if core.any():
        assert 0 < np.median(ct[core]) < 80
    assert (anatomy[phantom.node_labels.array > 0] == ANATOMY_IDS["lymph_node"]).all()
    assert np.median(ct[anatomy == 0]) < -900  # air outside the body


def test_rendered_nodes_have_their_nominal_short_axis():
    """Each node as drawn (RECIST short axis of its voxels) has the size the generator says it drew."""
    from LymphNodeQuantLib.measure import measure_nodes

    spacing_xy_mm = 2.0
    phantom = make_phantom(seed=3, shape_zyx=(60, 192, 192), spacing_zyx_mm=(3.0, spacing_xy_mm, spacing_xy_mm))
    measured = {m.node_id: m.short_axis_mm for m in measure_nodes(phantom.node_labels, nodes_from="labels")}
    for node in phantom.nodes:
        nominal = node.nominal_short_axis_mm
        # digitisation (one in-plane pixel) plus the shape's irregularity (10%)
        assert abs(measured[node.label] - nominal) <= spacing_xy_mm + 0.1 * nominal, (node.label, nominal, measured[node.label])
    assert min(measured.values()) < 6.0 and max(measured.values()) > 12.0  # small and enlarged nodes both occur


def test_seeded_and_varied():
    a = make_phantom(seed=11, **SMALL)
    b = make_phantom(seed=11, **SMALL)
    c = make_phantom(seed=12, **SMALL)
    assert np.array_equal(a.ct.array, b.ct.array) and np.array_equal(a.node_labels.array, b.node_labels.array)
    assert not np.array_equal(a.ct.array, c.ct.array)


def test_clusters_are_confluent():
    import cc3d

    found = False
    for seed in range(6):
        phantom = make_phantom(seed=seed, cluster_probability=0.9, **SMALL)
        clusters = {}
        for node in phantom.nodes:
            clusters.setdefault(node.cluster, []).append(node.label)
        components = cc3d.connected_components(phantom.node_labels.array > 0, connectivity=26)
        for members in clusters.values():
            if len(members) > 1:
                found = True
                ids = {int(np.unique(components[phantom.node_labels.array == m])[0]) for m in members}
                assert len(ids) == 1, "nodes of a cluster must touch"
    assert found


def test_lnq_layout_round_trip(tmp_path, phantom):
    paths = write_lnq_case(phantom, tmp_path, "case_001", annotation="partial", with_anatomy=True)
    assert paths["ct"].name == "case_001-ct.nrrd" and paths["seg"].name == "case_001-seg.nrrd"
    ct = read_volume(paths["ct"])
    seg = read_volume(paths["seg"])
    assert ct.array.dtype == np.int16 and np.array_equal(ct.array, phantom.ct.array)
    assert np.array_equal(seg.array, phantom.partial_labels.array)
    assert ct.geometry.same_grid(phantom.ct.geometry) and seg.geometry.same_grid(phantom.ct.geometry)
    full = write_lnq_case(phantom, tmp_path / "val", "case_001", annotation="full")
    assert np.array_equal(read_volume(full["seg"]).array, phantom.full_labels.array)


@pytest.mark.slow
def test_default_size_phantom(full_size):
    shape = (110, 512, 512) if full_size else (55, 256, 256)
    spacing = (3.0, 0.8, 0.8) if full_size else (6.0, 1.6, 1.6)
    phantom = make_phantom(seed=0, shape_zyx=shape, spacing_zyx_mm=spacing)
    assert phantom.ct.array.shape == shape
    assert len(phantom.nodes) >= 6
    assert phantom.partial_labels.array.sum() < phantom.full_labels.array.sum()


@pytest.mark.parametrize(
    "options, digest",
    [
        ({"seed": 1}, "e39924a7b0caf413"),
        ({"seed": 7, "n_nodes": 10}, "f297cd72edd0eb04"),
        ({"seed": 3, "extended_anatomy": True}, "e644492d402b93c2"),
        ({"seed": 5, "extended_anatomy": True, "scan_range": (0.1, 0.9)}, "c5b711334a64d492"),
    ],
)
def test_phantoms_are_the_ones_the_packaged_model_was_trained_on(options, digest):
    """A seed gives the same phantom bit for bit: the default model's recipe (benchmarks/train_default_model.py)
    regenerates its training data from seeds, so any change to the generator must be deliberate (and retrain)."""
    import hashlib

    phantom = make_phantom((40, 96, 96), (3.0, 3.5, 3.5), **options)
    content = hashlib.sha256()
    for volume in (phantom.ct, phantom.node_labels, phantom.partial_labels, phantom.anatomy_labels):
        content.update(np.ascontiguousarray(volume.array).tobytes())
    content.update(repr([(n.label, n.annotated, round(n.nominal_short_axis_mm, 9)) for n in phantom.nodes]).encode())
    assert content.hexdigest()[:16] == digest
