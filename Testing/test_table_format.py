"""Every CSV/JSON table spells "no value" and numbers the same way (LymphNodeQuantLib.table_format)."""

import csv
import json
import math

import numpy as np

from LymphNodeQuantLib.evaluate import evaluate_case, write_case_table, write_json
from LymphNodeQuantLib.geometry import ImageGeometry, Volume
from LymphNodeQuantLib.measure import measure_nodes, write_node_table
from LymphNodeQuantLib.table_format import csv_cell
from LymphNodeQuantLib.training.plots import write_metrics_csv


def test_cell_convention():
    assert [csv_cell(v) for v in (None, float("nan"), np.float32("inf"), True, 3, 2.0 / 3.0, np.int64(7), [1.5, None])] == [
        "",
        "",
        "",
        "true",
        "3",
        "0.666667",
        "7",
        "1.5; ",
    ]


def test_no_value_is_an_empty_cell_in_every_csv_and_null_in_json(tmp_path):
    labels = np.zeros((6, 8, 8), np.uint8)
    labels[1:3, 2:5, 2:5] = 1
    volume = Volume(labels, ImageGeometry(labels.shape, (2.0, 1.0, 1.0)))
    write_node_table(tmp_path / "nodes.csv", measure_nodes(volume))  # no CT: mean_hu has no value
    node = next(csv.DictReader(open(tmp_path / "nodes.csv")))
    assert node["mean_hu"] == "" and node["volume_mm3"] == "36" and node["enlarged"] == "false"
    empty = evaluate_case(volume.with_array(np.zeros_like(labels)), volume)  # empty prediction: ASSD NaN
    assert math.isnan(empty.assd_mm)
    write_case_table(tmp_path / "cases.csv", [empty])
    assert next(csv.DictReader(open(tmp_path / "cases.csv")))["assd_mm"] == ""
    write_json(tmp_path / "case.json", empty.to_dict())
    assert json.loads((tmp_path / "case.json").read_text())["assd_mm"] is None
    write_metrics_csv(tmp_path / "metrics.csv", [{"epoch": 1, "train_loss": 0.25, "val_dice": None, "val_assd_mm": float("nan")}])
    row = next(csv.DictReader(open(tmp_path / "metrics.csv")))
    assert row["val_dice"] == "" and row["val_assd_mm"] == "" and row["train_loss"] == "0.25"
