"""Unpacking model zips safely, and finding the model inside what was unpacked.

``safe_extract`` refuses any entry that would land outside the target folder (absolute paths,
``..`` components, drive letters, symbolic links) before writing anything, so a hostile zip cannot
touch the user's files. ``find_model_root`` accepts the layouts models are published in:

* a LymphNodeQuant model folder (``model.json`` + weights), at the top or one folder down;
* an nnU-Net v2 results folder (``dataset.json``, ``plans.json``, ``fold_N/checkpoint_*.pth``), e.g.
  ``DatasetXXX_Name/nnUNetTrainer__Plans__3d_fullres/`` from ``nnUNetv2_export_model_to_zip``;
* a bundle with ``dataset.json`` and ``plans.json`` at its top and the folds one folder down
  (lnq-segmenter's release assets): the installer copies the two files beside the folds.
"""

from __future__ import annotations

import shutil
import stat
import zipfile
from pathlib import Path, PurePosixPath

from ..errors import InputError
from ..models.model_folder import MODEL_CARD_NAME

NNUNET_FILES = ("dataset.json", "plans.json")


def _member_target(root: Path, info: zipfile.ZipInfo) -> Path:
    name = info.filename.replace("\\", "/")
    parts = PurePosixPath(name).parts
    if name.startswith("/") or ".." in parts or (parts and ":" in parts[0]):
        raise InputError(
            f"The zip entry '{info.filename}' would be written outside the model folder; the zip was refused "
            "and nothing was installed."
        )
    if stat.S_ISLNK(info.external_attr >> 16):
        raise InputError(f"The zip entry '{info.filename}' is a symbolic link; the zip was refused and nothing was installed.")
    target = (root / name).resolve()
    if target != root and root not in target.parents:
        raise InputError(f"The zip entry '{info.filename}' escapes the model folder; the zip was refused.")
    return target


def safe_extract(zip_path: Path, target_folder: Path) -> None:
    """Extract every entry of ``zip_path`` under ``target_folder``; check all entries before writing any."""
    root = Path(target_folder).resolve()
    try:
        archive = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as error:
        raise InputError(f"'{zip_path}' is not a readable zip file ({error}); nothing was installed.") from error
    with archive:
        members = [(info, _member_target(root, info)) for info in archive.infolist()]
        for info, target in members:
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(info) as source, open(target, "wb") as destination:
                shutil.copyfileobj(source, destination, 1 << 20)


def _is_nnunet_results(folder: Path) -> bool:
    return all((folder / name).is_file() for name in NNUNET_FILES) and any(folder.glob("fold_*/checkpoint_*.pth"))


def find_model_root(folder: Path) -> tuple[Path, str, Path]:
    """(model folder, "native" | "nnunetv2", folder holding dataset.json and plans.json) inside ``folder``.

    Nothing is moved or changed; :class:`InputError` when no model is there.
    """
    folder = Path(folder)
    candidates = [folder, *sorted(p for p in folder.rglob("*") if p.is_dir() and len(p.relative_to(folder).parts) <= 3)]
    for candidate in candidates:
        if (candidate / MODEL_CARD_NAME).is_file():
            return candidate, "native", candidate
    for candidate in candidates:
        if _is_nnunet_results(candidate):
            return candidate, "nnunetv2", candidate
    for parent in sorted({p.parent.parent for p in folder.rglob("fold_*/checkpoint_*.pth")}):
        for holder in (parent.parent, folder):  # plans one level above the folds (a published bundle)
            if all((holder / name).is_file() for name in NNUNET_FILES):
                return parent, "nnunetv2", holder
    raise InputError(
        f"No model found in '{folder.name}': expected a LymphNodeQuant model folder ({MODEL_CARD_NAME}) or an nnU-Net v2 "
        "results folder (dataset.json, plans.json, fold_N/checkpoint_final.pth). Nothing was installed."
    )
