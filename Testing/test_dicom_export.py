"""DICOM SEG and SR of the nodes (LymphNodeQuantLib.dicom_export, ``lnq segment --dicom-seg/--dicom-sr``).

Series are made from the real cip-chest DICOM series: as it is, copied with shuffled file names and
instance numbers, and rewritten so its slices are stored head to foot (slice normal pointing to
the feet, so the engine's slice k runs down the patient). A SEG frame's source instance is checked
independently of the exporter: by comparing that file's pixels with the CT slices as read.
Both files are read back with highdicom and pydicom and validated with dciodvfy (dicom3tools).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.uid import Comprehensive3DSRStorage, SegmentationStorage

from LymphNodeQuantLib import codes
from LymphNodeQuantLib.cli import main
from LymphNodeQuantLib.dicom_export import (
    SegmentationAlgorithm,
    build_dicom_seg,
    read_source_series,
    write_dicom_outputs,
)
from LymphNodeQuantLib.dicom_export.measurement_report import MEASUREMENTS
from LymphNodeQuantLib.errors import InputError
from LymphNodeQuantLib.io import read_volume
from LymphNodeQuantLib.measure import measure_nodes, measurements_to_rows
from LymphNodeQuantLib.segmentation_io import read_segmentation

ALGORITHM = SegmentationAlgorithm("lnq-test-model", "3.1.4")
NODE_IDS = (2, 5, 9)


def _copy_series(source_folder, folder, rewrite):
    folder.mkdir()
    files = sorted(source_folder.glob("*.dcm"))
    for index, path in enumerate(files):
        dataset = pydicom.dcmread(path)
        dataset.save_as(folder / rewrite(index, len(files), dataset), enforce_file_format=True)
    return folder


@pytest.fixture(scope="module")
def series(shared_data, tmp_path_factory):
    """{name: DICOM folder}: the original series, a shuffled copy, and one stored head to foot."""
    original = shared_data / "cip-chest" / "ct-64Dicom"
    root = tmp_path_factory.mktemp("dicom-series")
    order = list(range(len(list(original.glob("*.dcm")))))
    random.Random(7).shuffle(order)

    def shuffled(index, count, dataset):
        dataset.InstanceNumber = order[index] + 1
        return f"x{order[index]:03d}.dcm"

    def head_to_foot(index, count, dataset):
        # mirror the columns and flip the row direction: the slice normal (row x column) points to the feet,
        # the images stay where they are in the patient, and instance 1 is the top slice
        position = [float(v) for v in dataset.ImagePositionPatient]
        position[0] += (dataset.Columns - 1) * float(dataset.PixelSpacing[1])
        dataset.ImageOrientationPatient = [-1, 0, 0, 0, 1, 0]
        dataset.ImagePositionPatient = position
        dataset.PixelData = np.ascontiguousarray(dataset.pixel_array[:, ::-1]).tobytes()
        dataset.InstanceNumber = count - index
        return f"IMG{index:04d}.dcm"

    return {
        "original": original,
        "shuffled": _copy_series(original, root / "shuffled", shuffled),
        "head_to_foot": _copy_series(original, root / "head-to-foot", head_to_foot),
    }


def _node_labels(shape_zyx=(79, 64, 64)):
    """Three asymmetric nodes at known slices; the node ids are label values (2, 5, 9), not 1..N."""
    labels = np.zeros(shape_zyx, dtype=np.uint16)
    labels[20:24, 30:36, 20:23] = 2
    labels[21, 38, 40] = 2  # a second piece of node 2
    labels[45:47, 25:28, 35:41] = 5
    labels[60, 10:12, 50:55] = 9
    return labels


def _slice_of_instance(folder, ct):
    """{SOPInstanceUID: (k, ImagePositionPatient)}, k found by comparing the file's pixels with the CT slices as read."""
    found = {}
    for path in folder.glob("*.dcm"):
        dataset = pydicom.dcmread(path)
        matches = [k for k in range(ct.array.shape[0]) if np.array_equal(ct.array[k], dataset.pixel_array)]
        assert len(matches) == 1, f"{path.name} matches CT slices {matches}"
        found[str(dataset.SOPInstanceUID)] = (matches[0], [float(v) for v in dataset.ImagePositionPatient])
    return found


