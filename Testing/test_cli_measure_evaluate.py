"""``lnq measure`` and ``lnq evaluate`` round trips on phantom files."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from LymphNodeQuantLib.cli import COMMANDS, main
from LymphNodeQuantLib.geometry import ImageGeometry, Volume
from LymphNodeQuantLib.io import read_volume, write_volume
from LymphNodeQuantLib.measure import NODE_TABLE_COLUMNS
from LymphNodeQuantLib.synthetic import make_phantom, write_lnq_case


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    folder = tmp_path_factory.mktemp("lnq-case")
    phantom = make_phantom((32, 80, 80), (3.0, 4.0, 4.0), seed=8)
    write_lnq_case(phantom, folder, "c1", annotation="full")
    write_volume(folder / "c1-partial.nrrd", phantom.partial_labels)
    return folder, phantom


def test_commands_are_registered(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    listed = capsys.readouterr().out
    assert all(f"    {name}" in listed for name in COMMANDS)  # every sub-command is reachable and described


def test_measure_writes_csv_and_json_and_refuses_to_overwrite(case, tmp_path, capsys):
    folder, phantom = case
    out_csv = tmp_path / "nodes.csv"
    assert (
        main(
            [
                "measure",
                "--seg",
                str(folder / "c1-instances.nrrd"),
                "--ct",
                str(folder / "c1-ct.nrrd"),
                "--out",
                str(out_csv),
                "--nodes-from",
                "labels",
            ]
        )
        == 0
    )
    rows = list(csv.DictReader(open(out_csv)))
    assert list(rows[0]) == [name for name, _, _ in NODE_TABLE_COLUMNS]
    assert len(rows) == len(phantom.nodes)
    assert all(row["mean_hu"] != "" for row in rows)
    assert "nodes" in capsys.readouterr().out
    out_json = tmp_path / "nodes.json"
    assert main(["measure", "--seg", str(folder / "c1-seg.nrrd"), "--out", str(out_json), "--min-volume-mm3", "100"]) == 0
    document = json.loads(out_json.read_text())
    assert all(node["volume_mm3"] >= 100 for node in document["nodes"]) and document["nodes"][0]["mean_hu"] is None
    before = out_csv.read_bytes()
    assert main(["measure", "--seg", str(folder / "c1-seg.nrrd"), "--out", str(out_csv)]) == 2
    assert "--overwrite" in capsys.readouterr().err and out_csv.read_bytes() == before
    assert main(["measure", "--seg", str(folder / "c1-seg.nrrd"), "--out", str(out_csv), "--overwrite"]) == 0
    assert out_csv.read_bytes() != before


def test_evaluate_one_case_json_and_output_file(case, tmp_path, capsys):
    folder, phantom = case
    code = main(
        [
            "evaluate",
            "--pred",
            str(folder / "c1-partial.nrrd"),
            "--ref",
            str(folder / "c1-seg.nrrd"),
            "--json",
            "--out",
            str(tmp_path / "r.json"),
        ]
    )
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    saved = json.loads((tmp_path / "r.json").read_text())
    assert printed == saved
    partial, full = phantom.partial_labels.array > 0, phantom.node_labels.array > 0
    assert not (partial & ~full).any()  # the partial label is a subset of the full one, so Dice is known exactly
    assert printed["dice"] == pytest.approx(2 * partial.sum() / (partial.sum() + full.sum()), rel=1e-6)
    assert printed["false_positives"] == 0 and printed["precision"] == 1.0
    assert 0 < printed["true_positives"] < printed["reference_nodes"]  # some nodes are unlabelled in the partial map
    # the instance map as reference: detection per instance
    assert (
        main(
            [
                "evaluate",
                "--pred",
                str(folder / "c1-partial.nrrd"),
                "--ref",
                str(folder / "c1-instances.nrrd"),
                "--foreground",
                "nonzero",
                "--detection-nodes",
                "labels",
                "--json",
            ]
        )
        == 0
    )
    instances = json.loads(capsys.readouterr().out)
    assert instances["reference_nodes"] == len(phantom.nodes)
    assert instances["true_positives"] == sum(node.annotated for node in phantom.nodes)


def test_evaluate_grid_mismatch_is_a_clear_error_and_resampling_fixes_it(case, tmp_path, capsys):
    folder, phantom = case
    labels = read_volume(folder / "c1-seg.nrrd")
    g = labels.geometry
    shifted = Volume(
        labels.array,
        ImageGeometry(g.shape_zyx, g.spacing_zyx_mm, tuple(np.add(g.origin_lps_mm, (0.0, 0.0, 3.0))), g.direction_lps),
    )
    write_volume(tmp_path / "shifted.nrrd", shifted)
    assert main(["evaluate", "--pred", str(tmp_path / "shifted.nrrd"), "--ref", str(folder / "c1-seg.nrrd")]) == 2
    assert "--resample-prediction" in capsys.readouterr().err
    assert (
        main(
            [
                "evaluate",
                "--pred",
                str(tmp_path / "shifted.nrrd"),
                "--ref",
                str(folder / "c1-seg.nrrd"),
                "--resample-prediction",
                "--json",
            ]
        )
        == 0
    )
    result = json.loads(capsys.readouterr().out)
    # the prediction's origin is one slice (3 mm) higher: on the reference grid its voxels move up one slice
    moved = np.zeros_like(labels.array)
    moved[1:] = labels.array[:-1]
    from LymphNodeQuantLib.evaluate import evaluate_case

    expected = evaluate_case(labels.with_array(moved), labels)
    assert result["resampled_prediction"]
    assert result["dice"] == pytest.approx(expected.dice) and result["assd_mm"] == pytest.approx(expected.assd_mm)
    assert 0 < result["dice"] < 1


def test_evaluate_folders_writes_case_table_and_summary(case, tmp_path, capsys):
    folder, phantom = case
    predictions = tmp_path / "pred"
    predictions.mkdir()
    write_volume(predictions / "c1.nrrd", phantom.partial_labels)
    out, summary = tmp_path / "cases.csv", tmp_path / "summary.json"
    assert main(["evaluate", "--pred", str(predictions), "--ref", str(folder), "--out", str(out), "--summary", str(summary)]) == 0
    text = capsys.readouterr().out
    assert "median Dice" in text and "NaN" in text
    rows = list(csv.DictReader(open(out)))
    assert [row["case_id"] for row in rows] == ["c1"]
    document = json.loads(summary.read_text())
    assert document["summary"]["cases"] == 1 and document["summary"]["nan_policy"] == "worst"
    assert document["cases"][0]["dice"] == pytest.approx(float(rows[0]["dice"]), rel=1e-5)
    assert main(["evaluate", "--pred", str(predictions), "--ref", str(folder), "--out", str(out)]) == 2
    assert main(["evaluate", "--pred", str(predictions), "--ref", str(folder / "c1-seg.nrrd")]) == 2
