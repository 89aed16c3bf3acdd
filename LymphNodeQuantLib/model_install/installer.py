"""Installing models into the per-user models folder, atomically, and removing them.

A model is assembled in a staging folder beside its destination (``.staging-NAME-PID``), checked
(its card reads; native weights match their sha256; nnU-Net folds are present), and only then
renamed into place; anything that fails on the way removes the staging folder, so a model is
either fully installed or not at all. Each installed model has ``lnq-install.json`` (source,
version, licence, recommended use, folds). Downloads of published models are cached in
``.downloads/`` (resumable ``.part`` files) and removed once the model is installed.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from ..errors import InputError, LNQError, OutputExistsError
from ..progress import CancelToken
from .download import ByteProgress, download_file
from .registry import PublishedModel, find_published, published_models
from .unpack import NNUNET_FILES, find_model_root, safe_extract

logger = logging.getLogger(__name__)

MODELS_DIR_ENVIRONMENT = "LNQ_MODELS_DIR"
INSTALL_RECORD = "lnq-install.json"
ACCEPTED_LICENCES = "accepted-licences.json"


class LicenceNotAccepted(LNQError):
    """A model's licence must be accepted before it is installed (CLI: ``--accept-licence`` or answer the prompt)."""

    def __init__(self, model: PublishedModel) -> None:
        self.model = model
        super().__init__(
            f"{model.key} {model.version} is licensed {model.licence}: {model.recommended_use} Accept this "
            "licence to install it (lnq models install ... --accept-licence)."
        )


def user_models_dir() -> Path:
    """Where ``lnq models install`` puts models: ``LNQ_MODELS_DIR``, else the platform's user data folder."""
    override = os.environ.get(MODELS_DIR_ENVIRONMENT)
    if override:
        return Path(override).expanduser()
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return base / "LymphNodeQuant" / "models"


@dataclass
class InstallSource:
    """What ``install_model`` was given, resolved: a published model, a URL, a zip or a folder."""

    kind: str  # "published" | "url" | "zip" | "folder"
    text: str
    published: Optional[PublishedModel] = None


def resolve_source(source: str) -> InstallSource:
    path = Path(source).expanduser()
    if source.startswith(("http://", "https://")):
        return InstallSource("url", source)
    if path.is_dir():
        return InstallSource("folder", str(path))
    if path.is_file():
        return InstallSource("zip", str(path))
    published = find_published(source)
    if published is not None:
        return InstallSource("published", source, published)
    known = ", ".join(m.key for m in published_models()) or "none"
    raise InputError(f"'{source}' is not a model folder, a zip, an http(s) URL or a known published model ({known}).")


