"""How every table this project writes spells its values (node tables, evaluation tables, training logs).

One convention for all CSV and JSON outputs:

* no value (None, NaN, infinity) is an empty CSV cell and ``null`` in JSON, which spreadsheets,
  pandas (``read_csv``) and R read as missing;
* numbers are written with 6 significant digits (``%.6g``), integers as integers;
* booleans are ``true``/``false``; lists are joined with ``"; "``.
"""

from __future__ import annotations

import csv
import io
import math
from typing import Any, Iterable, Sequence

import numpy as np


def json_safe(value: Any) -> Any:
    """``value`` with NaN/inf floats as None and numpy scalars as Python numbers (recursively)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def csv_cell(value: Any) -> str:
    """One CSV cell in the project's convention (see the module docstring)."""
    value = json_safe(value)
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, list):
        return "; ".join(csv_cell(v) for v in value)
    return str(value)


def csv_text(columns: Sequence[str], rows: Iterable[dict]) -> str:
    """A CSV document (header + one line per row) with :func:`csv_cell` values; missing keys are empty."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([csv_cell(row.get(name)) for name in columns])
    return buffer.getvalue()
