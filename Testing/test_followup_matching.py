"""Follow-up engine (issue 14): registration, one-to-one node matching, tracked-node table and response.

Known answers come from :mod:`LymphNodeQuantLib.followup.known_pairs`: the same patient at two
examinations related by a known rigid + smooth transform, nodes implanted at known sizes at both
(grown, shrunk, unchanged, one removed, one new), on the phantom and on a real LIDC-IDRI CT.
"""

import json

import numpy as np
import pytest

from LymphNodeQuantLib.errors import InputError, OutputExistsError
from LymphNodeQuantLib.followup.compare import compare_examinations
from LymphNodeQuantLib.followup.known_pairs import KnownTransform, make_ct_pair, make_phantom_pair
from LymphNodeQuantLib.followup.matching import MatchSettings, match_nodes
from LymphNodeQuantLib.followup.registration import (
    Registration,
    RegistrationSettings,
    register_followup,
    registration_warnings,
)
from LymphNodeQuantLib.followup.residual import local_misalignment
from LymphNodeQuantLib.geometry import ImageGeometry, Volume
from LymphNodeQuantLib.measure import measure_nodes

#: the real-CT pair: the target shrinks 39% and a new node stays under 10 mm (not a new lesion): RECIST PR
REAL_PLAN = ((18.0, 11.0), (12.0, 14.0), (7.0, 7.0), (8.0, None), (None, 7.0))


@pytest.fixture(scope="module")
def phantom_case():
    """The follow-up lies on another table position too: the same anatomy is 120 mm apart in the two scans' coordinates."""
    pair = make_phantom_pair(seed=1, table_shift_mm=(20.0, -10.0, 120.0))
    result = compare_examinations(pair.baseline_ct, pair.followup_ct, pair.baseline_labels, pair.followup_labels)
    return pair, result


