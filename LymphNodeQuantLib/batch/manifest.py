"""The batch manifest: per case its status, its outputs (sha256, size), its inputs' fingerprints and settings.

``DIR/manifest.json`` is rewritten atomically (:func:`..output_files.atomic_write`) while a run goes on.
A rerun skips a case only when (:func:`finished_unchanged`): the manifest says it is done, the
fingerprint of its CT (and reference) is the same, the settings (model card hash, engine version,
every option that changes results) are the same, and every output it recorded still exists with its
recorded size and sha256. Anything else (a failed case, a changed input, a deleted or edited output)
is computed again.

Input fingerprint: resolved path, size and modification time of the file; for a DICOM folder the
same over its files (count, total size, and a hash of every name, size and time). A copied or touched
input therefore counts as changed (computed again: the safe direction).
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Optional

from ..errors import InputError
from ..models.model_folder import sha256_of_file
from ..output_files import PathLike, atomic_write
from ..table_format import json_safe

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "lnq-batch-manifest"
MANIFEST_VERSION = 1


def input_fingerprint(path: Optional[PathLike]) -> Optional[dict]:
    """Path, size and modification time of a file, or of the files of a DICOM folder (None for no input)."""
    if path is None:
        return None
    path = Path(path).resolve()
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
        listing = [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files]
        return {
            "path": str(path),
            "kind": "folder",
            "files": len(listing),
            "size_bytes": sum(size for _, size, _ in listing),
            "listing_sha256": hashlib.sha256(json.dumps(listing).encode()).hexdigest(),
        }
    stat = path.stat()
    return {"path": str(path), "kind": "file", "size_bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def output_record(path: PathLike, relative_to: PathLike) -> dict:
    """``{"path": relative path, "sha256", "size_bytes"}`` of a written output."""
    path = Path(path)
    return {
        "path": path.relative_to(relative_to).as_posix(),
        "sha256": sha256_of_file(path),
        "size_bytes": path.stat().st_size,
    }


def outputs_intact(outputs: dict, out_dir: PathLike) -> bool:
    """True when every recorded output exists with its recorded size and sha256."""
    for record in outputs.values():
        path = Path(out_dir) / record["path"]
        if not path.is_file() or path.stat().st_size != record["size_bytes"] or sha256_of_file(path) != record["sha256"]:
            return False
    return True


class Manifest:
    """The run's record, loaded from and saved to ``DIR/manifest.json``."""

    def __init__(self, out_dir: PathLike, document: Optional[dict] = None) -> None:
        self.out_dir = Path(out_dir)
        self.document = document or {"format": MANIFEST_FORMAT, "version": MANIFEST_VERSION, "cases": {}}
        self._saved_at = 0.0

    @property
    def path(self) -> Path:
        return self.out_dir / MANIFEST_NAME

    @property
    def cases(self) -> dict:
        return self.document["cases"]

    @classmethod
    def load(cls, out_dir: PathLike) -> Optional["Manifest"]:
        """The manifest of ``out_dir``, or None when there is none; refuses a file that is not a batch manifest."""
        path = Path(out_dir) / MANIFEST_NAME
        if not path.exists():
            return None
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise InputError(f"'{path}' is not valid JSON ({error}); move it away to start the batch afresh.") from error
        if not isinstance(document, dict) or document.get("format") != MANIFEST_FORMAT:
            raise InputError(f"'{path}' is not an lnq batch manifest; choose another --out folder.")
        if document.get("version") != MANIFEST_VERSION:
            raise InputError(
                f"'{path}' is manifest version {document.get('version')}, this lnq writes version {MANIFEST_VERSION}; "
                "use a new --out folder."
            )
        return cls(out_dir, document)

    def finished_unchanged(self, case_id: str, fingerprints: dict, settings_sha256: str) -> bool:
        """True when ``case_id`` is done with these inputs and settings and its outputs are intact."""
        entry = self.cases.get(case_id)
        return bool(
            entry
            and entry.get("status") == "done"
            and entry.get("inputs") == fingerprints
            and entry.get("settings_sha256") == settings_sha256
            and outputs_intact(entry.get("outputs", {}), self.out_dir)
        )

    def record(self, case_id: str, entry: dict) -> None:
        """Store a case's result; ``computed_count`` counts how often the case was computed over all runs."""
        previous = self.cases.get(case_id, {})
        entry = dict(entry)
        entry["computed_count"] = int(previous.get("computed_count", 0)) + 1
        self.cases[case_id] = json_safe(entry)

    def save(self, settings: Optional[dict] = None, min_interval_s: float = 0.0) -> bool:
        """Write atomically (skipped when the last write is under ``min_interval_s`` ago); True when written."""
        now = time.monotonic()
        if min_interval_s and now - self._saved_at < min_interval_s:
            return False
        if settings is not None:
            self.document["settings"] = json_safe(settings)
        self.document["updated_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        text = json.dumps(self.document, indent=1) + "\n"
        atomic_write(self.path, lambda temporary: Path(temporary).write_text(text, encoding="utf-8"), overwrite=True)
        self._saved_at = now
        return True
