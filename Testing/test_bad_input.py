"""Bad input never gives a confident wrong answer: each case a new user met, refused or reported clearly."""

from __future__ import annotations

import io
import json
import os
import signal
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from LymphNodeQuantLib import output_files
from LymphNodeQuantLib.cli import main
from LymphNodeQuantLib.cli.segment import ProgressPrinter
from LymphNodeQuantLib.errors import InputError, ModelError, OutputError
from LymphNodeQuantLib.file_integrity import itk_messages
from LymphNodeQuantLib.geometry import ImageGeometry, Volume
from LymphNodeQuantLib.io import read_volume, write_volume
from LymphNodeQuantLib.log import collected_messages
from LymphNodeQuantLib.models.model_folder import ModelCard, load_model_card
from LymphNodeQuantLib.preprocessing import check_chest_ct, chest_ct_problems
from LymphNodeQuantLib.synthetic import make_phantom


@pytest.fixture(scope="module")
def small_ct() -> Volume:
    return make_phantom((32, 80, 80), (3.0, 4.0, 4.0), seed=5).ct


# ------------------------------------------------------------------------------ 1. damaged files
def test_truncated_or_nan_nifti_is_refused_not_zero_filled(small_ct, tmp_path):
    whole = write_volume(tmp_path / "ct.nii.gz", small_ct)
    assert np.array_equal(read_volume(whole).array, small_ct.array)  # an intact file reads as before
    data = whole.read_bytes()
    (tmp_path / "half.nii.gz").write_bytes(data[: len(data) // 2])
    assert (
        sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "half.nii.gz"))).shape == small_ct.array.shape
    )  # SimpleITK alone: zero-filled
    with pytest.raises(InputError, match="damaged or incomplete"):
        read_volume(tmp_path / "half.nii.gz")
    sitk.WriteImage(small_ct.to_sitk(), str(tmp_path / "ct.nii"), False)
    raw = (tmp_path / "ct.nii").read_bytes()
    (tmp_path / "half.nii").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(InputError, match=r"incomplete: its header describes \d+ bytes .* holds \d+ \(50%\)"):
        read_volume(tmp_path / "half.nii")
    with_nan = small_ct.array.astype(np.float32)
    with_nan[3, 10:12, 10:12] = np.nan
    write_volume(tmp_path / "nan.nii.gz", small_ct.with_array(with_nan))
    assert not np.isnan(sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "nan.nii.gz")))).any()  # SimpleITK: read as 0
    with pytest.raises(InputError, match="holds 4 NaN or infinite voxels"):
        read_volume(tmp_path / "nan.nii.gz")


