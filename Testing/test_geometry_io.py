"""Geometry conventions and file round trips (LPS files, (z, y, x) arrays)."""

import numpy as np
import pytest

from LymphNodeQuantLib.errors import InputError, OutputExistsError
from LymphNodeQuantLib.geometry import ImageGeometry, Volume
from LymphNodeQuantLib.io import read_volume, write_volume


def oblique_direction(angle_deg: float = 25.0) -> np.ndarray:
    a = np.deg2rad(angle_deg)
    about_z = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    b = np.deg2rad(10.0)
    about_x = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    return about_z @ about_x


def test_index_to_lps_follows_itk_convention():
    geometry = ImageGeometry((4, 5, 6), (3.0, 2.0, 1.0), (10.0, -20.0, 30.0), np.eye(3))
    # index (z, y, x) = (1, 2, 3) -> x = 10 + 3*1, y = -20 + 2*2, z = 30 + 1*3
    assert np.allclose(geometry.index_zyx_to_lps([1, 2, 3]), [13.0, -16.0, 33.0])
    assert np.allclose(geometry.lps_to_index_zyx([13.0, -16.0, 33.0]), [1, 2, 3])


def test_ijk_to_ras_round_trip_oblique():
    geometry = ImageGeometry((7, 8, 9), (2.5, 0.7, 0.9), (-12.0, 40.0, 7.5), oblique_direction())
    back = ImageGeometry.from_ijk_to_ras_matrix(geometry.ijk_to_ras_matrix(), geometry.shape_zyx)
    assert back.same_grid(geometry)
    ras = geometry.ijk_to_ras_matrix() @ np.array([3, 2, 1, 1.0])  # (i, j, k) = (x, y, z)
    lps = geometry.index_zyx_to_lps([1, 2, 3])
    assert np.allclose(ras[:3], lps * [-1, -1, 1])


def test_cropped_geometry_keeps_physical_positions():
    geometry = ImageGeometry((10, 12, 14), (3.0, 0.8, 0.8), (5.0, 6.0, 7.0), oblique_direction())
    crop = geometry.cropped((2, 3, 4), (8, 10, 12))
    assert crop.shape_zyx == (6, 7, 8)
    assert np.allclose(crop.index_zyx_to_lps([0, 0, 0]), geometry.index_zyx_to_lps([2, 3, 4]))
    assert np.allclose(crop.index_zyx_to_lps([1, 2, 3]), geometry.index_zyx_to_lps([3, 5, 7]))


def test_write_read_round_trip_nrrd_and_nifti(tmp_path):
    rng = np.random.default_rng(0)
    geometry = ImageGeometry((5, 6, 7), (3.0, 0.8, 0.9), (-100.0, 50.0, 20.0), oblique_direction())
    volume = Volume(rng.integers(-1000, 1000, size=(5, 6, 7)).astype(np.int16), geometry)
    for name in ("a.nrrd", "a.nii.gz", "a.mha"):
        write_volume(tmp_path / name, volume)
        back = read_volume(tmp_path / name)
        assert np.array_equal(back.array, volume.array)
        assert back.geometry.same_grid(geometry, tolerance_mm=1e-4), name


def test_write_refuses_to_overwrite(tmp_path):
    volume = Volume(np.zeros((3, 3, 3), np.uint8), ImageGeometry((3, 3, 3), (1, 1, 1)))
    path = tmp_path / "seg.nrrd"
    path.write_bytes(b"user data")
    with pytest.raises(OutputExistsError, match="--overwrite"):
        write_volume(path, volume)
    assert path.read_bytes() == b"user data"
    write_volume(path, volume, overwrite=True)
    assert read_volume(path).array.shape == (3, 3, 3)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left


def test_read_errors_are_clear(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        read_volume(tmp_path / "missing.nrrd")
    garbage = tmp_path / "garbage.nrrd"
    garbage.write_text("not an image")
    with pytest.raises(InputError, match="Cannot read"):
        read_volume(garbage)
    import SimpleITK as sitk

    sitk.WriteImage(sitk.Image(8, 8, sitk.sitkInt16), str(tmp_path / "slice.nrrd"))
    with pytest.raises(InputError, match="2-D"):
        read_volume(tmp_path / "slice.nrrd")
    (tmp_path / "empty_folder").mkdir()
    with pytest.raises(InputError, match="DICOM"):
        read_volume(tmp_path / "empty_folder")


def test_real_ct_nrrd_and_dicom_series_agree(shared_data):
    from_nrrd = read_volume(shared_data / "cip-chest" / "ct-64.nrrd")
    from_dicom = read_volume(shared_data / "cip-chest" / "ct-64Dicom")
    assert from_nrrd.array.shape == (79, 64, 64)
    assert from_dicom.geometry.same_grid(from_nrrd.geometry, tolerance_mm=0.05)
    assert np.abs(from_dicom.array.astype(int) - from_nrrd.array.astype(int)).max() <= 1


def test_written_files_honour_the_umask(tmp_path):
    import os
    import stat

    volume = Volume(np.zeros((2, 3, 4), np.uint8), ImageGeometry((2, 3, 4), (1.0, 1.0, 1.0)))
    previous = os.umask(0o027)
    try:
        path = write_volume(tmp_path / "a.nrrd", volume)
    finally:
        os.umask(previous)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640  # 0666 minus umask 027 (not mkstemp's 0600)
    os.umask(0o022)
    try:
        assert stat.S_IMODE(write_volume(tmp_path / "b.nii.gz", volume).stat().st_mode) == 0o644
    finally:
        os.umask(previous)
