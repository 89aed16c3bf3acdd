"""Run a batch on a Dask client: decide what to skip, submit the rest, record each case as it ends.

Rules (:func:`run_batch`):

* a case is *finished* when the manifest records it done (outputs intact, see :mod:`.manifest`) or
  failed, with the same input fingerprints and settings; a rerun skips finished cases, so a rerun
  of an unchanged batch computes nothing. ``retry_failed`` computes failed cases again; ``overwrite``
  computes every case again;
* a case that raises is recorded as failed (error type and message) and the others go on; a case
  whose worker process died more than :data:`.cluster.ALLOWED_FAILURES` times is recorded as failed too;
* the manifest is saved atomically at most every ``manifest_interval_s`` seconds and at the end
  (also after Ctrl-C), then the cohort tables are written (:mod:`.cohort`);
* one run at a time per output folder (a lock file; the second run is refused);
* a new output folder's own file names (manifest, cohort tables) must not exist yet unless ``overwrite``.
"""

from __future__ import annotations

import contextlib
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, ContextManager, Iterator, Optional, Sequence

from ..errors import InputError, OutputExistsError
from ..output_files import PathLike
from .cases import Case
from .cluster import ALLOWED_FAILURES
from .cohort import CASE_SUMMARY_NAME, COHORT_NODES_NAME, EVALUATION_CASES_NAME, EVALUATION_SUMMARY_NAME, write_cohort_tables
from .manifest import MANIFEST_NAME, Manifest, input_fingerprint
from .run_case import CASES_FOLDER, CaseSettings, run_case

LOCK_NAME = ".lnq-batch.lock"
ROOT_NAMES = (MANIFEST_NAME, COHORT_NODES_NAME, CASE_SUMMARY_NAME, EVALUATION_CASES_NAME, EVALUATION_SUMMARY_NAME)
ProgressEvent = Callable[[dict], None]


@dataclass
class BatchResult:
    """What a run did: case ids computed, skipped (finished earlier) and failed (now or earlier), and the files."""

    out_dir: Path
    total: int
    computed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    files: dict = field(default_factory=dict)
    #: failed case id -> "ErrorType: message"
    errors: dict = field(default_factory=dict)

    def one_line(self) -> str:
        text = f"{self.total} case(s): {len(self.computed)} computed, {len(self.skipped)} skipped (finished earlier)"
        text += f", {len(self.failed)} failed" if self.failed else ", none failed"
        if self.failed:
            shown = ", ".join(self.failed[:5]) + (" ..." if len(self.failed) > 5 else "")
            text += f" ({shown}: see {self.out_dir / CASE_SUMMARY_NAME})"
        return text


