"""``lnq segment`` and ``lnq models`` end to end with a tiny randomly initialised model folder."""

import json

import numpy as np
import pytest

from LymphNodeQuantLib.cli import main
from LymphNodeQuantLib.geometry import ImageGeometry, Volume
from LymphNodeQuantLib.io import read_volume, write_volume
from LymphNodeQuantLib.segmentation_io import read_segmentation


def test_segment_writes_segmentation_and_table(tiny_model, ct_file, tmp_path, capsys):
    out, table = tmp_path / "nodes.seg.nrrd", tmp_path / "nodes.json"
    assert (
        main(
            ["segment", str(ct_file), "--out", str(out), "--table", str(table), "--model", str(tiny_model), "--progress", "none"]
        )
        == 0
    )
    labels, segments = read_segmentation(out)
    assert labels.geometry.same_grid(read_volume(ct_file).geometry)
    assert len(segments) == labels.array.max()
    document = json.loads(table.read_text())
    assert len(document["nodes"]) == len(segments) and document["model"] == "tiny-cli 0.1"
    assert "tiny-cli 0.1 on cpu" in capsys.readouterr().out


def test_packaged_model_finds_and_writes_real_segments(ct_file, tmp_path, capsys):
    """The default model on a small phantom: segments exist, match the table row for row, and hit true nodes."""
    from LymphNodeQuantLib.evaluate import evaluate_case
    from LymphNodeQuantLib.synthetic import make_phantom

    out, table = tmp_path / "nodes.seg.nrrd", tmp_path / "nodes.json"
    assert main(["segment", str(ct_file), "--out", str(out), "--table", str(table), "--progress", "none"]) == 0
    labels, segments = read_segmentation(out)
    rows = json.loads(table.read_text())["nodes"]
    assert len(segments) >= 3 and [s["label_value"] for s in segments] == list(range(1, len(segments) + 1))
    assert [row["node_id"] for row in rows] == [s["label_value"] for s in segments]
    for row in rows:  # each table row measures exactly its segment's voxels
        voxels = int((labels.array == row["node_id"]).sum())
        assert row["volume_mm3"] == pytest.approx(voxels * labels.geometry.voxel_volume_mm3, rel=1e-6)
    truth = make_phantom((32, 80, 80), (3.0, 4.0, 4.0), seed=5).full_labels  # the phantom ct_file was made from
    scores = evaluate_case(labels, truth)
    assert scores.true_positives >= 3 and scores.dice > 0.5


def test_existing_outputs_refused_before_work(tiny_model, ct_file, tmp_path, capsys):
    out, table = tmp_path / "nodes.seg.nrrd", tmp_path / "nodes.csv"
    table.write_text("keep me")
    code = main(
        ["segment", str(ct_file), "--out", str(out), "--table", str(table), "--model", str(tiny_model), "--progress", "none"]
    )
    assert code == 2 and "already exists" in capsys.readouterr().err
    assert not out.exists() and table.read_text() == "keep me"
    assert (
        main(
            [
                "segment",
                str(ct_file),
                "--out",
                str(out),
                "--table",
                str(table),
                "--model",
                str(tiny_model),
                "--progress",
                "none",
                "--overwrite",
            ]
        )
        == 0
    )
    assert table.read_text().startswith("node_id,")


def test_json_progress_protocol(tiny_model, ct_file, tmp_path, capsys):
    out = tmp_path / "binary.seg.nrrd"
    assert (
        main(
            [
                "segment",
                str(ct_file),
                "--out",
                str(out),
                "--model",
                str(tiny_model),
                "--progress",
                "json",
                "--binary",
                "--no-crop",
            ]
        )
        == 0
    )
    captured = capsys.readouterr()
    events = [json.loads(line) for line in captured.out.splitlines()]
    progress = [e for e in events if e["event"] == "progress"]
    assert progress and all(set(e) == {"event", "fraction", "stage"} for e in progress)
    assert [e["fraction"] for e in progress] == sorted(e["fraction"] for e in progress)
    assert events[-1]["event"] == "done" and events[-1]["outputs"]["segmentation"] == str(out)
    assert "Mediastinum crop off" in captured.err
    assert read_volume(out).array.max() <= 1


