"""Metrics log of a training run: ``metrics.csv`` (one row per epoch) and ``metrics.png``."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

METRIC_COLUMNS = ("epoch", "iterations", "train_loss", "learning_rate", "val_dice", "val_assd_mm", "seconds")


def write_metrics_csv(path: Path, rows: Sequence[dict]) -> None:
    from ..table_format import csv_text

    path = Path(path)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(csv_text(METRIC_COLUMNS, rows))
    temporary.replace(path)


def plot_metrics(path: Path, rows: Sequence[dict], title: str = "") -> bool:
    """Loss (left axis) and validation Dice (right axis) per epoch; False (no plot) without matplotlib,
    which is an optional dependency (``pip install -e ".[train]"``)."""
    try:
        import matplotlib
    except ImportError:
        return False

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in rows]
    figure, loss_axis = plt.subplots(figsize=(6, 3.5), dpi=100)
    loss_axis.plot(epochs, [r["train_loss"] for r in rows], color="tab:blue", marker="o", label="training loss")
    loss_axis.set_xlabel("epoch")
    loss_axis.set_ylabel("training loss", color="tab:blue")
    dice = [(r["epoch"], r["val_dice"]) for r in rows if r.get("val_dice") is not None and not math.isnan(r["val_dice"])]
    if dice:
        dice_axis = loss_axis.twinx()
        dice_axis.plot([e for e, _ in dice], [d for _, d in dice], color="tab:red", marker="s", label="validation Dice")
        dice_axis.set_ylabel("validation Dice", color="tab:red")
        dice_axis.set_ylim(0, 1)
    loss_axis.set_title(title or "training")
    figure.tight_layout()
    temporary = Path(path).with_name(f".{Path(path).stem}.tmp.png")
    figure.savefig(temporary)
    plt.close(figure)
    temporary.replace(path)
    return True
