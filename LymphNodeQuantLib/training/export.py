"""Turn a training checkpoint into a model folder that ``lnq segment`` and the Slicer module load.

The folder is written by :func:`LymphNodeQuantLib.models.model_folder.save_model_folder`
(weights.safetensors + model.json with sha256). Only the main single-decoder PlainConvUNet is
exported (for DBDMP the auxiliary decoder is dropped).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import platform
from pathlib import Path
from typing import Optional

from ..errors import InputError


def load_checkpoint(path: Path) -> dict:
    import torch

    path = Path(path)
    if path.is_dir():
        for name in ("checkpoint_final.pt", "checkpoint_latest.pt"):
            if (path / name).exists():
                path = path / name
                break
        else:
            raise InputError(f"'{path}' holds no checkpoint_final.pt or checkpoint_latest.pt; train first (lnq train).")
    if not path.is_file():
        raise InputError(f"Checkpoint '{path}' does not exist.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # a truncated or foreign file is a user error here
        raise InputError(f"Cannot read checkpoint '{path}' ({type(error).__name__}: {error}).") from error
    if not isinstance(state, dict) or "network" not in state or "config" not in state:
        raise InputError(f"'{path}' is not an 'lnq train' checkpoint (no network/config inside).")
    state["path"] = str(path)
    return state


def model_card_from_checkpoint(
    state: dict,
    name: str,
    version: str = "1.0.0",
    description: str = "",
    training_extra: Optional[dict] = None,
    metrics: Optional[dict] = None,
) -> dict:
    """model.json contents (all but ``weights``) for a checkpoint."""
    import torch

    from .. import __version__

    config = state["config"]
    checkpoint_sha256 = hashlib.sha256(Path(state["path"]).read_bytes()).hexdigest()
    last = state["metrics"][-1] if state.get("metrics") else {}
    training = {
        "strategy": config["strategy"],
        "seed": config["seed"],
        "epochs": int(state["epoch"]) + 1,
        "iterations": (int(state["epoch"]) + 1) * config["iterations_per_epoch"],
        "batch_size": config["batch_size"],
        "optimizer": config["optimizer"],
        "learning_rate": config["learning_rate"],
        "config": config,
        "validation_at_model_spacing": {"dice": last.get("val_dice"), "assd_mm": last.get("val_assd_mm")},
        **(training_extra or {}),
    }
    return {
        "name": name,
        "version": version,
        "description": description or f"PlainConvUNet trained with LymphNodeQuantLib.training (strategy {config['strategy']}).",
        "architecture": state["architecture"],
        "input": {
            "spacing_zyx_mm": list(config["spacing_zyx_mm"]),
            "normalization": config["normalization"],
            "patch_size_zyx": list(config["patch_size_zyx"]),
            "crop": config["crop"],
        },
        "training": training,
        "metrics": metrics or {},
        "provenance": {
            "created_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "exported_by": f"LymphNodeQuantLib {__version__} (lnq export)",
            "checkpoint_sha256": checkpoint_sha256,
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
    }


def export_model(
    checkpoint: Path,
    folder: Path,
    *,
    name: Optional[str] = None,
    version: str = "1.0.0",
    description: str = "",
    training_extra: Optional[dict] = None,
    metrics: Optional[dict] = None,
    overwrite: bool = False,
) -> Path:
    """Write the model folder for ``checkpoint`` (a .pt file or a training output folder)."""
    from ..models.model_folder import save_model_folder
    from ..models.networks import build_network

    state = load_checkpoint(Path(checkpoint))
    network = build_network(state["architecture"])
    network.load_state_dict(state["network"], strict=True)
    card = model_card_from_checkpoint(state, name or Path(folder).name, version, description, training_extra, metrics)
    return save_model_folder(Path(folder), network, card, overwrite=overwrite)