@pytest.fixture(scope="module")
def real_case(shared_data):
    """LIDC-IDRI-0001 at 1.4 mm in-plane, a 40 x 176 x 176 box around the mediastinum as the baseline."""
    import SimpleITK as sitk

    from LymphNodeQuantLib.anatomy import find_chest_anatomy
    from LymphNodeQuantLib.io import read_volume

    ct = read_volume(shared_data / "lidc-idri" / "LIDC-IDRI-0001_ct.nrrd")
    ct = Volume.from_sitk(sitk.BinShrink(ct.to_sitk(), [2, 2, 1]))
    start, stop = find_chest_anatomy(ct).mediastinum_box(ct.geometry.spacing_zyx_mm, 0.0)
    size = np.array([40, 176, 176])
    low = np.clip((np.asarray(start) + np.asarray(stop)) // 2 - size // 2, 0, np.asarray(ct.geometry.shape_zyx) - size)
    pair = make_ct_pair(ct, low, low + size, seed=0, plan=REAL_PLAN)
    result = compare_examinations(pair.baseline_ct, pair.followup_ct, pair.baseline_labels, pair.followup_labels)
    return pair, result


def _check_known_answer(pair, result):
    """Exact matches and statuses; per-node short-axis change within one in-plane pixel of the known change."""
    assert {p.baseline_id: p.followup_id for p in result.matching.pairs} == pair.expected_matches()
    removed = [n.baseline_label for n in pair.nodes if n.followup_label is None]
    new = [n.followup_label for n in pair.nodes if n.baseline_label is None]
    assert result.matching.disappeared_ids == removed and result.matching.new_ids == new
    pixel_mm = max(pair.baseline_ct.geometry.spacing_zyx_mm[1:] + pair.followup_ct.geometry.spacing_zyx_mm[1:])
    for known in pair.nodes:
        if known.baseline_label is None:
            continue
        row = result.node(known.baseline_label)
        if known.followup_label is None:
            assert row.status == "disappeared" and row.followup is None
            assert row.change("short_axis_mm") == (-row.baseline.short_axis_mm, -1.0)
            continue
        assert row.status == "matched" and row.followup.node_id == known.followup_label
        expected = known.followup_short_axis_mm - known.baseline_short_axis_mm
        assert abs(row.change("short_axis_mm")[0] - expected) <= pixel_mm, (known, row.change("short_axis_mm"))
        # the registration brought the node back to its baseline place (centroid residual in mm)
        assert row.centroid_residual_mm < 6.0
    (new_row,) = [row for row in result.nodes if row.status == "new"]
    assert new_row.node_id == max(n.baseline_label or 0 for n in pair.nodes) + 1
    assert new_row.followup.node_id == new[0]


def test_phantom_pair_known_matches_and_changes(phantom_case):
    _check_known_answer(*phantom_case)


def test_phantom_pair_response(phantom_case):
    """Targets 22 -> 14 and 16 -> 10 mm (-37%: PR), but a new 12 mm node is a new lesion: RECIST PD."""
    pair, result = phantom_case
    response = result.response
    assert response.criteria == "RECIST 1.1" and result.criteria == "RECIST 1.1"
    assert response.target_node_ids == [1, 2] and response.target_response == "PR"
    assert response.new_node_ids == [6] and response.overall_response == "PD"


def test_real_ct_pair_known_matches_changes_and_response(real_case):
    """Real anatomy (LIDC-IDRI-0001, contrast CT): same known answers; target -39%, new node < 10 mm: RECIST PR."""
    pair, result = real_case
    _check_known_answer(pair, result)
    assert result.response.target_node_ids == [1] and result.response.new_node_ids == []
    assert result.response.overall_response == "PR"
    assert result.registration.mask == "chest" and result.registration.residual_mm < 3.0
    assert result.warnings == []


def test_followup_map_keeps_baseline_numbers_and_centroids_in_both_spaces(phantom_case):
    pair, result = phantom_case
    renumbered, given = result.followup_labels, pair.followup_labels.array
    assert renumbered.geometry.same_grid(pair.followup_ct.geometry)
    tracked = {row.followup.node_id: row.node_id for row in result.nodes if row.followup is not None}
    for followup_id, node_id in tracked.items():
        assert np.array_equal(renumbered.array == node_id, given == followup_id)
    assert set(np.unique(renumbered.array)) == {0, *tracked.values()}
    assert np.array_equal(result.baseline_labels.array, pair.baseline_labels.array)
    for row in result.nodes:
        if row.status == "matched":  # the follow-up centroid, mapped into baseline space, lands near the baseline centroid
            mapped = result.registration.followup_to_baseline(np.array(row.followup.centroid_lps_mm))[0]
            assert np.allclose(mapped, row.followup_centroid_in_baseline_lps_mm)
            assert np.linalg.norm(mapped - np.array(row.baseline.centroid_lps_mm)) == pytest.approx(row.centroid_residual_mm)
        if row.status == "new":
            assert row.followup_centroid_in_baseline_lps_mm is not None and row.centroid_residual_mm is None


def test_registration_recovers_the_known_transform(phantom_case):
    pair, result = phantom_case
    registration = result.registration
    assert registration.stages == ("rigid", "affine") and registration.mask == "chest"
    assert registration.residual_mm < 3.0 and registration.residual_blocks[0] >= 5 and registration.warnings == []
    assert registration.surface == "lungs" and registration.surface_distance_mm < 3.0
    followup_points = np.array([n.followup_centre_lps_mm for n in pair.nodes if n.followup_label])
    errors = np.linalg.norm(
        registration.followup_to_baseline(followup_points) - pair.transform.followup_to_baseline(followup_points), axis=1
    )
    assert errors.max() < 4.0  # the smooth deformation (+-3 mm) is not affine
    matrix = np.array(registration.as_dict()["followup_to_baseline_matrix_lps"])
    point = np.append(followup_points[0], 1.0)
    assert np.allclose((matrix @ point)[:3], registration.followup_to_baseline(followup_points[:1])[0], atol=1e-3)
    ras = registration.followup_to_baseline_matrix_ras()  # for a Slicer transform node: RAS in, RAS out
    flip = np.array([-1.0, -1.0, 1.0])
    assert np.allclose((ras @ np.append(followup_points[0] * flip, 1.0))[:3], (matrix @ point)[:3] * flip)
    json.dumps(registration.as_dict())


def test_deformable_registration_and_its_inverse(phantom_case):
    pair, result = phantom_case
    registration = register_followup(pair.baseline_ct, pair.followup_ct, RegistrationSettings(deformable=True))
    assert registration.stages == ("rigid", "affine", "bspline") and registration.followup_to_baseline_matrix_lps() is None
    followup_points = np.array([n.followup_centre_lps_mm for n in pair.nodes if n.followup_label])
    mapped = registration.followup_to_baseline(followup_points)
    assert np.allclose(registration.baseline_to_followup(mapped), followup_points, atol=0.01)  # the iterative inverse
    errors = np.linalg.norm(mapped - pair.transform.followup_to_baseline(followup_points), axis=1)
    assert errors.max() < 3.0
    assert registration.residual_mm <= result.registration.residual_mm + 0.2


def test_residual_exposes_a_wrong_transform(phantom_case):
    """The residual is measured on the images: a registration that is off by a known shift shows about that shift, and warns."""
    import SimpleITK as sitk

    from LymphNodeQuantLib.followup.registration import chest_mask, working_image

    pair, result = phantom_case
    fixed, moving = working_image(pair.baseline_ct, 3.0), working_image(pair.followup_ct, 3.0)
    fixed_volume = Volume.from_sitk(fixed)
    chest, _, _, _ = chest_mask(fixed_volume, 15.0)
    registered = local_misalignment(fixed_volume, moving, result.registration.transform, chest, seed=7)
    assert registered.residual_mm == pytest.approx(result.registration.residual_mm)
    for shift_mm in ((0.0, 0.0, 10.0), (8.0, 0.0, 0.0), (0.0, 6.0, 8.0)):  # off by 10 mm
        off = sitk.CompositeTransform([sitk.TranslationTransform(3, shift_mm), result.registration.transform])
        wrong = local_misalignment(fixed_volume, moving, off, chest, seed=7)
        assert wrong.residual_mm == pytest.approx(np.linalg.norm(shift_mm), abs=3.0), shift_mm
        bad = Registration(
            off, result.registration.affine, ("rigid",), 0.0, wrong.residual_mm, "chest", 5.0, (wrong.blocks_used, 9)
        )
        assert any("exceeds 5 mm" in warning for warning in registration_warnings(bad))
    off = sitk.CompositeTransform([sitk.TranslationTransform(3, (0.0, 40.0, 40.0)), result.registration.transform])
    lost = local_misalignment(fixed_volume, moving, off, chest, seed=7)  # far beyond the search: nothing matches
    assert lost.residual_mm is None
    unmeasured = Registration(
        off, result.registration.affine, ("rigid",), 0.0, None, "chest", 5.0, (lost.blocks_used, lost.blocks_tried)
    )
    assert any("could not be measured" in warning for warning in registration_warnings(unmeasured))


# ----------------------------------------------------------------------------------- matching rules


def _spheres(centres_mm, radii_mm, shape=(60, 100, 120)) -> Volume:
    """Label map (1 mm voxels) with one sphere per centre (z, y, x mm from voxel 0), labels 1..N."""
    z, y, x = np.ogrid[: shape[0], : shape[1], : shape[2]]
    labels = np.zeros(shape, np.uint16)
    for label, (centre, radius) in enumerate(zip(centres_mm, radii_mm), start=1):
        labels[(z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2 <= radius**2] = label
    return Volume(labels, ImageGeometry(shape, (1.0, 1.0, 1.0)))


def _identity_registration() -> Registration:
    import SimpleITK as sitk

    return Registration(sitk.AffineTransform(3), sitk.AffineTransform(3), ("rigid", "affine"), 0.0, 0.0, "chest", 5.0)


def _match(baseline: Volume, followup: Volume, settings=MatchSettings()):
    nodes = [measure_nodes(v, nodes_from="labels") for v in (baseline, followup)]
    return match_nodes(nodes[0], baseline, nodes[1], followup, _identity_registration(), settings)


def test_distance_gate():
    baseline = _spheres([(30, 50, 30)], [4])
    moved = _spheres([(30, 50, 50)], [4])  # 20 mm away, no overlap
    matching = _match(baseline, moved)
    assert matching.pairs == [] and matching.disappeared_ids == [1] and matching.new_ids == [1]
    assert [(p.baseline_id, p.followup_id) for p in _match(baseline, moved, MatchSettings(max_distance_mm=25.0)).pairs] == [
        (1, 1)
    ]


def test_overlap_widens_the_gate_for_large_nodes_only():
    """A 40 mm node grown on one side moves its centroid 18 mm but overlaps: same node. A small node 18 mm away is not."""
    large = _match(_spheres([(30, 50, 40)], [20]), _spheres([(30, 50, 58)], [24]))
    assert len(large.pairs) == 1 and large.pairs[0].distance_mm > 15.0 and large.pairs[0].dice > 0.3
    small = _match(_spheres([(30, 50, 40)], [5]), _spheres([(30, 50, 58)], [5]))
    assert small.pairs == []


def test_assignment_is_one_to_one_with_the_most_matches():
    """A follow-up node between two baseline nodes goes to the one that leaves the other a partner (greedy would not)."""
    baseline = _spheres([(30, 50, 30), (30, 50, 42)], [3, 3])
    followup = _spheres([(30, 50, 36), (30, 50, 48)], [3, 3])  # 6 mm from both / 18 and 6 mm
    matching = _match(baseline, followup)
    assert [(p.baseline_id, p.followup_id) for p in matching.pairs] == [(1, 1), (2, 2)]
    assert matching.disappeared_ids == [] and matching.new_ids == []


def test_binary_segmentation_is_split_into_components_and_grids_are_checked(phantom_case):
    pair, _ = phantom_case
    binary = pair.followup_labels.with_array((pair.followup_labels.array > 0).astype(np.uint8))
    from LymphNodeQuantLib.followup.compare import FollowupSettings, prepare_examination

    examination = prepare_examination("follow-up", pair.followup_ct, binary, FollowupSettings())
    assert len(examination.nodes) == len(np.unique(pair.followup_labels.array)) - 1
    assert set(np.unique(examination.node_map.array)) == {0, *(m.node_id for m in examination.nodes)}
    shifted = Volume(pair.followup_labels.array, ImageGeometry(pair.followup_ct.geometry.shape_zyx, (3.0, 2.0, 2.0)))
    with pytest.raises(InputError, match="follow-up segmentation is not on the follow-up CT's voxel grid"):
        compare_examinations(pair.baseline_ct, pair.followup_ct, pair.baseline_labels, shifted)


# ----------------------------------------------------------------------------------- nadir, report, ground truth


def test_nadir_examination_is_matched_to_baseline(phantom_case):
    """With the follow-up itself as the nadir, the nadir sum is the follow-up sum and the nadir map equals the follow-up map."""
    pair, result = phantom_case
    with_nadir = compare_examinations(
        pair.baseline_ct,
        pair.followup_ct,
        pair.baseline_labels,
        pair.followup_labels,
        nadir_ct=pair.followup_ct,
        nadir_labels=pair.followup_labels,
    )
    statuses = {row.node_id: row.nadir_status for row in with_nadir.nodes}
    assert statuses == {1: "matched", 2: "matched", 3: "matched", 4: "matched", 5: "not found", 6: None}
    assert with_nadir.response.nadir_sum_mm == pytest.approx(with_nadir.response.followup_sum_mm)
    assert with_nadir.response.change_from_nadir == pytest.approx(0.0)
    assert np.array_equal(with_nadir.nadir_labels.array, result.followup_labels.array)


def test_report_files_and_dict(phantom_case, tmp_path):
    from LymphNodeQuantLib.followup.report import COLUMN_NAMES, format_summary, format_table, write_report, write_waterfall

    pair, result = phantom_case
    document = json.loads(write_report(tmp_path / "report.json", result).read_text())
    assert document["overall_response"] == "PD" and [c["name"] for c in document["columns"]] == COLUMN_NAMES
    assert [row["status"] for row in document["nodes"]] == ["matched"] * 4 + ["disappeared", "new"]
    assert (
        document["nodes"][4]["short_axis_change_percent"] == -100.0 and document["nodes"][5]["short_axis_change_percent"] is None
    )
    assert document["registration"]["residual_mm"] == pytest.approx(result.registration.residual_mm, abs=1e-3)
    assert document == json.loads(json.dumps(result.as_dict()))
    assert result.nodes[0].as_dict()["node_id"] == 1
    csv_lines = write_report(tmp_path / "report.csv", result).read_text().splitlines()
    assert csv_lines[0].split(",") == COLUMN_NAMES and len(csv_lines) == 1 + len(result.nodes)
    with pytest.raises(OutputExistsError, match="already exists"):
        write_report(tmp_path / "report.csv", result)
    with pytest.raises(InputError, match=".json or .csv"):
        write_report(tmp_path / "report.txt", result)
    png = write_waterfall(tmp_path / "waterfall.png", result)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Overall response (RECIST 1.1): PD" in format_summary(result)
    assert len(format_table(result).splitlines()) == 1 + len(result.nodes)


def test_waterfall_without_matplotlib_says_what_to_do(phantom_case, tmp_path, monkeypatch):
    import sys

    from LymphNodeQuantLib.followup.report import write_waterfall

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if it were not installed
    with pytest.raises(InputError, match="pip install matplotlib"):
        write_waterfall(tmp_path / "waterfall.png", phantom_case[1])
    assert not (tmp_path / "waterfall.png").exists()


def test_known_transform_ground_truth_is_consistent():
    """The ground truth itself: the SimpleITK field equals the formula, and the inverse inverts it."""
    geometry = ImageGeometry((40, 128, 128), (3.0, 2.5, 2.5), (-160.0, -180.0, -100.0))
    transform = KnownTransform.random(np.random.default_rng(3), (0.0, -20.0, -40.0))
    field = transform.sitk_transform(geometry)
    points = geometry.index_zyx_to_lps(np.random.default_rng(4).uniform(0, 1, (200, 3)) * (np.asarray(geometry.shape_zyx) - 1))
    mapped = np.array([field.TransformPoint(tuple(p)) for p in points])
    assert np.abs(mapped - transform.followup_to_baseline(points)).max() < 0.05  # linear interpolation of a smooth field
    assert np.abs(transform.followup_to_baseline(transform.baseline_to_followup(points)) - points).max() < 1e-6
