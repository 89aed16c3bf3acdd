"""measure_nodes: components, volumes, centroids (LPS/RAS), HU, geometry, node tables."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from LymphNodeQuantLib.errors import InputError, OutputExistsError
from LymphNodeQuantLib.geometry import ImageGeometry, Volume
from LymphNodeQuantLib.measure import (
    NODE_TABLE_COLUMNS,
    label_nodes,
    measure_nodes,
    measurements_to_rows,
    write_node_table,
)
from LymphNodeQuantLib.synthetic import make_phantom


def _sphere(shape, centre_zyx, radius_mm, spacing_zyx):
    grids = np.meshgrid(*(np.arange(n) * s for n, s in zip(shape, spacing_zyx)), indexing="ij")
    return sum((g - c * s) ** 2 for g, c, s in zip(grids, centre_zyx, spacing_zyx)) <= radius_mm**2


def test_volume_centroid_and_hu_of_a_sphere_with_anisotropic_spacing():
    spacing = (2.0, 0.5, 0.75)  # (z, y, x)
    shape = (15, 50, 40)
    mask = _sphere(shape, (7, 25, 20), 6.0, spacing)
    geometry = ImageGeometry(shape, spacing, origin_lps_mm=(10.0, -20.0, 30.0))
    rng = np.random.default_rng(0)
    ct = Volume((rng.normal(40, 10, shape)).astype(np.int16), geometry)
    nodes = measure_nodes(Volume(mask.astype(np.uint8), geometry), ct)
    assert len(nodes) == 1
    node = nodes[0]
    assert node.voxel_count == int(mask.sum())
    assert node.volume_mm3 == pytest.approx(mask.sum() * 2.0 * 0.5 * 0.75)
    assert node.volume_ml == pytest.approx(node.volume_mm3 / 1000)
    # symmetric about voxel (7, 25, 20): LPS = origin + (x*sx, y*sy, z*sz)
    assert node.centroid_lps_mm == pytest.approx((10.0 + 20 * 0.75, -20.0 + 25 * 0.5, 30.0 + 7 * 2.0))
    assert node.centroid_ras_mm == pytest.approx((-(10.0 + 15.0), -(-20.0 + 12.5), 44.0))
    assert node.mean_hu == pytest.approx(ct.array[mask].mean())
    assert node.std_hu == pytest.approx(ct.array[mask].std())
    assert abs(node.short_axis_mm - 12.0) <= 1.0 * 0.75  # sphere diameter within one (column) pixel: the RECIST target
    assert node.measurement_slice_index == 7
    assert node.perpendicular_product_mm2 == pytest.approx(node.long_axis_mm * node.short_axis_mm, abs=1e-5)
    assert 11.25**2 <= node.perpendicular_product_mm2 <= 12.75**2  # Lugano PPD of a 12 mm circle, within a pixel
    assert node.enlarged
    assert node.measurement_plane == "axial"
    assert 12.0 <= node.max_diameter_3d_mm <= 12.0 + 2.0


def test_components_connectivity_min_volume_and_instance_labels():
    array = np.zeros((6, 10, 10), np.uint16)
    array[1, 1, 1] = 1
    array[2, 2, 2] = 1  # touches the first voxel only diagonally
    array[3:5, 6:9, 6:9] = 7
    array[3:5, 6:9, 5] = 9  # another instance id, touching node 7
    volume = Volume(array, ImageGeometry(array.shape, (1.0, 1.0, 1.0)))
    assert len(measure_nodes(volume)) == 2
    assert len(measure_nodes(volume, connectivity=6)) == 3
    assert [n.node_id for n in measure_nodes(volume, nodes_from="labels")] == [1, 7, 9]
    assert [n.node_id for n in measure_nodes(volume, nodes_from="labels", min_volume_mm3=5)] == [7, 9]
    assert len(measure_nodes(volume.with_array(array.astype(np.float32)), nodes_from="labels")) == 3
    assert len(measure_nodes(volume.with_array(array > 0), nodes_from="labels")) == 1
    with pytest.raises(InputError, match="non-integer"):
        measure_nodes(volume.with_array(array * 0.5), nodes_from="labels")
    big = measure_nodes(volume, min_volume_mm3=3.0)
    assert [n.node_id for n in big] == [1] and big[0].voxel_count == 24
    ids, count = label_nodes(volume, connectivity=26)
    assert count == 2 and ids.dtype == np.uint32 and set(np.unique(ids)) == {0, 1, 2}
    with pytest.raises(InputError, match="connectivity"):
        measure_nodes(volume, connectivity=8)


def test_empty_label_map_gives_no_nodes_and_ct_must_share_the_grid():
    geometry = ImageGeometry((4, 5, 6), (3.0, 1.0, 1.0))
    assert measure_nodes(Volume(np.zeros((4, 5, 6), np.uint8), geometry)) == []
    other = ImageGeometry((4, 5, 6), (3.0, 1.0, 1.0), origin_lps_mm=(5.0, 0.0, 0.0))
    with pytest.raises(InputError, match="different voxel grids"):
        measure_nodes(Volume(np.ones((4, 5, 6), np.uint8), geometry), Volume(np.zeros((4, 5, 6), np.int16), other))


def test_non_axial_direction_measures_in_the_image_slice_plane():
    coronal = np.array([[1.0, 0, 0], [0, 0, 1.0], [0, -1.0, 0]])  # k axis along anterior-posterior
    mask = np.zeros((8, 20, 20), np.uint8)
    mask[3:5, 5:15, 8:12] = 1
    axial = measure_nodes(Volume(mask, ImageGeometry(mask.shape, (2.0, 0.8, 0.8))))[0]
    tilted = measure_nodes(Volume(mask, ImageGeometry(mask.shape, (2.0, 0.8, 0.8), direction_lps=coronal)))[0]
    assert tilted.measurement_plane.startswith("image slice plane") and "coronal" in tilted.measurement_plane
    assert tilted.short_axis_mm == pytest.approx(axial.short_axis_mm)  # same (i, j) plane measurement
    assert tilted.centroid_lps_mm != pytest.approx(axial.centroid_lps_mm)


def test_phantom_instance_nodes_keep_voxel_counts_and_soft_tissue_hu():
    phantom = make_phantom((40, 96, 96), (3.0, 3.5, 3.5), seed=5)
    measured = measure_nodes(phantom.node_labels, phantom.ct, nodes_from="labels")
    assert len(measured) == len(phantom.nodes)
    for node, m in zip(phantom.nodes, measured):
        assert m.voxel_count == node.voxel_count
        assert 15 < m.mean_hu < 75  # soft tissue, noise and blur included


def test_rows_and_tables_follow_the_schema(tmp_path):
    phantom = make_phantom((40, 96, 96), (3.0, 3.5, 3.5), seed=1)
    measurements = measure_nodes(phantom.full_labels)
    rows = measurements_to_rows(measurements)
    names = [name for name, _, _ in NODE_TABLE_COLUMNS]
    assert all(list(row) == names for row in rows)
    assert all(row["mean_hu"] is None for row in rows)
    csv_path = write_node_table(tmp_path / "nodes.csv", measurements)
    with open(csv_path) as handle:
        read = list(csv.DictReader(handle))
    assert list(read[0]) == names and len(read) == len(measurements)
    assert float(read[0]["short_axis_mm"]) == pytest.approx(measurements[0].short_axis_mm, abs=1e-4)
    json_path = write_node_table(tmp_path / "nodes.json", measurements)
    document = json.loads(json_path.read_text())
    assert [c["name"] for c in document["columns"]] == names
    assert document["columns"][names.index("volume_ml")]["unit"] == "mL"
    assert document["nodes"][0]["node_id"] == 1
    with pytest.raises(OutputExistsError):
        write_node_table(csv_path, measurements)
    write_node_table(csv_path, measurements[:1], overwrite=True)
    assert len(list(csv.DictReader(open(csv_path)))) == 1
    with pytest.raises(InputError, match=".csv or .json"):
        write_node_table(tmp_path / "nodes.txt", measurements)


def test_readme_documents_every_column_with_its_unit(repo_root):
    text = (repo_root / "README.md").read_text()
    section = text.split("## Measuring nodes (`lnq measure`)", 1)[1].split("\n## ", 1)[0]
    for name, unit, description in NODE_TABLE_COLUMNS:
        assert f"| `{name}` | {unit} | {description} |" in section, name
