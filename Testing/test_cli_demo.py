"""``lnq demo`` writes a reusable demo case and never writes into a folder it did not make."""

import numpy as np
import pytest

from LymphNodeQuantLib.cli import main
from LymphNodeQuantLib.io import read_volume


def test_demo_small_writes_and_reuses(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--small"]) == 0
    ct = read_volume(out / "demo-ct.nrrd")
    seg = read_volume(out / "demo-seg.nrrd")
    assert ct.array.shape == (48, 128, 128) and seg.array.max() == 1
    stamp = (out / "demo-ct.nrrd").stat().st_mtime_ns
    assert main(["demo", "--out", str(out), "--small"]) == 0
    assert "Reusing" in capsys.readouterr().out
    assert (out / "demo-ct.nrrd").stat().st_mtime_ns == stamp
    assert np.array_equal(read_volume(out / "demo-ct.nrrd").array, ct.array)


def test_demo_refuses_foreign_folder(tmp_path, capsys):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    assert main(["demo", "--out", str(folder), "--small"]) == 2
    assert "not made by 'lnq demo'" in capsys.readouterr().err
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt"]


def test_help_lists_commands(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "demo" in capsys.readouterr().out