def test_json_error_event_and_bad_inputs(tiny_model, tmp_path, capsys):
    flat = write_volume(tmp_path / "flat.nrrd", Volume(np.zeros((1, 16, 16), np.int16), ImageGeometry((1, 16, 16), (1, 1, 1))))
    assert (
        main(["segment", str(flat), "--out", str(tmp_path / "x.seg.nrrd"), "--model", str(tiny_model), "--progress", "json"]) == 2
    )
    captured = capsys.readouterr()
    event = json.loads(captured.out.strip().splitlines()[-1])
    assert event["event"] == "error" and "2-D" in event["message"]
    mr = write_volume(
        tmp_path / "mr.nrrd",
        Volume(
            np.random.default_rng(0).uniform(0, 4000, (16, 32, 32)).astype(np.float32), ImageGeometry((16, 32, 32), (2, 2, 2))
        ),
    )
    assert (
        main(["segment", str(mr), "--out", str(tmp_path / "y.seg.nrrd"), "--model", str(tiny_model), "--progress", "none"]) == 2
    )
    assert "do not look like CT" in capsys.readouterr().err
    unreadable = tmp_path / "junk.nrrd"
    unreadable.write_bytes(b"not an image")
    assert main(["segment", str(unreadable), "--out", str(tmp_path / "z.seg.nrrd"), "--model", str(tiny_model)]) == 2
    assert "Cannot read" in capsys.readouterr().err
    assert main(["segment", str(tmp_path / "missing.nrrd"), "--model", str(tiny_model)]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not any(p.name.endswith(".seg.nrrd") for p in tmp_path.iterdir())


def test_corrupted_weights_clear_error(tiny_model, ct_file, tmp_path, capsys):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(tiny_model, broken)
    weights = broken / "weights.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x55
    weights.write_bytes(bytes(data))
    out = tmp_path / "n.seg.nrrd"
    assert main(["segment", str(ct_file), "--out", str(out), "--model", str(broken), "--progress", "none"]) == 2
    assert "fails its checksum" in capsys.readouterr().err and not out.exists()
    assert main(["segment", str(ct_file), "--out", str(out), "--model", "no-such-model", "--progress", "none"]) == 2
    assert "not found" in capsys.readouterr().err


def test_default_output_goes_to_current_folder(tiny_model, ct_file, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["segment", str(ct_file), "--model", str(tiny_model), "--progress", "none"]) == 0
    assert (tmp_path / "case-ct.seg.nrrd").exists()
    assert not (ct_file.parent / "case-ct.seg.nrrd").exists()


def test_dicom_folder_input(tiny_model, shared_data, tmp_path):
    out = tmp_path / "dicom.seg.nrrd"
    assert (
        main(
            [
                "segment",
                str(shared_data / "cip-chest" / "ct-64Dicom"),
                "--out",
                str(out),
                "--model",
                str(tiny_model),
                "--progress",
                "none",
            ]
        )
        == 0
    )
    assert read_volume(out).array.shape == read_volume(shared_data / "cip-chest" / "ct-64Dicom").array.shape


def test_models_lists_registry(tiny_model, monkeypatch, capsys):
    monkeypatch.setenv("LNQ_MODEL_PATH", str(tiny_model.parent))
    assert main(["models"]) == 0
    assert "tiny-cli" in capsys.readouterr().out
    assert main(["models", "--show", "tiny-cli", "--verify"]) == 0
    assert "weights verified" in capsys.readouterr().out


def test_demo_main_job_and_rerun(tiny_model, tmp_path, capsys):
    folder = tmp_path / "demo"
    args = ["demo", "--out", str(folder), "--small", "--model", str(tiny_model)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "Against the reference demo-seg.nrrd: Dice" in out
    assert (folder / "demo.seg.nrrd").exists() and (folder / "nodes.csv").read_text().startswith("node_id,")
    manifest = json.loads((folder / "lnq-demo.json").read_text())
    assert manifest["outputs"] == ["demo.seg.nrrd", "nodes.csv"]
    assert main(args) == 0  # rerun on its own folder: reuses the case, replaces its own outputs
    assert "Reusing" in capsys.readouterr().out


def test_demo_never_replaces_foreign_output(tiny_model, tmp_path, capsys):
    folder = tmp_path / "demo"
    assert main(["demo", "--out", str(folder), "--small", "--no-segment"]) == 0
    (folder / "nodes.csv").write_text("my own notes")
    assert main(["demo", "--out", str(folder), "--small", "--model", str(tiny_model)]) == 2
    assert "not written by 'lnq demo'" in capsys.readouterr().err
    assert (folder / "nodes.csv").read_text() == "my own notes" and not (folder / "demo.seg.nrrd").exists()