def test_cli_refuses_truncated_file_with_exit_2(small_ct, tmp_path, capsys):
    data = write_volume(tmp_path / "ct.nii.gz", small_ct).read_bytes()
    (tmp_path / "cut.nii.gz").write_bytes(data[: len(data) // 2])
    assert main(["segment", str(tmp_path / "cut.nii.gz"), "--out", str(tmp_path / "o.seg.nrrd"), "--progress", "none"]) == 2
    assert "damaged or incomplete" in capsys.readouterr().err
    assert not (tmp_path / "o.seg.nrrd").exists()


def test_incomplete_metaimage_names_the_cause(small_ct, tmp_path):
    sitk.WriteImage(small_ct.to_sitk(), str(tmp_path / "ct.mhd"), False)
    raw = tmp_path / "ct.raw"
    raw.write_bytes(raw.read_bytes()[:1000])
    with pytest.raises(InputError, match="damaged or incomplete.*not read completely"):
        read_volume(tmp_path / "ct.mhd")


def test_itk_warnings_become_project_messages(tmp_path, capfd):
    labels = np.zeros((20, 30, 30), np.uint8)
    labels[5:10, 10:20, 10:20] = 1
    sitk.WriteImage(sitk.GetImageFromArray(labels), str(tmp_path / "labels.nii"), False)
    header = bytearray((tmp_path / "labels.nii").read_bytes())
    header[254:256] = struct.pack("<h", 1)  # sform_code 1 with a sheared first row: ITK warns and reads on
    header[280:296] = struct.pack("<4f", -1.0, 0.9, 0.0, 0.0)
    (tmp_path / "sheared.nii").write_bytes(bytes(header))
    assert main(["measure", "--seg", str(tmp_path / "sheared.nii"), "--out", str(tmp_path / "nodes.csv")]) == 0
    err = capfd.readouterr().err
    assert "lnq measure: warning: reading" in err and "unexpected scales in sform" in err
    assert "WARNING: In" not in err and "0x" not in err  # no raw ITK text with source paths and addresses


def test_itk_message_parsing():
    text = (
        "WARNING: In /tmp/SimpleITK-build/ITK/Modules/IO/NIFTI/src/itkNiftiImageIO.cxx, line 2001\n"
        "NiftiImageIO (0x55d5c8a0): a.nii has unexpected scales in sform\n\n"
    )
    assert itk_messages(text) == ["a.nii has unexpected scales in sform"]


# ------------------------------------------------------------------------------ 2. implausible geometry
@pytest.mark.parametrize(
    "shape, spacing, fill, expected",
    [
        ((48, 128, 128), (10.0, 10.0, 10.0), None, "in-plane spacing 10 mm is coarser"),
        ((5, 5, 5), (50.0, 40.0, 36.0), None, "outside 0.25..10 mm"),
        ((48, 128, 128), (0.1, 0.1, 0.1), None, "field of view"),
        ((48, 128, 128), (3.0, 2.4, 2.4), -1000, "no body in the image"),
    ],
)
def test_what_cannot_be_a_chest_ct_is_named(small_ct, shape, spacing, fill, expected):
    array = np.full(shape, fill, np.int16) if fill is not None else np.resize(small_ct.array, shape)
    volume = Volume(array, ImageGeometry(shape, spacing))
    assert any(expected in problem for problem in chest_ct_problems(volume))
    with pytest.raises(InputError, match="does not look like a chest CT.*--allow-unusual-input"):
        check_chest_ct(volume)
    with collected_messages() as messages:
        check_chest_ct(volume, allow_unusual_input=True)
    assert messages and "segmented anyway" in messages[0]


def test_real_and_demo_geometries_pass(small_ct, shared_data):
    assert chest_ct_problems(small_ct) == []
    for name in ("cip-chest/ct-64.nrrd", "totalseg-mediastinum/ct_cropped.nii.gz", "totalseg-example/example_ct_sm.nii.gz"):
        assert chest_ct_problems(read_volume(shared_data / name)) == [], name


def test_cli_refuses_10_mm_grid_and_goes_on_when_asked(tiny_model, small_ct, tmp_path, capsys):
    coarse = write_volume(
        tmp_path / "coarse.nrrd", Volume(small_ct.array, ImageGeometry(small_ct.array.shape, (10.0, 10.0, 10.0)))
    )
    arguments = ["segment", str(coarse), "--out", str(tmp_path / "o.seg.nrrd"), "--model", str(tiny_model), "--progress", "none"]
    assert main(arguments) == 2
    assert "in-plane spacing 10 mm" in capsys.readouterr().err and not (tmp_path / "o.seg.nrrd").exists()
    assert main(arguments + ["--allow-unusual-input"]) == 0
    assert "Unusual input, segmented anyway" in capsys.readouterr().out


# ------------------------------------------------------------------------------ 4. output locations
def test_output_under_a_file_is_refused_before_reading(tmp_path, capsys):
    (tmp_path / "afile").write_text("keep")
    code = main(
        ["segment", str(tmp_path / "missing-ct.nrrd"), "--out", str(tmp_path / "afile" / "o.seg.nrrd"), "--progress", "none"]
    )
    err = capsys.readouterr().err
    assert code == 2 and "'afile' is a file, not a folder" in err.replace(str(tmp_path) + os.sep, "")
    assert "Traceback" not in err and (tmp_path / "afile").read_text() == "keep"


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc (a folder nobody can write into, root included)")
def test_unwritable_output_folder_is_refused_before_work():
    with pytest.raises(OutputError, match="Cannot write into '/proc'"):
        output_files.check_output_path("/proc/lnq-test/o.seg.nrrd")


# ------------------------------------------------------------------------------ 5. outputs of one run together
def test_outputs_appear_together_or_not_at_all(tmp_path, monkeypatch):
    first, second = tmp_path / "a.txt", tmp_path / "b.txt"
    first.write_text("old a")
    real_replace = os.replace
    calls = []

    def failing_replace(source, destination):
        calls.append(destination)
        if Path(destination) == second:
            raise OSError(28, "No space left on device")
        return real_replace(source, destination)

    monkeypatch.setattr(output_files.os, "replace", failing_replace)
    with pytest.raises(OSError, match="No space"):
        with output_files.written_together():
            output_files.atomic_write(first, lambda p: p.write_text("new a"), overwrite=True)
            output_files.atomic_write(second, lambda p: p.write_text("new b"))
            assert first.read_text() == "old a"  # staged, not yet in place
    monkeypatch.setattr(output_files.os, "replace", real_replace)
    assert first.read_text() == "old a" and not second.exists()  # the old file is back, the new one never appeared
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]  # no temporary or backup left behind


def test_ctrl_c_while_moving_outputs_finishes_them_and_says_so(tiny_model, ct_file, tmp_path, monkeypatch, capsys):
    if sys.platform == "win32":
        pytest.skip("SIGINT delivery to the own process is POSIX")
    real_replace = os.replace

    def replace_then_ctrl_c(source, destination):
        real_replace(source, destination)
        if str(destination).endswith(".seg.nrrd"):
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C right after the segmentation is in place

    monkeypatch.setattr(output_files.os, "replace", replace_then_ctrl_c)
    out, table = tmp_path / "o.seg.nrrd", tmp_path / "o.csv"
    code = main(
        ["segment", str(ct_file), "--out", str(out), "--table", str(table), "--model", str(tiny_model), "--progress", "none"]
    )
    err = capsys.readouterr().err
    assert code == 130 and out.exists() and table.exists()
    assert "interrupted after these outputs were completely written" in err and "no output was written" not in err


def test_ctrl_c_before_writing_says_nothing_was_written(tiny_model, ct_file, tmp_path, monkeypatch, capsys):
    import LymphNodeQuantLib.inference as inference

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(inference, "segment_volume", interrupted)
    code = main(
        ["segment", str(ct_file), "--out", str(tmp_path / "o.seg.nrrd"), "--model", str(tiny_model), "--progress", "none"]
    )
    assert code == 130 and "interrupted; no output was written" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------ 7. progress in logs
def test_progress_lines_when_stderr_is_not_a_terminal():
    stream = io.StringIO()  # not a tty, like a log file or CI
    printer = ProgressPrinter("bar", line_interval_s=3600, stream=stream)
    for fraction in (0.1, 0.2, 0.3):
        printer(fraction, "inference")
    printer(0.9, "resampling back")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2 and lines[0].endswith("10% inference") and lines[1].endswith("90% resampling back")
    frequent = ProgressPrinter("bar", line_interval_s=0.0, stream=(stream := io.StringIO()))
    for fraction in (0.1, 0.2, 0.3):
        frequent(fraction, "inference")
    assert len(stream.getvalue().splitlines()) == 3  # within one stage, a line whenever the interval has passed
    assert ProgressPrinter("none", stream=(quiet := io.StringIO())) and quiet.getvalue() == ""


# ------------------------------------------------------------------------------ 9. a CT as label map, bad model.json
def test_measure_refuses_a_ct_as_label_map(ct_file, tmp_path, capsys):
    assert main(["measure", "--seg", str(ct_file), "--out", str(tmp_path / "n.csv")]) == 2
    assert "not a label map" in capsys.readouterr().err and not (tmp_path / "n.csv").exists()


def test_model_json_with_a_wrong_type_gets_a_clear_message(tiny_model, tmp_path):
    card = json.loads((tiny_model / "model.json").read_text())
    for key, value, expected in (
        ("spacing_zyx_mm", "4 4 4", "'input.spacing_zyx_mm' must be a list of 3 positive numbers"),
        ("patch_size_zyx", [16, 32.5, 32], "'input.patch_size_zyx' must be a list of 3 positive integers"),
    ):
        broken = json.loads(json.dumps(card))
        broken["input"][key] = value
        with pytest.raises(ModelError, match=expected):
            ModelCard.from_dict(broken)
    broken = json.loads(json.dumps(card))
    broken["postprocessing"]["threshold"] = "0.5"
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "model.json").write_text(json.dumps(broken))
    with pytest.raises(ModelError, match="'postprocessing.threshold' must be a number between 0 and 1"):
        load_model_card(folder)