def _check_seg_frames(seg, labels, folder, ct):
    """Each frame equals its node's mask on the CT slice its source instance holds, at that instance's position;
    together the frames cover every node voxel."""
    instances = _slice_of_instance(folder, ct)
    node_of_segment = {int(s.SegmentNumber): int(s.TrackingID.split()[-1]) for s in seg.SegmentSequence}
    pixels = seg.pixel_array.reshape(int(seg.NumberOfFrames), seg.Rows, seg.Columns)
    covered = np.zeros(labels.shape, dtype=bool)
    for frame, frame_pixels in zip(seg.PerFrameFunctionalGroupsSequence, pixels):
        node = node_of_segment[int(frame.SegmentIdentificationSequence[0].ReferencedSegmentNumber)]
        k, position = instances[str(frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID)]
        np.testing.assert_array_equal(frame_pixels.astype(bool), labels[k] == node)
        np.testing.assert_allclose([float(v) for v in frame.PlanePositionSequence[0].ImagePositionPatient], position)
        covered[k] |= labels[k] == node
    np.testing.assert_array_equal(covered, labels != 0)


@pytest.mark.parametrize("name", ["original", "shuffled", "head_to_foot"])
def test_seg_frames_land_on_their_source_instances(series, name):
    folder = series[name]
    ct = read_volume(folder)
    if name == "head_to_foot":  # the engine's slice k really runs from head to foot here
        assert ct.geometry.direction_lps[2, 2] < 0
    source = read_source_series(folder, ct.geometry)
    labels = _node_labels(ct.array.shape)
    seg = build_dicom_seg(ct.with_array(labels), source, ALGORITHM)
    _check_seg_frames(seg, labels, folder, ct)
    # highdicom's own reading against the source instances in the engine's slice order gives the map back
    uids = source.sop_instance_uids
    assert len(set(uids)) == len(uids) == ct.array.shape[0]
    segments = seg.get_pixels_by_source_instance(uids, combine_segments=True, assert_missing_frames_are_empty=True)
    np.testing.assert_array_equal(np.array((0, *NODE_IDS))[segments], labels)


def test_seg_segments_carry_codes_algorithm_and_colours(series):
    ct = read_volume(series["original"])
    source = read_source_series(series["original"], ct.geometry)
    seg = build_dicom_seg(ct.with_array(_node_labels()), source, ALGORITHM)
    assert seg.SOPClassUID == SegmentationStorage and seg.SegmentationType == "BINARY"
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == source.series_instance_uid
    referenced = [str(i.ReferencedSOPInstanceUID) for i in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence]
    assert set(referenced) <= set(source.sop_instance_uids)
    first = source.datasets[0]
    assert (seg.StudyInstanceUID, seg.PatientID, seg.FrameOfReferenceUID) == (
        first.StudyInstanceUID,
        first.PatientID,
        first.FrameOfReferenceUID,
    )
    assert [int(s.SegmentNumber) for s in seg.SegmentSequence] == [1, 2, 3]
    for segment, node in zip(seg.SegmentSequence, NODE_IDS):
        assert segment.SegmentLabel == segment.TrackingID == f"Lymph node {node}"
        coded = (
            (segment.SegmentedPropertyCategoryCodeSequence[0], codes.TISSUE),
            (segment.SegmentedPropertyTypeCodeSequence[0], codes.LYMPH_NODE),
            (segment.AnatomicRegionSequence[0], codes.MEDIASTINUM),
        )
        for item, code in coded:
            assert (item.CodingSchemeDesignator, item.CodeValue, item.CodeMeaning) == (code.scheme, code.value, code.meaning)
        algorithm = segment.SegmentationAlgorithmIdentificationSequence[0]
        assert (algorithm.AlgorithmName, algorithm.AlgorithmVersion) == ("lnq-test-model", "3.1.4")
        assert segment.SegmentAlgorithmType == "AUTOMATIC"
        rgb = hd.color.CIELabColor.from_dicom_value(segment.RecommendedDisplayCIELabValue).to_rgb()
        np.testing.assert_allclose(np.asarray(rgb, dtype=float), 255 * np.asarray(codes.node_color(node)), atol=1.5)


def _write_both(folder, labels_array, out_folder, nodes_from="labels"):
    ct = read_volume(folder)
    labels = ct.with_array(labels_array)
    measurements = measure_nodes(labels, ct, nodes_from=nodes_from)
    source = read_source_series(folder, ct.geometry)
    paths = write_dicom_outputs(
        source, labels, measurements, ALGORITHM, out_folder / "nodes-seg.dcm", out_folder / "nodes-sr.dcm", nodes_from=nodes_from
    )
    return ct, source, measurements, paths


