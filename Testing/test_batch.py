"""``lnq batch``: case discovery, the manifest's skip rules, the cohort tables, and real Dask clusters.

The cluster tests use real local clusters of 2 worker processes and the tiny model of ``conftest.py`` at
threshold 0.45 (so its random weights do report nodes), on small phantoms, one of them a truncated .nii.gz.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from LymphNodeQuantLib.batch.cases import Case, cases_from_csv, cases_from_folder, discover_cases
from LymphNodeQuantLib.batch.cluster import local_client, plan_local_cluster
from LymphNodeQuantLib.batch.manifest import Manifest
from LymphNodeQuantLib.batch.run_case import CASE_RECORD_NAME, run_case, settings_for_model
from LymphNodeQuantLib.batch.runner import run_batch
from LymphNodeQuantLib.cli import main
from LymphNodeQuantLib.errors import InputError, OutputExistsError
from LymphNodeQuantLib.io import read_label_map, write_volume
from LymphNodeQuantLib.measure import NODE_TABLE_COLUMNS
from LymphNodeQuantLib.synthetic import make_phantom

THRESHOLD = 0.45  # the tiny random model finds a few nodes per phantom at this threshold
SMALL = ((32, 80, 80), (3.0, 4.0, 4.0))
GiB = 1024**3


def _truncated_copy(source: Path, target: Path) -> Path:
    data = source.read_bytes()
    target.write_bytes(data[: len(data) // 2])
    return target


@pytest.fixture(scope="module")
def phantom_cases(tmp_path_factory) -> Path:
    """A folder with 3 phantom CTs + references (LNQ2023 names) and one truncated CT, and a CSV of the same cases."""
    folder = tmp_path_factory.mktemp("batch-in")
    for seed in (1, 2, 3):
        phantom = make_phantom(*SMALL, seed=seed)
        write_volume(folder / f"case{seed}-ct.nii.gz", phantom.ct)
        write_volume(folder / f"case{seed}-seg.nii.gz", phantom.full_labels)
    _truncated_copy(folder / "case1-ct.nii.gz", folder / "broken-ct.nii.gz")
    rows = (
        ["case_id,ct,reference"]
        + [f"case{s},case{s}-ct.nii.gz,case{s}-seg.nii.gz" for s in (1, 2, 3)]
        + ["broken,broken-ct.nii.gz,"]
    )
    (folder / "cases.csv").write_text("\n".join(rows) + "\n")
    return folder


def _read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _output_state(out: Path) -> dict:
    """Every file under ``out/cases`` with its modification time (ns)."""
    return {p.relative_to(out).as_posix(): p.stat().st_mtime_ns for p in sorted((out / "cases").rglob("*")) if p.is_file()}


def _float(text: str) -> float:
    return float(text) if text != "" else math.nan


# ------------------------------------------------------------------------------------------------ cases
def test_folder_cases_pair_references_and_find_dicom_folders(tmp_path):
    (tmp_path / "a-ct.nii.gz").write_bytes(b"x")
    (tmp_path / "a-seg.nii.gz").write_bytes(b"x")
    (tmp_path / "b.nrrd").write_bytes(b"x")
    (tmp_path / "notes.txt").write_text("not a volume")
    dicom = tmp_path / "c series"
    dicom.mkdir()
    (dicom / "IM0001").write_bytes(b"\0" * 128 + b"DICM" + b"\0" * 16)
    (tmp_path / "empty folder").mkdir()
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "IM0001").write_bytes(b"\0" * 128 + b"DICM")
    cases = cases_from_folder(tmp_path, exclude=[tmp_path / "out"])
    assert cases == [
        Case("a", tmp_path / "a-ct.nii.gz", tmp_path / "a-seg.nii.gz"),
        Case("b", tmp_path / "b.nrrd", None),
        Case("c_series", dicom, None),
    ]


@pytest.mark.parametrize(
    "files, message",
    [
        (["a.nii.gz", "a.nrrd"], "both give case id 'a'"),
        (["a-ct.nrrd", "b-seg.nrrd"], "without a CT"),
        (["readme.txt"], "No CTs"),
    ],
)
def test_folder_cases_refuse_ambiguous_folders(tmp_path, files, message):
    for name in files:
        (tmp_path / name).write_bytes(b"x")
    with pytest.raises(InputError, match=message):
        cases_from_folder(tmp_path)


def test_csv_cases_resolve_relative_paths_and_report_every_problem(tmp_path):
    (tmp_path / "ct1.nrrd").write_bytes(b"x")
    (tmp_path / "ref1.nrrd").write_bytes(b"x")
    good = tmp_path / "good.csv"
    good.write_text("case_id,ct,reference\nP1,ct1.nrrd,ref1.nrrd\nP2,ct1.nrrd,\n\n")
    assert cases_from_csv(good) == [Case("P1", tmp_path / "ct1.nrrd", tmp_path / "ref1.nrrd"), Case("P2", tmp_path / "ct1.nrrd")]
    bad = tmp_path / "bad.csv"
    bad.write_text("case_id,ct,reference\nP1,ct1.nrrd,\np1,ct1.nrrd,\nP3,missing.nrrd,\nP4,ct1.nrrd,gone.nrrd\n../x,ct1.nrrd,\n")
    with pytest.raises(InputError) as error:
        cases_from_csv(bad)
    text = str(error.value)
    for expected in ("repeats line 2", "'missing.nrrd' of case 'P3' does not exist", "reference 'gone.nrrd'", "'../x' must be"):
        assert expected in text
    no_column = tmp_path / "columns.csv"
    no_column.write_text("id,image\nP1,ct1.nrrd\n")
    with pytest.raises(InputError, match="lacks the column"):
        cases_from_csv(no_column)
    with pytest.raises(InputError, match="neither a folder nor a .csv"):
        discover_cases(tmp_path / "ct1.nrrd")


def test_plan_sizes_workers_to_cores_memory_and_gpus():
    def size(plan):
        return plan.workers, plan.threads_per_worker, plan.gpus

    assert size(plan_local_cluster(cores=2, memory_bytes=24 * GiB)) == (2, 1, ())
    assert size(plan_local_cluster(1, cores=2, memory_bytes=24 * GiB)) == (1, 2, ())
    assert size(plan_local_cluster(2, cores=2, memory_bytes=24 * GiB)) == (2, 1, ())
    assert size(plan_local_cluster(threads_per_worker=1, cores=8, memory_bytes=64 * GiB)) == (8, 1, ())
    assert size(plan_local_cluster(cores=16, memory_bytes=8 * GiB)) == (2, 8, ())  # memory: 4 GiB per worker
    assert size(plan_local_cluster(cores=16, gpus=("2", "5"), memory_bytes=64 * GiB)) == (2, 8, ("2", "5"))
    with pytest.raises(InputError, match="at least 1"):
        plan_local_cluster(0, cores=2, memory_bytes=GiB)


def test_each_gpu_worker_sees_only_its_own_gpu():
    """The per-worker environment of a GPU plan (checked without GPUs: only the environment is asserted)."""
    plan = plan_local_cluster(cores=2, gpus=("7", "9"), memory_bytes=4 * GiB)
    before = os.environ.get("OMP_NUM_THREADS")
    with local_client(plan) as client:
        client.wait_for_workers(2, timeout=120)
        seen = client.run(lambda: (os.environ.get("CUDA_VISIBLE_DEVICES"), os.environ.get("OMP_NUM_THREADS")))
    assert sorted(seen.values()) == [("7", "1"), ("9", "1")]
    assert os.environ.get("OMP_NUM_THREADS") == before  # the nanny's thread caps did not stay in this process


def test_progress_prints_a_line_per_case_when_not_a_terminal():
    import io

    from LymphNodeQuantLib.cli.batch import CaseProgress

    stream = io.StringIO()
    progress = CaseProgress("bar", stream)
    progress({"event": "start", "total": 3, "to_compute": 2, "skipped": 1})
    progress({"event": "case", "case_id": "a", "status": "done", "error": None})
    progress({"event": "case", "case_id": "b", "status": "failed", "error": {"type": "InputError", "message": "bad file"}})
    lines = stream.getvalue().splitlines()
    assert lines[0] == "3 case(s): 2 to compute, 1 skipped (finished earlier)"
    assert lines[1].endswith("1/2 a done") and lines[2].endswith("2/2 b failed: InputError: bad file")


# ------------------------------------------------------------------------------------------------ one case
def test_case_failures_are_recorded_and_foreign_files_kept(tmp_path, tiny_model, phantom_cases):
    settings, _ = settings_for_model(tiny_model, threshold=THRESHOLD, compute_threads=1)
    broken = Case("broken", phantom_cases / "broken-ct.nii.gz")
    entry = run_case(broken, tmp_path, settings, {})
    assert entry["status"] == "failed" and entry["error"]["type"] == "InputError"
    assert "damaged or incomplete" in entry["error"]["message"]
    assert json.loads((tmp_path / "cases" / "broken" / CASE_RECORD_NAME).read_text())["status"] == "failed"
    foreign = tmp_path / "cases" / "case2" / "mine.txt"
    foreign.parent.mkdir(parents=True)
    foreign.write_text("keep")
    entry = run_case(Case("case2", phantom_cases / "case2-ct.nii.gz"), tmp_path, settings, {})
    assert entry["status"] == "failed" and entry["error"]["type"] == OutputExistsError.__name__
    assert sorted(p.name for p in foreign.parent.iterdir()) == ["mine.txt"] and foreign.read_text() == "keep"


def test_batch_case_matches_lnq_segment(tmp_path, tiny_model, phantom_cases):
    """A batch case runs the lnq segment path: the same segmentation and node table (same threads, same model)."""
    import torch

    from LymphNodeQuantLib.segmentation_io import read_segmentation

    settings, _ = settings_for_model(tiny_model, threshold=THRESHOLD, compute_threads=1)
    case = Case("case3", phantom_cases / "case3-ct.nii.gz")
    entry = run_case(case, tmp_path / "batch", settings, {})
    assert entry["status"] == "done" and entry["node_count"] > 0
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        seg, table = tmp_path / "single.seg.nrrd", tmp_path / "single.csv"
        arguments = ["segment", str(case.ct), "--out", str(seg), "--table", str(table), "--model", str(tiny_model)]
        assert main(arguments + ["--threshold", str(THRESHOLD), "--progress", "none"]) == 0
    finally:
        torch.set_num_threads(threads)
    batch_labels, batch_segments = read_segmentation(tmp_path / "batch" / entry["outputs"]["segmentation"]["path"])
    labels, segments = read_segmentation(seg)
    assert np.array_equal(batch_labels.array, labels.array) and batch_segments == segments
    assert (tmp_path / "batch" / entry["outputs"]["node_table"]["path"]).read_text() == table.read_text()


# ------------------------------------------------------------------------------------------------ clusters
def test_cli_batch_on_two_workers_then_a_rerun_that_redoes_nothing(tmp_path, tiny_model, phantom_cases, capsys):
    out = tmp_path / "out"
    arguments = ["batch", str(phantom_cases / "cases.csv"), "--out", str(out), "--model", str(tiny_model)]
    arguments += ["--workers", "2", "--threads-per-worker", "1", "--threshold", str(THRESHOLD), "--progress", "json"]
    assert main(arguments) == 1  # one case failed
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert events[0] == {"event": "start", "total": 4, "to_compute": 4, "skipped": 0}
    assert sorted((e["case_id"], e["status"]) for e in events if e["event"] == "case") == [
        ("broken", "failed"),
        ("case1", "done"),
        ("case2", "done"),
        ("case3", "done"),
    ]
    assert events[-1]["event"] == "done" and events[-1]["failed"] == ["broken"]

    manifest = Manifest.load(out)
    assert {c: e["computed_count"] for c, e in manifest.cases.items()} == {"broken": 1, "case1": 1, "case2": 1, "case3": 1}
    assert manifest.document["settings"]["cluster"].startswith("local Dask cluster: 2 worker process(es) x 1 thread(s)")
    summary = {row["case_id"]: row for row in _read_csv(out / "cases.csv")}
    assert list(summary) == ["case1", "case2", "case3", "broken"]  # the CSV's order
    assert summary["broken"]["status"] == "failed" and summary["broken"]["error_type"] == "InputError"
    assert "damaged or incomplete" in summary["broken"]["error_message"]

    # cohort node table: case_id + the node table schema, one row per node of every finished case
    nodes = _read_csv(out / "cohort_nodes.csv")
    assert list(nodes[0]) == ["case_id"] + [name for name, _, _ in NODE_TABLE_COLUMNS]
    for case_id in ("case1", "case2", "case3"):
        own = _read_csv(out / "cases" / case_id / f"{case_id}.nodes.csv")
        assert [{k: v for k, v in r.items() if k != "case_id"} for r in nodes if r["case_id"] == case_id] == own
        assert int(summary[case_id]["node_count"]) == len(own) > 0

    # evaluation: each case scored like lnq evaluate; the summary aggregates as LNQ2023 (medians, NaN ASSD -> worst)
    from LymphNodeQuantLib.evaluate import evaluate_case
    from LymphNodeQuantLib.segmentation_io import read_segmentation

    rows = {row["case_id"]: row for row in _read_csv(out / "evaluation_cases.csv")}
    assert sorted(rows) == ["case1", "case2", "case3"]
    dice, assd = [], []
    for case_id, row in rows.items():
        labels, _ = read_segmentation(out / "cases" / case_id / f"{case_id}.seg.nrrd")
        scores = evaluate_case(labels, read_label_map(phantom_cases / f"{case_id}-seg.nii.gz"))
        assert _float(row["dice"]) == pytest.approx(scores.dice, rel=1e-5)
        assert math.isnan(scores.assd_mm) == (row["assd_mm"] == "")
        dice.append(scores.dice)
        assd.append(scores.assd_mm)
    finite = [a for a in assd if not math.isnan(a)]
    worst = [a if not math.isnan(a) else max(finite) for a in assd]
    document = json.loads((out / "evaluation_summary.json").read_text())
    assert document["summary"]["dice_median"] == pytest.approx(float(np.median(dice)), rel=1e-6)
    assert document["summary"]["assd_mm_median"] == pytest.approx(float(np.median(worst)), rel=1e-6)
    assert document["failed_cases_with_reference"] == []

    # a rerun: nothing computed (no cluster started), files untouched, the failed case reported again
    before = _output_state(out)
    assert main(arguments) == 1
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert events[0]["to_compute"] == 0 and events[-1]["computed"] == [] and events[-1]["failed"] == ["broken"]
    assert _output_state(out) == before
    assert {e["computed_count"] for e in Manifest.load(out).cases.values()} == {1}


@pytest.fixture(scope="module")
def two_workers():
    """A local cluster of 2 worker processes, 1 thread each, shared by the tests below."""
    with local_client(plan_local_cluster(2, 1)) as client:
        client.wait_for_workers(2, timeout=180)
        yield client


def _batch(cases, out, tiny_model, client, **options):
    settings, _ = settings_for_model(tiny_model, threshold=THRESHOLD, compute_threads=1)
    return run_batch(cases, out, settings, lambda: contextlib.nullcontext(client), **options)


@pytest.fixture(scope="module")
def killed_run(tmp_path_factory, tiny_model, phantom_cases, two_workers) -> dict:
    """A batch on 2 workers during which the worker running the slow case is SIGKILLed (its pid is returned)."""
    folder = tmp_path_factory.mktemp("killed")
    slow = write_volume(folder / "slow-ct.nii.gz", make_phantom((100, 120, 120), (3.0, 3.3, 3.3), seed=4).ct)
    cases = [Case("slow", slow)] + [Case(f"case{s}", phantom_cases / f"case{s}-ct.nii.gz") for s in (1, 2, 3)]
    out = folder / "out"
    outcome: dict = {}
    runner = threading.Thread(target=lambda: outcome.update(result=_batch(cases, out, tiny_model, two_workers)), daemon=True)
    runner.start()
    killed = None
    deadline = time.monotonic() + 240
    while killed is None and time.monotonic() < deadline and runner.is_alive():
        executing = two_workers.run(lambda dask_worker: [str(ts.key) for ts in dask_worker.state.executing])
        for address, keys in executing.items():
            if any(key.startswith("lnq-case-slow-") for key in keys):
                killed = two_workers.run(os.getpid, workers=[address])[address]
                os.kill(killed, signal.SIGKILL)
                break
        time.sleep(0.05)
    runner.join(timeout=300)
    return {"out": out, "cases": cases, "killed": killed, "alive": runner.is_alive(), **outcome}


def test_killed_worker_mid_case_each_case_done_once(killed_run):
    """SIGKILL the worker running the slow case: Dask gives the case to a worker again; every case ends done once."""
    assert killed_run["killed"] is not None, "the slow case was never seen running"
    assert not killed_run["alive"] and "result" in killed_run
    result, out = killed_run["result"], killed_run["out"]
    assert result.failed == [] and sorted(result.computed) == ["case1", "case2", "case3", "slow"]
    manifest = Manifest.load(out)
    assert manifest.cases["slow"]["worker"]["pid"] != killed_run["killed"]  # finished by another process
    for case in killed_run["cases"]:
        entry = manifest.cases[case.case_id]
        assert entry["status"] == "done" and entry["computed_count"] == 1
        folder = out / "cases" / case.case_id
        names = {f"{case.case_id}.seg.nrrd", f"{case.case_id}.nodes.csv", CASE_RECORD_NAME}
        assert {p.name for p in folder.iterdir()} == names  # no half-written or temporary file left
        assert json.loads((folder / CASE_RECORD_NAME).read_text())["status"] == "done"
        assert manifest.finished_unchanged(case.case_id, entry["inputs"], entry["settings_sha256"])  # sha256 + size
        read_label_map(folder / f"{case.case_id}.seg.nrrd")


def test_rerun_computes_exactly_the_changed_cases(tmp_path, tiny_model, phantom_cases, two_workers, killed_run):
    out = tmp_path / "out"
    shutil.copytree(killed_run["out"], out)  # the manifest records outputs relative to the folder
    cases = killed_run["cases"] + [Case("broken", phantom_cases / "broken-ct.nii.gz")]
    table = out / "cases" / "case1" / "case1.nodes.csv"
    table.write_text(table.read_text() + "edited\n")  # an output that no longer matches the manifest
    os.utime(phantom_cases / "case2-ct.nii.gz")  # an input that may have changed
    second = _batch(cases, out, tiny_model, two_workers)
    assert sorted(second.computed) == ["broken", "case1", "case2"] and sorted(second.skipped) == ["case3", "slow"]
    assert second.failed == ["broken"] and "edited" not in table.read_text()

    third = _batch(cases, out, tiny_model, two_workers)
    assert third.computed == [] and third.failed == ["broken"]  # a failed case with unchanged input is not redone
    fourth = _batch(cases, out, tiny_model, two_workers, retry_failed=True)
    assert fourth.computed == ["broken"] and fourth.failed == ["broken"]
    counts = {c: e["computed_count"] for c, e in Manifest.load(out).cases.items()}
    assert counts == {"slow": 1, "case1": 2, "case2": 2, "case3": 1, "broken": 2}
    assert [row["this_run"] for row in _read_csv(out / "cases.csv")] == ["skipped"] * 4 + ["computed"]

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "cases.csv").write_text("someone else's table")
    with pytest.raises(OutputExistsError, match="no lnq batch manifest"):  # never overwrite unrelated files
        _batch(cases, foreign, tiny_model, two_workers)
    assert (foreign / "cases.csv").read_text() == "someone else's table"
