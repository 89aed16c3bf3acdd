"""``lnq followup``: files in, report / waterfall / renumbered segmentation out, bad requests refused before the work."""

import csv
import json
import sys

import numpy as np
import pytest

from LymphNodeQuantLib.cli import main
from LymphNodeQuantLib.followup.known_pairs import make_phantom_pair
from LymphNodeQuantLib.io import write_volume
from LymphNodeQuantLib.segmentation_io import read_segmentation


@pytest.fixture(scope="module")
def pair_files(tmp_path_factory):
    """A known phantom pair (see known_pairs.DEFAULT_PLAN) written as NRRD files."""
    folder = tmp_path_factory.mktemp("followup-inputs")
    pair = make_phantom_pair(seed=1)
    paths = {}
    for name in ("baseline_ct", "baseline_labels", "followup_ct", "followup_labels"):
        paths[name] = str(write_volume(folder / f"{name}.nrrd", getattr(pair, name)))
    return pair, paths


def _arguments(paths, out, *extra):
    return [
        "followup",
        "--baseline", paths["baseline_ct"], "--baseline-seg", paths["baseline_labels"],
        "--followup", paths["followup_ct"], "--followup-seg", paths["followup_labels"],
        "--out", str(out), "--progress", "none", *extra,
    ]  # fmt: skip


def test_report_waterfall_and_renumbered_segmentation(pair_files, tmp_path, capsys):
    pair, paths = pair_files
    out, png, segmentation = tmp_path / "report.json", tmp_path / "waterfall.png", tmp_path / "followup.seg.nrrd"
    extra = ["--waterfall", str(png), "--followup-seg-out", str(segmentation), "--residual-warning-mm", "0.5"]
    assert main(_arguments(paths, out, *extra)) == 0
    captured = capsys.readouterr()
    document = json.loads(out.read_text())
    assert document["overall_response"] == "PD" and document["criteria"] == "RECIST 1.1"
    assert [(row["node_id"], row["status"]) for row in document["nodes"]] == [
        (1, "matched"), (2, "matched"), (3, "matched"), (4, "matched"), (5, "disappeared"), (6, "new")
    ]  # fmt: skip
    assert document["inputs"]["followup_seg"] == paths["followup_labels"]
    assert "Overall response (RECIST 1.1): PD" in captured.out and "matched" in captured.out
    # a residual above the (here deliberately low) threshold is never silent: stderr, and the report's warnings
    assert "lnq followup: warning: Registration residual" in captured.err
    assert any("Registration residual" in warning for warning in document["warnings"])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    labels, segments = read_segmentation(segmentation)
    assert [s["name"] for s in segments] == [f"Lymph node {i}" for i in (1, 2, 3, 4, 6)]
    for row in document["nodes"]:
        if row["followup_segment_id"] is not None:  # same voxels as the given follow-up node, under the baseline number
            assert np.array_equal(labels.array == row["node_id"], pair.followup_labels.array == row["followup_segment_id"])


def test_csv_lugano_with_chosen_targets(pair_files, tmp_path, capsys):
    _, paths = pair_files
    out = tmp_path / "report.csv"
    assert main(_arguments(paths, out, "--criteria", "lugano", "--targets", "1,2")) == 0
    rows = list(csv.DictReader(out.open()))
    assert [row["status"] for row in rows] == ["matched"] * 4 + ["disappeared", "new"]
    assert [row["role"] for row in rows[:2]] == ["target", "target"]
    assert float(rows[4]["short_axis_change_percent"]) == -100.0 and rows[5]["short_axis_change_percent"] == ""
    assert "Overall response (Lugano 2014)" in capsys.readouterr().out