def _check_sr_against_table(sr_path, seg_path, rows, source):
    """Every number in the SR equals the node table's; each group references its node's segment and measurement slice."""
    report = hd.sr.srread(sr_path)
    assert report.SOPClassUID == Comprehensive3DSRStorage
    assert report.ContentTemplateSequence[0].TemplateIdentifier == "1500"
    groups = report.content.get_volumetric_roi_measurement_groups()
    seg = pydicom.dcmread(seg_path)
    segment_of_node = {int(s.TrackingID.split()[-1]): s for s in seg.SegmentSequence}
    assert [g.tracking_identifier for g in groups] == [f"Lymph node {row['node_id']}" for row in rows]
    for group, row in zip(groups, rows):
        segment = segment_of_node[row["node_id"]]
        assert group.tracking_uid == segment.TrackingUID
        assert group.referenced_segment.referenced_sop_instance_uid == seg.SOPInstanceUID
        assert group.referenced_segment.referenced_segment_numbers == [segment.SegmentNumber]
        assert (group.finding_type.value, group.finding_sites[0].value.value) == (codes.LYMPH_NODE.value, codes.MEDIASTINUM.value)
        found = {(m.name.value, m.derivation.value if m.derivation else None): m for m in group.get_measurements()}
        assert len(found) == len(group.get_measurements()) == len(MEASUREMENTS)
        for column, (name, unit, derivation, _, on_slice) in MEASUREMENTS.items():
            measurement = found[(name.value, derivation.value if derivation else None)]
            assert measurement.value == row[column], column  # exactly: the Floating Point Value
            decimal = float(measurement[0].MeasuredValueSequence[0].NumericValue)  # the decimal string, 16 characters
            assert decimal == pytest.approx(row[column], rel=1e-12, abs=1e-9), column
            assert (measurement.unit.scheme_designator, measurement.unit.value) == (unit.scheme, unit.value)
            if on_slice:
                expected = source.dataset_of_slice(row["measurement_slice_index"]).SOPInstanceUID
                assert measurement.referenced_images[0].referenced_sop_instance_uid == expected
    evidence = {
        str(instance.ReferencedSOPInstanceUID)
        for study in report.CurrentRequestedProcedureEvidenceSequence
        for series in study.ReferencedSeriesSequence
        for instance in series.ReferencedSOPSequence
    }
    assert {str(seg.SOPInstanceUID), *source.sop_instance_uids} == evidence
    return report


def test_sr_numbers_equal_the_node_table(series, tmp_path):
    folder = series["head_to_foot"]
    ct, source, measurements, paths = _write_both(folder, _node_labels(), tmp_path)
    rows = measurements_to_rows(measurements)
    assert [row["node_id"] for row in rows] == list(NODE_IDS)
    _check_sr_against_table(paths["dicom_sr"], paths["dicom_seg"], rows, source)
    _check_seg_frames(hd.seg.segread(paths["dicom_seg"]), _node_labels(), folder, ct)


def test_binary_map_gets_one_segment_per_connected_node(series, tmp_path):
    binary = (_node_labels() != 0).astype(np.uint8)  # 4 connected pieces: node 2 has two
    ct, source, measurements, paths = _write_both(series["original"], binary, tmp_path, nodes_from="components")
    rows = measurements_to_rows(measurements)
    assert [row["node_id"] for row in rows] == [1, 2, 3, 4]
    _check_sr_against_table(paths["dicom_sr"], paths["dicom_seg"], rows, source)
    seg = hd.seg.segread(paths["dicom_seg"])
    segments = seg.get_pixels_by_source_instance(
        source.sop_instance_uids, combine_segments=True, assert_missing_frames_are_empty=True
    )
    assert np.array_equal(segments != 0, binary != 0) and set(np.unique(segments)) == {0, 1, 2, 3, 4}


def _dciodvfy(path):
    """dciodvfy's warnings for ``path``; fails on any error line. Skips without dicom3tools, except in CI."""
    if shutil.which("dciodvfy") is None:
        if os.environ.get("CI"):
            pytest.fail("dciodvfy (Debian package dicom3tools) must be installed in CI; .ci/run installs it with apt-get")
        pytest.skip("dciodvfy not installed (apt-get install dicom3tools)")
    run = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=120)
    lines = (run.stdout + run.stderr).splitlines()
    errors = [line for line in lines if line.startswith("Error")]
    assert not errors, "\n".join(errors)
    assert not any(line.startswith("Abort") for line in lines), lines
    return [line for line in lines if line.startswith("Warning")]


