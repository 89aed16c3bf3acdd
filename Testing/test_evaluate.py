"""evaluate: LNQ2023 Dice/ASSD (exact cases, cross-check with SimpleITK), HD95, detection, summaries."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from benchmarks.references import challenge_style_scores
from LymphNodeQuantLib.errors import InputError
from LymphNodeQuantLib.evaluate import (
    case_id_from_path,
    detect_nodes,
    dice_coefficient,
    evaluate_case,
    evaluate_folder,
    summarize,
    summarize_scores,
    surface_distances,
    surface_voxels,
)
from LymphNodeQuantLib.geometry import ImageGeometry, Volume
from LymphNodeQuantLib.synthetic import make_phantom, write_lnq_case


def _volume(mask, spacing=(1.0, 1.0, 1.0), **kwargs):
    return Volume(np.asarray(mask).astype(np.uint8), ImageGeometry(np.shape(mask), spacing, **kwargs))


def test_surface_is_face_connected_and_ignores_the_image_border():
    cube = np.zeros((7, 7, 7), bool)
    cube[1:6, 1:6, 1:6] = True
    assert surface_voxels(cube).sum() == 5**3 - 3**3
    assert surface_voxels(np.ones((4, 5, 6), bool)).sum() == 0
    slab = np.zeros((6, 5, 5), bool)
    slab[2:4] = True  # full in y and x: only its top and bottom faces are surface
    assert surface_voxels(slab).sum() == 2 * 25


@pytest.mark.parametrize("axis, spacing_mm", [(0, 2.0), (1, 0.5), (2, 0.7)])
def test_shifted_slabs_have_the_shift_as_assd_in_that_axis_spacing(axis, spacing_mm):
    """Spacing is (z, y, x) = (2.0, 0.5, 0.7) mm; a slab shifted by 2 voxels along ``axis`` has ASSD 2 x that spacing."""
    shape = [12, 12, 12]
    reference = np.zeros(shape, bool)
    prediction = np.zeros(shape, bool)
    index = [slice(None)] * 3
    index[axis] = slice(3, 8)
    reference[tuple(index)] = True
    index[axis] = slice(5, 10)
    prediction[tuple(index)] = True
    result = surface_distances(prediction, reference, (2.0, 0.5, 0.7))
    assert result.assd_mm == pytest.approx(2 * spacing_mm)
    assert result.hd95_mm == pytest.approx(2 * spacing_mm)
    assert dice_coefficient(prediction, reference) == pytest.approx(2 * 3 / 10)


def test_assd_is_the_mean_of_directed_means_not_the_pooled_mean():
    reference = np.zeros((12, 6, 6), bool)
    reference[2:11] = True  # surface planes z=2 and z=10
    prediction = np.zeros((12, 6, 6), bool)
    prediction[2] = True  # one plane, z=2
    result = surface_distances(prediction, reference, (1.5, 1.0, 1.0))
    assert result.mean_prediction_to_reference_mm == pytest.approx(0.0)
    assert result.mean_reference_to_prediction_mm == pytest.approx(0.5 * 8 * 1.5)
    assert result.assd_mm == pytest.approx(0.5 * 0.0 + 0.5 * 6.0)  # the pooled mean would be 8 * 1.5 / 3 = 4.0
    assert challenge_style_scores(prediction, reference, (1.5, 1.0, 1.0))[1] == pytest.approx(3.0, abs=1e-5)


def test_spheres_identical_nested_and_disjoint():
    grid = np.indices((30, 30, 30))
    big = ((grid - 15) ** 2).sum(0) <= 8**2
    small = ((grid - 15) ** 2).sum(0) <= 5**2
    far = ((grid - np.array([4, 4, 4])[:, None, None, None]) ** 2).sum(0) <= 3**2
    same = evaluate_case(_volume(big), _volume(big))
    assert same.dice == 1.0 and same.assd_mm == 0.0 and same.hd95_mm == 0.0
    nested = evaluate_case(_volume(small), _volume(big))
    assert nested.dice == pytest.approx(2 * small.sum() / (small.sum() + big.sum()))
    assert 2.5 < nested.assd_mm < 3.5  # radii 8 and 5 voxels
    apart = evaluate_case(_volume(far), _volume(big))
    assert apart.dice == 0.0 and apart.assd_mm > 5 and apart.false_positives == 1 and apart.false_negatives == 1


def test_empty_prediction_reference_and_both():
    mask = np.zeros((8, 8, 8), bool)
    mask[2:5, 2:5, 2:5] = True
    empty = np.zeros_like(mask)
    for prediction, reference in ((empty, mask), (mask, empty), (empty, empty)):
        result = evaluate_case(_volume(prediction), _volume(reference))
        assert result.dice == 0.0 and math.isnan(result.assd_mm) and math.isnan(result.hd95_mm)
        assert result.empty_prediction == (not prediction.any()) and result.empty_reference == (not reference.any())
        assert result.to_dict()["assd_mm"] is None
    assert evaluate_case(_volume(empty), _volume(mask)).false_negatives == 1


def test_foreground_rule_label1_versus_nonzero():
    reference = np.zeros((8, 8, 8), np.uint8)
    reference[1:4, 1:4, 1:4] = 1
    reference[5:7, 5:7, 5:7] = 2  # a second node with its own id (an instance map)
    prediction = (reference > 0).astype(np.uint8)
    by_default = evaluate_case(_volume(prediction), _volume(reference))
    assert by_default.dice == 1.0 and by_default.true_positives == 2  # every node scored
    assert any("label(s) other than 1 (2)" in note for note in by_default.notes)
    label1 = evaluate_case(_volume(prediction), _volume(reference), foreground="label1")
    assert label1.dice == pytest.approx(2 * 27 / (35 + 27))
    assert any("only label 1 was scored" in note and "--foreground nonzero" in note for note in label1.notes)
    binary = evaluate_case(_volume(prediction), _volume(prediction))
    assert binary.notes == []  # a 0/1 map needs no note
    with pytest.raises(InputError, match="foreground"):
        evaluate_case(_volume(prediction), _volume(reference), foreground="all")


def test_instance_map_and_seg_nrrd_of_our_own_output_score_every_node(tmp_path):
    """lnq evaluate of the tool's own .seg.nrrd against a 0/1 reference: all nodes, not only node 1."""
    from LymphNodeQuantLib.cli import main
    from LymphNodeQuantLib.io import write_volume
    from LymphNodeQuantLib.segmentation_io import write_segmentation

    instances = np.zeros((10, 12, 12), np.uint16)
    instances[1:4, 1:4, 1:4] = 1
    instances[5:8, 6:10, 6:10] = 2
    instances[2:5, 7:11, 1:4] = 7
    geometry = _volume(instances).geometry
    write_segmentation(tmp_path / "pred.seg.nrrd", Volume(instances, geometry))
    write_volume(tmp_path / "ref.nrrd", Volume((instances > 0).astype(np.uint8), geometry))
    write_volume(tmp_path / "ref255.nrrd", Volume((instances > 0).astype(np.uint8) * 255, geometry))
    for reference in ("ref.nrrd", "ref255.nrrd"):
        out = tmp_path / f"{reference}.json"
        assert (
            main(["evaluate", "--pred", str(tmp_path / "pred.seg.nrrd"), "--ref", str(tmp_path / reference), "--out", str(out)])
            == 0
        )
        result = json.loads(out.read_text())
        assert result["dice"] == 1.0 and result["true_positives"] == 3 and result["false_negatives"] == 0


