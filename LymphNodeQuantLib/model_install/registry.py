"""Known published models: the package's ``published_models.json`` plus any ``LNQ_MODEL_REGISTRY`` files.

An entry names the publisher, the model, its licence and recommended use, and every downloadable
asset with its size and sha256, so installing a known model needs no checksum from the user. A
site may add its own mirror or models with ``LNQ_MODEL_REGISTRY`` (registry files in the same
format, separated by the path separator); their entries come first.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from ..errors import InputError

REGISTRY_ENVIRONMENT = "LNQ_MODEL_REGISTRY"
PACKAGED_REGISTRY = Path(__file__).resolve().parent / "published_models.json"


@dataclass(frozen=True)
class Asset:
    """One downloadable file of a published model."""

    role: str  # "meta" (plans, dataset.json) or "fold"
    filename: str
    size_bytes: int
    sha256: str
    fold: Optional[int] = None


@dataclass(frozen=True)
class PublishedModel:
    publisher: str
    name: str
    version: str
    licence: str
    recommended_use: str
    url_template: str
    assets: tuple[Asset, ...]
    display_name: str = ""
    licence_requires_acceptance: bool = False
    training: str = ""
    homepage: str = ""
    format: str = "nnunetv2"
    plans_folder: str = ""
    extra: dict = field(default_factory=dict, compare=False)

    @property
    def key(self) -> str:
        """``publisher:name``, as the user types it."""
        return f"{self.publisher}:{self.name}"

    @property
    def folds(self) -> list[int]:
        return sorted(a.fold for a in self.assets if a.role == "fold" and a.fold is not None)

    def url(self, asset: Asset) -> str:
        return self.url_template.format(name=self.name, version=self.version, filename=asset.filename)

    def assets_for(self, folds: Optional[list[int]] = None) -> list[Asset]:
        """The meta asset(s) and the chosen folds' assets (all folds by default)."""
        chosen = self.folds if folds is None else sorted(set(folds))
        unknown = sorted(set(chosen) - set(self.folds))
        if unknown:
            raise InputError(f"{self.key} has folds {self.folds}; there is no fold {unknown[0]}.")
        if not chosen:
            raise InputError("Choose at least one fold (e.g. --folds 0).")
        return [a for a in self.assets if a.role != "fold" or a.fold in chosen]

    def size_bytes(self, folds: Optional[list[int]] = None) -> int:
        return sum(a.size_bytes for a in self.assets_for(folds))


def _entry(data: dict, source: Path) -> PublishedModel:
    try:
        assets = tuple(
            Asset(
                str(a["role"]),
                str(a["filename"]),
                int(a["size_bytes"]),
                str(a["sha256"]).lower(),
                None if a.get("fold") is None else int(a["fold"]),
            )
            for a in data["assets"]
        )
        known = {f for f in PublishedModel.__dataclass_fields__} - {"assets", "extra"}
        values = {k: data[k] for k in known if k in data}
        return PublishedModel(assets=assets, extra={k: v for k, v in data.items() if k not in known | {"assets"}}, **values)
    except (KeyError, TypeError, ValueError) as error:
        raise InputError(f"The model registry '{source}' has a malformed entry ({error!r}); fix or remove it.") from error


def registry_files() -> list[Path]:
    extra = [Path(p) for p in os.environ.get(REGISTRY_ENVIRONMENT, "").split(os.pathsep) if p]
    return extra + [PACKAGED_REGISTRY]


def published_models() -> list[PublishedModel]:
    """Every known published model (site registries first, then the packaged one)."""
    models: list[PublishedModel] = []
    for path in registry_files():
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as error:
            raise InputError(f"Cannot read the model registry '{path}' ({error}); fix {REGISTRY_ENVIRONMENT}.") from error
        models.extend(_entry(item, path) for item in document.get("models", []))
    return models


def find_published(name: str) -> Optional[PublishedModel]:
    """The published model called ``publisher:name`` (or just ``name`` when only one publisher has it)."""
    models = published_models()
    for model in models:
        if model.key == name:
            return model
    matching = [m for m in models if m.name == name]
    return matching[0] if len(matching) == 1 else None