def test_dciodvfy_accepts_seg_and_sr_with_and_without_nodes(series, tmp_path):
    (tmp_path / "nodes").mkdir()
    (tmp_path / "none").mkdir()
    _, _, _, paths = _write_both(series["original"], _node_labels(), tmp_path / "nodes")
    _, _, _, empty = _write_both(series["original"], np.zeros((79, 64, 64), np.uint16), tmp_path / "none")
    warnings = {}
    for path in (*paths.values(), *empty.values()):
        warnings[path.name] = _dciodvfy(path)
    # the only warnings come from the source CT's attributes copied as they are (retired person-name form)
    assert all("Person Name" in w for found in warnings.values() for w in found), warnings
    seg = pydicom.dcmread(empty["dicom_seg"])
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["No lymph node found"]
    assert not seg.pixel_array.any()
    report = hd.sr.srread(empty["dicom_sr"])
    assert not report.content.get_volumetric_roi_measurement_groups()
    (group,) = report.content.get_image_measurement_groups()  # one TID 1501 group: "Lymph node: Absent"
    evaluations = {e.name.value: e.value.value for e in group.get_qualitative_evaluations()}  # also finding (category)
    assert evaluations[codes.LYMPH_NODE.value] == codes.ABSENT.value


def test_source_series_refuses_a_mismatched_grid_or_missing_slice(series, tmp_path):
    folder = series["original"]
    ct = read_volume(folder)
    from LymphNodeQuantLib.geometry import ImageGeometry

    g = ct.geometry
    wrong_spacing = ImageGeometry(g.shape_zyx, (g.spacing_zyx_mm[0], 2.0, 2.0), g.origin_lps_mm, g.direction_lps)
    with pytest.raises(InputError, match="does not match the CT as read"):
        read_source_series(folder, wrong_spacing)
    gappy = tmp_path / "gappy"
    shutil.copytree(folder, gappy)
    (gappy / "IMG0040.dcm").unlink()
    with pytest.raises(InputError, match=r"No DICOM instance lies at slice\(s\) \[39\]"):
        read_source_series(gappy, g)
    with pytest.raises(InputError, match="not a folder"):
        read_source_series(folder / "IMG0001.dcm", g)


def test_cli_writes_seg_and_sr_matching_its_outputs(series, tiny_model, tmp_path, capsys):
    folder = series["shuffled"]
    paths = {name: tmp_path / name for name in ("ct.seg.nrrd", "nodes.json", "nodes-seg.dcm", "nodes-sr.dcm")}
    args = ["segment", str(folder), "--out", str(paths["ct.seg.nrrd"]), "--table", str(paths["nodes.json"])]
    args += ["--dicom-seg", str(paths["nodes-seg.dcm"]), "--dicom-sr", str(paths["nodes-sr.dcm"]), "--model", str(tiny_model)]
    args += ["--threshold", "0.3", "--no-anatomy-filter", "--progress", "none"]  # the tiny random model then finds nodes
    assert main(args) == 0
    out = capsys.readouterr().out
    assert f"DICOM SEG -> {paths['nodes-seg.dcm']}" in out and f"DICOM SR -> {paths['nodes-sr.dcm']}" in out
    rows = json.loads(paths["nodes.json"].read_text())["nodes"]
    assert rows, "the tiny model found no node: nothing to compare"
    ct = read_volume(folder)
    source = read_source_series(folder, ct.geometry)
    _check_sr_against_table(paths["nodes-sr.dcm"], paths["nodes-seg.dcm"], rows, source)
    labels, _ = read_segmentation(paths["ct.seg.nrrd"])
    seg = hd.seg.segread(paths["nodes-seg.dcm"])
    assert seg.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0].AlgorithmName == "tiny-cli"
    _check_seg_frames(seg, labels.array, folder, ct)
    _dciodvfy(paths["nodes-seg.dcm"])
    _dciodvfy(paths["nodes-sr.dcm"])
    # an existing DICOM output is refused before any work, and left as it was
    before = paths["nodes-sr.dcm"].read_bytes()
    assert main(args) == 2
    assert "already exists" in capsys.readouterr().err and paths["nodes-sr.dcm"].read_bytes() == before


def test_cli_refuses_dicom_outputs_without_a_dicom_series(series, ct_file, tmp_path, capsys):
    seg = tmp_path / "seg.dcm"
    base = ["segment", "--out", str(tmp_path / "o.seg.nrrd"), "--model", "no-such-model", "--progress", "none"]
    # refused before the model is even looked up: the message is about the input, and nothing is written
    assert main([*base, str(ct_file), "--dicom-seg", str(seg)]) == 2
    assert "needs the CT as a DICOM series folder" in capsys.readouterr().err
    assert main([*base, str(series["shuffled"]), "--dicom-sr", str(tmp_path / "sr.dcm")]) == 2
    assert "give --dicom-seg FILE as well" in capsys.readouterr().err
    assert main([*base, str(series["shuffled"]), "--dicom-seg", str(series["shuffled"] / "seg.dcm")]) == 2
    assert "inside the input DICOM folder" in capsys.readouterr().err
    assert main([*base, str(series["shuffled"]), "--dicom-seg", str(seg), "--dicom-sr", str(seg)]) == 2
    assert "name the same file" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())