def test_a_ct_is_refused_as_label_map():
    ct = np.full((8, 8, 8), -1000, np.int16)
    ct[2:6, 2:6, 2:6] = 40
    with pytest.raises(InputError, match="negative values.*not a label map"):
        evaluate_case(Volume(ct, ImageGeometry(ct.shape, (1.0, 1.0, 1.0))), _volume((ct > 0).astype(np.uint8)))
    with pytest.raises(InputError, match="non-integer values"):
        evaluate_case(
            Volume(ct.astype(np.float32) + 0.5, ImageGeometry(ct.shape, (1.0, 1.0, 1.0))), _volume((ct > 0).astype(np.uint8))
        )
    grey_levels = np.random.default_rng(0).integers(0, 4000, (48, 48, 48)).astype(np.uint16)  # an unrescaled CT
    with pytest.raises(InputError, match="grey-level image"):
        evaluate_case(
            Volume(grey_levels, ImageGeometry(grey_levels.shape, (1.0, 1.0, 1.0))), _volume(np.zeros((48, 48, 48), np.uint8))
        )


def test_different_grids_are_an_error_unless_resampling_is_asked_for():
    reference = np.zeros((20, 20, 20), np.uint8)
    reference[4:12, 6:14, 2:10] = 1
    # the same block on a 2 mm grid whose voxel boundaries coincide with the 1 mm grid
    coarse = np.zeros((10, 10, 10), np.uint8)
    coarse[2:6, 3:7, 1:5] = 1
    prediction = Volume(coarse, ImageGeometry(coarse.shape, (2.0, 2.0, 2.0), origin_lps_mm=(0.5, 0.5, 0.5)))
    with pytest.raises(InputError, match="different voxel grids.*resample"):
        evaluate_case(prediction, _volume(reference))
    result = evaluate_case(prediction, _volume(reference), resample_prediction=True)
    assert result.resampled_prediction and result.dice == 1.0 and result.assd_mm == 0.0
    assert any("resampled" in note for note in result.notes)