def test_json_progress_for_programs(pair_files, tmp_path, capsys):
    """--progress json (the Slicer module's background process): stdout carries only JSON events, text goes to stderr."""
    _, paths = pair_files
    out, segmentation = tmp_path / "report.json", tmp_path / "followup-nodes.nrrd"
    arguments = _arguments(paths, out, "--followup-seg-out", str(segmentation))
    arguments[arguments.index("--progress") + 1] = "json"
    assert main(arguments) == 0
    captured = capsys.readouterr()
    events = [json.loads(line) for line in captured.out.splitlines()]
    fractions = [event["fraction"] for event in events if event["event"] == "progress"]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0 and all(e["stage"] for e in events[:-1])
    done, document = events[-1], json.loads(out.read_text())
    assert done["event"] == "done" and done["outputs"] == {"report": str(out), "followup_seg_out": str(segmentation)}
    assert (done["criteria"], done["overall_response"]) == (document["criteria"], document["overall_response"])
    assert done["reasons"] == document["response"]["reasons"] and done["warnings"] == document["warnings"]
    assert done["statuses"] == {"matched": 4, "new": 1, "disappeared": 1}
    assert done["segmented_by_model"] == {"baseline": False, "follow-up": False}
    assert "Overall response (RECIST 1.1)" in captured.err
    missing = _arguments(dict(paths, baseline_ct=str(tmp_path / "missing.nrrd")), tmp_path / "r.json")
    missing[missing.index("--progress") + 1] = "json"
    assert main(missing) == 2
    error = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert error["event"] == "error" and error["type"] == "InputError" and "missing.nrrd" in error["message"]


def test_bad_requests_are_refused_before_any_work(pair_files, tmp_path, capsys, monkeypatch):
    _, paths = pair_files
    existing = tmp_path / "report.json"
    existing.write_text("{}")
    cases = [
        (_arguments(paths, existing), "already exists"),
        (_arguments(paths, tmp_path / "report.txt"), "must end in .json or .csv"),
        (_arguments(paths, tmp_path / "r.json", "--waterfall", str(tmp_path / "w.jpg")), "must end in .png"),
        (_arguments(paths, tmp_path / "r.json", "--followup-seg-out", paths["followup_labels"]), "is one of the inputs"),
        (_arguments(paths, tmp_path / "r.json", "--nadir-seg", paths["baseline_labels"]), "--nadir-seg needs --nadir"),
        (_arguments(paths, tmp_path / "r.json", "--targets", "one,two"), "must be node numbers"),
    ]
    for arguments, message in cases:
        assert main(arguments) == 2
        assert message in capsys.readouterr().err
    assert existing.read_text() == "{}"
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if matplotlib were not installed
    assert main(_arguments(paths, tmp_path / "r.json", "--waterfall", str(tmp_path / "w.png"))) == 2
    assert "pip install matplotlib" in capsys.readouterr().err
    assert not (tmp_path / "r.json").exists()


def test_segments_examinations_without_a_segmentation(tiny_model, tmp_path, capsys):
    """No --*-seg: both CTs go through the model (a tiny random one here); the baseline numbers are written out."""
    pair = make_phantom_pair(seed=2, shape_zyx=(32, 80, 80), spacing_zyx_mm=(3.0, 4.0, 4.0), margin_slices=4)
    baseline, followup = (
        write_volume(tmp_path / "baseline.nrrd", pair.baseline_ct),
        write_volume(tmp_path / "followup.nrrd", pair.followup_ct),
    )
    out, baseline_segmentation = tmp_path / "report.json", tmp_path / "baseline.seg.nrrd"
    arguments = ["followup", "--baseline", str(baseline), "--followup", str(followup), "--model", str(tiny_model), "--device", "cpu",
                 "--out", str(out), "--baseline-seg-out", str(baseline_segmentation), "--progress", "none"]  # fmt: skip
    assert main(arguments) == 0
    document = json.loads(out.read_text())
    assert document["examinations"]["baseline"]["segmented_by_model"] is True
    assert document["examinations"]["followup"]["segmented_by_model"] is True
    node_count = document["examinations"]["baseline"]["node_count"]
    assert f"baseline: {node_count} lymph node(s) found" in " ".join(document["examinations"]["baseline"]["messages"])
    labels, _ = read_segmentation(baseline_segmentation)
    baseline_ids = sorted(row["node_id"] for row in document["nodes"] if row["status"] != "new")
    assert sorted(int(v) for v in np.unique(labels.array) if v) == baseline_ids
    assert len(baseline_ids) == node_count