def prepare_output_folder(out_dir: Path, overwrite: bool) -> Manifest:
    """The folder's manifest, or a new one after checking that none of this batch's file names exist."""
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputExistsError(f"--out '{out_dir}' is a file; give a folder.")
    manifest = Manifest.load(out_dir) if out_dir.is_dir() else None
    if manifest is not None:
        return manifest
    taken = [name for name in ROOT_NAMES + (CASES_FOLDER,) if (out_dir / name).exists()]
    if taken and not overwrite:
        raise OutputExistsError(
            f"'{out_dir}' already holds {', '.join(taken)} but no lnq batch manifest; choose another --out folder or "
            "pass --overwrite to replace them."
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    return Manifest(out_dir)


@contextlib.contextmanager
def folder_lock(out_dir: Path) -> Iterator[None]:
    """Refuse a second ``lnq batch`` on the same folder while this one runs (released when the process ends)."""
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks here; one run at a time is then the user's job
        yield
        return
    with open(out_dir / LOCK_NAME, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            raise InputError(f"Another lnq batch is writing to '{out_dir}'; wait for it or choose another --out.") from error
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _fingerprints(case: Case) -> dict:
    return {"ct": input_fingerprint(case.ct), "reference": input_fingerprint(case.reference)}


def _is_finished(manifest: Manifest, case: Case, fingerprints: dict, settings_sha256: str, retry_failed: bool) -> bool:
    entry = manifest.cases.get(case.case_id)
    if entry and entry.get("status") == "failed":
        return not retry_failed and entry.get("inputs") == fingerprints and entry.get("settings_sha256") == settings_sha256
    return manifest.finished_unchanged(case.case_id, fingerprints, settings_sha256)


def _lost_case_entry(case: Case, fingerprints: dict, settings: CaseSettings, error: BaseException) -> dict:
    """The entry of a case whose task did not return (its worker died too often, or it could not run at all)."""
    from distributed import KilledWorker

    if isinstance(error, KilledWorker):
        message = (
            f"the worker process running this case died {ALLOWED_FAILURES + 1} times (killed, or out of memory: a "
            "full-size CT needs about 4 GiB per worker; try fewer --workers)"
        )
    else:
        message = str(error).strip() or repr(error)
    return {
        "case_id": case.case_id,
        "ct": str(case.ct),
        "reference": str(case.reference) if case.reference else None,
        "inputs": fingerprints,
        "settings_sha256": settings.sha256(),
        "status": "failed",
        "error": {"type": type(error).__name__, "message": message},
    }


def run_batch(
    cases: Sequence[Case],
    out_dir: PathLike,
    settings: CaseSettings,
    client_factory: Callable[[], ContextManager],
    *,
    retry_failed: bool = False,
    progress: Optional[ProgressEvent] = None,
    run_settings: Optional[dict] = None,
    manifest_interval_s: float = 2.0,
) -> BatchResult:
    """Run ``cases``; ``client_factory()`` gives a context manager yielding a Dask client, entered only when a
    case needs computing (a rerun with nothing to do starts no cluster). See the module docstring for the rules."""
    out_dir = Path(out_dir)
    manifest = prepare_output_folder(out_dir, settings.overwrite)
    result = BatchResult(out_dir, len(cases))
    settings_sha256 = settings.sha256()
    document = {
        **settings.result_settings(),
        "settings_sha256": settings_sha256,
        "model_folder": settings.model,
        **(run_settings or {}),
    }
    actions: dict[str, str] = {}
    with folder_lock(out_dir):
        to_compute = []
        for case in cases:
            fingerprints = _fingerprints(case)
            if not settings.overwrite and _is_finished(manifest, case, fingerprints, settings_sha256, retry_failed):
                result.skipped.append(case.case_id)
                actions[case.case_id] = "skipped"
            else:
                to_compute.append((case, fingerprints))
        if progress:
            progress({"event": "start", "total": len(cases), "to_compute": len(to_compute), "skipped": len(result.skipped)})
        if to_compute:
            with client_factory() as client:
                _compute_cases(
                    client, to_compute, out_dir, settings, manifest, document, manifest_interval_s, progress, result, actions
                )
        manifest.save(document)
        result.failed = [c.case_id for c in cases if manifest.cases.get(c.case_id, {}).get("status") != "done"]
        for case_id in result.failed:
            error = manifest.cases.get(case_id, {}).get("error") or {}
            result.errors[case_id] = f"{error.get('type', 'Error')}: {error.get('message', 'not run')}"
        result.files = write_cohort_tables(out_dir, cases, manifest, actions)
        result.files[MANIFEST_NAME] = manifest.path
    return result


def _compute_cases(client, to_compute, out_dir, settings, manifest, document, interval_s, progress, result, actions) -> None:
    """Submit every case, record each as it ends (saving the manifest now and then, and at the end)."""
    from distributed import as_completed

    pending = {}
    for case, fingerprints in to_compute:
        key = f"lnq-case-{case.case_id}-{uuid.uuid4().hex[:8]}"
        future = client.submit(run_case, case, str(out_dir), settings, fingerprints, key=key, pure=False)
        pending[future] = (case, fingerprints)
    try:
        for future in as_completed(list(pending)):
            case, fingerprints = pending.pop(future)
            try:
                entry = future.result()
            except Exception as error:  # the task itself did not return (worker died too often, lost cluster)
                entry = _lost_case_entry(case, fingerprints, settings, error)
            error = {k: v for k, v in entry["error"].items() if k != "traceback"} if entry.get("error") else None
            # the manifest stays small for thousands of cases: messages and tracebacks are in each case.json
            manifest.record(case.case_id, {**{k: v for k, v in entry.items() if k != "messages"}, "error": error})
            result.computed.append(case.case_id)
            actions[case.case_id] = "computed"
            manifest.save(document, interval_s)
            if progress:
                progress({"event": "case", "case_id": case.case_id, "status": entry["status"], "error": error})
    finally:
        for future in pending:
            future.cancel()
        manifest.save(document)