def test_dice_and_assd_agree_with_a_simpleitk_challenge_implementation_on_a_phantom():
    from scipy import ndimage

    phantom = make_phantom((40, 96, 96), (3.0, 3.5, 3.5), seed=4)
    reference = phantom.full_labels.array.astype(bool)
    prediction = ndimage.binary_dilation(phantom.partial_labels.array.astype(bool), iterations=1)
    prediction[20:24, 10:14, 10:14] = True  # a false positive near the image edge
    spacing = phantom.ct.geometry.spacing_zyx_mm
    ours = evaluate_case(_volume(prediction, spacing), _volume(reference, spacing))
    dice, assd = challenge_style_scores(prediction, reference, spacing)
    assert ours.dice == pytest.approx(dice, abs=1e-9)
    assert ours.assd_mm == pytest.approx(assd, abs=1e-4)


def test_detection_on_a_phantom_with_instances():
    phantom = make_phantom((40, 96, 96), (3.0, 3.5, 3.5), seed=6)
    annotated = sum(node.annotated for node in phantom.nodes)
    prediction = phantom.partial_labels.array.copy()
    prediction[30:33, 5:8, 5:8] = 1  # one false positive blob away from every node
    result = evaluate_case(
        phantom.partial_labels.with_array(prediction), phantom.node_labels, foreground="nonzero", detection_nodes="labels"
    )
    assert result.reference_nodes == len(phantom.nodes)
    assert result.true_positives == annotated
    assert result.false_negatives == len(phantom.nodes) - annotated
    assert result.false_positives == 1
    assert result.sensitivity == pytest.approx(annotated / len(phantom.nodes))
    assert result.precision == pytest.approx((result.predicted_nodes - 1) / result.predicted_nodes)
    bins = result.detection_bins
    assert sum(b["reference_nodes"] for b in bins) == result.reference_nodes
    assert sum(b["true_positives"] for b in bins) == result.true_positives
    assert sum(b["false_positives"] for b in bins) == 1
    assert [b["short_axis_bin_mm"] for b in bins][:3] == ["0-2.5", "2.5-5", "5-7.5"]
    assert len(result.reference_node_matches) == len(phantom.nodes)
    assert sum(n.matched for n in result.reference_node_matches) == annotated
    assert [n.matched for n in result.prediction_node_matches].count(False) == 1
    assert result.to_dict()["reference_node_matches"][0]["short_axis_mm"] > 0


def test_detection_iou_threshold_and_short_axis_bins():
    rows, cols = np.indices((40, 40))
    disk = (rows - 12) ** 2 + (cols - 12) ** 2 <= 6.2**2  # 12-13 pixels across at 1 mm
    reference = np.zeros((5, 40, 40), bool)
    reference[1:4] = disk
    prediction = np.zeros_like(reference)
    prediction[1:4, 5:17, 16:30] = True
    found = detect_nodes(prediction, reference, (3.0, 1.0, 1.0))
    assert (found.true_positives, found.false_positives, found.false_negatives) == (1, 0, 0)
    overlap, union = (prediction & reference).sum(), (prediction | reference).sum()
    assert 0 < overlap / union < 0.2
    assert found.reference_nodes[0].best_iou == pytest.approx(overlap / union)
    strict = detect_nodes(prediction, reference, (3.0, 1.0, 1.0), min_iou=0.2)
    assert (strict.true_positives, strict.false_positives, strict.false_negatives) == (0, 1, 1)
    assert 12.5 <= found.reference_nodes[0].short_axis_mm < 15.0
    bins = {
        b["short_axis_bin_mm"]: b
        for b in evaluate_case(_volume(prediction, (3.0, 1.0, 1.0)), _volume(reference, (3.0, 1.0, 1.0))).detection_bins
    }
    assert bins["12.5-15"]["reference_nodes"] == 1 and bins["12.5-15"]["sensitivity"] == 1.0


def test_summary_replaces_nan_by_the_worst_assd_or_omits_it():
    scores = summarize_scores([0.8, 0.6, 0.0, 0.7], [2.0, 4.0, float("nan"), 3.0], nan_policy="worst")
    assert scores["assd_mm_median"] == pytest.approx(3.5)  # NaN -> 4.0
    assert scores["assd_mm_nan_cases"] == 1 and scores["assd_mm_nan_replaced_by"] == 4.0
    assert scores["dice_median"] == pytest.approx(0.65)
    omitted = summarize_scores([0.8, 0.6, 0.0, 0.7], [2.0, 4.0, float("nan"), 3.0], nan_policy="omit")
    assert omitted["assd_mm_median"] == pytest.approx(3.0) and omitted["assd_mm_mean"] == pytest.approx(3.0)


