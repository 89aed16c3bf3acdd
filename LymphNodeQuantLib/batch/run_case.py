"""One case of a batch, run on a Dask worker: segment + measure (the ``lnq segment`` path), + evaluate.

:func:`run_case` never raises for a bad case: it returns the case's manifest entry with
``status`` ``"done"`` (outputs with sha256 and size, node counts, scores) or ``"failed"`` (error type,
message and traceback). Outputs go to ``DIR/cases/<case_id>/``:

* ``<case_id>.seg.nrrd``: the segmentation (:func:`..segmentation_io.write_segmentation`);
* ``<case_id>.nodes.csv``: the node table (:func:`..measure.write_node_table`, the schema of ``measure.py``);
* ``<case_id>.evaluation.json``: scores against the reference (:func:`..evaluate.evaluate_case`), when given;
* ``case.json``: this case's record (the same entry as in the manifest).

The outputs are written together (:func:`..output_files.written_together`): a worker killed mid-case
leaves none of them half-written, and the rescheduled attempt writes them once. The case folder is
claimed first (``case.json`` with status ``running``); a folder holding files that ``lnq batch`` did not
write is refused unless ``overwrite``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Optional

from ..errors import OutputExistsError
from ..output_files import PathLike, atomic_write, forget_written
from .cases import Case
from .manifest import output_record

if TYPE_CHECKING:
    from ..models.model_folder import ModelCard

CASES_FOLDER = "cases"
CASE_RECORD_NAME = "case.json"
OUTPUT_SUFFIXES = {"segmentation": ".seg.nrrd", "node_table": ".nodes.csv", "evaluation": ".evaluation.json"}

#: models loaded in this worker process, by (model folder, device): loaded once, used for every case
_MODELS: dict = {}


@dataclass(frozen=True)
class CaseSettings:
    """Everything that decides a case's outputs (hashed into ``settings_sha256``), plus how to run it.

    ``model`` is a resolved model folder and ``model_sha256`` the hash of its card (which holds the
    weights' sha256). ``device``, ``batch_size`` and ``compute_threads`` change speed, not results, and
    are left out of the hash.
    """

    model: str
    model_sha256: str
    engine_version: str
    crop_to_mediastinum: bool = True
    anatomy_filter: Optional[bool] = None
    overlap: float = 0.5
    tta: bool = False
    min_node_volume_mm3: Optional[float] = None
    threshold: Optional[float] = None
    binary: bool = False
    allow_unusual_input: bool = False
    resample_prediction: bool = False
    device: str = "auto"
    batch_size: int = 2
    #: torch/ITK threads per case in a worker (None: the worker's cores / its task slots)
    compute_threads: Optional[int] = None
    #: replace files in a case folder that lnq batch did not write
    overwrite: bool = False

    def segment_keywords(self) -> dict:
        """These settings as keywords of ``inference.segment_volume``."""
        keywords = ("crop_to_mediastinum", "anatomy_filter", "overlap", "tta", "min_node_volume_mm3", "threshold")
        return {
            **{k: getattr(self, k) for k in keywords},
            "output": "binary" if self.binary else "instances",
            "batch_size": self.batch_size,
            "allow_unusual_input": self.allow_unusual_input,
        }

    def result_settings(self) -> dict:
        runtime = ("model", "device", "batch_size", "compute_threads", "overwrite")
        return {k: v for k, v in asdict(self).items() if k not in runtime}

    def sha256(self) -> str:
        return hashlib.sha256(json.dumps(self.result_settings(), sort_keys=True).encode()).hexdigest()


def settings_for_model(model: PathLike = "default", **options) -> tuple[CaseSettings, ModelCard]:
    """Settings for ``model`` (installed name or folder; weights checked once here) and its card.

    ``options`` are the other :class:`CaseSettings` fields.
    """
    from .. import __version__
    from ..models.model_folder import load_model_card, resolve_model, verify_weights

    folder = resolve_model(model)
    card = load_model_card(folder)
    if card.data.get("weights", {}).get("sha256"):
        verify_weights(card)  # a damaged model fails here once, not in every case
    model_sha256 = hashlib.sha256(card.to_json().encode()).hexdigest()
    return CaseSettings(str(folder.resolve()), model_sha256, __version__, **options), card


def case_folder(out_dir: PathLike, case_id: str) -> Path:
    return Path(out_dir) / CASES_FOLDER / case_id


def output_paths(case_dir: Path, case_id: str, with_reference: bool) -> dict[str, Path]:
    names = [n for n in OUTPUT_SUFFIXES if with_reference or n != "evaluation"]
    return {name: case_dir / f"{case_id}{OUTPUT_SUFFIXES[name]}" for name in names}


def run_case(case: Case, out_dir: PathLike, settings: CaseSettings, inputs: dict) -> dict:
    """Run one case and return its manifest entry (``status`` ``"done"`` or ``"failed"``); never raises for a bad case."""
    from ..log import collected_messages

    started = time.time()
    out_dir = Path(out_dir)
    case_dir = case_folder(out_dir, case.case_id)
    entry = {
        "case_id": case.case_id,
        "ct": str(case.ct),
        "reference": str(case.reference) if case.reference else None,
        "inputs": inputs,
        "settings_sha256": settings.sha256(),
        "worker": {"host": socket.gethostname(), "pid": os.getpid()},
        "started_at": _utc(started),
    }
    forget_written()
    messages: list[str] = []
    claimed = False
    try:
        _claim(case_dir, settings.overwrite, entry)
        claimed = True
        with collected_messages() as messages, _threads_pinned(settings.compute_threads):
            summary, written = _compute(case, case_dir, settings)
        entry.update(status="done", **summary)
        entry["outputs"] = {name: output_record(path, out_dir) for name, path in written.items()}
    except Exception as error:  # a bad case is recorded, never stops the batch
        entry.update(
            status="failed",
            error={
                "type": type(error).__name__,
                "message": str(error).strip() or repr(error),
                "traceback": traceback.format_exc(),
            },
        )
    entry.update(messages=list(messages), finished_at=_utc(time.time()), duration_s=round(time.time() - started, 3))
    if claimed:  # a folder that is not ours gets no record
        _write_record(case_dir, entry)
    return entry


def _utc(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def _write_record(case_dir: Path, entry: dict) -> None:
    from ..table_format import json_safe

    text = json.dumps(json_safe(entry), indent=1) + "\n"
    atomic_write(case_dir / CASE_RECORD_NAME, lambda temporary: Path(temporary).write_text(text, encoding="utf-8"), True)


def _claim(case_dir: Path, overwrite: bool, entry: dict) -> None:
    """Make the case folder ours (``case.json`` status running) and clear what a killed attempt left behind."""
    record = case_dir / CASE_RECORD_NAME
    if case_dir.is_dir() and not record.exists() and not overwrite:
        foreign = sorted(p.name for p in case_dir.iterdir())
        if foreign:
            raise OutputExistsError(
                f"'{case_dir}' holds files lnq batch did not write ({', '.join(foreign[:3])}); move them or pass --overwrite."
            )
    if case_dir.exists() and not case_dir.is_dir():
        raise OutputExistsError(f"'{case_dir}' is a file, not a case folder; move it or choose another --out.")
    case_dir.mkdir(parents=True, exist_ok=True)
    ours = {f"{entry['case_id']}{suffix}" for suffix in OUTPUT_SUFFIXES.values()} | {CASE_RECORD_NAME}
    for path in case_dir.iterdir():  # temporary files of an attempt killed while writing (atomic_write names them .<name>.*)
        if path.is_file() and any(path.name.startswith(f".{name}.") for name in ours):
            path.unlink(missing_ok=True)
    _write_record(case_dir, {**entry, "status": "running"})


def _compute(case: Case, case_dir: Path, settings: CaseSettings) -> tuple[dict, dict[str, Path]]:
    """The ``lnq segment`` path (read, segment, measure, write together) plus evaluation; (summary, written paths)."""
    from ..inference import segment_volume
    from ..io import read_label_map, read_volume
    from ..measure import measure_nodes, write_node_table
    from ..output_files import written_together
    from ..segmentation_io import write_segmentation

    ct = read_volume(case.ct)
    reference = read_label_map(case.reference) if case.reference else None  # a bad reference fails before inference
    result = segment_volume(
        ct,
        _model(settings),
        settings.device,
        **settings.segment_keywords(),
    )
    measurements = measure_nodes(result.labels, ct, nodes_from="components" if settings.binary else "labels")
    evaluation = None
    if reference is not None:
        from ..evaluate import evaluate_case

        evaluation = evaluate_case(
            result.labels, reference, resample_prediction=settings.resample_prediction, case_id=case.case_id
        )
    paths = output_paths(case_dir, case.case_id, reference is not None)
    with written_together():  # a case's outputs appear together or not at all
        write_segmentation(paths["segmentation"], result.labels, result.model_card, overwrite=True, binary=settings.binary)
        metadata = {"case_id": case.case_id, "ct": str(case.ct), "model": result.model_card.title}
        write_node_table(paths["node_table"], measurements, overwrite=True, metadata=metadata)
        if evaluation is not None:
            from ..evaluate import write_json

            write_json(paths["evaluation"], evaluation.to_dict(), overwrite=True)
    for stale in output_paths(case_dir, case.case_id, True).values():  # e.g. the evaluation of a run that had a reference
        if stale not in paths.values():
            stale.unlink(missing_ok=True)
    summary = {
        "model": result.model_card.title,
        "device": result.device,
        "node_count": len(measurements),
        "enlarged_node_count": sum(m.enlarged for m in measurements),
        "total_node_volume_ml": sum(m.volume_ml for m in measurements),
        "has_mediastinum": result.has_mediastinum,
        "dropped_candidates": result.dropped_candidates,
        "timings_s": {k: round(v, 3) for k, v in result.timings_s.items()},
    }
    if evaluation is not None:
        summary["evaluation"] = {k: getattr(evaluation, k) for k in ("dice", "assd_mm", "hd95_mm", "empty_prediction")}
    return summary, paths


def _model(settings: CaseSettings):
    """The model for this worker's device, loaded once per worker process."""
    from ..inference import resolve_device
    from ..models.model_folder import load_model

    device = resolve_device(settings.device)
    key = (settings.model, settings.model_sha256, device)
    if key not in _MODELS:
        _MODELS.clear()  # one model per worker: a new model replaces the old one in memory
        _MODELS[key] = load_model(settings.model, device=device)
    return _MODELS[key]


@contextlib.contextmanager
def _threads_pinned(compute_threads: Optional[int]) -> Iterator[None]:
    """torch and ITK use ``compute_threads`` (default: this worker's cores / its task slots) inside the block."""
    import SimpleITK as sitk
    import torch

    from .cluster import available_cores

    threads = compute_threads
    if threads is None:
        try:
            from distributed import get_worker

            slots = get_worker().state.nthreads
        except (ImportError, ValueError):  # not on a Dask worker
            slots = 1
        threads = max(1, available_cores() // max(1, slots))
    previous = torch.get_num_threads(), sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    torch.set_num_threads(threads)
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous[0])
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(previous[1])
