"""Model folders: ``model.json`` (the model card) plus the weights it describes.

A model folder holds::

    model.json            name, version, architecture, input preprocessing, labels, training
                          provenance, measured metrics, and weights {file, sha256, size_bytes}
    weights.safetensors   the network's state dict

Loading checks the weights' size and sha256 against model.json and refuses a corrupted or
mismatched file. Packaged models live in ``LymphNodeQuant/Resources/Models/<name>/`` (the
default, alias ``"default"``, is ``lnq-chest-unet``); extra folders can be listed in the
environment variable ``LNQ_MODEL_PATH`` (os.pathsep-separated) or passed as a path.
Nothing is ever downloaded.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Union

from ..codes import LYMPH_NODE_TERMINOLOGY, node_color
from ..errors import ModelError, OutputExistsError

PathLike = Union[str, os.PathLike]

DEFAULT_MODEL_NAME = "lnq-chest-unet"
MODEL_CARD_NAME = "model.json"
WEIGHTS_FILE_NAME = "weights.safetensors"
MODEL_PATH_ENVIRONMENT = "LNQ_MODEL_PATH"

DEFAULT_LABELS = [{"value": 1, "name": "Lymph node", "color_rgb": list(node_color(1)), "terminology": LYMPH_NODE_TERMINOLOGY}]
#: a node is at least a 5 mm sphere (65 mm3) and 4 voxels, so one voxel of a coarse scan is never a node;
#: "anatomy_filter" drops candidates that cannot be mediastinal nodes (postprocess.filter_candidates)
DEFAULT_POSTPROCESSING = {"threshold": 0.5, "min_node_volume_mm3": 65.0, "min_node_voxels": 4, "anatomy_filter": True}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _three(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda value: isinstance(value, (list, tuple)) and len(value) == 3 and all(check(v) for v in value)


#: keys model.json must have (dotted paths) -> (type check, what the value must be)
REQUIRED_KEYS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "name": (lambda v: isinstance(v, str) and bool(v), "a non-empty string"),
    "version": (lambda v: isinstance(v, str) and bool(v), "a non-empty string"),
    "architecture": (lambda v: isinstance(v, dict), "an object"),
    "architecture.name": (lambda v: isinstance(v, str), "a string"),
    "architecture.arguments": (lambda v: isinstance(v, dict), "an object"),
    "input": (lambda v: isinstance(v, dict), "an object"),
    "input.spacing_zyx_mm": (_three(lambda v: _is_number(v) and v > 0), "a list of 3 positive numbers"),
    "input.normalization": (lambda v: isinstance(v, dict), "an object"),
    "input.normalization.mean": (_is_number, "a number"),
    "input.normalization.std": (lambda v: _is_number(v) and v > 0, "a positive number"),
    "input.patch_size_zyx": (
        _three(lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1),
        "a list of 3 positive integers",
    ),
    "labels": (lambda v: isinstance(v, list), "a list"),
    "weights": (lambda v: isinstance(v, dict), "an object"),
    "weights.file": (
        lambda v: isinstance(v, str) or (isinstance(v, list) and all(isinstance(f, str) for f in v)),
        "a file name (or a list of them)",
    ),
    # sha256 and size are checked against the file when the weights are loaded (verify_weights);
    # None: not recorded (an nnU-Net results folder)
    "weights.sha256": (lambda v: v is None or isinstance(v, str), "a sha256 hex digest"),
    "weights.size_bytes": (lambda v: v is None or (isinstance(v, int) and not isinstance(v, bool) and v >= 0), "a byte count"),
}

#: keys model.json may have -> (type check, what the value must be)
OPTIONAL_KEYS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "input.crop": (lambda v: v in ("mediastinum", "none"), "'mediastinum' or 'none'"),
    "input.normalization.clip_hu": (
        lambda v: isinstance(v, (list, tuple)) and len(v) == 2 and all(map(_is_number, v)),
        "[low, high] in HU",
    ),
    "postprocessing": (lambda v: isinstance(v, dict), "an object"),
    "postprocessing.threshold": (lambda v: _is_number(v) and 0 < v < 1, "a number between 0 and 1"),
    "postprocessing.min_node_volume_mm3": (lambda v: _is_number(v) and v >= 0, "a number >= 0"),
    "postprocessing.min_node_voxels": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1, "an integer >= 1"),
    "postprocessing.anatomy_filter": (lambda v: isinstance(v, bool), "true or false"),
    "output.foreground_channel": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0, "an integer >= 0"),
}


def packaged_models_folders() -> list[Path]:
    """Folders searched for installed models, in order (LNQ_MODEL_PATH, the user models folder of
    ``lnq models install``, the source tree, installed package data)."""
    from ..model_install.installer import user_models_dir  # where 'lnq models install' puts models

    folders = [Path(p) for p in os.environ.get(MODEL_PATH_ENVIRONMENT, "").split(os.pathsep) if p]
    folders.append(user_models_dir())
    package_root = Path(__file__).resolve().parents[1]
    folders.append(package_root.parent / "LymphNodeQuant" / "Resources" / "Models")  # source tree / editable install
    folders.append(package_root / "packaged_models")  # wheel: package data mapped by pyproject.toml
    try:  # the same package data wherever the import system finds it (e.g. an editable install's mapping)
        import importlib.util

        spec = importlib.util.find_spec(f"{__package__.rsplit('.', 1)[0]}.packaged_models")
        if spec is not None:
            folders.extend(Path(p) for p in (spec.submodule_search_locations or []))
    except (ImportError, ValueError):
        pass
    unique: list[Path] = []
    for folder in folders:
        if folder not in unique:
            unique.append(folder)
    return unique


def _get(data: dict, dotted: str) -> Any:
    value: Any = data
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            raise KeyError(dotted)
        value = value[part]
    return value


@dataclass
class ModelCard:
    """The parsed model.json of a model folder (``data`` holds the full JSON)."""

    folder: Optional[Path]
    data: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict, folder: Optional[Path] = None, source: str = "model.json") -> "ModelCard":
        for key, (valid, expected) in {**REQUIRED_KEYS, **OPTIONAL_KEYS}.items():
            try:
                value = _get(data, key)
            except KeyError as error:
                if key in OPTIONAL_KEYS:
                    continue
                raise ModelError(f"{source} lacks the key '{key}'; re-export the model (see README, 'Models').") from error
            if not valid(value):
                raise ModelError(
                    f"{source}: '{key}' must be {expected}, got {json.dumps(value)[:80]}; re-export the model "
                    "(see README, 'Models')."
                )
        card = cls(Path(folder) if folder is not None else None, copy.deepcopy(data))
        return card

    # convenient views of the JSON
    name = property(lambda self: str(self.data["name"]))
    version = property(lambda self: str(self.data["version"]))
    architecture = property(lambda self: self.data["architecture"])
    spacing_zyx_mm = property(lambda self: tuple(float(s) for s in self.data["input"]["spacing_zyx_mm"]))
    patch_size_zyx = property(lambda self: tuple(int(s) for s in self.data["input"]["patch_size_zyx"]))
    normalization = property(lambda self: self.data["input"]["normalization"])
    crop = property(lambda self: self.data["input"].get("crop", "mediastinum"))
    labels = property(lambda self: self.data["labels"])
    weights = property(lambda self: self.data["weights"])

    @property
    def postprocessing(self) -> dict:
        return {**DEFAULT_POSTPROCESSING, **self.data.get("postprocessing", {})}

    @property
    def foreground_channel(self) -> int:
        """Network output channel holding the lymph-node class (1 = softmax over background + node)."""
        return int(self.data.get("output", {}).get("foreground_channel", 1))

    @property
    def title(self) -> str:
        return f"{self.name} {self.version}"

    @property
    def validated_on_patient_data(self) -> bool:
        """True only when model.json says so (``"validated_on_patient_data": true``); no packaged model does."""
        return self.data.get("validated_on_patient_data") is True

    def to_json(self) -> str:
        return json.dumps(self.data, indent=2, sort_keys=False) + "\n"


@dataclass
class LoadedModel:
    """A model ready to run: its card and the network (eval mode) on ``device``."""

    card: ModelCard
    network: Any
    device: str = "cpu"
    #: "native" (this project's model folder) or "nnunetv2" (an nnU-Net v2 results folder)
    kind: str = "native"


def sha256_of_file(path: PathLike, chunk_bytes: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(chunk_bytes), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _state_dict_for_saving(network) -> dict:
    # safetensors refuses shared or non-contiguous tensors: copy each one out
    return {key: value.detach().to("cpu").contiguous().clone() for key, value in network.state_dict().items()}


def save_model_folder(folder: PathLike, network, card: dict, overwrite: bool = False) -> Path:
    """Write ``network``'s weights and ``card`` (model.json contents) into ``folder``.

    ``card`` must hold everything model.json needs except ``weights``, which is filled in
    (file, sha256, size_bytes, format). The architecture is rebuilt from the card and the
    weights loaded into it before anything is written, so a card that does not describe the
    network is refused. Returns the folder.
    """
    from safetensors.torch import save_file

    from ..io import atomic_write

    folder = Path(folder)
    card_path = folder / MODEL_CARD_NAME
    weights_path = folder / WEIGHTS_FILE_NAME
    if not overwrite:
        for path in (card_path, weights_path):
            if path.exists():
                raise OutputExistsError(f"'{path}' already exists; choose another folder or pass overwrite=True (--overwrite).")
    data = copy.deepcopy(dict(card))
    data.setdefault("labels", copy.deepcopy(DEFAULT_LABELS))
    data.setdefault("postprocessing", dict(DEFAULT_POSTPROCESSING))
    data["weights"] = {
        "file": WEIGHTS_FILE_NAME,
        "format": "safetensors",
        "sha256": None,
        "size_bytes": None,
    }  # filled after writing
    ModelCard.from_dict(data, folder, source=f"the card for '{folder}'")  # validate keys before writing

    from .networks import build_network

    state = _state_dict_for_saving(network)
    try:
        build_network(data["architecture"]).load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise ModelError(f"The network's weights do not match the card's architecture: {str(error).splitlines()[0]}") from error

    folder.mkdir(parents=True, exist_ok=True)
    metadata = {"name": str(data["name"]), "version": str(data["version"])}
    atomic_write(weights_path, lambda temporary: save_file(state, str(temporary), metadata=metadata), overwrite)
    data["weights"].update(sha256=sha256_of_file(weights_path), size_bytes=weights_path.stat().st_size)
    text = json.dumps(data, indent=2) + "\n"
    atomic_write(card_path, lambda temporary: Path(temporary).write_text(text, encoding="utf-8"), overwrite)
    return folder


def resolve_model(name_or_path: PathLike = "default") -> Path:
    """The folder of a model given by installed name, ``"default"``, or a path to a folder or its model.json."""
    text = str(name_or_path)
    if text in ("", "default"):
        text = DEFAULT_MODEL_NAME
    path = Path(text).expanduser()
    if path.is_file() and path.name == MODEL_CARD_NAME:
        return path.parent
    if path.is_dir():
        if (path / MODEL_CARD_NAME).is_file() or _looks_like_nnunet(path):
            return path
        raise ModelError(
            f"'{path}' is a folder but holds no {MODEL_CARD_NAME} (nor an nnU-Net v2 model); point --model at a model folder."
        )
    if os.sep not in text and "/" not in text:
        name = text.split(":", 1)[1] if ":" in text else text  # "lnq-segmenter:mediastinal-v1" -> "mediastinal-v1"
        for root in packaged_models_folders():
            candidate = root / name
            if (candidate / MODEL_CARD_NAME).is_file() or _looks_like_nnunet(candidate):
                return candidate
    installed = ", ".join(entry["name"] for entry in list_models()) or "none installed"
    raise ModelError(f"Model '{name_or_path}' not found: not a model folder and not an installed model ({installed}).")


def _looks_like_nnunet(folder: Path) -> bool:
    return (folder / "plans.json").is_file() and (folder / "dataset.json").is_file()


def load_model_card(folder: PathLike) -> ModelCard:
    """Read and validate ``folder/model.json`` (or an nnU-Net v2 folder's equivalent card)."""
    folder = resolve_model(folder)
    if not (folder / MODEL_CARD_NAME).is_file() and _looks_like_nnunet(folder):
        from .nnunet import nnunet_model_card

        return nnunet_model_card(folder)
    card_path = folder / MODEL_CARD_NAME
    try:
        data = json.loads(card_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ModelError(f"'{card_path}' is not valid JSON ({error}); reinstall or re-export the model.") from error
    if not isinstance(data, dict):
        raise ModelError(f"'{card_path}' must hold a JSON object.")
    return ModelCard.from_dict(data, folder, source=str(card_path))


def verify_weights(card: ModelCard) -> Path:
    """Path of the card's weights after checking size and sha256; ModelError if missing or changed."""
    weights_path = Path(card.folder) / card.weights["file"]
    if not weights_path.is_file():
        raise ModelError(f"Weights file '{weights_path}' is missing; reinstall the model or re-export it (lnq export).")
    size = weights_path.stat().st_size
    if size != int(card.weights["size_bytes"]):
        raise ModelError(
            f"Weights file '{weights_path}' has {size} bytes but model.json expects {card.weights['size_bytes']}: "
            "it is corrupted or belongs to another model; reinstall the model."
        )
    digest = sha256_of_file(weights_path)
    if digest != card.weights["sha256"]:
        raise ModelError(
            f"Weights file '{weights_path}' fails its checksum (sha256 {digest[:12]}..., model.json expects "
            f"{str(card.weights['sha256'])[:12]}...): it is corrupted or belongs to another model; reinstall the model."
        )
    return weights_path


def _read_state_dict(weights_path: Path) -> dict:
    try:
        if weights_path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(weights_path), device="cpu")
        import torch

        state = torch.load(str(weights_path), map_location="cpu", weights_only=True)
        return state.get("state_dict", state) if isinstance(state, dict) else state
    except Exception as error:  # any parse failure of the file is a corrupted model for the user
        raise ModelError(
            f"Cannot read weights '{weights_path}' ({type(error).__name__}: {error}); reinstall the model."
        ) from error


def load_model(name_or_path: PathLike = "default", device: str = "cpu") -> LoadedModel:
    """Load a model folder: validate model.json, verify the weights' checksum, build the network in eval mode."""
    folder = resolve_model(name_or_path)
    if not (folder / MODEL_CARD_NAME).is_file() and _looks_like_nnunet(folder):
        from .nnunet import load_nnunet_model

        return load_nnunet_model(folder, device=device)
    card = load_model_card(folder)
    weights_path = verify_weights(card)
    from .networks import build_network

    network = build_network(card.architecture)
    state = _read_state_dict(weights_path)
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise ModelError(
            f"Weights '{weights_path}' do not fit the architecture in model.json ({str(error).splitlines()[0]}); "
            "re-export the model."
        ) from error
    network.eval()
    network.to(device)
    return LoadedModel(card=card, network=network, device=str(device))


INSTALL_RECORD_NAME = "lnq-install.json"


def _install_record(folder: Path) -> dict:
    try:
        return json.loads((folder / INSTALL_RECORD_NAME).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}


def _listed_model(folder: Path) -> Optional[dict]:
    """One ``list_models`` entry for a model folder (native or nnU-Net), None for anything else."""
    record = _install_record(folder)
    if (folder / MODEL_CARD_NAME).is_file():
        try:
            data = json.loads((folder / MODEL_CARD_NAME).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return {"name": folder.name, "folder": str(folder), "error": "unreadable model.json"}
        return {
            "name": str(data.get("name", folder.name)),
            "version": str(data.get("version", "")),
            "folder": str(folder),
            "default": folder.name == DEFAULT_MODEL_NAME,
            "description": data.get("description", ""),
            "metrics": data.get("metrics", {}),
            "licence": record.get("licence", data.get("licence", "")),
            "format": "native",
        }
    if _looks_like_nnunet(folder):
        folds = sorted(p.name[5:] for p in folder.glob("fold_*") if p.is_dir())
        return {
            "name": folder.name,
            "version": str(record.get("version", "")),
            "folder": str(folder),
            "default": False,
            "description": record.get("recommended_use") or f"nnU-Net v2 model, folds {', '.join(folds)}",
            "metrics": {},
            "licence": record.get("licence", ""),
            "format": "nnunetv2",
            "source": record.get("source", ""),
        }
    return None


def list_models() -> list[dict]:
    """Installed models: name, version, folder, description, metrics, licence (for ``lnq models``)."""
    found: list[dict] = []
    seen: set[str] = set()
    for root in packaged_models_folders():
        if not root.is_dir():
            continue
        for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            entry = _listed_model(folder)
            if entry is None or entry["name"] in seen:
                continue
            seen.add(entry["name"])
            found.append(entry)
    return found