def test_summary_reproduces_the_lnq2023_winner_from_the_official_results(shared_data):
    rows = list(csv.DictReader(open(shared_data / "lnq2023-official-results" / "phase3_results.csv")))
    assert {"Case", "Dice", "ASSD", "Team"} <= set(rows[0])

    def team(name):
        selected = [r for r in rows if r["Team"] == name]
        assd = [float(r["ASSD"]) if r["ASSD"].strip() else float("nan") for r in selected]
        return summarize_scores([float(r["Dice"]) for r in selected], assd, nan_policy="worst")

    winner = team("1810929")
    assert winner["cases"] == 100
    assert round(100 * winner["dice_median"], 2) == 71.18
    assert round(winner["assd_mm_median"], 2) == 2.95
    # a team with empty predictions: NaN -> worst ASSD changes its median
    skjp = team("SKJP")
    assert skjp["assd_mm_nan_cases"] == 12
    assert (
        skjp["assd_mm_median"]
        > summarize_scores(
            [0.0] * 100,
            [float(r["ASSD"]) if r["ASSD"].strip() else float("nan") for r in rows if r["Team"] == "SKJP"],
            nan_policy="omit",
        )["assd_mm_median"]
    )


def test_folder_evaluation_pairs_cases_and_scores_missing_predictions(tmp_path):
    references, predictions = tmp_path / "ref", tmp_path / "pred"
    phantoms = {}
    for seed, case in ((1, "case-001"), (2, "case-002")):
        phantoms[case] = make_phantom((32, 64, 64), (3.0, 5.0, 5.0), seed=seed)
        write_lnq_case(phantoms[case], references, case, annotation="full")
    predictions.mkdir()
    from LymphNodeQuantLib.io import write_volume

    write_volume(predictions / "case-001-pred.nii.gz", phantoms["case-001"].partial_labels)
    evaluations = evaluate_folder(predictions, references)
    assert [e.case_id for e in evaluations] == ["case-001", "case-002"]
    assert 0 < evaluations[0].dice < 1 or evaluations[0].dice == 1.0
    assert evaluations[1].dice == 0.0 and math.isnan(evaluations[1].assd_mm)
    assert "missing prediction" in evaluations[1].notes[0]
    summary = summarize(evaluations)
    assert summary["assd_mm_nan_cases"] == 1
    assert summary["assd_mm_median"] == pytest.approx(evaluations[0].assd_mm)  # NaN -> the worst (only) finite value
    assert case_id_from_path(references / "case-001-seg.nrrd") == "case-001"
    assert case_id_from_path(predictions / "case-001-pred.nii.gz") == "case-001"
    with pytest.raises(InputError, match="No reference"):
        evaluate_folder(predictions, references, reference_pattern="*.mha")


def test_hd95_matches_monai_and_monai_assd_is_the_pooled_mean():
    import warnings

    import torch
    from monai.metrics import compute_average_surface_distance, compute_hausdorff_distance
    from scipy import ndimage

    phantom = make_phantom((40, 96, 96), (3.0, 3.5, 3.5), seed=4)
    reference = phantom.full_labels.array.astype(bool)
    prediction = ndimage.binary_dilation(phantom.partial_labels.array.astype(bool))
    spacing = (3.0, 3.5, 3.5)
    ours = surface_distances(prediction, reference, spacing)
    tensor = lambda mask: torch.from_numpy(mask)[None, None]  # noqa: E731
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        hd95 = compute_hausdorff_distance(
            tensor(prediction), tensor(reference), include_background=True, percentile=95, spacing=list(spacing)
        )
        pooled = compute_average_surface_distance(
            tensor(prediction), tensor(reference), include_background=True, symmetric=True, spacing=list(spacing)
        )
    assert ours.hd95_mm == pytest.approx(hd95.item(), abs=1e-4)
    n_p, n_r = ours.prediction_surface_voxels, ours.reference_surface_voxels
    expected_pooled = (n_p * ours.mean_prediction_to_reference_mm + n_r * ours.mean_reference_to_prediction_mm) / (n_p + n_r)
    assert pooled.item() == pytest.approx(expected_pooled, abs=1e-4)
    assert abs(pooled.item() - ours.assd_mm) > 0.1  # the two definitions differ on this case
