"""The cases of a batch run: from a folder of CTs (files or DICOM series folders) or from a CSV.

Folder input: every volume file (``.nrrd``, ``.nhdr``, ``.nii``, ``.nii.gz``, ``.mha``, ``.mhd``)
directly in the folder and every direct sub-folder holding DICOM files is one CT. Files named like
segmentations (``-seg``, ``_seg``, ``.seg.nrrd``, ``-label``, ``-mask``, ``-ref``...) are not CTs: each
is the reference of the CT with the same case id (the LNQ2023 layout ``x-ct.nrrd`` + ``x-seg.nrrd``).
The case id is the file name without its suffix and a trailing ``-ct``/``_ct`` tag.

CSV input: columns ``case_id`` and ``ct``, optional ``reference``; relative paths are relative to
the CSV's folder. Every problem (missing column, empty or duplicate id, missing file) is reported at
once, before anything runs.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional

from ..errors import InputError
from ..io import VOLUME_SUFFIXES, PathLike

#: a case id names a folder: letters, digits and ``. _ + -``, starting with a letter or digit
CASE_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$")
_REFERENCE_TAG = re.compile(r"([-_.](seg|segmentation|label|labels|labelmap|mask|ref|reference|gt))$", re.I)
_CT_TAG = re.compile(r"([-_.](ct|image|img|volume))$", re.I)
_DICOM_MAGIC_OFFSET = 128  # DICOM Part 10 files: 128-byte preamble, then "DICM"


@dataclass(frozen=True)
class Case:
    """One CT to process and, optionally, its reference segmentation."""

    case_id: str
    ct: Path
    reference: Optional[Path] = None


def _strip_volume_suffix(name: str) -> Optional[str]:
    lower = name.lower()
    for suffix in sorted(VOLUME_SUFFIXES + (".seg.nrrd",), key=len, reverse=True):
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return None


def _safe_id(text: str) -> str:
    """``text`` with characters a folder name should not hold replaced by ``_``."""
    cleaned = re.sub(r"[^A-Za-z0-9._+-]", "_", text).lstrip("._-+")
    return cleaned[:128] or "case"


def is_dicom_folder(folder: Path) -> bool:
    """True when ``folder`` holds at least one DICOM Part 10 file (checked on the first few files only)."""
    checked = 0
    for path in sorted(folder.iterdir()):
        if not path.is_file() or path.name.startswith("."):
            continue
        try:
            with open(path, "rb") as handle:
                handle.seek(_DICOM_MAGIC_OFFSET)
                if handle.read(4) == b"DICM":
                    return True
        except OSError:
            pass
        checked += 1
        if checked >= 5:
            break
    return False


def cases_from_folder(folder: PathLike, exclude: Iterable[PathLike] = ()) -> list[Case]:
    """CT files and DICOM series folders directly in ``folder``; segmentation-named files pair up as references."""
    folder = Path(folder)
    excluded = {Path(p).resolve() for p in exclude}
    cts: dict[str, Path] = {}
    references: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or path.resolve() in excluded:
            continue
        if path.is_dir():
            if is_dicom_folder(path):
                _add(cts, _safe_id(path.name), path)
            continue
        stem = _strip_volume_suffix(path.name)
        if stem is None:
            continue
        if path.name.lower().endswith(".seg.nrrd") or _REFERENCE_TAG.search(stem):
            _add(references, _safe_id(_REFERENCE_TAG.sub("", stem)), path)
        else:
            _add(cts, _safe_id(_CT_TAG.sub("", stem)), path)
    if not cts:
        raise InputError(
            f"No CTs in '{folder}': expected volume files ({', '.join(VOLUME_SUFFIXES)}) or DICOM series folders; "
            "or pass a CSV with columns case_id, ct[, reference]."
        )
    orphans = sorted(set(references) - set(cts))
    if orphans:
        raise InputError(
            f"Segmentation file(s) without a CT of the same case id in '{folder}': "
            f"{', '.join(references[o].name for o in orphans[:5])}; name the CT '<id>-ct.<suffix>' and the reference "
            "'<id>-seg.<suffix>', or list the cases in a CSV."
        )
    return [Case(case_id, path, references.get(case_id)) for case_id, path in sorted(cts.items())]


def _add(found: dict[str, Path], case_id: str, path: Path) -> None:
    for other_id, other in found.items():
        if other_id.casefold() == case_id.casefold():  # also on case-insensitive file systems
            raise InputError(
                f"'{other.name}' and '{path.name}' both give case id '{case_id}'; rename one, or list the cases in a CSV."
            )
    found[case_id] = path


def cases_from_csv(csv_path: PathLike) -> list[Case]:
    """Cases listed in a CSV with columns ``case_id``, ``ct`` and optionally ``reference``."""
    csv_path = Path(csv_path)
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            columns = [c.strip() for c in (reader.fieldnames or [])]
            rows = [{(k or "").strip(): (v or "").strip() for k, v in row.items()} for row in reader]
    except UnicodeDecodeError as error:
        raise InputError(f"'{csv_path}' is not a UTF-8 text CSV ({error}); save it as CSV (UTF-8).") from error
    missing = [c for c in ("case_id", "ct") if c not in columns]
    if missing:
        raise InputError(
            f"'{csv_path}' lacks the column(s) {', '.join(missing)} (it has: {', '.join(columns) or 'none'}); "
            "the columns are case_id, ct and optionally reference."
        )
    problems: list[str] = []
    cases: list[Case] = []
    seen: dict[str, int] = {}
    base = csv_path.parent
    for line, row in enumerate(rows, start=2):
        case_id, ct_text, reference_text = row.get("case_id", ""), row.get("ct", ""), row.get("reference", "")
        if not case_id and not ct_text and not reference_text:
            continue  # blank line
        if not CASE_ID_PATTERN.match(case_id):
            problems.append(
                f"line {line}: case_id '{case_id}' must be letters, digits and . _ + - (starting with a letter or digit)"
            )
            continue
        if case_id.casefold() in seen:
            problems.append(f"line {line}: case_id '{case_id}' repeats line {seen[case_id.casefold()]}")
            continue
        seen[case_id.casefold()] = line
        ct = _resolve(base, ct_text)
        reference = _resolve(base, reference_text) if reference_text else None
        for name, path, text in (("ct", ct, ct_text), ("reference", reference, reference_text)):
            if name == "ct" and not text:
                problems.append(f"line {line}: case '{case_id}' has no ct")
            elif path is not None and not path.exists():
                problems.append(f"line {line}: {name} '{text}' of case '{case_id}' does not exist")
        cases.append(Case(case_id, ct, reference))
    if problems:
        shown = "; ".join(problems[:8]) + (f"; and {len(problems) - 8} more" if len(problems) > 8 else "")
        raise InputError(f"'{csv_path}' lists cases that cannot run: {shown}. Fix the CSV; nothing was run.")
    if not cases:
        raise InputError(f"'{csv_path}' lists no cases; add rows case_id,ct[,reference].")
    return cases


def _resolve(base: Path, text: str) -> Path:
    path = Path(text).expanduser()
    return path if path.is_absolute() else base / path


def discover_cases(input_path: PathLike, exclude: Iterable[PathLike] = ()) -> list[Case]:
    """The cases of ``input_path``: a ``.csv`` file, or a folder of CTs (``exclude``: paths inside it to ignore)."""
    input_path = Path(input_path)
    if not input_path.exists():
        raise InputError(f"'{input_path}' does not exist; pass a folder of CTs or a CSV of cases.")
    if input_path.is_dir():
        return cases_from_folder(input_path, exclude)
    if input_path.suffix.lower() == ".csv":
        return cases_from_csv(input_path)
    raise InputError(
        f"'{input_path}' is neither a folder nor a .csv file; for one CT use 'lnq segment', for many a folder or a CSV "
        "with columns case_id, ct[, reference]."
    )