def _accepted(models_dir: Path) -> dict:
    try:
        return json.loads((models_dir / ACCEPTED_LICENCES).read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def licence_accepted(model: PublishedModel, models_dir: Optional[Path] = None) -> bool:
    return not model.licence_requires_acceptance or f"{model.key}@{model.version}" in _accepted(models_dir or user_models_dir())


def record_licence_acceptance(model: PublishedModel, models_dir: Optional[Path] = None) -> None:
    models_dir = models_dir or user_models_dir()
    models_dir.mkdir(parents=True, exist_ok=True)
    accepted = _accepted(models_dir)
    accepted[f"{model.key}@{model.version}"] = {"licence": model.licence, "accepted_at": _now()}
    (models_dir / ACCEPTED_LICENCES).write_text(json.dumps(accepted, indent=2) + "\n")


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _fetch_published(
    model: PublishedModel,
    folds: Optional[Sequence[int]],
    staging: Path,
    downloads: Path,
    progress: Optional[ByteProgress],
    cancel: Optional[CancelToken],
) -> list[Path]:
    """Download (resuming) and check every needed asset, then unpack them into ``staging``."""
    fetched = []
    assets = model.assets_for(list(folds) if folds is not None else None)
    total, offset = sum(a.size_bytes for a in assets), 0
    for asset in assets:
        logger.info(f"Downloading {asset.filename} ({asset.size_bytes / 1e6:.1f} MB) from {model.url(asset)}")
        overall = None if progress is None else (lambda done, _size, offset=offset: progress(offset + done, total))
        fetched.append(
            download_file(
                model.url(asset), downloads / asset.filename, asset.size_bytes, asset.sha256, progress=overall, cancel=cancel
            )
        )
        offset += asset.size_bytes
    for path in fetched:  # nothing is unpacked before every download has passed its checksum
        safe_extract(path, staging)
    return fetched


def _copy_folds(source: Path, meta: Path, destination: Path, folds: Optional[Sequence[int]]) -> None:
    for name in NNUNET_FILES:
        shutil.copy2(meta / name, destination / name)
    available = sorted(int(p.name[5:]) for p in source.glob("fold_*") if p.is_dir() and p.name[5:].isdigit())
    chosen = available if folds is None else sorted(set(folds))
    missing = sorted(set(chosen) - set(available))
    if missing:
        raise InputError(f"The nnU-Net model has folds {available}; fold {missing[0]} is not there.")
    for fold in chosen:
        shutil.copytree(source / f"fold_{fold}", destination / f"fold_{fold}")


def _assemble(staging: Path, unpacked: Path, folds: Optional[Sequence[int]]) -> str:
    """Move the model found in ``unpacked`` into ``staging`` (only the chosen nnU-Net folds): its format."""
    root, kind, meta = find_model_root(unpacked)
    target = staging / "model"
    if kind == "native":
        shutil.copytree(root, target, ignore=shutil.ignore_patterns(INSTALL_RECORD))
    else:
        target.mkdir()
        _copy_folds(root, meta, target, folds)
    return kind


def _check_installable(model_folder: Path, kind: str) -> str:
    """Read the card (and verify native weights); returns the model's name."""
    from ..models.model_folder import load_model_card, verify_weights

    card = load_model_card(model_folder)
    if kind == "native":
        verify_weights(card)
    return card.name


def install_model(
    source: str,
    *,
    name: Optional[str] = None,
    folds: Optional[Sequence[int]] = None,
    sha256: Optional[str] = None,
    overwrite: bool = False,
    accept_licence: bool = False,
    models_dir: Optional[Path] = None,
    progress: Optional[ByteProgress] = None,
    cancel: Optional[CancelToken] = None,
) -> Path:
    """Install a model from ``source`` (folder, zip, URL with ``sha256``, or ``publisher:name``); its folder."""
    models_dir = Path(models_dir) if models_dir is not None else user_models_dir()
    resolved = resolve_source(source)
    if resolved.kind == "url" and not sha256:
        raise InputError("A model downloaded from a URL needs its checksum: add --sha256 (as published with the file).")
    published = resolved.published
    if published is not None and not (accept_licence or licence_accepted(published, models_dir)):
        raise LicenceNotAccepted(published)
    install_name = name or (published.name if published else None)
    if install_name is not None:
        _refuse_existing(models_dir / install_name, overwrite)
    models_dir.mkdir(parents=True, exist_ok=True)
    _remove_abandoned_staging(models_dir)
    staging = models_dir / f".staging-{install_name or 'model'}-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    downloads = models_dir / ".downloads"
    try:
        unpacked = staging / "unpacked"
        unpacked.mkdir()
        fetched: list[Path] = []
        if published is not None:
            fetched = _fetch_published(published, folds, unpacked, downloads, progress, cancel)
        elif resolved.kind == "url":
            filename = resolved.text.rstrip("/").rsplit("/", 1)[-1] or "model.zip"
            fetched = [
                download_file(
                    resolved.text, downloads / filename, _remote_size(resolved.text), sha256, progress=progress, cancel=cancel
                )
            ]
            safe_extract(fetched[0], unpacked)
        elif resolved.kind == "zip":
            safe_extract(Path(resolved.text), unpacked)
        else:
            unpacked = Path(resolved.text)
        kind = _assemble(staging, unpacked, folds)
        card_name = _check_installable(staging / "model", kind)
        install_name = install_name or (card_name if kind == "native" else _nnunet_install_name(staging / "model", card_name))
        _write_record(staging / "model", install_name, resolved, kind, folds)
        destination = _move_into_place(staging / "model", models_dir / install_name, overwrite)
        for path in fetched:
            path.unlink(missing_ok=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if published is not None and published.licence_requires_acceptance:
        record_licence_acceptance(published, models_dir)
    logger.info(f"Installed '{install_name}' in {destination}")
    return destination


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists (another user's) or cannot tell: leave it alone
    return True


def _remove_abandoned_staging(models_dir: Path) -> None:
    """Staging folders of installs that were killed (e.g. cancelled from Slicer) are removed on the next install."""
    for folder in models_dir.glob(".staging-*-*"):
        pid = folder.name.rsplit("-", 1)[-1]
        if pid.isdigit() and int(pid) != os.getpid() and not _process_alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def _remote_size(url: str) -> int:
    import urllib.request

    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=60) as response:
            return int(response.headers.get("Content-Length") or 0)
    except (OSError, ValueError) as error:
        raise InputError(f"Cannot reach {url} ({error}); check the address and the network.") from error


def _nnunet_install_name(folder: Path, card_name: str) -> str:
    # "nnunet:Dataset042_LNQ:3d_fullres" -> "Dataset042_LNQ-3d_fullres"
    return card_name.split(":", 1)[-1].replace(":", "-") or folder.name


def _write_record(folder: Path, name: str, source: InstallSource, kind: str, folds: Optional[Sequence[int]]) -> None:
    model = source.published
    record = {
        "name": name,
        "format": kind,
        "source": model.key if model else source.text,
        "installed_at": _now(),
        "folds": sorted(int(p.name[5:]) for p in folder.glob("fold_*") if p.name[5:].isdigit()) if kind == "nnunetv2" else None,
    }
    if model is not None:
        record.update(
            version=model.version,
            licence=model.licence,
            recommended_use=model.recommended_use,
            display_name=model.display_name,
            training=model.training,
            homepage=model.homepage,
        )
    (folder / INSTALL_RECORD).write_text(json.dumps(record, indent=2) + "\n")


def _refuse_existing(destination: Path, overwrite: bool) -> None:
    if destination.exists() and not overwrite:
        raise OutputExistsError(
            f"A model '{destination.name}' is already installed in {destination.parent}; pass "
            "--overwrite to replace it (or --name to install this one beside it)."
        )


def _move_into_place(staged: Path, destination: Path, overwrite: bool) -> Path:
    """Rename the checked model into place; an old one (with ``overwrite``) is kept aside until that worked."""
    _refuse_existing(destination, overwrite)
    previous = destination.with_name(f".previous-{destination.name}-{os.getpid()}")
    if destination.exists():
        os.replace(destination, previous)
    try:
        os.replace(staged, destination)
    except OSError:
        if previous.exists():
            os.replace(previous, destination)
        raise
    shutil.rmtree(previous, ignore_errors=True)
    return destination


def remove_model(name: str, models_dir: Optional[Path] = None) -> Path:
    """Remove an installed model from the user models folder (packaged models cannot be removed)."""
    models_dir = Path(models_dir) if models_dir is not None else user_models_dir()
    folder = models_dir / name
    if not name or "/" in name or "\\" in name or name.startswith(".") or not folder.is_dir():
        installed = (
            ", ".join(sorted(p.name for p in models_dir.iterdir() if p.is_dir() and not p.name.startswith(".")))
            if models_dir.is_dir()
            else "none"
        )
        raise InputError(
            f"No installed model '{name}' in {models_dir} (installed there: {installed or 'none'}); "
            "packaged models cannot be removed."
        )
    doomed = models_dir / f".removing-{name}-{os.getpid()}"
    os.replace(folder, doomed)  # gone from the registry at once, even if deleting takes a while
    shutil.rmtree(doomed)
    return folder


def folder_size_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())
